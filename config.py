"""Settings: the environment, read once into one frozen object.

Every knob of the shop comes from an environment variable, so the same code runs on a
laptop and in production with nothing but a different environment (the twelve-factor
way). `load_settings()` reads them all in one place, checks them, and returns a frozen
`Settings`; nothing else in the code reads `os.environ`.

    $ DATABASE_URL=postgresql://postgres@127.0.0.1:5432/shop PORT=9000 python server.py

| variable | default | meaning |
|---|---|---|
| `APP_ENV` | `development` | `production` refuses to start without `SECRET_KEY` |
| `DATABASE_URL` | `sqlite:///var/app.db` | `sqlite:///relative.db`, `sqlite:////absolute.db` or `postgresql://...` |
| `PORT`, `HOST` | `8000`, `127.0.0.1` | where `python server.py` listens (`--port`/`--host` win) |
| `SECRET_KEY` | generated once into `var/secret_key` in development | signs cursors (and tokens); at least 32 bytes |
| `SECRET_KEY_FALLBACKS` | empty | comma-separated older keys, still accepted while keys rotate |
| `THREADS` | 2 on SQLite, 16 on PostgreSQL | worker threads running requests in `python server.py` |
| `ACCESS_LOG` | `1` | `0` (or false/no/off) turns the one-line-per-request JSON log off |
| `PBKDF2_ITERATIONS` | `600000` | hashing work per password (OWASP's PBKDF2-SHA256); old hashes upgrade at login |
| `PASSWORD_HASH_THREADS` | the number of cores (at most 64) | hashes at once per process, as many waiting; then a 503 |
| `SESSION_COOKIE_SECURE` | `auto` | `1`: cookies are `Secure` and `__Host-` prefixed; `auto`: when over HTTPS |
| `DATABASE_TIMEOUT_SECONDS` | `3` | the most a request waits on the database (even one that hangs) before a 503 |
| `REFRESH_REUSE_SECONDS` | `10` | a rotated refresh token sent again this soon gets the same successor; `0`: never |
| `REFRESH_FAMILY_MAX_SECONDS` | `7776000` (90 days) | no refresh token outlives its login by more |
| `SESSION_TTL_SECONDS` | `604800` (7 days) | a browser session ends this long after login, however busy |
| `SESSION_IDLE_SECONDS` | `1800` (30 min) | ... or once unused this long; at most `SESSION_TTL_SECONDS` |
| `TEST_CLOCK_OFFSET_SECONDS` | unset | `APP_ENV=test` only: a clock tests move (`settings.clock.advance`) |
| `CORS_ORIGINS` | empty: no CORS | comma-separated origins whose pages may call the API (`https://shop.example`) |
| `REDIS_URL` | unset: memory | `redis://host:6379/0`: rate limits and the cache shared by every process |
| `REDIS_PREFIX` | `shop:` | the start of every Redis key, so that one Redis can serve several shops |
| `CACHE` | `on` | `off` (or 0/false/no): no cache; every read goes to the database |
| `CACHE_TTL_SECONDS` | `30` | the longest a cached answer is kept (a change through the API ends it at once) |
| `CACHE_MAX_ENTRIES` | `10000` | answers each process keeps in memory at most (without `REDIS_URL`) |
| `RATE_LIMITS` | `ratelimit.DEFAULT_RATE_LIMITS` | `NAME=QUOTA/SECONDS` per policy, e.g. `auth=10/60`; `off`: none |
| `TRUSTED_PROXIES` | empty: the peer is the client | addresses or CIDRs of proxies whose X-Forwarded-For is believed |
| `WORKER` | `1` | `0` (or off): `python server.py` runs no job worker thread of its own |
| `WORKER_THREADS` | `4` | jobs run at once by `python server.py worker` |
| `WORKER_POLL_SECONDS` | `1` | how often an idle worker looks for due jobs nobody woke it for |
| `JOB_LEASE_SECONDS` | `30` | a running job's lease, renewed while it runs; a dead worker's jobs return after it |
| `JOB_BACKOFF_BASE_SECONDS` | `5` | after failed attempt n a job waits a random time up to base * 2^(n-1) |
| `JOB_BACKOFF_CAP_SECONDS` | `3600` | ... and never longer than this |
| `JOB_RETENTION_SECONDS` | `604800` (7 days) | finished jobs (done or dead) are deleted this long after they finished |
| `SMTP_URL` | unset: emails become files | `smtp://host:25`; `smtp://user:password@host:587` (STARTTLS, login) |
| `MAIL_FROM` | `shop@localhost` | the sender of the shop's emails |
| `MAIL_OUTBOX_DIR` | `var/outbox` | where emails are written as .eml files when SMTP_URL is unset |
| `EXPORT_DIR` | `var/exports` | where CSV exports are written; shared by workers and web processes (a volume) |
| `EXPORT_MAX_ROWS` | `1000000` | rows (order lines) an export may hold; a larger one fails: ask for fewer days |
| `MAX_EVENT_STREAMS` | `200` | live order event streams a process holds open (each a thread); then a 503 |
| `EVENT_STREAMS_PER_USER` | `5` | ... and per user, in a process; then a 429 |
| `EVENT_STREAMS_PER_ADDRESS` | `20` | ... and per client address, whoever signs in; then a 429 |
| `EVENT_HEARTBEAT_SECONDS` | `15` | an idle stream sends a comment this often, so proxies keep it open |
| `EVENT_POLL_SECONDS` | `1` | how often streams look for events nobody woke them for (SQLite, another process) |
| `EVENT_RETENTION_SECONDS` | `86400` (24 h) | order events are kept this long for clients that reconnect |
| `WEBHOOK_TIMEOUT_SECONDS` | `5` | a webhook delivery's connect, and each read; the whole exchange at most 3 times it |
| `WEBHOOK_ALLOW_PRIVATE` | `0` | tests and development only: webhooks may go to 127.0.0.1 and private networks |
| `TLS_CERT_FILE`, `TLS_KEY_FILE` | unset: plain HTTP | a PEM certificate chain and its key: serve HTTPS |
| `METRICS_TOKEN` | unset: loopback only | GET /metrics needs `Authorization: Bearer <token>` (16+ characters) |
| `METRICS_DIR` | unset: this process only | a directory where every process writes its counts; a scrape adds them up |
"""

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.headerregistry import Address
from pathlib import Path
from urllib.parse import urlsplit

