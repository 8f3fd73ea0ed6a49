"""The database: connections, transactions, deadlines, and every SQLite/PostgreSQL difference.

The rest of the code writes one SQL text per query and never asks which engine it runs on.
Placeholders are SQLite's named style, which `db.py` rewrites once for psycopg:

    SELECT id, name FROM items WHERE id = :item_id        -- what a sql_*.py module writes
    SELECT id, name FROM items WHERE id = %(item_id)s     -- what PostgreSQL receives

    >>> to_psycopg_placeholders("SELECT 1 WHERE a = :a AND b::text = :b AND c LIKE '5%'")
    "SELECT 1 WHERE a = %(a)s AND b::text = %(b)s AND c LIKE '5%%'"

Two ways in, both context managers that hand out a `Connection`:

    with database.transaction() as connection:     # BEGIN ... COMMIT, or ROLLBACK on error
        connection.execute("UPDATE items SET stock = stock - 1 WHERE id = :id", {"id": 7})
    with database.connection() as connection:      # autocommit: each statement on its own
        item = connection.fetch_one("SELECT ... WHERE id = :id", {"id": 7})

A failure to reach the database (a server that is down, a file that cannot be opened, a
lock held past the timeout, a server or link that stops answering) raises
`DatabaseUnavailable`, which the web layer answers with a 503 problem, so a request never
hangs and never turns into a 500. Each block has a deadline, DATABASE_TIMEOUT_SECONDS unless
it asks for another (`connection(timeout_seconds=2)`): on PostgreSQL every wait in it, for a
pooled connection or for an answer, ends by then (see `PostgresDatabase` and `Watchdog`).
"""

import functools
import re
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

try:  # Optional: only a postgresql:// DATABASE_URL needs psycopg.
    import psycopg
    import psycopg.conninfo
    import psycopg_pool
    from psycopg.rows import dict_row
    HAVE_PSYCOPG = True
except ImportError:  # pragma: no cover - exercised on a machine without the package
    HAVE_PSYCOPG = False

from config import PROJECT_DIR
from deadlines import Watchdog

POOL_MAX_CONNECTIONS = 20
WAL_RETRY_SECONDS = 0.01  # between tries of PRAGMA journal_mode = WAL (SQLiteDatabase._use_wal)
# How long the pool keeps trying to replace a connection it lost before it gives up; the
# next request that finds no connection starts a new try at once. psycopg_pool's default,
# five minutes of ever longer pauses, left the pool recovering seconds after the database
# came back (measured: 5 to 8 s late after a 40 s outage; with 10 s, on the next request).
POOL_RECONNECT_SECONDS = 10
# TCP keepalive on PostgreSQL connections: a connection silent this long gets a probe, then
# another every interval, and after this many unanswered probes the kernel gives it up.
KEEPALIVE_IDLE_SECONDS = 10
KEEPALIVE_INTERVAL_SECONDS = 5
KEEPALIVE_PROBES = 3


class DatabaseUnavailable(Exception):
    """The database could not be reached, or did not answer in time."""


class DriverMissing(Exception):
    """DATABASE_URL names an engine whose Python driver is not installed (psycopg)."""


class IntegrityError(Exception):
    """A constraint (UNIQUE, CHECK, FOREIGN KEY) refused a write; `constraint` names it when known."""

    def __init__(self, message, constraint=None):
        super().__init__(message)
        self.constraint = constraint


def open_database(url, *, timeout_seconds=5.0):
    """Return a `SQLiteDatabase` or `PostgresDatabase` for a DATABASE_URL."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        return SQLiteDatabase(sqlite_path(url), timeout_seconds=timeout_seconds)
    if scheme in ("postgresql", "postgres"):
        return PostgresDatabase(url, timeout_seconds=timeout_seconds)
    raise ValueError("DATABASE_URL must start with sqlite:/// or postgresql://")


def sqlite_path(url):
    """The file a sqlite URL names, the way SQLAlchemy reads it.

    >>> str(sqlite_path("sqlite:////tmp/shop.db"))
    '/tmp/shop.db'
    >>> sqlite_path("sqlite:///var/app.db").name
    'app.db'
    """
    if not url.startswith("sqlite:///"):
        raise ValueError("a SQLite URL is sqlite:///relative/path.db or sqlite:////absolute/path.db")
    path = Path(url[len("sqlite:///"):])
    # The default lives under the project; any other relative path is relative to where we run.
    if url == "sqlite:///var/app.db":
        return PROJECT_DIR / path
    return path


@functools.lru_cache(maxsize=512)
def to_psycopg_placeholders(sql):
    """Rewrite `:name` placeholders as psycopg's `%(name)s`, once per SQL text (cached)."""
    sql = sql.replace("%", "%%")  # a literal % must be doubled for psycopg
    # (?<!:) leaves PostgreSQL casts such as `value::text` alone.
    return re.sub(r"(?<!:):([A-Za-z_][A-Za-z0-9_]*)", r"%(\1)s", sql)


