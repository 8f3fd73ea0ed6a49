"""Fixtures and helpers shared by the suite: a fresh database per test and per engine, the
app, clients, accounts, and the few helpers more than one test file needs.

    def test_something(client):          # runs 4 times: {sqlite, postgresql} x {wsgi, live}
        response = client.get("/v1/items/1")
        assert response.status == 200

- `engine`: "sqlite" (a file in the test's tmp_path) or "postgresql" (a schema of its own
  in the `test` database). PostgreSQL tests are skipped when no server answers, except
  under CI=true, where they fail instead: CI must prove both engines.
- `database`: migrated and empty. Migrating costs a tenth of a second on PostgreSQL, so a
  test gets a schema migrated once and emptied after each earlier test that used it; a
  test that asks only for `database_url` or `settings` gets a brand-new, empty one.
- `client`: the app called in-process through `wsgiref.validate.validator` (which checks
  every PEP 3333 rule on every call), or over a real socket to `httpserver.HTTPServer`.
- `checker`: one seeded SQLite app per test module, for requests refused before any SQL.
"""

import base64
import contextlib
import hashlib
import hmac
import http.client
import http.server
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
import wsgiref.util
import wsgiref.validate
from collections import namedtuple
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit

import pytest

import config
import db
import migrate
import seed
import server
import sql_items
import web
from observe import JSONLogger

POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_TEST_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_SECRET_KEY = "test-secret-key-that-is-at-least-32-bytes-long"
TEST_PASSWORD = "tea for two on a quiet afternoon"
TEST_ITERATIONS = 1_000  # PBKDF2 rounds in tests: fast; production uses 600,000
IN_CI = os.environ.get("CI") == "true"
# Emptying a reused schema waits at most this long for a lock a stray connection still holds;
# past it the schema is dropped instead of reused.
EMPTYING_LOCK_TIMEOUT = "2s"
PROJECT_DIR = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_SECONDS = 15  # how long a server started in another process may take to serve
SOCKET_TIMEOUT_SECONDS = 5  # a request to such a server fails rather than hangs past this
POLL_SECONDS = 0.05  # between two looks at something another process or thread will do
# Variables the shop (or gunicorn) reads: dropped from the environment a program started by
# a test inherits, so that each test states the ones it means.
SETTINGS_VARIABLES = ("APP_ENV", "DATABASE_URL", "SECRET_KEY", "SECRET_KEY_FALLBACKS", "HOST", "PORT", "THREADS",
                      "ACCESS_LOG", "DATABASE_TIMEOUT_SECONDS", "PBKDF2_ITERATIONS", "PASSWORD_HASH_THREADS",
                      "SESSION_COOKIE_SECURE", "SESSION_TTL_SECONDS", "SESSION_IDLE_SECONDS", "REFRESH_REUSE_SECONDS",
                      "REFRESH_FAMILY_MAX_SECONDS", "TEST_CLOCK_OFFSET_SECONDS", "CORS_ORIGINS", "REDIS_URL",
                      "REDIS_PREFIX", "CACHE", "CACHE_TTL_SECONDS", "CACHE_MAX_ENTRIES", "RATE_LIMITS",
                      "TRUSTED_PROXIES", "WORKER", "WORKER_THREADS", "WORKER_POLL_SECONDS", "JOB_LEASE_SECONDS",
                      "JOB_BACKOFF_BASE_SECONDS", "JOB_BACKOFF_CAP_SECONDS", "JOB_RETENTION_SECONDS", "SMTP_URL",
                      "MAIL_FROM", "MAIL_OUTBOX_DIR", "EXPORT_DIR", "EXPORT_MAX_ROWS", "MAX_EVENT_STREAMS",
                      "EVENT_STREAMS_PER_USER", "EVENT_STREAMS_PER_ADDRESS", "EVENT_HEARTBEAT_SECONDS",
                      "EVENT_POLL_SECONDS", "EVENT_RETENTION_SECONDS", "WEBHOOK_TIMEOUT_SECONDS",
                      "WEBHOOK_ALLOW_PRIVATE", "TLS_CERT_FILE", "TLS_KEY_FILE", "METRICS_TOKEN", "METRICS_DIR",
                      "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY")
