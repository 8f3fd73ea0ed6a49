"""server.py end to end: the real program in a subprocess, spoken to over real sockets.

Every test runs the shop the way a student or an operator does (the README's "Set up" and "Other ways to run it"):

    python server.py migrate            python server.py seed --items 25
    python server.py --port 8123        gunicorn --workers 2 --bind 127.0.0.1:8123 server:app

with a clean environment (DATABASE_URL into the test's tmp_path or a fresh PostgreSQL schema,
SECRET_KEY, APP_ENV=test), talks to it with http.client or a raw socket, reads what it
printed, and kills whatever it started. PostgreSQL runs are skipped when no server answers,
except under CI=true, where they fail (conftest.postgres_admin).
"""

import dataclasses
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROJECT_DIR, SOCKET_TIMEOUT_SECONDS, free_port, http_request, server_env

import db
import migrate
import seed
import server

GUNICORN = Path(sys.executable).with_name("gunicorn")
HEALTH_BODY = b'{"status":"healthy","version":"1.0.0"}'
SHUTDOWN_DEADLINE_SECONDS = 30   # README: SIGTERM lets requests in flight finish, this long at most
PROMPT_EXIT_SECONDS = 5          # with nothing left in flight, stopping takes far less
IDLE_CLOSE_SECONDS = 2.5         # half httpserver's 5 s keep-alive timeout: "at once", with slack
COMMAND_TIMEOUT_SECONDS = 30
# `python -c DEV_SECRET_SHIM VAR_DIR ARGS...` runs server.main(ARGS) with config's var/
# pointed at VAR_DIR, so the development secret is made there and not in the project.
DEV_SECRET_SHIM = """\
import sys
import config
config.VAR_DIR = config.Path(sys.argv[1])
config.DEV_SECRET_FILE = config.VAR_DIR / "secret_key"
import server
sys.exit(server.main(sys.argv[2:]))
"""


# -- helpers -----------------------------------------------------------------------------

def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path}/shop.db"   # tmp_path is absolute: sqlite:////tmp/...


def server_command(*arguments):
    return [sys.executable, "server.py", *arguments]


def run(command, env, timeout=COMMAND_TIMEOUT_SECONDS):
    """Run a command to completion in the project directory; the child is killed on timeout."""
    return subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)  # the tests read the exit status


