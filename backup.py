"""Backups: a copy of the database taken while the shop runs, and a restore that never
overwrites data by accident.

    $ python server.py backup var/backup.db
    backed up schema version 10 to var/backup.db (SQLite, integrity ok)
    $ DATABASE_URL=sqlite:///var/restored.db python server.py restore var/backup.db
    restored schema version 10 from var/backup.db (SQLite, integrity ok)

    engine      backup PATH                                 restore PATH
    SQLite      the online backup API copies one snapshot   checked first (integrity, schema
                into a temporary file beside PATH; PRAGMA   version), then copied by the same API
                integrity_check on the copy; renamed        into DATABASE_URL's file, only when
                into place                                  that holds no table (--force: replaced)
    PostgreSQL  pg_dump --format=custom into a temporary    pg_restore --single-transaction into a
                file beside PATH; read back by pg_restore   database with no table (--force: every
                (its schema_migrations rows); renamed       object of the backup dropped and made
                into place                                  again), then schema_migrations compared

Why not `cp var/app.db`: a copy of a live SQLite file can catch a write half done, and
misses the commits still in the WAL file beside it. Both tools here read one consistent
snapshot (a read transaction; on PostgreSQL, pg_dump's repeatable-read snapshot) while the
server goes on writing.

What every backup guarantees: nothing is written at PATH until the copy is complete and
checked (a temporary file, fsynced, then renamed: a failure leaves the previous backup, or
nothing, never half a file); the file is readable by its owner only (mode 0600: it holds
password hashes and API-key hashes); the password of DATABASE_URL never appears in a
command line (`ps` shows those to every user of the machine) nor in a message.
"""

import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

import db
import migrate

# pg_dump waits at most this long for a lock on a table (a migration altering it holds it),
# then fails, rather than waiting behind it while every request queues behind pg_dump.
PG_DUMP_LOCK_WAIT = "30s"
# libpq's own limit on making a connection (PGCONNECT_TIMEOUT), for pg_dump and pg_restore.
CONNECT_TIMEOUT_SECONDS = 10
# Data sent to the server and unacknowledged this long: the kernel gives the connection up.
TCP_USER_TIMEOUT_MILLISECONDS = 30_000
# `pg_dump --version`, one table read out of an archive: quick questions, answered in this time or failed.
QUICK_COMMAND_TIMEOUT_SECONDS = 60
# The schema_migrations rows read out of a PostgreSQL backup: a few KiB; more is not ours.
MAX_MIGRATIONS_TEXT_BYTES = 1 << 20
BACKUP_FILE_MODE = 0o600
# Tables in the user's schemas: a database that has one is not empty. (Catalogue questions,
# not the shop's queries: they live here, beside the only code that asks them.)
SQLITE_TABLE_COUNT = "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
POSTGRES_TABLE_COUNT = ("SELECT count(*) FROM pg_catalog.pg_tables"
                        " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
MIGRATION_VERSIONS = "SELECT version FROM schema_migrations ORDER BY version"
# The files SQLite keeps beside a database while it is in use. A backup renamed over one of
# them would destroy it under the server: over the WAL, the commits not yet checkpointed are
# lost, and the next read finds "file is not a database".
SQLITE_COMPANION_SUFFIXES = ("-wal", "-shm", "-journal")


class BackupError(Exception):
    """A backup or restore that could not be done; the message says why, and what to do."""


def command_line(command, path, settings, *, force=False):
    """`python server.py backup PATH` and `restore PATH [--force]`: print what was done, or
    why not (on stderr); return the exit status, 0 or 1."""
    timeout_seconds = settings.database_timeout_seconds
    try:
        if command == "backup":
            print(backup_database(settings.database_url, path, timeout_seconds=timeout_seconds))
        else:
            print(restore_database(settings.database_url, path, force=force, timeout_seconds=timeout_seconds))
    except (BackupError, db.DriverMissing) as error:
        print(f"{command}: {error}", file=sys.stderr)
        return 1
    return 0


def backup_database(database_url, path, *, timeout_seconds=5.0):
    """Copy the database of `database_url` to the file `path`, checked; return a line saying so.

    Raises BackupError, and leaves whatever was at `path` before as it was, when anything fails.
    """
    path = Path(path)
    if path.is_dir():
        raise BackupError(f"{path} is a directory: name the file to write")
    if _engine(database_url) == "sqlite":
        versions = _backup_sqlite(_sqlite_file(database_url), path, timeout_seconds)
        return f"backed up schema version {versions[-1]} to {path} (SQLite, integrity ok)"
    versions = _backup_postgres(database_url, path, timeout_seconds)
    return f"backed up schema version {versions[-1]} to {path} (PostgreSQL, pg_dump custom format)"


def restore_database(database_url, path, *, force=False, timeout_seconds=5.0):
    """Restore the backup at `path` into the database of `database_url`; return a line saying so.

    The backup is checked before anything is written: it must be complete, and of a schema
    version this code knows (a backup from a newer release is refused: this code would not
    understand its tables). The target must hold no table, unless `force`. Raises BackupError.
    """
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"there is no backup file at {path}")
    if _engine(database_url) == "sqlite":
        versions = _restore_sqlite(path, _sqlite_file(database_url), force, timeout_seconds)
        summary = f"restored schema version {versions[-1]} from {path} (SQLite, integrity ok)"
    else:
        versions = _restore_postgres(database_url, path, force, timeout_seconds)
        summary = f"restored schema version {versions[-1]} from {path} (PostgreSQL, schema_migrations as in the backup)"
    pending = sorted(set(migrate.known_versions()) - set(versions))
    if pending:
        summary += (f"\nthis release has newer migrations ({', '.join(map(str, pending))}):"
                    " run `python server.py migrate`")
    return summary


