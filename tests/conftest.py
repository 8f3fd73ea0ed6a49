"""Fixtures shared by the suite: a fresh database per test and per engine, the app, and clients.

    def test_something(client):          # runs 4 times: {sqlite, postgresql} x {wsgi, live}
        response = client.get("/v1/items/1")
        assert response.status == 200

- `engine`: "sqlite" (a file in the test's tmp_path) or "postgresql" (a schema of its own
  in the `test` database, dropped afterwards). PostgreSQL tests are skipped when no server
  answers, except under CI=true, where they fail instead: CI must prove both engines.
- `client`: the app called in-process through `wsgiref.validate.validator` (which checks
  every PEP 3333 rule on every call), or over a real socket to `httpserver.HTTPServer`.
"""

import http.client
import io
import json
import os
import threading
import uuid
import wsgiref.util
import wsgiref.validate
from urllib.parse import urlsplit

import pytest

import config
import db
import seed
import server
import web
from observe import JSONLogger

POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
TEST_SECRET_KEY = "test-secret-key-that-is-at-least-32-bytes-long"
TEST_PASSWORD = "tea for two on a quiet afternoon"
TEST_ITERATIONS = 1_000  # PBKDF2 rounds in tests: fast; production uses 600,000
IN_CI = os.environ.get("CI") == "true"
_postgres_checked = {}


def postgres_admin():
    """A psycopg connection for creating and dropping test schemas; skip or fail when absent."""
    psycopg = pytest.importorskip("psycopg") if not IN_CI else __import__("psycopg")
    try:
        return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        message = f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {error}"
        if IN_CI:
            pytest.fail(message + " (CI=true requires it)")
        pytest.skip(message)


def postgres_url_for_schema(schema):
    """The admin URL with `search_path` set, so every connection of the pool uses `schema`."""
    separator = "&" if "?" in POSTGRES_ADMIN_URL else "?"
    return f"{POSTGRES_ADMIN_URL}{separator}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request):
    return request.param


@pytest.fixture
def database_url(engine, tmp_path):
    if engine == "sqlite":
        yield f"sqlite:///{tmp_path}/shop.db"
        return
    schema = "test_" + uuid.uuid4().hex[:12]
    with postgres_admin() as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield postgres_url_for_schema(schema)
    finally:
        with postgres_admin() as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def settings(database_url):
    return config.load_settings({
        "APP_ENV": "test",
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "PBKDF2_ITERATIONS": str(TEST_ITERATIONS),
    })


@pytest.fixture
def database(settings):
    """A migrated, empty database, closed after the test."""
    database = db.open_database(settings.database_url, timeout_seconds=settings.database_timeout_seconds)
    db.migrate(database)
    yield database
    database.close()


@pytest.fixture
def seeded(database):
    """The database with 30 demo items (ids 1..30)."""
    seed.seed_items(database, 30)
    return database


@pytest.fixture
def users(database, settings):
    """Make accounts and their credentials: users.create(), users.admin(), users.headers(user)."""
    return UserFactory(database, settings)


class UserFactory:
    def __init__(self, database, settings):
        self.database, self.settings, self.count = database, settings, 0

    def create(self, email=None, *, role="user", password=TEST_PASSWORD):
        """A new account (the user dict, as the API shows it)."""
        import accounts

        self.count += 1
        email = email or f"user{self.count}@example.com"
        return accounts.register(self.database, email, password, iterations=TEST_ITERATIONS, role=role)

    def admin(self, email=None):
        return self.create(email or f"admin{self.count + 1}@example.com", role="admin")

    def token(self, user):
        import auth

        return auth.issue_access_token(user["id"], user["role"], self.settings.secret_keys)

    def headers(self, user):
        """Authorization headers with a fresh access token for `user`."""
        return {"Authorization": f"Bearer {self.token(user)}"}


@pytest.fixture
def log_stream():
    return io.StringIO()


@pytest.fixture
def logger(log_stream):
    logger = JSONLogger(stream=log_stream)
    yield logger
    logger.flush()


@pytest.fixture
def app(settings, database, logger):
    return server.create_app(settings, database=database, logger=logger)


@pytest.fixture
def wsgi_client(app):
    return WSGIClient(app)


@pytest.fixture
def live_server(app):
    """The app behind a real HTTPServer on a free port; yields its base URL."""
    with running_server(app) as base_url:
        yield base_url


@pytest.fixture
def live_client(live_server):
    return LiveClient(live_server)


@pytest.fixture(params=["wsgi", "live"])
def client(request, app):
    """The same API tests in-process and over a socket."""
    if request.param == "wsgi":
        yield WSGIClient(app)
    else:
        with running_server(app) as base_url:
            yield LiveClient(base_url)