Checker = namedtuple("Checker", "client database admin customer")
# Not a test module: schemathesis loads it in its own process (schemathesis.toml). Imported
# by --doctest-modules, it would need schemathesis where none is installed.
collect_ignore = ["schemathesis_hooks.py"]


# -- engines and databases -----------------------------------------------------------------

def unavailable(message):
    """A tool or service a test needs is missing: skip with a one-line reason on a student's
    machine, but fail under CI=true, where everything the suite needs must be there."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true requires it)")
    pytest.skip(message)


@pytest.fixture
def connect():
    """connect(server, receive_buffer=None): a raw HTTP/1.1 client of a test HTTPServer
    (test_httpserver.Client), closed after the test. For the three test_httpserver* files."""
    from test_httpserver import Client  # a test module's helper: imported when used
    clients = []

    def connect(server, receive_buffer=None):
        client = Client(server.server_address, receive_buffer)
        clients.append(client)
        return client
    yield connect
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def chromium():
    """The path of Debian's Chromium, for the tests that drive a real browser headless
    (test_cors_browser.py, test_docs_browser.py)."""
    path = shutil.which("chromium")
    if path is None:
        unavailable("Chromium is not installed (apt-get install chromium)")
    return path


def postgres_admin():
    """A psycopg connection for creating and dropping test schemas; skip or fail when absent."""
    psycopg = pytest.importorskip("psycopg") if not IN_CI else __import__("psycopg")
    try:
        return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        unavailable(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {error}")


def postgres_url_for_schema(schema):
    """The admin URL with `search_path` set, so every connection of the pool uses `schema`."""
    separator = "&" if "?" in POSTGRES_ADMIN_URL else "?"
    return f"{POSTGRES_ADMIN_URL}{separator}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request):
    return request.param


@pytest.fixture
def database_url(request, engine, tmp_path):
    """A new, empty database; already migrated when the test also asks for `database`."""
    migrated = "database" in request.fixturenames
    if engine == "sqlite":
        path = tmp_path / "shop.db"
        if migrated:
            shutil.copyfile(request.getfixturevalue("migrated_sqlite_file"), path)
        yield f"sqlite:///{path}"
        return
    schemas = request.getfixturevalue("migrated_schemas") if migrated else None
    schema = schemas.take() if migrated else _create_schema()
    try:
        yield postgres_url_for_schema(schema)
    finally:
        if migrated:
            schemas.give_back(schema)
        else:
            _drop_schema(schema)


# -- Redis ---------------------------------------------------------------------------------

def require_redis():
    """A redis-py client of REDIS_TEST_URL; skip when Redis does not answer (fail under CI)."""
    redis = pytest.importorskip("redis") if not IN_CI else __import__("redis")
    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=1, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        unavailable(f"Redis is not reachable at {REDIS_TEST_URL}: {error}")
    return client


@pytest.fixture
def redis_prefix():
    """A key prefix of this test's own on the test Redis; every key under it is deleted after."""
    client = require_redis()
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["memory", "redis"])
def backend(request):
    """Run a test with memory only, and with Redis: the settings' REDIS_URL and REDIS_PREFIX."""
    if request.param == "memory":
        return {}
    return {"REDIS_URL": REDIS_TEST_URL, "REDIS_PREFIX": request.getfixturevalue("redis_prefix")}


def settings_with(settings, **environment):
    """Test settings for the database of `settings`, with more of the environment set:
    settings_with(settings, CACHE="off"), settings_with(settings, **backend)."""
    return config.load_settings({
        "APP_ENV": "test",
        "DATABASE_URL": settings.database_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "PBKDF2_ITERATIONS": str(TEST_ITERATIONS),
        "MAIL_OUTBOX_DIR": str(settings.mail_outbox_dir),
        "EXPORT_DIR": str(settings.export_dir),
        **environment,
    })


@pytest.fixture
def make_app(settings, database, logger):
    """make_app(**environment): an app on the test's database with these settings and no rate
    limits; apps made with the same REDIS_PREFIX share one cache, like processes of one gunicorn."""
    apps = []

    def make(**environment):
        apps.append(server.create_app(settings_with(settings, RATE_LIMITS="off", **environment),
                                      database=database, logger=logger))
        return apps[-1]

    yield make
    for app in apps:
        if app.services.redis is not None:
            app.services.redis.close()


