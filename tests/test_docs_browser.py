"""/docs in a real browser: headless Chromium loads the page from a live server, under its CSP.

The browser is driven over the Chrome DevTools Protocol on a pipe (`--remote-debugging-pipe`:
JSON messages ending in a NUL byte, commands on the child's fd 3, answers and events on its
fd 4), with nothing but the standard library. The test

- collects every console message, uncaught exception and log entry (a CSP violation is a
  log entry and a console error), and a `securitypolicyviolation` listener installed
  before the page's own script runs: none may appear;
- waits (a poll with a deadline) until the page says every operation is drawn, and
  compares the operations listed with the route table;
- clicks "Send" in the "try it" form of GET /health and waits for the answer the page shows.

Without Chromium the test is skipped, except under CI=true, where it fails (.ci/run installs
Debian's chromium package).
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

import routes

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-proxy-server",
]
COMMAND_TIMEOUT_SECONDS = 30  # one DevTools command and its answer
PAGE_TIMEOUT_SECONDS = 30  # the page drawn, or an answer shown
POLL_SECONDS = 0.05
MOVE_PIPES_AND_EXEC = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); " \
                      "os.execv(sys.argv[3], sys.argv[3:])"
# Installed before any script of the page runs: each CSP violation the page meets is kept.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
  (event) => window.__violations.push(event.violatedDirective + " " + event.blockedURI));
"""


@pytest.fixture
def engine():
    return "sqlite"  # the page reads no database; each run starts a browser


@pytest.fixture
def browser(chromium, tmp_path):
    with DevTools(chromium, tmp_path / "profile") as devtools:
        yield devtools


def test_the_docs_page_lists_every_operation_and_tries_health(browser, live_server):
    page = browser.open(f"{live_server}/docs")
    page.wait_for("document.body?.dataset.ready === 'true'")
    listed = page.evaluate("[...document.querySelectorAll('[data-operation]')].map((node) => node.dataset.operation)")
    assert sorted(listed) == sorted(name for _, _, _, name, *_ in routes.ROUTES)

    page.evaluate("document.querySelector('#op-health').open = true;"
                  " document.querySelector('#op-health button.send').click()")
    page.wait_for("document.querySelector('#op-health .answer').dataset.status !== undefined")
    answer = page.evaluate("document.querySelector('#op-health .answer').textContent")
    head, _, body = answer.partition("\n\n")
    assert head.startswith("HTTP 200")
    assert "content-type: application/json" in head.lower()
    assert json.loads(body) == {"status": "healthy", "version": "1.0.0"}

    assert page.evaluate("window.__violations") == []
    assert page.problems() == []


class DevTools:
    """Chromium with the DevTools Protocol on a pipe: `open(url)` gives a `Page` to drive."""

    def __init__(self, chromium, profile):
        self.chromium, self.profile = chromium, profile
        self.answers, self.events = {}, queue.Queue()
        self.answered = threading.Condition()
        self.next_id = 0

    def __enter__(self):
        to_browser_read, self.to_browser = os.pipe()
        self.from_browser, from_browser_write = os.pipe()
        # The protocol's pipes must be the child's fds 3 and 4: a small Python moves them there
        # and execs Chromium (a preexec_fn would do it in this process, unsafely beside the
        # live server's threads; sh's redirections stop at fd 9).
        command = [sys.executable, "-c", MOVE_PIPES_AND_EXEC, str(to_browser_read), str(from_browser_write),
                   self.chromium, *CHROMIUM_FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
                   "about:blank"]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, pass_fds=(to_browser_read, from_browser_write),
                                        start_new_session=True)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def __exit__(self, *exc_info):
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        os.close(self.to_browser)
        self.reader.join(10)
        os.close(self.from_browser)

    def open(self, url):
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
            page.send(domain)
        page.send("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_VIOLATIONS})
        page.send("Page.navigate", {"url": url})
        return page

    def send(self, method, params=None, session=None):
        """Send one command; its result, or a failure naming its error."""
        with self.answered:
            self.next_id += 1
            message_id = self.next_id
        message = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        with self.answered:
            if not self.answered.wait_for(lambda: message_id in self.answers, timeout=COMMAND_TIMEOUT_SECONDS):
                pytest.fail(f"Chromium did not answer {method} within {COMMAND_TIMEOUT_SECONDS} s")
            answer = self.answers.pop(message_id)
        if "error" in answer:
            pytest.fail(f"{method}: {answer['error']}")
        return answer["result"]

    def _read(self):
        buffered = b""
        while chunk := os.read(self.from_browser, 65536):
            buffered += chunk
            *messages, buffered = buffered.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    with self.answered:
                        self.answers[message["id"]] = message
                        self.answered.notify_all()
                else:
                    self.events.put(message)


class Page:
    """One tab: evaluate JavaScript in it, wait for a condition, list what went wrong in it."""

    def __init__(self, devtools, session):
        self.devtools, self.session = devtools, session

    def send(self, method, params=None):
        return self.devtools.send(method, params, self.session)

    def evaluate(self, expression):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            pytest.fail(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, condition):
        deadline = time.monotonic() + PAGE_TIMEOUT_SECONDS
        while not self.evaluate(condition):
            if time.monotonic() > deadline:
                pytest.fail(f"not true within {PAGE_TIMEOUT_SECONDS} s: {condition}; problems: {self.problems()}")
            time.sleep(POLL_SECONDS)

    def problems(self):
        """Console errors and warnings, uncaught exceptions and log entries of error level so far."""
        found = []
        while True:
            try:
                event = self.devtools.events.get_nowait()
            except queue.Empty:
                return found
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning", "assert"):
                found.append(f"console.{params['type']}: {params['args']}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails']}")
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                entry = params["entry"]
                found.append(f"log ({entry['source']}): {entry['text']} {entry.get('url', '')}".rstrip())
