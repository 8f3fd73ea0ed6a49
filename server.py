"""The shop: the WSGI `app`, wired from its pieces, and the command line that runs it.

    python server.py                    serve on http://127.0.0.1:8000 (SQLite under var/)
    python server.py --port 9000        ... elsewhere (or PORT=9000)
    python server.py migrate            apply schema.sql and migrations/ and exit
    python server.py seed --items 30    add demo items to the catalogue
    python server.py create-admin EMAIL an admin account; the password comes from a prompt or stdin
    python server.py worker             run background jobs (WORKER_THREADS threads) until stopped
    python server.py backup PATH        copy the database to PATH, safely while it serves (backup.py)
    python server.py restore PATH       ... and back, into an empty database (--force: replace the data)
    gunicorn server:app                 the same app under a production server (jobs: a worker beside it)

How a request travels, and where each step lives (the README draws the same map):

    socket -> httpserver.py (connections, workers; http11.py reads HTTP/1.1 into a WSGI environ)
           -> web.Application (Request) -> middleware.py (request id, log, headers, CORS, problems, auth,
                                                         rate limits)
           -> routes.py (which handler) -> api_*.py (HTTP in, plain values out)
           -> accounts.py, orders.py, idempotency.py (business rules, no HTTP objects)
           -> sql_*.py (one function per query) -> db.py (SQLite or PostgreSQL)

Configuration comes from the environment (config.py). `python server.py` applies pending
migrations itself unless APP_ENV=production, where `python server.py migrate` is a
deliberate deployment step. `python server.py` also runs one job worker thread (worker.py),
so that emails go out with nothing else started; WORKER=off leaves the jobs to a separate
`python server.py worker`, the only way under gunicorn (create_app never starts a worker:
every gunicorn process, and every test, would get one).
"""

import argparse
import atexit
import getpass
import os
import signal
import sys
from dataclasses import dataclass, field
from urllib.parse import unquote

import accounts
import api_ops
import backup
import cache
import config
import db
import events
import httpsockets
import metrics
import migrate
import openapi
import passwords
import ratelimit
import routes
import seed
import validation
from httpserver import HTTPServer
from httpworkers import Lane
from middleware import build_middleware
from observe import JSONLogger, route_standard_logging
from redisconn import RedisLink
from web import Application
from worker import SHUTDOWN_DEADLINE_SECONDS as JOBS_SHUTDOWN_DEADLINE_SECONDS
from worker import Worker

# Worker threads when THREADS is not set. SQLite work is CPU under the GIL, so more threads
# only queue for it and stretch the slowest requests (docs/performance.md has the figures).
# PostgreSQL work is mostly waiting on the network, which threads overlap well.
SQLITE_THREADS = 2
POSTGRESQL_THREADS = 16
# The server's lanes (httpserver.py's bulkheads). Each probe has threads of its own, so that
# it never waits behind application work, nor behind the other probe: a /ready that waits
# for a sick database must not delay /health, or the orchestrator restarts a healthy process.
# Two each: one can run while the other waits for the network or the database (with one,
# /health under load answered 6 % fewer requests than on the shared workers before).
# A scrape of /metrics gets a lane of its own for the same reasons: it must not wait behind
# application work, and its count of the jobs, on a sick database, must not delay /health.
PROBE_LANES = {"/health": "liveness", "/ready": "readiness", "/metrics": "metrics"}
PROBE_THREADS = 2
# A probe costs microseconds (/health) or one database round trip (/ready): a long queue of
# them drains fast. More waiting than this is a flood, not an orchestrator, and gets a 503.
PROBES_WAITING = 128
# The routes that run PBKDF2 (0.3 s of CPU each) get PASSWORD_HASH_THREADS threads of their
# own, so that a burst of logins cannot take every worker; as many again may wait for them
# (the same bound as passwords.HashingGate's), and the next one gets a 503 at once.
PASSWORDS_LANE = "passwords"
# Live order event streams (GET /v1/orders/events) hold a thread for as long as they are open:
# they get MAX_EVENT_STREAMS threads of their own, so that they never take the default lane's
# few. A few more answer the streams the process refuses (events.py counts them: 503, 429) at
# once, and a few requests may wait for those.
EVENTS_LANE = "events"
EVENT_STREAM_PATH = "/v1/orders/events"
EVENTS_SPARE_THREADS = 4
# The requests the event loop's own thread runs itself, when every request is CPU work in this
# process (SQLite, and no Redis): safe methods on the default lane and /health. Handing them to
# a worker thread cost more than running them (httpthreads.py's "Inline requests"). Writes go
# to the workers: a COMMIT waits for the disk (fsync), and SQLite's write lock for other writers.
INLINE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
INLINE_LANES = frozenset({"default", PROBE_LANES["/health"]})
# Job threads beside the web server in `python server.py` (WORKER=off: none): one is enough
# for a shop's emails, and leaves the CPU to the requests.
IN_PROCESS_WORKER_THREADS = 1