@pytest.fixture
def settings(request, database_url, tmp_path):
    """The test's settings: as shipped, rate limits included, but for the database, the key
    and cheap hashing. A test that must send more than one client may (twenty refreshes at
    once, a table of bad bodies to one login route) says so: @pytest.mark.no_rate_limits."""
    environ = {
        "APP_ENV": "test",
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "PBKDF2_ITERATIONS": str(TEST_ITERATIONS),
        "MAIL_OUTBOX_DIR": str(tmp_path / "outbox"),  # never the project's var/outbox
        "EXPORT_DIR": str(tmp_path / "exports"),  # nor its var/exports
    }
    if request.node.get_closest_marker("no_rate_limits") is not None:
        environ["RATE_LIMITS"] = "off"
    return config.load_settings(environ)


@pytest.fixture
def database(settings):
    """A migrated, empty database, closed after the test."""
    database = db.open_database(settings.database_url, timeout_seconds=settings.database_timeout_seconds)
    migrate.migrate(database)  # a no-op: database_url hands out copies and schemas already migrated
    yield database
    database.close()


@pytest.fixture
def seeded(database):
    """The database with 30 demo items (ids 1..30)."""
    seed.seed_items(database, 30)
    return database


@pytest.fixture(scope="session")
def migrated_sqlite_file(tmp_path_factory):
    """A migrated SQLite file to copy: a copy costs a millisecond, migrating ten."""
    path = tmp_path_factory.mktemp("template") / "shop.db"
    template = db.open_database(f"sqlite:///{path}")
    migrate.migrate(template)
    template.close()  # the last connection's close folds the WAL back into the file
    assert not path.with_name("shop.db-wal").exists()
    return path


@pytest.fixture(scope="session")
def migrated_schemas():
    """PostgreSQL schemas migrated once each and emptied for the next test."""
    schemas = MigratedSchemas()
    yield schemas
    schemas.drop_all()


class MigratedSchemas:
    """Migrated schemas for reuse. `take` hands one out; `give_back` empties it (rows deleted,
    identities restarted) and keeps it, unless the test changed its tables, indexes or
    recorded migrations, or emptying fails: then the schema is dropped and the next test
    gets a new one.

    One admin connection serves every give_back: a new connection starts with cold catalog
    caches, and its first catalog queries would cost more than the emptying itself.
    """

    def __init__(self):
        self.idle = []
        self.admin = None
        self.shape = None  # the relations of a freshly migrated schema
        self.versions = None  # the migrations recorded in it
        self.tables = []  # its tables but schema_migrations, newest first
        self.identities = []  # its (table, column) of GENERATED ... AS IDENTITY

    def take(self):
        if self.idle:
            return self.idle.pop()
        schema = _create_schema()
        database = db.open_database(postgres_url_for_schema(schema))
        try:
            migrate.migrate(database)
        finally:
            database.close()
        if self.shape is None:
            self.admin = postgres_admin()
            # pg_class has no index on relnamespace, and on a server where many schemas were
            # made and dropped its table has grown large: read it through an index instead.
            self.admin.execute("SET enable_seqscan = off")
            self.shape = _relations(self.admin, schema)
            self.versions = _migration_versions(self.admin, schema)
            self.tables, self.identities = _tables_and_identities(self.admin, schema)
        return schema

    def give_back(self, schema):
        try:
            # A test may change the tables, or the record of migrations (readiness tests do).
            reusable = (_relations(self.admin, schema) == self.shape
                        and _migration_versions(self.admin, schema) == self.versions)
            if reusable:
                self._empty(schema)
        except Exception:  # anything unusual: a new schema is the safe answer
            reusable = False
        if reusable:
            self.idle.append(schema)
        else:
            _drop_schema(schema)

    def drop_all(self):
        for schema in self.idle:
            _drop_schema(schema)
        if self.admin is not None:
            self.admin.close()

    def _empty(self, schema):
        """Delete every row but the migrations' and restart every identity, in one transaction.

        The newest table first: a table can reference only tables that existed before it, so
        no foreign key is broken on the way. DELETE, not TRUNCATE: on a few rows it is several
        times faster, since TRUNCATE makes new files for every table and index.
        """
        with self.admin.transaction():
            self.admin.execute(f"SET LOCAL lock_timeout = '{EMPTYING_LOCK_TIMEOUT}'")
            for table in self.tables:
                self.admin.execute(f"DELETE FROM {schema}.{table}")
            for table, column in self.identities:
                self.admin.execute(f"ALTER TABLE {schema}.{table} ALTER COLUMN {column} RESTART")