# PBKDF2_ITERATIONS is held to passwords' ceiling: above it, passwords.py would refuse to
# make or check a hash, and every registration and login would fail. PASSWORD_HASH_THREADS
# starts from the default of its hashing gate, and keeps to its ceiling.
from origins import parse_origins
from passwords import DEFAULT_HASH_THREADS, MAX_HASH_THREADS, MAX_PBKDF2_ITERATIONS
from ratelimit import parse_rate_limits, parse_trusted_proxies
from signing import development_secret

PROJECT_DIR = Path(__file__).resolve().parent
VAR_DIR = PROJECT_DIR / "var"
DEFAULT_DATABASE_URL = "sqlite:///var/app.db"
DEV_SECRET_FILE = VAR_DIR / "secret_key"
MIN_SECRET_KEY_BYTES = 32
DEFAULT_PORT = 8000
DEFAULT_DATABASE_TIMEOUT_SECONDS = 3.0
DEFAULT_PBKDF2_ITERATIONS = 600_000  # OWASP Password Storage Cheat Sheet, PBKDF2-HMAC-SHA256
MIN_PBKDF2_ITERATIONS = 1_000  # tests go this low to stay fast; never use it in production
ENVIRONMENTS = ("development", "test", "production")
DAY_SECONDS = 24 * 3600
# Two tabs (or a retry after a lost answer) send the same refresh token within a second or
# two; a thief replaying a stolen one rarely does within 10 s. Okta caps its grace period at 60 s.
DEFAULT_REFRESH_REUSE_SECONDS = 10
MAX_REFRESH_REUSE_SECONDS = 60
DEFAULT_REFRESH_FAMILY_MAX_SECONDS = 90 * DAY_SECONDS  # three 30-day refresh tokens, then a password
MIN_REFRESH_FAMILY_MAX_SECONDS = 3600
MAX_REFRESH_FAMILY_MAX_SECONDS = 365 * DAY_SECONDS
DEFAULT_SESSION_TTL_SECONDS = 7 * DAY_SECONDS
# OWASP's Session Management Cheat Sheet: 15-30 min idle for low-risk applications. The upper
# end, since admins (who change roles and the catalogue) use the same cookie sessions.
DEFAULT_SESSION_IDLE_SECONDS = 30 * 60
# A session's last use is written at most once a minute (accounts.SESSION_TOUCH_SECONDS), so
# a shorter idle timeout could not be told apart from that granularity.
MIN_SESSION_SECONDS = 120
MAX_SESSION_TTL_SECONDS = 90 * DAY_SECONDS
MAX_TEST_CLOCK_OFFSET_SECONDS = 10 * 365 * DAY_SECONDS