def assert_problem(response, status, detail=None, *, errors=None):
    """An RFC 9457 problem with this status (and detail, and field errors, when given)."""
    assert response.status == status, response
    assert response.header("Content-Type") == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["title"] == web.REASON_PHRASES[status]
    assert problem["request_id"] == response.header("X-Request-ID")
    if detail is not None:
        assert problem["detail"] == detail
    if errors is not None:
        assert problem["errors"] == errors
    return problem


def send_at_once(base_url, requests):
    """Send `requests` [(method, path, headers, body bytes or None)] at the same moment, each
    on its own connection to a live server; return their statuses, in order. For races."""
    return [response.status for response in responses_at_once(base_url, requests)]


def responses_at_once(base_url, requests):
    """Like send_at_once, but return the whole responses (status, headers, body)."""
    parts = urlsplit(base_url)
    barrier = threading.Barrier(len(requests))
    responses = [None] * len(requests)

    def send(position, method, path, headers, body):
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            barrier.wait(timeout=10)
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            responses[position] = TestResponse(response.status, response.getheaders(), response.read())
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(position, *request)) for position, request in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert None not in responses, "a request got no answer"
    return responses


class RecordingConnection:
    """Passes calls through to a db.Connection and remembers the last SQL and parameters
    (for EXPLAIN tests: run a sql_*.py function, then explain what it ran)."""

    def __init__(self, connection):
        self.connection = connection
        self.engine = connection.engine
        self.for_update = connection.for_update
        self.last = None

    def execute(self, sql, params=None):
        self.last = (sql, params)
        return self.connection.execute(sql, params)

    def fetch_one(self, sql, params=None):
        self.last = (sql, params)
        return self.connection.fetch_one(sql, params)

    def fetch_all(self, sql, params=None):
        self.last = (sql, params)
        return self.connection.fetch_all(sql, params)


class running_server:
    """Context manager: serve `app` on 127.0.0.1:<free port> in a thread."""

    def __init__(self, app, **options):
        from httpserver import HTTPServer

        self.server = HTTPServer(app, "127.0.0.1", 0, **options)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc_info):
        self.server.request_shutdown()
        self.thread.join(10)


class TestResponse:
    __test__ = False  # not a test class, despite the name

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # list of (name, value)
        self.body = body

    def header(self, name):
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        return ", ".join(values) if values else None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<TestResponse {self.status} {self.body[:200]!r}>"


class _Client:
    def get(self, url, **options):
        return self.request("GET", url, **options)

    def head(self, url, **options):
        return self.request("HEAD", url, **options)

    def post(self, url, **options):
        return self.request("POST", url, **options)

    @staticmethod
    def _body(json_body, body, headers):
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        return body or b"", headers


class WSGIClient(_Client):
    """Calls the app in-process, through wsgiref.validate.validator."""

    def __init__(self, app):
        self.app = wsgiref.validate.validator(app)

    def request(self, method, url, *, json=None, body=None, headers=None):
        body, headers = self._body(json, body, headers)
        parts = urlsplit(url)
        environ = {}
        wsgiref.util.setup_testing_defaults(environ)
        environ.update({
            "REQUEST_METHOD": method,
            # PEP 3333: PATH_INFO is the percent-decoded path, as latin-1 text.
            "PATH_INFO": _unquote_to_latin1(parts.path),
            "QUERY_STRING": parts.query,
            "CONTENT_LENGTH": str(len(body)) if body else "",
            "wsgi.input": io.BytesIO(body),
            "REMOTE_ADDR": "127.0.0.1",
        })
        for name, value in headers.items():
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
            else:
                environ["HTTP_" + key] = value
        captured = {}

        def start_response(status, response_headers, exc_info=None):
            captured["status"] = int(status.split()[0])
            captured["headers"] = response_headers

        result = self.app(environ, start_response)
        try:
            response_body = b"".join(result)
        finally:
            result.close()
        return TestResponse(captured["status"], captured["headers"], response_body)


class LiveClient(_Client):
    """Talks HTTP/1.1 to a real server, keeping one connection alive between requests."""

    def __init__(self, base_url):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        self.connection = None

    def request(self, method, url, *, json=None, body=None, headers=None):
        body, headers = self._body(json, body, headers)
        for attempt in (1, 2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                self.connection.request(method, url, body=body or None, headers=headers)
                response = self.connection.getresponse()
                payload = response.read()
                break
            except (ConnectionError, http.client.RemoteDisconnected):
                # The server closed an idle keep-alive connection: reconnect once.
                self.connection.close()
                self.connection = None
                if attempt == 2:
                    raise
        if response.getheader("Connection", "").lower() == "close":
            self.connection.close()
            self.connection = None
        return TestResponse(response.status, response.getheaders(), payload)


def _unquote_to_latin1(path):
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(path).decode("latin-1")