class Connection:
    """What SQL functions receive: run one statement, get dict rows back."""

    __slots__ = ("engine", "for_update", "_raw", "_translate", "_after_commit")

    def __init__(self, engine, raw_connection, translate, *, in_transaction=False):
        self.engine = engine
        # Appended to a SELECT whose rows the transaction will change or rely on. PostgreSQL
        # (READ COMMITTED) must lock them with FOR UPDATE, or another transaction may change
        # them before this one commits. SQLite has no such clause and needs none: BEGIN
        # IMMEDIATE holds the one write lock of the whole database until COMMIT.
        self.for_update = " FOR UPDATE" if engine == "postgresql" else ""
        self._raw = raw_connection
        self._translate = translate
        # Callbacks for after a successful COMMIT; None outside a transaction (autocommit).
        self._after_commit = [] if in_transaction else None

    def after_commit(self, callback):
        """Call `callback()` once this transaction has committed, and never if it rolls back;
        at once when there is no transaction (each statement committed on its own).

        Only for telling this process something that must not be seen before the COMMIT: a
        worker woken earlier would look for a job it cannot see yet (jobs.enqueue).
        """
        if self._after_commit is None:
            callback()
        else:
            self._after_commit.append(callback)

    def run_after_commit(self):
        """Run the callbacks `after_commit` collected (the database's `transaction()` calls
        this after COMMIT)."""
        callbacks, self._after_commit = self._after_commit or [], None
        for callback in callbacks:
            callback()

    def execute(self, sql, params=None):
        """Run one statement; return the driver's cursor (for rowcount).

        Without params the text goes to the driver untouched (DDL, scripts), so a `:word`
        or a `%` in a comment is not mistaken for a placeholder.
        """
        try:
            if params is None:
                return self._raw.execute(sql)
            return self._raw.execute(self._translate(sql), params)
        except Exception as error:
            _reraise_translated(error)

    def fetch_one(self, sql, params=None):
        """The first row as a dict, or None."""
        cursor = self.execute(sql, params)
        row = cursor.fetchone()
        return None if row is None else _as_dict(cursor, row)

    def fetch_all(self, sql, params=None):
        """Every row, each as a dict."""
        cursor = self.execute(sql, params)
        rows = cursor.fetchall()
        if not rows or isinstance(rows[0], dict):
            return rows
        columns = [column[0] for column in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def fetch_value(self, sql, params=None):
        """The first column of the first row, or None."""
        row = self.fetch_one(sql, params)
        return None if row is None else next(iter(row.values()))

    def stream(self, sql, params, *, batch_size):
        """Yield the rows of a SELECT one at a time, as dicts, fetched `batch_size` at a time:
        a result of any size, and never the whole of it in memory (exports.py).

        PostgreSQL: psycopg's ordinary cursor receives the whole result before the first row,
        so this declares a server-side cursor (DECLARE ... CURSOR, then FETCH FORWARD n per
        batch), which lives in a transaction: one opened here (a savepoint inside the
        caller's). SQLite computes rows as they are asked for. Either way the rows are one
        snapshot, as of the statement's start. Closing the generator early ends it cleanly.
        """
        if self.engine == "postgresql":
            with self._raw.transaction(), self._raw.cursor(name=f"stream_{secrets.token_hex(6)}") as cursor:
                cursor.execute(self._translate(sql), params)
                yield from _in_batches(cursor, batch_size)
        else:
            yield from _in_batches(self.execute(sql, params), batch_size)

    def execute_many(self, sql, params_list):
        try:
            self._raw.cursor().executemany(self._translate(sql), params_list)
        except Exception as error:
            _reraise_translated(error)


class SQLiteDatabase:
    """SQLite: one connection per thread, WAL journal, and one writer at a time.

    - WAL lets readers run while one writer writes; `synchronous=FULL` makes a COMMIT
      durable before we answer (the default NORMAL in WAL mode may lose the last commits
      on power loss).
    - `foreign_keys` is off by default in SQLite, for backward compatibility: switch it on.
    - Threads that write take `_write_lock` first. Without it, concurrent writers sleep and
      retry inside the busy timeout (p99 of hundreds of ms) and, while they wait, hold read
      snapshots that stop the WAL from being checkpointed.
      Other *processes* still meet the busy timeout, which is the most a request waits.
    - SQLite's own lower() changes ASCII letters only, so "Élan" would never match "élan"
      as it does on PostgreSQL: `lower` is replaced by one that lowers every letter.
    - A file on this machine has no link that can stop answering: the waits are the busy
      timeout and the write lock, both `timeout_seconds`, and a block's own
      `timeout_seconds` changes neither.
    """

    engine = "sqlite"

    def __init__(self, path, *, timeout_seconds=5.0):
        self.path = Path(path)
        self.timeout_seconds = timeout_seconds
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._all_connections = []
        self._all_connections_lock = threading.Lock()

    @contextmanager
    def connection(self, *, timeout_seconds=None):
        yield Connection("sqlite", self._thread_connection(), _same_sql)

    @contextmanager
    def transaction(self, *, timeout_seconds=None):
        raw = self._thread_connection()
        if not self._write_lock.acquire(timeout=self.timeout_seconds):
            raise DatabaseUnavailable("timed out waiting for the SQLite write lock")
        try:
            # IMMEDIATE takes the write lock at BEGIN. A DEFERRED transaction that reads
            # first and writes later can fail with SQLITE_BUSY at the write, when another
            # process got there in between, and that error cannot be waited out.
            _run(raw, "BEGIN IMMEDIATE")
            connection = Connection("sqlite", raw, _same_sql, in_transaction=True)
            try:
                yield connection
                _run(raw, "COMMIT")
            except BaseException:
                raw.rollback()
                raise
        finally:
            self._write_lock.release()
        connection.run_after_commit()

    def pool_stats(self):
        """For /metrics: no pool, but a connection per thread, and one writer at a time."""
        return {"db_sqlite_connections": len(self._all_connections),
                "db_sqlite_write_lock_held": int(self._write_lock.locked())}

    def close(self):
        with self._all_connections_lock:
            for raw in self._all_connections:
                raw.close()
            self._all_connections.clear()
        self._local = threading.local()

    def _thread_connection(self):
        raw = getattr(self._local, "connection", None)
        if raw is None:
            raw = self._connect()
            self._local.connection = raw
        return raw

    def _connect(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit; transaction() issues BEGIN/COMMIT itself,
            # so no statement is ever wrapped in a transaction we did not ask for.
            raw = sqlite3.connect(
                self.path, timeout=self.timeout_seconds, isolation_level=None, check_same_thread=False
            )
            self._use_wal(raw)
            raw.execute("PRAGMA synchronous = FULL")
            raw.execute("PRAGMA foreign_keys = ON")
            raw.execute(f"PRAGMA busy_timeout = {int(self.timeout_seconds * 1000)}")
            raw.create_function("lower", 1, unicode_lower, deterministic=True)
        except (sqlite3.Error, OSError) as error:
            raise DatabaseUnavailable(f"cannot open the SQLite database: {error}") from error
        with self._all_connections_lock:
            self._all_connections.append(raw)
        return raw

    def _use_wal(self, raw):
        """PRAGMA journal_mode = WAL, tried again for up to the timeout while another connection
        holds the lock it needs: SQLite answers "database is locked" at once there, without its
        busy handler (seen when threads open a new database together and one migrates it)."""
        deadline = time.monotonic() + self.timeout_seconds
        while True:
            try:
                raw.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() >= deadline:
                    raise
                time.sleep(WAL_RETRY_SECONDS)


class PostgresDatabase:
    """PostgreSQL through psycopg 3 and a connection pool shared by the process's threads.

    Connections are in autocommit mode, like SQLite's above, and `transaction()` opens an
    explicit transaction, so the two engines behave alike.

    Every wait is bounded on this side of the wire. `statement_timeout` is enforced by the
    server, so it cannot help when the server, or the link to it, stops answering; and
    psycopg waits for an answer for as long as it takes. Each block (one `connection()` or
    `transaction()`) gets a deadline, and each wait in it a bound:

        waiting for                          bounded by
        a free connection from the pool      the pool's timeout: what is left of the deadline
        a new connection to be made          connect_timeout (libpq; at least 2 s)
        any answer, once a connection is     the deadline: the `Watchdog` shuts the socket
          ours (the check, each statement)     down, psycopg raises, the connection is dropped
        a link that is cut (host down,       tcp_user_timeout on data sent, TCP keepalives
          cable pulled), idle ones too         on idle connections: the kernel gives up

    Measured: on a cut link a query waited over 40 s with neither set, 3.4 s with
    tcp_user_timeout at 3 s; an idle connection was found dead after 15 s. But a server
    process that is stopped, or a proxy in between that hangs, has a kernel that still
    acknowledges every byte and every keepalive probe, so neither ever fires: requests then
    waited until the link came back (70 s and counting, tests/tcpproxy.py paused). Only the
    deadline ends that wait. Past it the request gets `DatabaseUnavailable` (a 503), and the
    connection never goes back to the pool; once the link answers again, new connections
    work, and nothing needs restarting.
    """

    engine = "postgresql"

    def __init__(self, url, *, timeout_seconds=5.0):
        if not HAVE_PSYCOPG:
            raise DriverMissing("a postgresql:// DATABASE_URL needs psycopg: pip install -r requirements.txt")
        self.timeout_seconds = timeout_seconds
        # A statement running longer than the timeout is cancelled by the server. Added to
        # any `options` the URL already has (e.g. -csearch_path=...), not in place of them.
        url_options = psycopg.conninfo.conninfo_to_dict(url).get("options", "")
        options = f"{url_options} -c statement_timeout={int(timeout_seconds * 1000)}".strip()
        self._watchdog = Watchdog()
        self._pool = psycopg_pool.ConnectionPool(
            url, min_size=1, max_size=POOL_MAX_CONNECTIONS, reconnect_timeout=POOL_RECONNECT_SECONDS,
            kwargs={
                "autocommit": True, "row_factory": dict_row,
                "options": options, "connect_timeout": max(1, int(timeout_seconds)),
                "keepalives": 1, "keepalives_idle": KEEPALIVE_IDLE_SECONDS,
                "keepalives_interval": KEEPALIVE_INTERVAL_SECONDS, "keepalives_count": KEEPALIVE_PROBES,
                # Data sent and still unacknowledged after this long (milliseconds): the
                # kernel gives the connection up, as the deadline would have anyway.
                "tcp_user_timeout": int(timeout_seconds * 1000),
            },
            open=False,
        )
        self._pool.open(wait=False)

    @contextmanager
    def connection(self, *, timeout_seconds=None):
        with self._pooled(timeout_seconds or self.timeout_seconds) as raw:
            yield Connection("postgresql", raw, to_psycopg_placeholders)

    @contextmanager
    def transaction(self, *, timeout_seconds=None):
        with self._pooled(timeout_seconds or self.timeout_seconds) as raw:
            try:
                with raw.transaction():
                    connection = Connection("postgresql", raw, to_psycopg_placeholders, in_transaction=True)
                    yield connection
            except psycopg.OperationalError as error:
                raise DatabaseUnavailable(str(error)) from error
        connection.run_after_commit()

    def pool_stats(self):
        """For /metrics: the pool's connections lent out, idle and at most, and threads waiting."""
        stats = self._pool.get_stats()
        idle = stats.get("pool_available", 0)
        return {"db_pool_connections_in_use": stats.get("pool_size", 0) - idle, "db_pool_connections_idle": idle,
                "db_pool_connections_max": POOL_MAX_CONNECTIONS,
                "db_pool_requests_waiting": stats.get("requests_waiting", 0)}

    def close(self):
        self._pool.close()
        self._watchdog.stop()

    @contextmanager
    def _pooled(self, timeout_seconds):
        """A pooled connection for one block, every wait in it over by the deadline."""
        deadline = time.monotonic() + timeout_seconds
        raw, alarm = self._checked_out(deadline)
        try:
            yield raw
        except (DatabaseUnavailable, psycopg.Error) as error:
            if alarm.rang:
                # Cut off, perhaps during COMMIT: whether that committed, nobody here knows.
                # An Idempotency-Key makes the client's retry safe either way.
                raise DatabaseUnavailable(f"PostgreSQL did not answer within {timeout_seconds:g} s") from error
            raise
        finally:
            if self._watchdog.disarm(alarm):
                raw.close()  # its socket is shut down: it must never go back into the pool
            # putconn() rolls back anything left open and discards a broken or closed connection.
            self._pool.putconn(raw)

    def _checked_out(self, deadline):
        """A connection from the pool that has just answered, with its alarm set for `deadline`.

        One that broke while idle (the server restarted) fails the check at once and the next
        one is tried; one whose link stopped answering is cut off by the alarm.
        """
        while (remaining_seconds := deadline - time.monotonic()) > 0:
            try:
                raw = self._pool.getconn(timeout=remaining_seconds)
            except psycopg.OperationalError as error:  # PoolTimeout, or PoolClosed
                # Every connection busy, or none can be made: the server is down or unreachable.
                raise DatabaseUnavailable("no PostgreSQL connection within the deadline") from error
            alarm = self._watchdog.arm(raw.pgconn.socket, deadline)
            try:
                raw.execute("")  # an empty query: one round trip, as the pool's own check does
                return raw, alarm
            except psycopg.Error:
                self._watchdog.disarm(alarm)
                raw.close()
                self._pool.putconn(raw)
        raise DatabaseUnavailable("PostgreSQL did not answer in time")


def unicode_lower(text):
    """lower() as PostgreSQL computes it on UTF-8 text: each letter on its own, every alphabet.

    >>> unicode_lower("ÉLAN Straße")
    'élan straße'

    Character by character, as PostgreSQL does: Python's str.lower() would also apply
    context rules (a capital sigma at the end of a word becomes the final sigma), and then
    the engines would disagree.
    """
    if text is None:
        return None
    return "".join(letter.lower() if len(letter.lower()) == 1 else letter for letter in text)


def utc_now(offset_seconds=0):
    """The current time as fixed-width RFC 3339 UTC text, the form every timestamp is stored in;
    `offset_seconds` later (or earlier, when negative)."""
    return utc_text(datetime.now(UTC) + timedelta(seconds=offset_seconds))


def utc_text(moment):
    """An aware datetime as fixed-width RFC 3339 UTC text.

    >>> utc_text(datetime(2026, 11, 28, 10, 0, tzinfo=UTC))
    '2026-11-28T10:00:00.000000Z'
    """
    moment = moment.astimezone(UTC)
    # The year by hand: strftime's %Y writes the year 999 as "999", not "0999".
    return f"{moment.year:04d}-" + moment.strftime("%m-%dT%H:%M:%S.%fZ")


def _same_sql(sql):
    return sql


def _run(raw, sql):
    try:
        raw.execute(sql)
    except sqlite3.Error as error:
        _reraise_translated(error)


def _in_batches(cursor, batch_size):
    while rows := cursor.fetchmany(batch_size):
        for row in rows:
            yield _as_dict(cursor, row)


def _as_dict(cursor, row):
    if isinstance(row, dict):
        return row
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


def _reraise_translated(error):
    translated = _translate_error(error)
    if translated is error:
        raise error
    raise translated from error


def _translate_error(error):
    """Map driver exceptions onto the two the application handles; pass others through."""
    if isinstance(error, sqlite3.IntegrityError):
        return IntegrityError(str(error))
    if isinstance(error, sqlite3.OperationalError):
        message = str(error)
        if "locked" in message or "unable to open" in message or "disk I/O" in message:
            return DatabaseUnavailable(message)
        return error
    if HAVE_PSYCOPG:
        if isinstance(error, psycopg.errors.IntegrityError):
            return IntegrityError(str(error), getattr(error.diag, "constraint_name", None))
        if isinstance(error, (psycopg.OperationalError, psycopg.errors.QueryCanceled)):
            return DatabaseUnavailable(str(error))
    return error