# -- SQLite --------------------------------------------------------------------------------

def _backup_sqlite(source_path, path, timeout_seconds):
    if not source_path.is_file():
        raise BackupError(f"there is no SQLite database at {source_path}: is DATABASE_URL right?")
    if path.resolve() == source_path.resolve():
        raise BackupError("PATH is the database itself: write the backup to another file")
    for suffix in SQLITE_COMPANION_SUFFIXES:
        if path.resolve() == Path(f"{source_path.resolve()}{suffix}"):
            raise BackupError(f"PATH is the database's {suffix} file: write the backup to another file")
    # mode=rw: opened for reading (and the WAL's shared memory), never created if missing.
    with _file_written_in_place(path) as temporary, \
            contextlib.closing(_open_sqlite(source_path, "rw", timeout_seconds)) as source, \
            contextlib.closing(sqlite3.connect(temporary)) as copy:
        # The whole copy in one step (pages=-1), inside one read transaction: in WAL mode
        # a reader never blocks a writer, so the server goes on committing meanwhile. A
        # copy made in several steps starts again from the first page whenever another
        # connection commits between two steps: under steady writes it never finishes
        # (measured: 939 restarts in 1.4 s, 20 MB, one insert per millisecond). One step
        # took 19 ms for the same 20 MB. What it costs: the WAL cannot be checkpointed
        # past this reader until the copy ends, so it grows by the writes made meanwhile.
        try:
            source.backup(copy, pages=-1)
            # A backup is one self-contained file: no -wal or -shm beside it once it is read.
            copy.execute("PRAGMA journal_mode = DELETE")
        except sqlite3.Error as error:  # the source locked past the timeout, unreadable, a full disk
            raise BackupError(f"the copy failed: {error}") from error
        return _checked_sqlite(copy, path)