def _create_schema():
    schema = "test_" + uuid.uuid4().hex[:12]
    with postgres_admin() as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    return schema


def _drop_schema(schema):
    with postgres_admin() as admin:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")


def _relations(admin, schema):
    """The names and kinds of every table, index and sequence in `schema`."""
    rows = admin.execute(
        "SELECT relname, relkind FROM pg_class WHERE relnamespace = %s::regnamespace ORDER BY relname", [schema]
    ).fetchall()
    return [tuple(row) for row in rows]


def _migration_versions(admin, schema):
    return [version for (version,) in admin.execute(f"SELECT version FROM {schema}.schema_migrations ORDER BY version")]


def _tables_and_identities(admin, schema):
    """The schema's tables but schema_migrations, newest first (by oid, the order they were
    made in), and its identity columns as (table, column)."""
    tables = admin.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace AND relkind = 'r'"
        " AND relname <> 'schema_migrations' ORDER BY oid DESC", [schema]
    ).fetchall()
    identities = admin.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = %s AND is_identity = 'YES'", [schema]
    ).fetchall()
    return [table for (table,) in tables], [tuple(row) for row in identities]


# -- accounts ------------------------------------------------------------------------------

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


# Every account below comes with the seeded catalogue: a shop with nothing to sell is
# rarely what a test of an admin or a customer wants.

@pytest.fixture
def admin(users, seeded):
    """Authorization headers of an admin."""
    return users.headers(users.admin())


@pytest.fixture
def alice(users, seeded):
    """A customer: (user id, Authorization headers)."""
    user = users.create()
    return user["id"], users.headers(user)


@pytest.fixture
def bob(users, seeded):
    """Another customer: (user id, Authorization headers)."""
    user = users.create()
    return user["id"], users.headers(user)


@pytest.fixture
def customer(alice):
    """Alice's headers, for tests with one customer."""
    return alice[1]


# -- apps and clients ----------------------------------------------------------------------

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
    with client_for(app, request.param) as client:
        yield client


@contextlib.contextmanager
def client_for(app, kind):
    """A client of `app`: "wsgi" calls it in process, "live" serves it on a real socket."""
    if kind == "wsgi":
        yield WSGIClient(app)
    else:
        with running_server(app) as base_url:
            yield LiveClient(base_url)


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    """One seeded SQLite app for the module, called in process, with an admin and a customer:
    for long tables of requests refused before any SQL could run, which would otherwise
    each pay for a database of their own."""
    settings = config.load_settings({
        "APP_ENV": "test",
        "DATABASE_URL": f"sqlite:///{tmp_path_factory.mktemp('checker')}/shop.db",
        "SECRET_KEY": TEST_SECRET_KEY,
        "PBKDF2_ITERATIONS": str(TEST_ITERATIONS),
        "ACCESS_LOG": "0",
        # Shared by a whole module, whose tables of requests would add up to a rate limit.
        "RATE_LIMITS": "off",
    })
    database = db.open_database(settings.database_url)
    migrate.migrate(database)
    seed.seed_items(database, 30)
    users = UserFactory(database, settings)
    app = server.create_app(settings, database=database, logger=JSONLogger(stream=io.StringIO()))
    yield Checker(WSGIClient(app), database, users.headers(users.admin()), users.headers(users.create()))
    database.close()


# -- requests ------------------------------------------------------------------------------

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


def json_headers(headers=(), *, idempotency_key=None, if_match=None):
    """`headers` plus Content-Type: application/json, and an Idempotency-Key or If-Match when given."""
    headers = dict(headers, **{"Content-Type": "application/json"})
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    if if_match is not None:
        headers["If-Match"] = if_match
    return headers