# The cache (cache.py). A change through the API reaches every cached answer at once; the
# TTL bounds what it cannot see: writes made around the API (seed, SQL by hand).
DEFAULT_CACHE_TTL_SECONDS = 30
MAX_CACHE_TTL_SECONDS = DAY_SECONDS
# A page of 20 items is about 5 KB: 10,000 answers fill about 50 MB at most (cache.py also
# bounds the bytes, for pages of long descriptions).
DEFAULT_CACHE_MAX_ENTRIES = 10_000
MAX_CACHE_MAX_ENTRIES = 1_000_000
# The background job queue (jobs.py, worker.py). Threads of a `python server.py worker`: each
# job mostly waits on the network (SMTP), so a few threads overlap well.
DEFAULT_WORKER_THREADS = 4
MAX_WORKER_THREADS = 64
DEFAULT_WORKER_POLL_SECONDS = 1.0
DEFAULT_JOB_LEASE_SECONDS = 30
# Backoff after a failure: a random wait of up to base * 2^(attempt - 1), at most the cap.
DEFAULT_JOB_BACKOFF_BASE_SECONDS = 5.0
DEFAULT_JOB_BACKOFF_CAP_SECONDS = 3600.0
DEFAULT_JOB_RETENTION_SECONDS = 7 * DAY_SECONDS
# A CSV line of an order is under 400 bytes (an item name is at most 200 characters): the
# default bounds a file near 400 MB, written in a few minutes (exports.py bounds the time).
DEFAULT_EXPORT_DIR = VAR_DIR / "exports"
DEFAULT_EXPORT_MAX_ROWS = 1_000_000
DEFAULT_MAIL_FROM = "shop@localhost"
DEFAULT_OUTBOX_DIR = VAR_DIR / "outbox"
SMTP_SCHEMES = ("smtp", "smtps")
# Live order events (events.py): each open stream holds a thread of its own lane.
DEFAULT_MAX_EVENT_STREAMS, DEFAULT_EVENT_STREAMS_PER_USER, DEFAULT_EVENT_HEARTBEAT_SECONDS = 200, 5, 15.0
# Per client address: one machine with many accounts cannot hold every stream (an office behind
# one NAT shares it: raise it there).
DEFAULT_EVENT_STREAMS_PER_ADDRESS = 20

DEFAULT_WEBHOOK_TIMEOUT_SECONDS = 5.0  # webhooks (outbound.py): a slower receiver is retried later
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
DEFAULT_REDIS_PREFIX = "shop:"
REDIS_PREFIX = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MIN_METRICS_TOKEN_CHARS = 16
METRICS_TOKEN = re.compile(r"[\x21-\x7e]{1,256}")  # visible ASCII: no space, no line break


class ConfigError(Exception):
    """The environment describes a configuration the shop refuses to run with."""