def _restore_sqlite(path, target_path, force, timeout_seconds):
    if target_path.exists() and target_path.resolve() == path.resolve():
        raise BackupError("PATH is DATABASE_URL's file itself: restore into another database")
    with contextlib.closing(_open_sqlite(path, "ro", timeout_seconds)) as backup:
        versions = _checked_sqlite(backup, path)
        _refuse_unknown_versions(versions)
        if not target_path.exists():
            target_path.parent.mkdir(parents=True, exist_ok=True)
            # Made here, owner-only, before SQLite makes it with the umask's mode.
            os.close(os.open(target_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, BACKUP_FILE_MODE))
        with contextlib.closing(_open_sqlite(target_path, "rw", timeout_seconds)) as target:
            try:
                tables = target.execute(SQLITE_TABLE_COUNT).fetchone()[0]
            except sqlite3.DatabaseError as error:
                raise BackupError(f"{target_path} is not a SQLite database ({error}): not replaced") from error
            if tables and not force:
                raise BackupError(f"{target_path} already holds {tables} tables: restore into a new file"
                                  " (DATABASE_URL=sqlite:///var/restored.db), or add --force to replace them")
            # The backup API writes through SQLite's locks, so even a database in use (with a
            # WAL file beside it) is replaced whole, in one transaction; `cp` over it would
            # leave its WAL to be replayed onto the new file, and corrupt it.
            try:
                backup.backup(target, pages=-1)
            except sqlite3.Error as error:  # the server's writes held the lock past the timeout
                raise BackupError(f"the restore into {target_path} failed, nothing was changed: {error}") from error
            restored = _checked_sqlite(target, target_path)
    if restored != versions:
        raise BackupError(f"{target_path} has schema_migrations {restored} after the restore, not {versions}")
    return versions


