"""CORS in a real browser: headless Chromium runs a page from another origin that calls the API.

The origins, all on this machine:

    the API            http://127.0.0.1:<api port>     the shop, on a live server (conftest)
    an allowed page    http://127.0.0.1:<page port>    listed in CORS_ORIGINS, same site as the API
    the same page      http://localhost:<page port>    listed too, but another site
    another page       http://127.0.0.1:<other port>   not listed

The page (tests/cors_page.html) calls the API with `fetch(..., {credentials: "include"})`
and posts what its script saw back to the server it came from, where the test waits for it
(an event, with a deadline). The browser, not this code, decides what a script may read:
that is the point of testing with one.

Why not `--dump-dom --virtual-time-budget`, which prints the page's DOM once it is idle:
Chromium sometimes printed it before the sandboxed frame's request had failed (about one
run in five here), as if the page were done. A report the page sends when it is done
cannot come early.

Cookies and sites. A port does not make another site: the page on 127.0.0.1:<page port> is
same-site with the API on 127.0.0.1:<api port>, so the session cookie (SameSite=Lax) is
stored from a cross-origin answer and sent back. The same page loaded as localhost:<page port>
is another site, and Chromium refuses the cookie, although CORS lets the script read every
answer; calling the API as localhost:<api port> makes it one site again. Across sites a
browser client uses a bearer token; the session cookie needs the page and the API on one
site (in development: the same host name for both, 127.0.0.1 or localhost). A
session-cookie write is refused from any other origin, allowed or not: that is the CSRF
check of middleware.py (a cross-origin request cannot use the session cookie), which CORS
does not relax.

Without Chromium the tests are skipped, except under CI=true, where they fail (.ci/run
installs Debian's chromium package).
"""

import http.server
import json
import os
import queue
import signal
import subprocess
import threading
from collections import namedtuple
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from conftest import TEST_ITERATIONS, TEST_PASSWORD, TEST_SECRET_KEY

import config

PAGE = (Path(__file__).parent / "cors_page.html").read_bytes()
PAGE_TIMEOUT_SECONDS = 60  # from starting Chromium to the page's report; a run takes about two
MAX_OUTCOME_BYTES = 1024 * 1024
# Running as root (in a container) needs --no-sandbox; the rest keep Chromium from calling
# home, updating itself or trying QUIC during a test.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-proxy-server",
]
BLOCKED = {"error": "TypeError: Failed to fetch"}
EMAIL = "ada@example.com"
Pages = namedtuple("Pages", "allowed other")  # two PageServers


@pytest.fixture
def engine():
    """SQLite only: CORS never reaches the database, and each run starts a browser."""
    return "sqlite"


@pytest.fixture
def pages():
    """The page, served on two ports: one whose origins CORS_ORIGINS lists, one it does not."""
    with PageServer() as allowed, PageServer() as other:
        yield Pages(allowed, other)


@pytest.fixture
def settings(database_url, pages):
    """The shop's settings (for `live_server`) allowing the page's port, under both host names."""
    origins = f"http://127.0.0.1:{pages.allowed.port},http://localhost:{pages.allowed.port}"
    return config.load_settings({
        "APP_ENV": "test", "DATABASE_URL": database_url, "SECRET_KEY": TEST_SECRET_KEY,
        "PBKDF2_ITERATIONS": str(TEST_ITERATIONS), "CORS_ORIGINS": origins,
    })


def test_an_allowed_origin_of_the_same_site(chromium, pages, live_server, seeded, users, tmp_path):
    users.create(EMAIL)
    outcome = run_page(chromium, pages.allowed, "127.0.0.1", live_server, "allowed", tmp_path)
    simple, preflighted = outcome["simple"], outcome["preflighted"]
    assert simple["status"] == 200 and json.loads(simple["body"])["data"]
    assert simple["request_id"]                  # exposed: the script can quote it in a bug report
    assert simple["nosniff"] is None             # sent, but not in Access-Control-Expose-Headers
    assert (preflighted["status"], preflighted["request_id"]) == (200, "allowed-preflighted")
    assert outcome["error"]["status"] == 401     # errors are readable too
    assert json.loads(outcome["error"]["body"])["status"] == 401
    # Same site (a port does not make another site): the cookie is stored, sent, and reads...
    assert outcome["session_login"]["status"] == 200
    assert (outcome["session_read"]["status"], json.loads(outcome["session_read"]["body"])["email"]) == (200, EMAIL)
    # ...but never writes from another origin: the CSRF check refuses it.
    assert outcome["session_write"]["status"] == 403
    assert json.loads(outcome["session_write"]["body"])["detail"] == "cross-site requests cannot use the session cookie"
    # A bearer token writes, and the Location of the new resource is exposed.
    assert outcome["token_login"]["status"] == 200
    assert (outcome["token_write"]["status"], outcome["token_write"]["location"]) == (201, "/v1/api-keys/1")
    # A sandboxed frame of the allowed page says Origin: null, which is never allowed.
    assert outcome["null_origin"] == BLOCKED