@dataclass(frozen=True)
class Services:
    """What every handler can reach through `request.services`."""

    settings: config.Settings
    database: object  # db.SQLiteDatabase or db.PostgresDatabase
    logger: JSONLogger
    # Each user's role and token epoch, remembered for a second: one per process (accounts.py).
    user_states: accounts.UserStates = field(default_factory=accounts.UserStates)
    redis: RedisLink | None = None  # when REDIS_URL is set: shared rate limits and cache
    # cache.py: the catalogue's answers (None with CACHE=off), and browser sessions (with Redis only).
    catalogue_cache: cache.Cache | None = None
    session_cache: cache.Cache | None = None
    # The buckets of RATE_LIMITS; the login handler takes its account's tries from it.
    rate_limiter: ratelimit.RateLimiter = field(default_factory=lambda: ratelimit.RateLimiter({}))
    # The live order events of this process (events.py): GET /v1/orders/events subscribes to it.
    order_events: events.Broadcaster | None = None
    # The OpenAPI document of the routes (openapi.py), built on its first request.
    api_document: openapi.Document | None = None


def create_app(settings=None, *, database=None, logger=None):
    """Build the WSGI application. Opens no connection: the database is reached on first use."""
    settings = settings or config.load_settings()
    passwords.set_hash_threads(settings.password_hash_threads)  # once, for every PBKDF2 run of the process
    database = database or db.open_database(settings.database_url, timeout_seconds=settings.database_timeout_seconds)
    logger = logger or JSONLogger(enabled=settings.access_log)
    redis_link = None
    if settings.redis_url:  # the link connects on first use, like the database
        redis_link = RedisLink(settings.redis_url, prefix=settings.redis_prefix, logger=logger)
    catalogue_cache, session_cache = cache.build_caches(settings, redis_link)
    rate_limiter = ratelimit.RateLimiter(settings.rate_limits or {}, redis=redis_link, clock=settings.clock,
                                         logger=logger, secret_key=settings.secret_key)
    router = routes.build_router()
    _count_for_metrics(settings, database)
    services = Services(settings=settings, database=database, logger=logger, redis=redis_link,
                        catalogue_cache=catalogue_cache, session_cache=session_cache,
                        rate_limiter=rate_limiter,
                        order_events=events.Broadcaster(database, settings, logger, redis=redis_link),
                        api_document=openapi.Document(router.routes, version=api_ops.VERSION))
    middleware = build_middleware(logger, router, cors_origins=settings.cors_origins,
                                  rate_limiter=rate_limiter if settings.rate_limits is not None else None,
                                  trusted_proxies=settings.trusted_proxies)
    return Application(router, middleware, services)


def _count_for_metrics(settings, database):
    """Let /metrics show this process's database pool, and, with METRICS_DIR, let every process
    of the server (gunicorn's workers, `python server.py worker`) show its counts (metrics.py).
    Once per process in production; a test making many apps reports the last one's pool."""
    metrics.RECORDER.pool_stats = database.pool_stats
    if settings.metrics_dir is not None:
        metrics.RECORDER.share_in(settings.metrics_dir)


def __getattr__(name):
    """`gunicorn server:app` (or `from server import app`) builds the app on that first look-up.

    Built lazily (PEP 562) rather than at import, so that `python server.py migrate` and
    the tests, which import this module, do not read the environment or open a database
    they do not use.
    """
    if name == "app":
        global app
        app = create_app()
        route_standard_logging(app.services.logger)
        # Lines still queued when the process exits (gunicorn stopping a worker) are written
        # out. Registered here, once per process, not in create_app, which tests call often.
        atexit.register(app.services.logger.flush)
        return app
    raise AttributeError(f"module 'server' has no attribute {name!r}")