def _checked_sqlite(connection, path):
    """The schema versions of a SQLite database, once PRAGMA integrity_check has passed."""
    try:
        problems = [row[0] for row in connection.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise BackupError(f"{path} fails SQLite's integrity check: {'; '.join(problems[:3])}")
        versions = [row[0] for row in connection.execute(MIGRATION_VERSIONS)]
    except sqlite3.DatabaseError as error:  # not a database at all, or no schema_migrations
        raise BackupError(f"{path} is not a backup of the shop: {error}") from error
    if not versions:
        raise BackupError(f"{path} records no migration: not a backup of the shop")
    return versions


def _open_sqlite(path, mode, timeout_seconds):
    """A connection to an existing file; mode "ro" (read only) or "rw" (never creates it)."""
    try:
        return sqlite3.connect(f"file:{quote(str(path))}?mode={mode}", uri=True, timeout=timeout_seconds,
                               isolation_level=None)
    except sqlite3.Error as error:
        raise BackupError(f"cannot open {path}: {error}") from error


# -- PostgreSQL ----------------------------------------------------------------------------

def _backup_postgres(database_url, path, timeout_seconds):
    conninfo, password = _client_connection(database_url)
    pg_dump = _client_program("pg_dump", database_url, timeout_seconds)
    versions = _postgres_versions(database_url, timeout_seconds)
    if not versions:
        raise BackupError("the database has no schema_migrations: is DATABASE_URL right?")
    with _file_written_in_place(path) as temporary:
        # pg_dump reads every table in one snapshot (a repeatable-read transaction), so the
        # server goes on writing; it fails, and says why, when it cannot finish.
        _run([pg_dump, "--format=custom", f"--lock-wait-timeout={PG_DUMP_LOCK_WAIT}", f"--file={temporary}",
              f"--dbname={conninfo}"], password, action="pg_dump")
        # pg_restore of the same installation as pg_dump: it reads what that one writes.
        _archived_versions(str(Path(pg_dump).with_name("pg_restore")), temporary)
    return versions


def _restore_postgres(database_url, path, force, timeout_seconds):
    conninfo, password = _client_connection(database_url)
    pg_restore = _client_program("pg_restore", database_url, timeout_seconds)
    versions = _archived_versions(pg_restore, path)
    _refuse_unknown_versions(versions)
    tables = _postgres_table_count(database_url, timeout_seconds)
    if tables and not force:
        raise BackupError(f"the database already holds {tables} tables: restore into a new, empty database"
                          " (createdb), or add --force to drop and replace the backup's tables")
    # One transaction: a restore that fails half way leaves the database as it was.
    # --no-owner: the objects belong to the user restoring (the backup's owner may not exist
    # here). --force adds --clean --if-exists: each object of the backup is dropped first.
    _run([pg_restore, "--single-transaction", "--exit-on-error", "--no-owner", "--no-privileges",
          *(["--clean", "--if-exists"] if force else []), f"--dbname={conninfo}", str(path)],
         password, action="pg_restore")
    restored = _postgres_versions(database_url, timeout_seconds)
    if restored != versions:
        raise BackupError(f"schema_migrations reads {restored} after the restore, not {versions}")
    return versions


def _client_connection(database_url):
    """(libpq connection string without the password, the password or None) of the URL.

    The password goes to pg_dump and pg_restore through PGPASSWORD, in their environment,
    which only this user (and root) can read, unlike a command line.
    """
    try:
        import psycopg.conninfo
    except ImportError as error:
        raise db.DriverMissing("a postgresql:// DATABASE_URL needs psycopg: pip install -r requirements.txt") from error
    try:
        parameters = psycopg.conninfo.conninfo_to_dict(database_url)
    except psycopg.ProgrammingError as error:
        raise BackupError("DATABASE_URL is not a PostgreSQL URL libpq can read") from error
    password = parameters.pop("password", None)
    # The link's limits of db.py's pool, unless the URL sets its own: a server or a link that
    # dies mid-dump ends the dump with an error instead of leaving it waiting for ever.
    parameters.setdefault("keepalives", 1)
    parameters.setdefault("keepalives_idle", db.KEEPALIVE_IDLE_SECONDS)
    parameters.setdefault("keepalives_interval", db.KEEPALIVE_INTERVAL_SECONDS)
    parameters.setdefault("keepalives_count", db.KEEPALIVE_PROBES)
    parameters.setdefault("tcp_user_timeout", TCP_USER_TIMEOUT_MILLISECONDS)
    return psycopg.conninfo.make_conninfo(**parameters), password


def _client_program(name, database_url, timeout_seconds):
    """The path of pg_dump or pg_restore, once its major version is known to be at least the
    server's: an older pg_dump refuses a newer server, and an older pg_restore may not read
    what that server's pg_dump wrote."""
    executable = shutil.which(name)
    if executable is None:
        raise BackupError(f"{name} was not found on PATH: install PostgreSQL's client programs"
                          " (Debian: apt-get install postgresql-client), of the server's version or newer")
    printed = _run([executable, "--version"], None, action=name, timeout=QUICK_COMMAND_TIMEOUT_SECONDS)
    match = re.search(r"\(PostgreSQL\) ([0-9]+)", printed)
    if match is None:
        raise BackupError(f"{executable} --version printed {printed.strip()[:80]!r}, not PostgreSQL's version")
    client_major = int(match.group(1))
    with _postgres(database_url, timeout_seconds) as connection:
        server_major = int(connection.fetch_value("SHOW server_version_num")) // 10_000  # 150014: 15.14
    if client_major < server_major:
        raise BackupError(f"{name} is version {client_major}, older than the server's {server_major}: install"
                          f" the client programs of PostgreSQL {server_major} (or newer) and put them first on PATH")
    return executable


def _archived_versions(pg_restore, path):
    """The schema_migrations versions inside a pg_dump archive, read without restoring it:
    pg_restore prints that table's rows as COPY text (version, TAB, name, TAB, time); it
    connects to no server, so it gets no password."""
    printed = _run([pg_restore, "--data-only", "--table=schema_migrations", "--file=-", str(path)], None,
                   action="pg_restore", timeout=QUICK_COMMAND_TIMEOUT_SECONDS,
                   invalid=f"{path} is not a pg_dump archive")
    if len(printed) > MAX_MIGRATIONS_TEXT_BYTES:
        raise BackupError(f"{path}: its schema_migrations is far larger than the shop's")
    rows = re.search(r"^COPY \S*schema_migrations .* FROM stdin;\n(.*?)^\\\.$", printed, flags=re.M | re.S)
    versions = sorted(int(line.split("\t", 1)[0]) for line in rows.group(1).splitlines()) if rows else []
    if not versions:
        raise BackupError(f"{path} holds no schema_migrations rows: not a backup of the shop")
    return versions


def _postgres_versions(database_url, timeout_seconds):
    with _postgres(database_url, timeout_seconds) as connection:
        return migrate.recorded_versions(connection)


def _postgres_table_count(database_url, timeout_seconds):
    with _postgres(database_url, timeout_seconds) as connection:
        return connection.fetch_value(POSTGRES_TABLE_COUNT)


@contextlib.contextmanager
def _postgres(database_url, timeout_seconds):
    """One connection for a few quick questions. A command that runs once needs no pool, and
    a connection refused (a database that does not exist, a wrong password) says why at once,
    where a pool would try again in the background until its deadline."""
    import psycopg

    try:
        raw = psycopg.connect(database_url, autocommit=True, connect_timeout=max(1, int(timeout_seconds)))
    except psycopg.OperationalError as error:
        raise BackupError(f"cannot connect to the database: {' '.join(str(error).split())}") from error
    with raw:
        yield db.Connection("postgresql", raw, db.to_psycopg_placeholders)


def _run(command, password, *, action, timeout=None, invalid=None):
    """Run a client program (no shell; the password in its environment only); its stdout.

    Raises BackupError with the program's first lines of error (`invalid` first, when given)."""
    environment = {name: value for name, value in os.environ.items() if name != "DATABASE_URL"}
    environment["PGCONNECT_TIMEOUT"] = str(CONNECT_TIMEOUT_SECONDS)
    if password is not None:
        environment["PGPASSWORD"] = password
    try:
        # S603: the command is a list (no shell), and its arguments come from our own settings.
        finished = subprocess.run(command, env=environment, capture_output=True, text=True,  # noqa: S603
                                  timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        raise BackupError(f"{action} did not finish within {timeout} s") from error
    if finished.returncode != 0:
        said = " ".join(finished.stderr.strip().splitlines()[:3])
        if password:  # libpq never prints it; this makes sure
            said = said.replace(password, "***")
        raise BackupError(f"{invalid + ': ' if invalid else ''}{action} failed: {said or 'no message'}")
    return finished.stdout


# -- both ----------------------------------------------------------------------------------

@contextlib.contextmanager
def _file_written_in_place(path):
    """A temporary file beside `path` (owner-only) for the caller to fill; renamed to `path`
    once the block ends well (fsynced first: the rename must not outlive the data), deleted
    when it raises. Beside, not in /tmp: a rename is atomic only within one file system."""
    try:
        descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    except OSError as error:
        raise BackupError(f"cannot write beside {path}: {error.strerror}") from error
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, BACKUP_FILE_MODE)  # pg_dump may have made the file anew
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise BackupError(f"cannot write {path}: {error.strerror}") from error
    finally:
        temporary.unlink(missing_ok=True)
        Path(f"{temporary}-journal").unlink(missing_ok=True)
    _fsync_directory(path.parent)


def _refuse_unknown_versions(versions):
    unknown = sorted(set(versions) - set(migrate.known_versions()))
    if unknown:
        raise BackupError(f"the backup has migrations this release does not know ({', '.join(map(str, unknown))}):"
                          " it was made by a newer release; restore it with that release")


def _engine(database_url):
    if database_url.startswith("sqlite:"):
        return "sqlite"
    if database_url.startswith(("postgresql:", "postgres:")):
        return "postgresql"
    raise BackupError("DATABASE_URL must start with sqlite:/// or postgresql://")


def _sqlite_file(database_url):
    try:
        return db.sqlite_path(database_url)
    except ValueError as error:
        raise BackupError(f"DATABASE_URL: {error}") from error


def _fsync_directory(directory):
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