def expected_migration_versions():
    """The versions a fresh database receives: the baseline, then migrations/NNNN_*.sql."""
    numbered = sorted(migrate.MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    return [migrate.BASELINE_VERSION] + [int(path.name[:4]) for path in numbered]


def applied_versions(database_url):
    database = db.open_database(database_url)
    try:
        return migrate.applied_versions(database)
    finally:
        database.close()


def log_records(stdout):
    """Every stdout line parsed as JSON: a line that is not JSON fails the test here."""
    return [json.loads(line) for line in stdout.splitlines()]


def access_log(stdout):
    """(request_id, method, route, status) of each "request" record, checking its other fields."""
    entries = []
    for record in log_records(stdout):
        if record["event"] != "request":
            continue
        assert record["level"] == "info"
        assert isinstance(record["duration_ms"], (int, float)) and record["duration_ms"] >= 0, record
        entries.append((record["request_id"], record["method"], record["route"], record["status"]))
    return entries


def assert_no_version_in_server_header(headers):
    server_header = headers.get_all("Server")
    assert len(server_header) == 1
    assert re.search(r"[0-9]", server_header[0]) is None, server_header


class RawClient:
    """A raw socket with a small HTTP/1.1 response reader, to send a request in pieces."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_SECONDS)
        self.reader = self.sock.makefile("rb")

    def send(self, data):
        self.sock.sendall(data)

    def read_response(self):
        """(status, {lowercase name: value}, body), the body framed by Content-Length."""
        status = int(self.reader.readline().split(b" ")[1])
        headers = {}
        while (line := self.reader.readline()) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.lower()] = value.strip()
        return status, headers, self.reader.read(int(headers["content-length"]))

    def closed_by_server(self, within=SOCKET_TIMEOUT_SECONDS):
        """True when the server closes its end within `within` seconds (a timeout raises instead)."""
        self.sock.settimeout(within)
        return self.reader.read(1) == b""

    def close(self):
        self.reader.close()
        self.sock.close()


# -- python server.py migrate / seed -----------------------------------------------------

@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_migrate_applies_every_version_once_then_reports_up_to_date(engine, database_url):
    env = server_env(database_url)
    versions = expected_migration_versions()

    first = run(server_command("migrate"), env)
    assert (first.returncode, first.stdout, first.stderr) == (0, f"applied migrations: {versions}\n", "")
    again = run(server_command("migrate"), env)
    assert (again.returncode, again.stdout, again.stderr) == (
        0, "applied migrations: none, the schema is up to date\n", "")
    assert applied_versions(database_url) == versions


def test_seed_adds_items_and_reports_the_new_total(tmp_path):
    env = server_env(sqlite_url(tmp_path))

    first = run(server_command("seed", "--items", "25"), env)
    assert (first.returncode, first.stdout) == (0, "added 25 demo items; the catalogue now holds 25\n")
    second = run(server_command("seed", "--items", "5"), env)
    assert (second.returncode, second.stdout) == (0, "added 5 demo items; the catalogue now holds 30\n")


@pytest.mark.parametrize("count, message", [
    ("0", "argument --items: must be a whole number from 1 to 1000000"),
    ("abc", "argument --items: must be a whole number from 1 to 1000000"),
    ("1000001", "argument --items: must be a whole number from 1 to 1000000"),
])
def test_seed_refuses_a_bad_count_with_a_usage_error(tmp_path, count, message):
    result = run(server_command("seed", "--items", count), server_env(sqlite_url(tmp_path)))
    assert result.returncode == 2   # argparse's usage error
    assert result.stdout == ""
    assert result.stderr.startswith("usage: server.py seed ")
    assert f"server.py seed: error: {message}" in result.stderr
    assert not (tmp_path / "shop.db").exists()   # refused before touching the database


# -- python server.py (the stdlib HTTP server) -------------------------------------------

def test_serve_migrates_a_fresh_file_prints_how_to_try_it_and_logs_every_request(tmp_path, start_program):
    database_url = sqlite_url(tmp_path)
    port = free_port()
    server = start_program(server_command("--port", str(port)), server_env(database_url)).wait_for_url()
    url = f"http://127.0.0.1:{port}"
    assert server.url == url
    assert server.stderr().splitlines()[:2] == [
        f"Serving the shop on {url}  (Ctrl-C stops)",
        f"Try: curl {url}/v1/items?limit=3",
    ]

    # The curl it suggests works, on a catalogue that migrations created and left empty.
    status, headers, body = http_request(port, "/v1/items?limit=3", headers={"X-Request-ID": "try-it"})
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert json.loads(body)["data"] == []
    assert_no_version_in_server_header(headers)

    status, headers, body = http_request(port, "/health", headers={"X-Request-ID": "health"})
    assert (status, headers["Content-Type"], body) == (200, "application/json", HEALTH_BODY)
    assert_no_version_in_server_header(headers)

    status, headers, body = http_request(port, "/v1/items/1", headers={"X-Request-ID": "no-item"})
    assert (status, headers["Content-Type"]) == (404, "application/problem+json")
    assert json.loads(body)["detail"] == "item 1 does not exist"
    assert_no_version_in_server_header(headers)

    status, headers, _ = http_request(port, "/nowhere", headers={"X-Request-ID": "no-route"})
    assert status == 404
    assert_no_version_in_server_header(headers)

    server.send_signal(signal.SIGTERM)
    assert server.wait(SHUTDOWN_DEADLINE_SECONDS) == 0
    records = log_records(server.stdout())
    assert records[0]["event"] == "started"
    assert (records[0]["url"], records[0]["database"]) == (url, "sqlite")
    assert records[0]["inline_requests"] is True  # SQLite and no Redis: see test_inline_requests
    assert records[-1]["event"] == "stopped"
    assert access_log(server.stdout()) == [
        ("try-it", "GET", "/v1/items", 200),
        ("health", "GET", "/health", 200),
        ("no-item", "GET", "/v1/items/{id:int}", 404),
        ("no-route", "GET", None, 404),
    ]
    assert applied_versions(database_url) == expected_migration_versions()


def test_port_variable_is_used_without_a_port_flag(tmp_path, start_program):
    port = free_port()
    server = start_program(server_command(), server_env(sqlite_url(tmp_path), PORT=str(port))).wait_for_url()
    assert server.url == f"http://127.0.0.1:{port}"
    assert http_request(port, "/health")[::2] == (200, HEALTH_BODY)


def test_host_and_port_flags_win_over_the_environment(tmp_path, start_program):
    flag_port, variable_port = free_port(), free_port()
    env = server_env(sqlite_url(tmp_path), HOST="localhost", PORT=str(variable_port))
    server = start_program(server_command("--host", "127.0.0.1", "--port", str(flag_port)), env).wait_for_url()
    assert server.url == f"http://127.0.0.1:{flag_port}"
    assert http_request(flag_port, "/health")[::2] == (200, HEALTH_BODY)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", variable_port), timeout=SOCKET_TIMEOUT_SECONDS)



def test_a_request_the_http_server_refuses_itself_is_logged_too(tmp_path, start_program):
    """httpserver answers a malformed request itself; the app never sees it, so on_reject logs it."""
    server = start_program(server_command("--port", str(free_port())), server_env(sqlite_url(tmp_path))).wait_for_url()
    client = RawClient(server.port)
    client.send(b"GET /health HTTP/1.1\r\nHost: shop\r\nContent-Length: abc\r\n\r\n")
    status, headers, body = client.read_response()
    client.close()
    assert status == 400
    assert headers["x-content-type-options"] == "nosniff"
    assert json.loads(body)["request_id"] == headers["x-request-id"]

    server.send_signal(signal.SIGTERM)
    assert server.wait(SHUTDOWN_DEADLINE_SECONDS) == 0
    rejected = [record for record in log_records(server.stdout()) if record["event"] == "request rejected"]
    assert rejected == [{
        "time": rejected[0]["time"], "level": "warning", "event": "request rejected", "status": 400,
        "detail": "Content-Length must be a single decimal number", "client": "127.0.0.1",
        "request_id": headers["x-request-id"],
    }]


@pytest.mark.parametrize("engine", ["postgresql"])
def test_serve_on_postgresql(engine, database_url, start_program):
    env = server_env(database_url)
    seeded = run(server_command("seed", "--items", "3"), env)
    assert (seeded.returncode, seeded.stdout) == (0, "added 3 demo items; the catalogue now holds 3\n")
    server = start_program(server_command("--port", str(free_port())), env).wait_for_url()

    status, _, body = http_request(server.port, "/v1/items")
    assert status == 200
    items = json.loads(body)["data"]
    assert [(item["id"], item["name"]) for item in items] == [
        (number, item["name"]) for number, item in enumerate(seed.demo_items(3), start=1)]
    status, _, body = http_request(server.port, "/ready")
    assert (status, json.loads(body)) == (200, {"status": "ready", "checks": {"database": "ok", "migrations": "ok"}})

    server.send_signal(signal.SIGTERM)
    assert server.wait(SHUTDOWN_DEADLINE_SECONDS) == 0
    assert log_records(server.stdout())[0]["database"] == "postgresql"


# -- shutdown ----------------------------------------------------------------------------

def test_sigterm_finishes_the_request_in_flight_refuses_new_ones_and_exits_0(tmp_path, start_program):
    env = server_env(sqlite_url(tmp_path))
    assert run(server_command("seed", "--items", "3"), env).returncode == 0
    server = start_program(server_command("--port", str(free_port())), env).wait_for_url()
    # Two keep-alive connections, each served once, so a worker owns each of them.
    idle, in_flight = RawClient(server.port), RawClient(server.port)
    for name, client in (("idle", idle), ("in-flight", in_flight)):
        client.send(f"GET /v1/items/1 HTTP/1.1\r\nHost: shop\r\nX-Request-ID: {name}-get\r\n\r\n".encode())
        status, headers, _ = client.read_response()
        assert status == 200
        assert "connection" not in headers   # HTTP/1.1: the connection stays open
    in_flight.send(b"POST /health HTTP/1.1\r\nHost: shop\r\nX-Request-ID: in-flight-post\r\n"
                   b"Expect: 100-continue\r\nContent-Length: 10\r\n\r\n")
    # The server sends 100 Continue once it has the head and waits for the body (RFC 9110
    # §10.1.1): from then on this request is in flight, not a connection waiting for one.
    assert in_flight.reader.readline() == b"HTTP/1.1 100 Continue\r\n"
    assert in_flight.reader.readline() == b"\r\n"
    in_flight.send(b"01234")

    server.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    # Shutdown has begun: idle keep-alive connections close at once, not after their idle timeout.
    assert idle.closed_by_server(within=IDLE_CLOSE_SECONDS)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=SOCKET_TIMEOUT_SECONDS)
    in_flight.send(b"56789")
    status, headers, body = in_flight.read_response()
    assert status == 405
    assert headers["allow"] == "GET, HEAD, OPTIONS"
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 405
    assert in_flight.closed_by_server()

    assert server.wait(SHUTDOWN_DEADLINE_SECONDS) == 0
    assert time.monotonic() - signalled < PROMPT_EXIT_SECONDS
    # No route matches POST /health, so its log line has none, like an unknown path's.
    assert access_log(server.stdout()) == [("idle-get", "GET", "/v1/items/{id:int}", 200),
                                           ("in-flight-get", "GET", "/v1/items/{id:int}", 200),
                                           ("in-flight-post", "POST", None, 405)]
    assert log_records(server.stdout())[-1]["event"] == "stopped"
    assert "Traceback" not in server.stderr()
    idle.close()
    in_flight.close()


def test_sigint_stops_the_server_with_exit_code_0(tmp_path, start_program):
    server = start_program(server_command("--port", str(free_port())), server_env(sqlite_url(tmp_path))).wait_for_url()
    assert http_request(server.port, "/health")[0] == 200

    server.send_signal(signal.SIGINT)
    assert server.wait(SHUTDOWN_DEADLINE_SECONDS) == 0
    assert log_records(server.stdout())[-1]["event"] == "stopped"
    assert "Traceback" not in server.stderr()


# -- configuration errors ----------------------------------------------------------------

@pytest.mark.parametrize("app_env, secret_key, message", [
    ("production", None, "configuration error: SECRET_KEY is required when APP_ENV=production\n"),
    ("test", "tenbytekey", "configuration error: SECRET_KEY and its fallbacks must be at least 32 bytes\n"),
    ("production", "tenbytekey", "configuration error: SECRET_KEY and its fallbacks must be at least 32 bytes\n"),
])
def test_an_unusable_secret_key_stops_the_start_with_a_clear_message(tmp_path, app_env, secret_key, message):
    env = server_env(sqlite_url(tmp_path), APP_ENV=app_env, SECRET_KEY=secret_key)
    result = run(server_command("--port", str(free_port())), env, timeout=10)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", message)
    if secret_key:
        assert secret_key not in result.stdout + result.stderr


# A Python without psycopg: the import is made to fail, the way it does where the package
# was never installed.
WITHOUT_PSYCOPG = (
    "import runpy, sys\n"
    "sys.modules['psycopg'] = None\n"
    "sys.argv = ['server.py'] + sys.argv[1:]\n"
    "runpy.run_path('server.py', run_name='__main__')\n"
)


@pytest.mark.parametrize("command", [["migrate"], ["--port", "0"]])
def test_postgresql_without_psycopg_is_one_clear_line_not_a_traceback(command):
    env = server_env("postgresql://postgres@127.0.0.1:5432/test")
    result = run([sys.executable, "-c", WITHOUT_PSYCOPG, *command], env, timeout=10)
    expected = "configuration error: a postgresql:// DATABASE_URL needs psycopg: pip install -r requirements.txt\n"
    assert (result.returncode, result.stdout, result.stderr) == (2, "", expected)


# -- the development secret --------------------------------------------------------------

def test_development_secret_is_made_once_and_survives_a_restart(tmp_path, start_program):
    """APP_ENV=development without SECRET_KEY: a key is written once into var/ and reused,
    so a cursor signed before a restart still works after it. var/ is redirected into
    tmp_path (DEV_SECRET_SHIM); the project's own var/ is never touched."""
    var_dir = tmp_path / "var"
    env = server_env(sqlite_url(tmp_path), APP_ENV="development", SECRET_KEY=None)

    def shim(*arguments):
        return [sys.executable, "-c", DEV_SECRET_SHIM, str(var_dir), *arguments]

    assert run(shim("seed", "--items", "3"), env).returncode == 0
    secret_file = var_dir / "secret_key"
    key = secret_file.read_text()
    assert len(key) >= 32
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert sorted(path.name for path in var_dir.iterdir()) == ["secret_key"]   # no temporary left

    first = start_program(shim("--port", str(free_port())), env).wait_for_url()
    status, _, body = http_request(first.port, "/v1/items?limit=1")
    assert status == 200
    next_link = json.loads(body)["links"]["next"]
    first.send_signal(signal.SIGTERM)
    assert first.wait(SHUTDOWN_DEADLINE_SECONDS) == 0

    second = start_program(shim("--port", str(free_port())), env).wait_for_url()
    status, _, body = http_request(second.port, next_link)
    assert status == 200, body
    assert [item["id"] for item in json.loads(body)["data"]] == [2]
    assert secret_file.read_text() == key


# -- gunicorn server:app -----------------------------------------------------------------

@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_gunicorn_serves_the_same_app_and_logs_each_request(engine, database_url, start_program):
    env = server_env(database_url)
    assert run(server_command("migrate"), env).returncode == 0
    assert run(server_command("seed", "--items", "10"), env).returncode == 0
    port = free_port()
    # --no-control-socket: gunicorn would otherwise create ~/.gunicorn/gunicorn.ctl.
    command = [str(GUNICORN), "--workers", "2", "--bind", f"127.0.0.1:{port}", "--no-control-socket", "server:app"]
    gunicorn = start_program(command, env).wait_until_accepting(port)

    status, headers, body = http_request(port, "/health", headers={"X-Request-ID": "g-health"})
    assert (status, headers["Content-Type"], body) == (200, "application/json", HEALTH_BODY)

    status, headers, body = http_request(port, "/v1/items/3", headers={"X-Request-ID": "g-item"})
    assert (status, headers["ETag"]) == (200, '"item-3-v1"')
    item = json.loads(body)
    assert (item["id"], item["name"]) == (3, seed.demo_items(3)[2]["name"])

    status, headers, body = http_request(port, "/v1/items/999", headers={"X-Request-ID": "g-missing"})
    assert (status, headers["Content-Type"]) == (404, "application/problem+json")
    problem = json.loads(body)
    assert (problem["status"], problem["detail"], problem["instance"], problem["request_id"]) == (
        404, "item 999 does not exist", "/v1/items/999", "g-missing")

    status, headers, body = http_request(port, "/v1/items?limit=5", headers={"X-Request-ID": "g-list"})
    assert status == 200
    page = json.loads(body)
    assert [item["id"] for item in page["data"]] == [1, 2, 3, 4, 5]
    assert headers["Link"] == (f'<{page["links"]["first"]}>; rel="first", '
                               f'<{page["links"]["next"]}>; rel="next"')

    gunicorn.send_signal(signal.SIGTERM)
    assert gunicorn.wait(SHUTDOWN_DEADLINE_SECONDS) == 0
    assert sorted(access_log(gunicorn.stdout())) == sorted([
        ("g-health", "GET", "/health", 200),
        ("g-item", "GET", "/v1/items/{id:int}", 200),
        ("g-missing", "GET", "/v1/items/{id:int}", 404),
        ("g-list", "GET", "/v1/items", 200),
    ])


def test_a_port_already_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(server_command("--port", str(port)), server_env(sqlite_url(tmp_path)))
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == f"cannot listen on 127.0.0.1:{port}: Address already in use"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("variable", ["SECRET_KEY", "SECRET_KEY_FALLBACKS"])
def test_a_secret_key_that_is_not_utf8_is_a_configuration_error_not_a_traceback(tmp_path, variable):
    not_utf8 = "k" * 40 + "\udcff"  # the byte 0xff, as Python keeps an undecodable one
    env = server_env(sqlite_url(tmp_path), **{variable: not_utf8})
    result = run(server_command("migrate"), env, timeout=10)
    expected = "configuration error: SECRET_KEY and its fallbacks must be UTF-8 text\n"
    assert (result.returncode, result.stdout, result.stderr) == (2, "", expected)


def test_libraries_log_as_json_lines_on_stdout_not_plain_text_on_stderr(start_program):
    """psycopg_pool reports each failed connection through Python's logging, which would print
    plain text on stderr; the server routes it into its own JSON log instead."""
    env = server_env("postgresql://postgres@127.0.0.1:1/test", APP_ENV="production", DATABASE_TIMEOUT_SECONDS="1")
    server = start_program(server_command("--port", str(free_port())), env).wait_for_url()
    status, _, _ = http_request(server.port, "/ready")
    assert status == 503
    server.send_signal(signal.SIGTERM)
    assert server.wait(SHUTDOWN_DEADLINE_SECONDS) == 0
    records = log_records(server.stdout())  # every stdout line is one JSON object
    assert any(record["event"] == "library" and record["logger"].startswith("psycopg") for record in records)
    # stderr holds the two lines the server prints for a person, and nothing else.
    assert [line.split(" ")[0] for line in server.stderr().splitlines()] == ["Serving", "Try:"]


@pytest.mark.parametrize("method, path, lane", [
    ("GET", "/health", "liveness"),
    ("GET", "/ready", "readiness"),
    ("GET", "/metrics", "metrics"),
    ("POST", "/v1/auth/login", "passwords"),
    ("POST", "/v1/auth/%6Cogin", "passwords"),   # the router decodes it: so does the lane
    ("POST", "/v1/auth/register", "passwords"),
    ("POST", "/v1/auth/session", "passwords"),
    ("PATCH", "/v1/users/me", "passwords"),
    ("GET", "/v1/users/me", None),
    ("GET", "/v1/items/1", None),
    ("POST", "/v1/auth/refresh", None),
])
def test_each_request_runs_in_its_lane(method, path, lane):
    assert server.lane_for(method, path) == lane


@pytest.mark.parametrize("method, lane, inline", [
    ("GET", "default", True), ("HEAD", "default", True), ("OPTIONS", "default", True),
    ("GET", "liveness", True),
    ("POST", "default", False), ("PATCH", "default", False), ("DELETE", "default", False),  # wait for the disk
    ("GET", "readiness", False), ("GET", "metrics", False), ("GET", "events", False),
    ("POST", "passwords", False),
])
def test_which_requests_the_event_loop_runs_itself(method, lane, inline):
    assert server.inline_for(method, lane) is inline


@pytest.mark.parametrize("engine, redis_url, inline", [
    ("sqlite", None, True), ("sqlite", "redis://127.0.0.1:6379/0", False), ("postgresql", None, False),
])
def test_inline_requests_only_when_every_request_is_cpu_work_in_the_process(settings, engine, redis_url, inline):
    chosen = server.inline_requests(dataclasses.replace(settings, redis_url=redis_url), engine)
    assert (chosen is server.inline_for) is inline


def test_the_password_lane_has_a_thread_per_hash_and_as_many_waiting(settings):
    lanes = {lane.name: lane for lane in server.server_lanes(dataclasses.replace(settings, password_hash_threads=3))}
    assert (lanes["passwords"].threads, lanes["passwords"].max_waiting) == (3, 3)
    assert (lanes["liveness"].threads, lanes["readiness"].threads, lanes["metrics"].threads) == (2, 2, 2)