def main(argv=None):
    arguments = _parse_arguments(argv)
    try:
        settings = config.load_settings()
        if arguments.command in ("backup", "restore"):  # one-shot tools with connections of their own
            return backup.command_line(arguments.command, arguments.path, settings, force=arguments.force)
        database = db.open_database(settings.database_url, timeout_seconds=settings.database_timeout_seconds)
    except (config.ConfigError, db.DriverMissing) as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    try:
        if arguments.command == "migrate":
            applied = migrate.migrate(database)
            print(f"applied migrations: {applied or 'none, the schema is up to date'}")
        elif arguments.command == "create-admin":
            return create_admin(settings, database, arguments.email)
        elif arguments.command == "worker":
            return run_worker(settings, database)
        elif arguments.command == "seed":
            migrate.migrate(database)
            total = seed.seed_items(database, arguments.items)
            print(f"added {arguments.items} demo items; the catalogue now holds {total}")
        else:
            return serve(settings, database, host=arguments.host or settings.host, port=arguments.port)
    except db.DatabaseUnavailable as error:
        print(f"the database is not reachable: {error}", file=sys.stderr)
        return 1
    finally:
        database.close()
    return 0


def create_admin(settings, database, email):
    """Make an admin account. The password is read from a prompt (or one line of stdin), never
    from the command line, where `ps` and the shell history would show it to others."""
    clean = validation.Field("email", "email").check(email)[0]
    if clean is None:
        print("create-admin: that is not an email address", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass("Password for the new admin: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    problems = passwords.password_problems(password)
    if problems:
        print(f"create-admin: the password {'; '.join(problems)}", file=sys.stderr)
        return 2
    migrate.migrate(database)
    try:
        user = accounts.register(database, clean, password, iterations=settings.pbkdf2_iterations, role="admin")
    except accounts.EmailTaken:
        print(f"create-admin: an account with the email {clean} exists", file=sys.stderr)
        return 1
    print(f"created admin {user['email']} (id {user['id']})")
    return 0


def serve(settings, database, *, host, port):
    """Serve until SIGTERM or SIGINT, then drain in-flight requests and return 0."""
    if settings.app_env != "production":
        migrate.migrate(database)
    logger = JSONLogger(enabled=settings.access_log)
    route_standard_logging(logger)
    application = create_app(settings, database=database, logger=logger)
    def log_rejected(**fields):
        logger.warning("request rejected", **fields)

    threads = settings.threads or (SQLITE_THREADS if database.engine == "sqlite" else POSTGRESQL_THREADS)
    tls_context = None
    if settings.tls_cert_file is not None:
        try:
            tls_context = httpsockets.server_context(settings.tls_cert_file, settings.tls_key_file)
        except OSError as error:  # ssl.SSLError too: not PEM, or the key of another certificate
            print(f"configuration error: TLS_CERT_FILE and TLS_KEY_FILE must be a PEM certificate and its"
                  f" private key: {error}", file=sys.stderr)
            return 2
    try:
        server = HTTPServer(application, host, port if port is not None else settings.port,
                            max_workers=threads, lanes=server_lanes(settings), lane_for=lane_for,
                            on_reject=log_rejected, tls_context=tls_context,
                            inline_for=inline_requests(settings, database.engine),
                            on_loop_moved=count_loop_move)
    except OSError as error:  # the port is taken, or the address is not this machine's
        print(f"cannot listen on {host}:{port or settings.port}: {error.strerror}", file=sys.stderr)
        return 1
    bound_host, bound_port = server.server_address[:2]
    url = f"{'https' if tls_context else 'http'}://{bound_host}:{bound_port}"
    worker = None
    if settings.worker_in_process:
        worker = Worker(database, settings, logger, threads=IN_PROCESS_WORKER_THREADS)
        worker.start()

    def stop(signal_number, frame):
        # Only set flags here: serve_forever() notices its flag, stops accepting, and lets
        # requests in flight finish (httpserver.SHUTDOWN_DEADLINE_SECONDS at most); the
        # worker claims nothing more and lets its job finish, in the same time.
        server.request_shutdown()
        application.services.order_events.request_close()  # streams end now, not at the deadline
        if worker is not None:
            worker.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("started", url=url, database=database.engine, threads=threads,
                inline_requests=server.inline_for is not None,
                job_worker=worker.worker_id if worker else None)
    print(f"Serving the shop on {url}  (Ctrl-C stops)\nTry: curl {url}/v1/items?limit=3", file=sys.stderr, flush=True)
    server.serve_forever()
    # The worker's deadline started with the signal too; the join's own bound is a backstop.
    worker_drained = worker is None or (worker.join(JOBS_SHUTDOWN_DEADLINE_SECONDS + 5) and worker.drained)
    logger.info("stopped", drained=server.drained and worker_drained)
    logger.flush()
    if not (server.drained and worker_drained):
        # A request (or a job) still stuck after the deadline: its thread would keep the
        # interpreter from exiting. The database is closed by main(); leave now.
        database.close()
        os._exit(0)
    return 0


def run_worker(settings, database):
    """`python server.py worker`: run jobs until SIGTERM or SIGINT, then let the jobs in hand
    finish (worker.SHUTDOWN_DEADLINE_SECONDS at most) and return 0."""
    if settings.app_env != "production":
        migrate.migrate(database)
    logger = JSONLogger(enabled=settings.access_log)
    route_standard_logging(logger)
    _count_for_metrics(settings, database)  # its webhook deliveries, its pool
    worker = Worker(database, settings, logger, threads=settings.worker_threads)

    def stop(signal_number, frame):
        worker.request_stop()  # sets flags only; the dispatcher does the rest

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.start()
    logger.info("worker started", worker=worker.worker_id, database=database.engine, threads=worker.threads)
    print(f"Running jobs with {worker.threads} threads on {database.engine}  (Ctrl-C stops)", file=sys.stderr,
          flush=True)
    while not worker.join(timeout=1.0):  # a bounded join, so that signals are handled promptly
        pass
    logger.info("worker stopped", worker=worker.worker_id, drained=worker.drained)
    logger.flush()
    if not worker.drained:
        database.close()
        os._exit(0)  # a job thread still running must not keep the process alive
    return 0


def server_lanes(settings):
    """The lanes of threads beside the default one (see PROBE_LANES, PASSWORDS_LANE, EVENTS_LANE)."""
    hashers = settings.password_hash_threads
    return [*(Lane(name, threads=PROBE_THREADS, max_waiting=PROBES_WAITING) for name in PROBE_LANES.values()),
            Lane(PASSWORDS_LANE, threads=hashers, max_waiting=hashers),
            Lane(EVENTS_LANE, threads=settings.max_event_streams + EVENTS_SPARE_THREADS,
                 max_waiting=EVENTS_SPARE_THREADS)]


def lane_for(method, path):
    """The lane of a request: a probe's own, the password or the event-stream lane, or None
    for the default lane.
    path is as sent, still percent-encoded; the route table knows it decoded."""
    if "%" in path:
        path = unquote(path)
    if path in PROBE_LANES:
        return PROBE_LANES[path]
    if path == EVENT_STREAM_PATH and method in ("GET", "HEAD"):
        return EVENTS_LANE
    return PASSWORDS_LANE if routes.hashes_password(method, path) else None


def inline_requests(settings, engine):
    """The HTTP server's inline_for: only when every request is CPU work in this process."""
    return inline_for if engine == "sqlite" and not settings.redis_url else None


def count_loop_move():
    """The HTTP server's on_loop_moved: one more for GET /metrics (http_loop_moves_total)."""
    metrics.RECORDER.count("http_loop_moves_total")


def inline_for(method, lane):
    """May the event loop's thread run this request itself? (INLINE_METHODS, INLINE_LANES)"""
    return method in INLINE_METHODS and lane in INLINE_LANES


def _parse_arguments(argv):
    parser = argparse.ArgumentParser(description="The shop backend.")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1, or HOST)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8000, or PORT)")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve HTTP (the default)")
    commands.add_parser("migrate", help="apply pending schema migrations")
    commands.add_parser("worker", help="run background jobs until stopped (WORKER_THREADS threads)")
    admin_parser = commands.add_parser("create-admin", help="create an admin account")
    admin_parser.add_argument("email")
    backup_parser = commands.add_parser("backup", help="copy the database to PATH (safe while the server runs)")
    backup_parser.add_argument("path", metavar="PATH")
    backup_parser.set_defaults(force=False)
    restore_parser = commands.add_parser("restore", help="restore the backup at PATH into an empty database")
    restore_parser.add_argument("path", metavar="PATH")
    restore_parser.add_argument("--force", action="store_true", help="replace the tables already there")
    seed_parser = commands.add_parser("seed", help="add demo items")
    seed_parser.add_argument("--items", type=_item_count, default=seed.DEFAULT_SEED_ITEMS,
                             help=f"how many (default {seed.DEFAULT_SEED_ITEMS})")
    return parser.parse_args(argv)


def _item_count(text):
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= seed.MAX_SEED_ITEMS:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {seed.MAX_SEED_ITEMS}")
    return int(text)


if __name__ == "__main__":
    sys.exit(main())