@dataclass(frozen=True)
class Settings:
    app_env: str
    database_url: str
    secret_keys: tuple  # bytes; the first signs, all of them verify (key rotation)
    host: str
    port: int
    threads: int | None  # None: let the server choose for the database engine
    access_log: bool
    database_timeout_seconds: float
    pbkdf2_iterations: int
    password_hash_threads: int  # PBKDF2 runs at once in this process (passwords.HashingGate)
    cookie_secure: bool | None  # None: Secure exactly when the request came over HTTPS
    refresh_reuse_seconds: int
    refresh_family_max_seconds: int
    session_ttl_seconds: int
    session_idle_seconds: int
    cors_origins: tuple  # exact origins (str) whose pages may call the API; empty: no CORS at all
    redis_url: str | None  # None: rate limits and the cache stay in each process's memory
    redis_prefix: str
    cache: bool  # False: CACHE=off, every read goes to the database
    cache_ttl_seconds: int
    cache_max_entries: int  # per process, in memory (without Redis)
    rate_limits: dict | None  # {policy name: ratelimit.Policy}; None: RATE_LIMITS=off
    trusted_proxies: tuple  # ipaddress networks whose X-Forwarded-For is believed; empty: none
    worker_in_process: bool  # `python server.py` runs one worker thread (WORKER)
    worker_threads: int  # threads of `python server.py worker`
    worker_poll_seconds: float
    job_lease_seconds: int
    job_backoff_base_seconds: float
    job_backoff_cap_seconds: float
    job_retention_seconds: int
    export_dir: Path  # CSV exports: written by workers, served by the web processes
    export_max_rows: int
    smtp_url: str | None  # None: emails are written as files into mail_outbox_dir
    mail_from: str
    mail_outbox_dir: Path
    max_event_streams: int  # per process, and event_streams_per_user per user (events.py)
    event_streams_per_user: int
    event_streams_per_address: int
    event_heartbeat_seconds: float
    event_poll_seconds: float
    event_retention_seconds: int
    webhook_timeout_seconds: float
    webhook_allow_private: bool  # tests and development only: refused with APP_ENV=production
    tls_cert_file: Path | None  # both or neither: `python server.py` serves HTTPS (httpsockets.py)
    tls_key_file: Path | None
    metrics_token: str | None  # None: GET /metrics answers loopback clients only (api_ops.py)
    metrics_dir: Path | None  # None: /metrics shows this process; else every process's file in it
    # The Unix time the lifetimes of refresh tokens and sessions are measured by: time.time,
    # or a MovableClock under APP_ENV=test. Access tokens keep the wall clock (auth.py).
    clock: Callable[[], float]

    def __post_init__(self):
        # Checked here as well as in load_settings, so that no copy made with
        # dataclasses.replace() can carry a movable clock into production either.
        if self.app_env == "production" and self.clock is not time.time:
            raise ConfigError("a test clock cannot run with APP_ENV=production")

    @property
    def secret_key(self):
        return self.secret_keys[0]


def load_settings(environ=None):
    """Read the environment once and return a checked, frozen `Settings`.

    Raises `ConfigError` naming the variable when a value is unusable.
    """
    environ = os.environ if environ is None else environ
    app_env = environ.get("APP_ENV", "development")
    if app_env not in ENVIRONMENTS:
        raise ConfigError(f"APP_ENV must be one of {', '.join(ENVIRONMENTS)}")
    return Settings(
        app_env=app_env,
        database_url=environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
        secret_keys=_secret_keys(environ, app_env),
        host=environ.get("HOST", "127.0.0.1"),
        port=_int(environ, "PORT", DEFAULT_PORT, low=0, high=65535),
        threads=_int(environ, "THREADS", None, low=1, high=1024),
        access_log=_bool(environ, "ACCESS_LOG", True),
        pbkdf2_iterations=_int(environ, "PBKDF2_ITERATIONS", DEFAULT_PBKDF2_ITERATIONS,
                               low=MIN_PBKDF2_ITERATIONS, high=MAX_PBKDF2_ITERATIONS),
        password_hash_threads=_int(environ, "PASSWORD_HASH_THREADS", DEFAULT_HASH_THREADS,
                                   low=1, high=MAX_HASH_THREADS),
        cookie_secure=None if environ.get("SESSION_COOKIE_SECURE", "auto") == "auto"
        else _bool(environ, "SESSION_COOKIE_SECURE", False),
        database_timeout_seconds=float(
            _int(environ, "DATABASE_TIMEOUT_SECONDS", DEFAULT_DATABASE_TIMEOUT_SECONDS, low=1, high=60)
        ),
        refresh_reuse_seconds=_int(environ, "REFRESH_REUSE_SECONDS", DEFAULT_REFRESH_REUSE_SECONDS,
                                   low=0, high=MAX_REFRESH_REUSE_SECONDS),
        refresh_family_max_seconds=_int(environ, "REFRESH_FAMILY_MAX_SECONDS", DEFAULT_REFRESH_FAMILY_MAX_SECONDS,
                                        low=MIN_REFRESH_FAMILY_MAX_SECONDS, high=MAX_REFRESH_FAMILY_MAX_SECONDS),
        **_session_lifetimes(environ),
        cors_origins=_cors_origins(environ),
        redis_url=_redis_url(environ),
        redis_prefix=_redis_prefix(environ),
        cache=_bool(environ, "CACHE", True),
        cache_ttl_seconds=_int(environ, "CACHE_TTL_SECONDS", DEFAULT_CACHE_TTL_SECONDS,
                               low=1, high=MAX_CACHE_TTL_SECONDS),
        cache_max_entries=_int(environ, "CACHE_MAX_ENTRIES", DEFAULT_CACHE_MAX_ENTRIES,
                               low=1, high=MAX_CACHE_MAX_ENTRIES),
        rate_limits=_rate_limits(environ),
        trusted_proxies=_trusted_proxies(environ),
        **_job_settings(environ),
        **_mail_settings(environ),
        **_event_settings(environ),
        **_webhook_settings(environ, app_env),
        **_tls_files(environ),
        **_metrics_settings(environ),
        clock=_clock(environ, app_env),
    )