def bodies_that_are_not_json(valid):
    """pytest params (body, Content-Type, status, detail) that an endpoint reading JSON must
    refuse before it looks at a field, built around `valid`, a one-line JSON object the
    endpoint accepts: cut short, empty, its members twice, a NaN, not UTF-8 (each a 400: not
    JSON by RFC 8259, or not what strictjson accepts), and `valid` itself sent as anything
    but application/json (415)."""
    json_type, wrong_type = "application/json", "the body must be sent as Content-Type: application/json"
    cut_short = f"malformed JSON: Expecting ',' delimiter: line 1 column {len(valid)} (char {len(valid) - 1})"
    return [
        pytest.param(valid[:-1], json_type, 400, cut_short, id="cut short"),
        pytest.param(b"", json_type, 400, "malformed JSON: Expecting value: line 1 column 1 (char 0)", id="empty"),
        pytest.param(valid[:-1] + b", " + valid[1:], json_type, 400, "malformed JSON: duplicate key in an object",
                     id="every member twice"),
        pytest.param(valid[:-1] + b', "extra": NaN}', json_type, 400, "malformed JSON: NaN and Infinity are not JSON",
                     id="NaN"),
        pytest.param(b"\xff\xfe", json_type, 400, "the body is not valid UTF-8", id="not UTF-8"),
        pytest.param(valid, "text/plain", 415, wrong_type, id="text/plain"),
        pytest.param(valid, "application/x-www-form-urlencoded", 415, wrong_type, id="form-encoded"),
        pytest.param(valid, None, 415, wrong_type, id="no Content-Type"),
    ]


def login(client, email, password=TEST_PASSWORD):
    """POST /v1/auth/login; the response (200 with a token pair, or the problem)."""
    return client.post("/v1/auth/login", json={"email": email, "password": password})


def bearer(access_token):
    """Authorization headers for an access token (RFC 6750 §2.1)."""
    return {"Authorization": f"Bearer {access_token}"}


def start_session(client, email, password=TEST_PASSWORD):
    """Log a browser in: (headers that carry its cookies, its CSRF token)."""
    response = client.post("/v1/auth/session", json={"email": email, "password": password})
    assert response.status == 200, response
    cookies = [value.split(";")[0] for name, value in response.headers if name.lower() == "set-cookie"]
    return {"Cookie": "; ".join(cookies)}, response.json()["csrf_token"]


def follow_next_links(client, url, headers=None, *, max_pages=100):
    """Every page of a list, from `url` along `links.next` until there is none: their bodies.

    Each page must be a 200 whose `has_more` says whether a next page exists, and whose Link
    header (RFC 8288) carries the same next link, or none on the last page.
    """
    pages = []
    for _ in range(max_pages):
        response = client.get(url, headers=headers)
        assert response.status == 200, response
        pages.append(response.json())
        url = pages[-1]["links"].get("next")
        assert pages[-1]["pagination"]["has_more"] is (url is not None), pages[-1]["pagination"]
        if url is None:
            assert 'rel="next"' not in (response.header("Link") or "")
            return pages
        assert f'<{url}>; rel="next"' in response.header("Link")
    raise AssertionError(f"the next links did not end within {max_pages} pages")


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


# -- job workers ------------------------------------------------------------------------------

@contextlib.contextmanager
def running_worker(database, settings, *, threads=1, logger=None, **options):
    """A worker.Worker running in this process until the block ends, logging to `logger`
    (by default, nowhere a test reads); yields it."""
    from worker import Worker

    worker = Worker(database, settings, logger or JSONLogger(stream=io.StringIO()), threads=threads, **options)
    worker.start()
    try:
        yield worker
    finally:
        worker.request_stop()
        assert worker.join(30), "the worker did not stop"


def wait_for_jobs(database, condition, timeout_seconds=10, **params):
    """Poll until `SELECT count(*) FROM jobs WHERE <condition>` is at least 1... or, with
    `count`, that many; returns the count. Fails after `timeout_seconds`."""
    wanted = params.pop("count", 1)
    deadline = time.monotonic() + timeout_seconds
    while True:
        with database.connection() as connection:
            found = connection.fetch_value(f"SELECT count(*) FROM jobs WHERE {condition}", params)
        if found >= wanted:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{found} jobs, not {wanted}, are {condition} {params} after {timeout_seconds} s")
        time.sleep(POLL_SECONDS / 5)