def test_an_allowed_origin_of_another_site_reads_answers_but_gets_no_cookie(chromium, pages, live_server, users,
                                                                           tmp_path):
    users.create(EMAIL)
    outcome = run_page(chromium, pages.allowed, "localhost", live_server, "other-site", tmp_path)
    assert outcome["preflighted"]["status"] == 200
    assert outcome["session_login"]["status"] == 200         # the answer is readable...
    assert outcome["session_read"]["status"] == 401          # ...but Chromium kept no SameSite=Lax cookie from it
    assert (outcome["token_write"]["status"], outcome["token_write"]["location"]) == (201, "/v1/api-keys/1")


def test_localhost_pages_use_the_cookie_with_the_api_on_localhost(chromium, pages, live_server, users, tmp_path):
    # The README's advice: the same host name for the page and the API, whatever the ports.
    users.create(EMAIL)
    api_on_localhost = live_server.replace("127.0.0.1", "localhost")
    outcome = run_page(chromium, pages.allowed, "localhost", api_on_localhost, "localhost", tmp_path)
    assert outcome["session_login"]["status"] == 200
    assert (outcome["session_read"]["status"], json.loads(outcome["session_read"]["body"])["email"]) == (200, EMAIL)


def test_an_origin_not_on_the_list_is_blocked_by_the_browser(chromium, pages, live_server, users, logger, log_stream,
                                                             tmp_path):
    users.create(EMAIL)
    outcome = run_page(chromium, pages.other, "127.0.0.1", live_server, "other", tmp_path)
    assert outcome == {name: BLOCKED for name in outcome}
    assert set(outcome) == {"simple", "preflighted", "error", "session_login", "session_read", "session_write",
                            "token_login", "token_write", "null_origin"}
    # A simple request is sent and only its answer withheld; a preflighted one is never sent:
    # the preflight got no CORS headers, so the browser stopped there.
    logger.flush()
    requests = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    served = {(line["method"], line["route"]) for line in requests if line["event"] == "request"}
    assert ("GET", "/v1/items") in served and ("OPTIONS", None) in served
    assert ("POST", "/v1/auth/session") not in served
    assert not any(line.get("request_id") == "other-preflighted" for line in requests)


# -- helpers -----------------------------------------------------------------------------------

def run_page(chromium, page_server, host, api_url, tag, tmp_path):
    """Load the page from http://`host`:<its server's port> in a fresh headless Chromium; return
    the outcome its script reported. Chromium is stopped when the report is in, or at the deadline."""
    query = urlencode({"api": api_url, "tag": tag, "email": EMAIL, "password": TEST_PASSWORD})
    profile = tmp_path / f"chromium-{tag}"  # a fresh profile: no cookie or cached preflight from before
    log_path = tmp_path / f"chromium-{tag}.log"
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
               f"http://{host}:{page_server.port}/page.html?{query}"]
    with open(log_path, "wb") as log:
        # A session of its own, so that its renderer and GPU processes are stopped with it.
        browser = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return page_server.outcomes.get(timeout=PAGE_TIMEOUT_SECONDS)
    except queue.Empty:
        log_tail = log_path.read_text(errors="replace")[-3000:]
        pytest.fail(f"the page reported nothing within {PAGE_TIMEOUT_SECONDS} s; Chromium said:\n{log_tail}")
    finally:
        os.killpg(browser.pid, signal.SIGTERM)
        try:
            browser.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(browser.pid, signal.SIGKILL)
            browser.wait()


class PageServer(http.server.ThreadingHTTPServer):
    """Context manager: serves the page on 127.0.0.1:<free port> in a thread, at GET /page.html,
    and takes its report at POST /outcome into the queue `outcomes`."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), PageHandler)
        self.port = self.server_address[1]
        self.outcomes = queue.Queue()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.shutdown()
        self.server_close()
        self.thread.join(10)


class PageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if urlsplit(self.path).path != "/page.html":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if self.path != "/outcome" or not 0 < length <= MAX_OUTCOME_BYTES:
            self.send_error(400)
            return
        self.server.outcomes.put(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format, *args):
        pass  # the test's output stays quiet