class MovableClock:
    """The wall clock plus an offset that tests move, instead of sleeping:

        settings.clock.advance(3600)    # every lifetime now sees an hour gone by

    Made only under APP_ENV=test (TEST_CLOCK_OFFSET_SECONDS); Settings refuses it in production.
    """

    def __init__(self, offset_seconds):
        self.offset_seconds = offset_seconds

    def __call__(self):
        return time.time() + self.offset_seconds

    def advance(self, seconds):
        self.offset_seconds += seconds


def _session_lifetimes(environ):
    ttl = _int(environ, "SESSION_TTL_SECONDS", DEFAULT_SESSION_TTL_SECONDS,
               low=MIN_SESSION_SECONDS, high=MAX_SESSION_TTL_SECONDS)
    # An idle timeout longer than the absolute one would never apply: a mistake, not a choice.
    idle = _int(environ, "SESSION_IDLE_SECONDS", min(DEFAULT_SESSION_IDLE_SECONDS, ttl),
                low=MIN_SESSION_SECONDS, high=ttl)
    return {"session_ttl_seconds": ttl, "session_idle_seconds": idle}


def _job_settings(environ):
    """The queue's and the workers' settings (jobs.py, worker.py), and the CSV exports' (exports.py)."""
    base = _float(environ, "JOB_BACKOFF_BASE_SECONDS", DEFAULT_JOB_BACKOFF_BASE_SECONDS, low=0.01, high=3600)
    default_cap = max(DEFAULT_JOB_BACKOFF_CAP_SECONDS, base)
    return {
        "worker_in_process": _bool(environ, "WORKER", True),
        "worker_threads": _int(environ, "WORKER_THREADS", DEFAULT_WORKER_THREADS, low=1, high=MAX_WORKER_THREADS),
        "worker_poll_seconds": _float(environ, "WORKER_POLL_SECONDS", DEFAULT_WORKER_POLL_SECONDS, low=0.05, high=60),
        # At least 2 s: the lease is renewed every third of it, and a renewal is a write that
        # may wait up to DATABASE_TIMEOUT_SECONDS; a lease of a few seconds suits only tests.
        "job_lease_seconds": _int(environ, "JOB_LEASE_SECONDS", DEFAULT_JOB_LEASE_SECONDS, low=2, high=3600),
        "job_backoff_base_seconds": base,
        # A cap below the base would make every wait the cap: a mistake, not a choice.
        "job_backoff_cap_seconds": _float(environ, "JOB_BACKOFF_CAP_SECONDS", default_cap,
                                          low=base, high=7 * DAY_SECONDS),
        "job_retention_seconds": _int(environ, "JOB_RETENTION_SECONDS", DEFAULT_JOB_RETENTION_SECONDS,
                                      low=60, high=365 * DAY_SECONDS),
        "export_dir": Path(environ.get("EXPORT_DIR") or DEFAULT_EXPORT_DIR),
        "export_max_rows": _int(environ, "EXPORT_MAX_ROWS", DEFAULT_EXPORT_MAX_ROWS, low=1, high=100_000_000),
    }