# -- a real SMTP server ----------------------------------------------------------------------

class SMTPRecorder:
    """An aiosmtpd handler that keeps every message it accepts (`messages`: email.message
    objects, `envelopes`: their senders and recipients). `hold()` makes the next message wait
    in DATA until `release()`; `held` is set once it waits, and a held message is refused with
    421, as if the connection had dropped before the server took it."""

    def __init__(self):
        self.messages, self.envelopes = [], []
        self.held, self._release, self._holding = threading.Event(), threading.Event(), False
        self.received = threading.Condition()

    def hold(self):
        self._holding = True

    def release(self):
        self._release.set()

    async def handle_DATA(self, server, session, envelope):
        import asyncio
        import email
        import email.policy

        if self._holding:
            self._holding = False
            self.held.set()
            await asyncio.get_running_loop().run_in_executor(None, self._release.wait, 30)
            return "421 closing: the message was not taken"
        with self.received:
            self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            self.received.notify_all()
        return "250 OK"

    def wait_for(self, count, timeout=10):
        """Wait until `count` messages have arrived; the messages."""
        with self.received:
            assert self.received.wait_for(lambda: len(self.messages) >= count, timeout), self.messages
            return list(self.messages)


@pytest.fixture
def smtp_server():
    """A real SMTP server (aiosmtpd) on 127.0.0.1: yields (SMTP_URL, SMTPRecorder)."""
    controller_module = pytest.importorskip("aiosmtpd.controller") if not IN_CI else __import__(
        "aiosmtpd.controller").controller
    recorder = SMTPRecorder()
    port = free_port()
    controller = controller_module.Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}", recorder
    finally:
        recorder.release()
        controller.stop()


# -- a real webhook receiver -----------------------------------------------------------------

class WebhookReceiver:
    """An HTTP server on 127.0.0.1 (http.server, in a thread) that keeps every POST it gets:
    `requests`, each (path, {lower-case header name: value}, body bytes). It answers each
    with the next status of `statuses` (then `default_status`); a 3xx carries a Location."""

    def __init__(self):
        self.requests, self.statuses, self.default_status = [], [], 204
        self.received = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.received:
                    receiver.requests.append((self.path, {name.lower(): value for name, value in self.headers.items()},
                                              body))
                    status = receiver.statuses.pop(0) if receiver.statuses else receiver.default_status
                    receiver.received.notify_all()
                self.send_response(status)
                if 300 <= status <= 399:
                    self.send_header("Location", receiver.url + "/redirected")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for(self, count, timeout=10):
        """Wait until `count` requests have arrived; the requests."""
        with self.received:
            assert self.received.wait_for(lambda: len(self.requests) >= count, timeout), self.requests
            return list(self.requests)


@pytest.fixture
def webhook_receiver():
    receiver = WebhookReceiver()
    receiver.thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture
def silent_listener():
    """A socket listening on 127.0.0.1 that must never be connected to: yields
    (its port, a function that fails the test if anything connected). The kernel completes a
    TCP handshake into the backlog without accept(), so any attempt would be found there."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)

    def assert_untouched():
        try:
            connection, peer = listener.accept()
        except BlockingIOError:
            return
        connection.close()
        pytest.fail(f"something connected to the listener from {peer}")

    yield listener.getsockname()[1], assert_untouched
    listener.close()


# -- the database, read and written directly ------------------------------------------------

def count_rows(database, table):
    with database.connection() as connection:
        return connection.fetch_value(f"SELECT count(*) FROM {table}")


def make_item(database, stock, *, name="Cast-iron teapot", price_cents=1250):
    """A new item with this stock, written directly; the row."""
    with database.transaction() as connection:
        return sql_items.insert_item(
            connection, {"name": name, "description": "", "price_cents": price_cents, "stock": stock}, db.utc_now())


def insert_orders(database, orders):
    """Write orders straight into the tables, at chosen times (the API always stamps now), in
    one transaction. `orders` are (user_id, created_at, status, lines), each line
    (item_id, quantity, unit_price_cents). Returns their ids."""
    order_ids = []
    with database.transaction() as connection:
        for user_id, created_at, status, lines in orders:
            order_id = connection.fetch_value(
                "INSERT INTO orders (user_id, status, total_cents, created_at, updated_at)"
                " VALUES (:user_id, :status, :total_cents, :created_at, :created_at) RETURNING id",
                {"user_id": user_id, "status": status, "created_at": created_at,
                 "total_cents": sum(quantity * price for _, quantity, price in lines)},
            )
            for item_id, quantity, unit_price_cents in lines:
                connection.execute(
                    "INSERT INTO order_items (order_id, item_id, item_name, quantity, unit_price_cents)"
                    " VALUES (:order_id, :item_id, (SELECT name FROM items WHERE id = :item_id),"
                    " :quantity, :unit_price_cents)",
                    {"order_id": order_id, "item_id": item_id, "quantity": quantity,
                     "unit_price_cents": unit_price_cents},
                )
            order_ids.append(order_id)
    return order_ids


def order_statuses(database):
    """{order id: status} of every order in the database."""
    with database.connection() as connection:
        return {row["id"]: row["status"] for row in connection.fetch_all("SELECT id, status FROM orders ORDER BY id")}


def nothing_was_ordered(client, database):
    """No order and no line in the database, and items 1..3 as seeded (stock and version)."""
    seeded = [(item(client, item_id)["stock"], item(client, item_id)["version"]) for item_id in (1, 2, 3)]
    return (count_rows(database, "orders"), count_rows(database, "order_items")) == (0, 0) and seeded == [
        (row["stock"], 1) for row in seed.demo_items(3)]


# -- orders over HTTP ----------------------------------------------------------------------

def place(client, headers, lines, key=None):
    """POST /v1/orders with these lines (and an Idempotency-Key, when given)."""
    return place_body(client, headers, {"lines": lines}, key)


def place_body(client, headers, body, key=None):
    return client.post("/v1/orders", body=json.dumps(body).encode(), headers=json_headers(headers, idempotency_key=key))


def move(client, headers, order_id, status, *, if_match=None):
    """PATCH the order's status (an admin's move), If-Match when given."""
    return client.request("PATCH", f"/v1/orders/{order_id}", json={"status": status},
                          headers=json_headers(headers, if_match=if_match))


def patch_item(client, admin, item_id, changes, *, if_match):
    return client.request("PATCH", f"/v1/items/{item_id}", json=changes, headers=json_headers(admin, if_match=if_match))


def item(client, item_id):
    """The item as GET /v1/items/{id} shows it."""
    response = client.get(f"/v1/items/{item_id}")
    assert response.status == 200, response
    return response.json()


# -- small tools ---------------------------------------------------------------------------

def b64url(raw):
    """base64url without padding (RFC 4648 §5, as JWTs and our signed values write it)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def flip(text, index):
    """`text` with the character at `index` replaced by another base64url character: a
    signature, token or cursor with one character changed."""
    return text[:index] + ("B" if text[index] == "A" else "A") + text[index + 1:]


@pytest.fixture
def compare_digest_calls(monkeypatch):
    """Record every hmac.compare_digest call made during the test (auth's and signing's
    alike: they share the one hmac module), still answering truthfully."""
    calls = []
    real_compare_digest = hmac.compare_digest

    def spy(expected, given):
        calls.append((expected, given))
        return real_compare_digest(expected, given)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


@pytest.fixture
def pbkdf2_calls(monkeypatch):
    """Record the iterations of every PBKDF2 run during the test, still computing it truthfully."""
    calls = []
    real_pbkdf2_hmac = hashlib.pbkdf2_hmac

    def spy(name, password, salt, iterations, *args):
        calls.append(iterations)
        return real_pbkdf2_hmac(name, password, salt, iterations, *args)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", spy)
    return calls


# -- programs in another process ------------------------------------------------------------

def server_env(database_url, **overrides):
    """os.environ without the shop's settings, plus the test ones; an override of None removes.

    WORKER=off unless a test asks for the in-process job worker: an email it sent would land
    in the project's own var/outbox (tests that want one name a MAIL_OUTBOX_DIR of their own).
    """
    env = {name: value for name, value in os.environ.items() if name not in SETTINGS_VARIABLES}
    env.update(DATABASE_URL=database_url, SECRET_KEY=TEST_SECRET_KEY, APP_ENV="test", WORKER="off")
    env.update(overrides)
    return {name: value for name, value in env.items() if value is not None}