def _mail_settings(environ):
    outbox = environ.get("MAIL_OUTBOX_DIR") or ""
    return {
        "smtp_url": _smtp_url(environ),
        "mail_from": _mail_from(environ),
        "mail_outbox_dir": Path(outbox) if outbox else DEFAULT_OUTBOX_DIR,
    }


def _event_settings(environ):
    """The live order events' settings (events.py, api_events.py)."""
    return {
        "max_event_streams": _int(environ, "MAX_EVENT_STREAMS", DEFAULT_MAX_EVENT_STREAMS, low=1, high=10_000),
        "event_streams_per_user": _int(environ, "EVENT_STREAMS_PER_USER", DEFAULT_EVENT_STREAMS_PER_USER,
                                       low=1, high=1000),
        "event_streams_per_address": _int(environ, "EVENT_STREAMS_PER_ADDRESS", DEFAULT_EVENT_STREAMS_PER_ADDRESS,
                                          low=1, high=10_000),
        "event_heartbeat_seconds": _float(environ, "EVENT_HEARTBEAT_SECONDS", DEFAULT_EVENT_HEARTBEAT_SECONDS,
                                          low=0.05, high=300),
        "event_poll_seconds": _float(environ, "EVENT_POLL_SECONDS", 1.0, low=0.05, high=300),
        "event_retention_seconds": _int(environ, "EVENT_RETENTION_SECONDS", DAY_SECONDS, low=60, high=30 * DAY_SECONDS),
    }
def _webhook_settings(environ, app_env):
    allow_private = _bool(environ, "WEBHOOK_ALLOW_PRIVATE", False)
    if allow_private and app_env == "production":  # it opens the inside of the network (SSRF)
        raise ConfigError("WEBHOOK_ALLOW_PRIVATE is for tests and development; it is refused with APP_ENV=production")
    timeout = _float(environ, "WEBHOOK_TIMEOUT_SECONDS", DEFAULT_WEBHOOK_TIMEOUT_SECONDS, low=0.1, high=30)
    return {"webhook_timeout_seconds": timeout, "webhook_allow_private": allow_private}


def _tls_files(environ):
    """TLS_CERT_FILE and TLS_KEY_FILE, both or neither, each a file this process can read
    now: a wrong path stops the start, not the first client's handshake. Whether they hold a
    certificate and its key, ssl says when server.py loads them (httpsockets.server_context)."""
    files = {"TLS_CERT_FILE": environ.get("TLS_CERT_FILE") or None, "TLS_KEY_FILE": environ.get("TLS_KEY_FILE") or None}
    if (files["TLS_CERT_FILE"] is None) != (files["TLS_KEY_FILE"] is None):
        raise ConfigError("TLS_CERT_FILE and TLS_KEY_FILE go together: set both to serve HTTPS, or neither")
    for name, path in files.items():
        if path is not None:
            try:
                with open(path, "rb") as pem:
                    pem.read(1)
            except OSError as error:  # the path only: never a byte of what the file holds
                raise ConfigError(f"{name}: cannot read {path}: {error.strerror or error}") from None
    return {name.lower(): Path(path) if path else None for name, path in files.items()}
def _metrics_settings(environ):
    """METRICS_TOKEN: a bearer token of visible ASCII (it travels in a header), long enough not
    to be guessed; METRICS_DIR: a directory, made on start when missing (metrics.py)."""
    token = environ.get("METRICS_TOKEN") or None
    if token is not None and not (len(token) >= MIN_METRICS_TOKEN_CHARS and METRICS_TOKEN.fullmatch(token)):
        raise ConfigError(f"METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_CHARS} visible ASCII characters")
    directory = environ.get("METRICS_DIR") or None
    return {"metrics_token": token, "metrics_dir": Path(directory) if directory else None}