def free_port():
    """A TCP port nothing listens on right now, for a server started in another process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_listening(port, timeout_seconds=STARTUP_TIMEOUT_SECONDS, *, exit_report=lambda: None):
    """Return once something accepts connections on 127.0.0.1:`port`, polling; fail after
    `timeout_seconds`, or at once when `exit_report()`, which answers None while the server
    runs, says how it ended."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_SECONDS).close()
            return
        except OSError:  # refused (not listening yet) or timed out: look again
            pass
        if (report := exit_report()) is not None:
            pytest.fail(f"the server stopped before listening on port {port}: {report}")
        if time.monotonic() > deadline:
            pytest.fail(f"nothing listens on port {port} after {timeout_seconds} s")
        time.sleep(POLL_SECONDS)


@pytest.fixture
def start_program(tmp_path):
    """start_program(command, env) -> Program; every program started is killed when the test ends."""
    programs = []

    def start(command, env):
        program = Program(command, env, tmp_path / f"program-{len(programs)}")
        programs.append(program)
        return program

    yield start
    for program in programs:
        program.kill()


class Program:
    """A long-running subprocess run in the project folder; its stdout and stderr go to files
    under `log_dir`."""

    def __init__(self, command, env, log_dir):
        log_dir.mkdir()
        self.stdout_path, self.stderr_path = log_dir / "stdout", log_dir / "stderr"
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            # A session of its own: cleanup can kill gunicorn's workers with their master.
            self.process = subprocess.Popen(command, cwd=PROJECT_DIR, env=env, stdout=stdout, stderr=stderr,
                                            start_new_session=True)
        self.url = self.port = None

    def stdout(self):
        return self.stdout_path.read_text()

    def stderr(self):
        return self.stderr_path.read_text()

    def wait_for_url(self):
        """Wait for `python server.py` to print where it serves; set url and port."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while (match := re.match(r"Serving the shop on (https?://[^:]+:([0-9]+)) ", self.stderr())) is None:
            if (report := self.exit_report()) is not None:
                pytest.fail(report)
            if time.monotonic() > deadline:
                pytest.fail(f"not serving after {STARTUP_TIMEOUT_SECONDS} s:\n{self.stderr()}")
            time.sleep(POLL_SECONDS)
        self.url, self.port = match.group(1), int(match.group(2))
        return self

    def wait_until_accepting(self, port):
        """Wait until something accepts connections on `port` (gunicorn prints no URL of ours)."""
        wait_until_listening(port, exit_report=self.exit_report)
        self.port = port
        return self

    def send_signal(self, signal_number):
        self.process.send_signal(signal_number)

    def wait(self, timeout):
        return self.process.wait(timeout)

    def kill(self):
        """SIGKILL to the program and every process it started: no shutdown, no flush."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def exit_report(self):
        """None while the program runs; once it has exited, its return code and output."""
        if self.process.poll() is None:
            return None
        return f"exited with {self.process.returncode}:\n{self.stdout()}\n{self.stderr()}"


def http_request(port, path, *, method="GET", headers=None, body=None):
    """One request to 127.0.0.1:`port` on a fresh connection: (status, headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=SOCKET_TIMEOUT_SECONDS)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


# -- a server in a thread, and the clients ---------------------------------------------------

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
            "PATH_INFO": unquote_to_bytes(parts.path).decode("latin-1"),
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
    """Talks HTTP/1.1 to a real server, keeping one connection alive between requests.

    A request is sent once: a server that closes a kept-alive connection without saying
    `Connection: close` fails the test, since a real client would have to resend, and a
    POST cannot be resent safely. After `Connection: close` the next request dials anew.
    """

    def __init__(self, base_url):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        self.connection = None

    def request(self, method, url, *, json=None, body=None, headers=None):
        body, headers = self._body(json, body, headers)
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        self.connection.request(method, url, body=body or None, headers=headers)
        response = self.connection.getresponse()
        payload = response.read()
        if response.getheader("Connection", "").lower() == "close":
            self.connection.close()
            self.connection = None
        return TestResponse(response.status, response.getheaders(), payload)