def _smtp_url(environ):
    """SMTP_URL, checked: smtp:// or smtps://, a host, and a password never sent in clear
    (smtp:// with a user name means STARTTLS before the login, see mailer.py)."""
    url = environ.get("SMTP_URL") or None
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError("SMTP_URL must look like smtp://host:25 or smtp://user:password@host:587") from None
    if parts.scheme not in SMTP_SCHEMES or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ConfigError("SMTP_URL must look like smtp://host:25 or smtp://user:password@host:587")
    if port == 0:
        raise ConfigError("SMTP_URL has port 0")
    if (parts.username is None) != (parts.password is None):
        raise ConfigError("SMTP_URL must give both a user name and a password, or neither")
    return url


def _mail_from(environ):
    """MAIL_FROM as a bare address: a header value must never carry a line break."""
    sender = environ.get("MAIL_FROM") or DEFAULT_MAIL_FROM
    try:
        address = Address(addr_spec=sender)
    except (ValueError, IndexError):
        address = None
    if address is None or not address.domain or address.addr_spec != sender:
        raise ConfigError("MAIL_FROM must be a plain email address, such as shop@example.com")
    return sender


def _redis_url(environ):
    """REDIS_URL, checked for a scheme redis-py understands; None when unset or empty."""
    url = environ.get("REDIS_URL") or None
    if url is not None and not url.startswith(REDIS_SCHEMES):
        raise ConfigError(f"REDIS_URL must start with one of {', '.join(REDIS_SCHEMES)}")
    return url


def _redis_prefix(environ):
    prefix = environ.get("REDIS_PREFIX", DEFAULT_REDIS_PREFIX)
    if REDIS_PREFIX.fullmatch(prefix) is None:
        raise ConfigError("REDIS_PREFIX must be 1 to 64 letters, digits or . _ : -")
    return prefix


def _rate_limits(environ):
    try:
        return parse_rate_limits(environ.get("RATE_LIMITS", ""))
    except ValueError as error:
        raise ConfigError(f"RATE_LIMITS: {error}") from None


def _trusted_proxies(environ):
    try:
        return parse_trusted_proxies(environ.get("TRUSTED_PROXIES", ""))
    except ValueError as error:
        raise ConfigError(f"TRUSTED_PROXIES: {error}") from None


def _cors_origins(environ):
    try:
        return parse_origins(environ.get("CORS_ORIGINS", ""))
    except ValueError as error:
        raise ConfigError(f"CORS_ORIGINS: {error}") from None


def _clock(environ, app_env):
    if environ.get("TEST_CLOCK_OFFSET_SECONDS", "") == "":
        return time.time
    if app_env != "test":
        raise ConfigError("TEST_CLOCK_OFFSET_SECONDS is for APP_ENV=test only")
    return MovableClock(_int(environ, "TEST_CLOCK_OFFSET_SECONDS", 0,
                             low=-MAX_TEST_CLOCK_OFFSET_SECONDS, high=MAX_TEST_CLOCK_OFFSET_SECONDS))


def _secret_keys(environ, app_env):
    primary = environ.get("SECRET_KEY", "")
    if not primary:
        if app_env == "production":
            raise ConfigError("SECRET_KEY is required when APP_ENV=production")
        primary = development_secret(DEV_SECRET_FILE)
    fallbacks = [key for key in environ.get("SECRET_KEY_FALLBACKS", "").split(",") if key]
    try:
        # The environment holds bytes; Python decodes them as UTF-8 and keeps any other byte
        # as a lone surrogate, which cannot be encoded back: such a key is refused, not guessed.
        keys = tuple(key.encode() for key in [primary, *fallbacks])
    except UnicodeEncodeError:
        raise ConfigError("SECRET_KEY and its fallbacks must be UTF-8 text") from None
    for key in keys:
        if len(key) < MIN_SECRET_KEY_BYTES:
            # Never echo the key itself: error messages end up in logs.
            raise ConfigError(f"SECRET_KEY and its fallbacks must be at least {MIN_SECRET_KEY_BYTES} bytes")
    return keys


def _bool(environ, name, default):
    raw = environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0 (true/false, yes/no, on/off)")


def _float(environ, name, default, *, low, high):
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds") from None
    if not low <= value <= high:  # also refuses nan, which compares false with everything
        raise ConfigError(f"{name} must be between {low:g} and {high:g}")
    return value


def _int(environ, name, default, *, low, high):
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}")
    return value
