"""backup.py: `python server.py backup PATH` and `restore PATH`, on both engines.

The central test takes a backup while customers place orders, restores it into an empty
database, and proves the copy is one consistent moment of the source: every order whose
answer came before the backup began is in it, none sent after it ended is, each order has
its lines, its total and its email job, stock + units sold is still the initial stock of
every item, and every restored row is the source's row, unchanged.

PostgreSQL tests make databases of their own (pg_dump copies a whole database, so the
schemas the other tests share in `test` will not do) and drop them afterwards.
"""

import contextlib
import json
import os
import random
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import (
    POLL_SECONDS,
    POSTGRES_ADMIN_URL,
    PROJECT_DIR,
    TEST_ITERATIONS,
    TEST_SECRET_KEY,
    UserFactory,
    WSGIClient,
    make_item,
    place,
    postgres_admin,
    server_env,
    unavailable,
)

import backup
import config
import db
import migrate
import server
import sql_items
from observe import JSONLogger

INITIAL_STOCK = 1_000_000  # never runs out: every order the writers send is placed
WRITERS = 2
ORDERS_BEFORE = ORDERS_AFTER = 15  # placed before the backup starts, and after it ends, at least
# Items with long descriptions, so that the SQLite copy takes long enough for orders to
# commit while it runs (about 8 MB).
BALLAST_ITEMS, BALLAST_DESCRIPTION = 1_600, "x" * 5_000
WAIT_SECONDS = 30
PASSWORD = "sekrit-Pa55-in-the-url"  # accepted by the test server's trust authentication


# -- databases of their own ------------------------------------------------------------------

@pytest.fixture
def new_database(engine, tmp_path):
    """new_database() -> the URL of a new, empty database: a file name in tmp_path, or a
    PostgreSQL database made for the test (and dropped after it)."""
    made = []
    if engine == "postgresql":  # every PostgreSQL test here runs them
        real_program("pg_dump"), real_program("pg_restore")

    def make(password=None):
        name = f"backup_{uuid.uuid4().hex[:12]}"
        if engine == "sqlite":
            return f"sqlite:///{tmp_path / name}.db"
        with postgres_admin() as admin:
            admin.execute(f"CREATE DATABASE {name}")
        made.append(name)
        return postgres_url(name, password)

    yield make
    if made:
        with postgres_admin() as admin:
            for name in made:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def postgres_url(name, password=None):
    """The test server's URL for the database `name`, with a password when given."""
    parts = urlsplit(POSTGRES_ADMIN_URL)
    netloc = parts.netloc if password is None else parts.netloc.replace("@", f":{password}@", 1)
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{name}"))


def shop_settings(database_url):
    return config.load_settings({"APP_ENV": "test", "DATABASE_URL": database_url, "SECRET_KEY": TEST_SECRET_KEY,
                                 "PBKDF2_ITERATIONS": str(TEST_ITERATIONS), "RATE_LIMITS": "off"})


@contextlib.contextmanager
def opened(database_url, *, migrated=False):
    database = db.open_database(database_url)
    try:
        if migrated:
            migrate.migrate(database)
        yield database
    finally:
        database.close()


# Each table's key: order lines are an order's, one per item.
KEYS = {"order_items": ("order_id", "item_id")}


def rows(database, table):
    """{key: row} of a table: its id, or KEYS' columns."""
    key = KEYS.get(table, ("id",))
    with database.connection() as connection:
        found = connection.fetch_all(f"SELECT * FROM {table}")
    return {tuple(row[column] for column in key) if len(key) > 1 else row[key[0]]: row for row in found}


# -- a backup under write load ---------------------------------------------------------------

class Customers:
    """Threads placing orders through the API until stopped; each order's id with the moment
    its request was sent and the moment its answer came (time.monotonic())."""

    def __init__(self, app, headers, items):
        self.app, self.headers, self.items = app, headers, items
        self.placed, self.failures = [], []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._place_orders, args=(each,)) for each in headers]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        for thread in self.threads:
            thread.join(WAIT_SECONDS)

    def wait_for(self, count):
        deadline = time.monotonic() + WAIT_SECONDS
        while len(self.placed) < count and not self.failures:
            assert time.monotonic() < deadline, f"only {len(self.placed)} orders placed in {WAIT_SECONDS} s"
            time.sleep(POLL_SECONDS)
        assert not self.failures, self.failures[0]

    def _place_orders(self, headers):
        client, chance = WSGIClient(self.app), random.Random()
        while not self.stop.is_set():
            lines = [{"item_id": item["id"], "quantity": chance.randint(1, 3)} for item in chance.sample(self.items, 2)]
            sent = time.monotonic()
            response = place(client, headers, lines)
            if response.status != 201:
                self.failures.append(response)
                return
            self.placed.append((response.json()["id"], sent, time.monotonic()))


def test_a_backup_taken_under_write_load_restores_one_consistent_moment(engine, new_database, tmp_path):
    source_url, backup_path = new_database(), tmp_path / "shop.backup"
    with opened(source_url, migrated=True) as source:
        items = [make_item(source, INITIAL_STOCK, name=f"Item {number}") for number in range(1, 6)]
        if engine == "sqlite":
            with source.transaction() as connection:
                for number in range(BALLAST_ITEMS):
                    sql_items.insert_item(connection, {"name": f"Ballast {number}", "description": BALLAST_DESCRIPTION,
                                                       "price_cents": 1, "stock": 0}, db.utc_now())
        users = UserFactory(source, shop_settings(source_url))
        headers = [users.headers(users.create()) for _ in range(WRITERS)]
        app = server.create_app(shop_settings(source_url), database=source, logger=JSONLogger(enabled=False))
        with Customers(app, headers, items) as customers:
            customers.wait_for(ORDERS_BEFORE)
            started = time.monotonic()
            backup.backup_database(source_url, backup_path)
            ended = time.monotonic()
            customers.wait_for(len(customers.placed) + ORDERS_AFTER)
        assert not customers.failures, customers.failures[0]

        target_url = new_database()
        backup.restore_database(target_url, backup_path)
        with opened(target_url) as restored:
            restored_orders = rows(restored, "orders").keys()
            # The moment of the backup lies between its start and its end.
            assert {order_id for order_id, _, answered in customers.placed if answered < started} <= restored_orders
            assert not {order_id for order_id, sent, _ in customers.placed if sent > ended} & restored_orders
            assert ORDERS_BEFORE <= len(restored_orders) < len(customers.placed)
            # Orders were being written while the copy was made: this is a backup under load.
            assert any(started < answered < ended for _, _, answered in customers.placed), "no order during the backup"
            assert_consistent(restored, items)
            # Every restored row is the source's row (orders, lines and jobs are only ever
            # inserted here; users and the five items' other columns never change).
            for table in ("users", "orders", "order_items", "jobs"):
                source_rows, restored_rows = rows(source, table), rows(restored, table)
                assert restored_rows == {row_id: source_rows[row_id] for row_id in restored_rows}, table
            assert migrate.applied_versions(restored) == migrate.applied_versions(source)


def assert_consistent(database, items):
    """Each order has lines adding up to its total and its email job; stock + units sold is
    the initial stock of every item: no transaction is half in the snapshot."""
    orders, lines, jobs = rows(database, "orders"), rows(database, "order_items"), rows(database, "jobs")
    totals = {order_id: 0 for order_id in orders}
    sold = {item["id"]: 0 for item in items}
    for line in lines.values():
        totals[line["order_id"]] += line["quantity"] * line["unit_price_cents"]
        sold[line["item_id"]] += line["quantity"]
    assert totals == {order_id: order["total_cents"] for order_id, order in orders.items()}
    assert all(total > 0 for total in totals.values())
    emailed = sorted(json.loads(job["payload"])["order_id"] for job in jobs.values() if job["kind"] == "email.order")
    assert emailed == sorted(orders)
    stock = {row_id: row["stock"] for row_id, row in rows(database, "items").items() if row_id in sold}
    assert {item_id: stock[item_id] + sold[item_id] for item_id in sold} == dict.fromkeys(sold, INITIAL_STOCK)


# -- the command line -------------------------------------------------------------------------

def shop_command(*arguments, database_url, **environment):
    """`python server.py ARGUMENTS` with this DATABASE_URL (and environment); the finished process."""
    return subprocess.run([sys.executable, "server.py", *arguments], cwd=PROJECT_DIR, capture_output=True, text=True,
                          env=server_env(database_url, **environment), timeout=120, check=False)


def latest_version():
    return migrate.known_versions()[-1]


def item_names(database_url):
    with opened(database_url) as database:
        return sorted(row["name"] for row in rows(database, "items").values())


def add_item(database_url, name):
    with opened(database_url) as database:
        make_item(database, 1, name=name)


def test_backup_and_restore_on_the_command_line(engine, new_database, tmp_path):
    source_url, backup_path = new_database(), tmp_path / "backups" / "shop.backup"
    backup_path.parent.mkdir()
    with opened(source_url, migrated=True) as source:
        make_item(source, 3, name="Teapot")

    backed_up = shop_command("backup", str(backup_path), database_url=source_url)
    label = {"sqlite": "SQLite, integrity ok", "postgresql": "PostgreSQL, pg_dump custom format"}[engine]
    assert (backed_up.returncode, backed_up.stdout, backed_up.stderr) == (
        0, f"backed up schema version {latest_version()} to {backup_path} ({label})\n", "")
    assert stat.S_IMODE(backup_path.stat().st_mode) == 0o600  # it holds password hashes
    assert os.listdir(backup_path.parent) == ["shop.backup"]  # no temporary file left, no -wal beside it

    target_url = new_database()
    restored = shop_command("restore", str(backup_path), database_url=target_url)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith(f"restored schema version {latest_version()} from {backup_path} (")
    assert item_names(target_url) == ["Teapot"]

    # Data there already: refused, and left as it was, unless --force says to replace it.
    add_item(target_url, "Kettle")
    refused = shop_command("restore", str(backup_path), database_url=target_url)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("restore: ") and "already holds" in refused.stderr and "--force" in refused.stderr
    assert item_names(target_url) == ["Kettle", "Teapot"]
    forced = shop_command("restore", "--force", str(backup_path), database_url=target_url)
    assert forced.returncode == 0, forced.stderr
    assert item_names(target_url) == ["Teapot"]


def sqlite_backup(tmp_path):
    """A good backup of a migrated SQLite database, and that database's URL."""
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    with opened(source_url, migrated=True):
        pass
    backup_path = tmp_path / "good.backup"
    backup.backup_database(source_url, backup_path)
    return source_url, backup_path


def newer_release_backup(tmp_path, good):
    path = tmp_path / "newer.backup"
    shutil.copyfile(good, path)
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("INSERT INTO schema_migrations VALUES (9999, 'from_the_future', '2030-01-01')")
    return path


def not_the_shop(tmp_path, good):
    path = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
    return path


def truncated(tmp_path, good):
    path = tmp_path / "truncated.backup"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return path


@pytest.mark.parametrize("make_backup, message", [
    (truncated, "is not a backup of the shop: database disk image is malformed"),
    (lambda tmp_path, good: tmp_path / "missing.backup", "there is no backup file at"),
    (lambda tmp_path, good: (tmp_path / "text.backup").write_text("hello") and tmp_path / "text.backup",
     "is not a backup of the shop: file is not a database"),
    (not_the_shop, "is not a backup of the shop: no such table: schema_migrations"),
    (newer_release_backup, "the backup has migrations this release does not know (9999): it was made by a newer"),
])
def test_restore_refuses_a_backup_it_cannot_trust_and_writes_nothing(tmp_path, make_backup, message):
    _, good = sqlite_backup(tmp_path)
    target = tmp_path / "restored.db"
    refused = shop_command("restore", str(make_backup(tmp_path, good)), database_url=f"sqlite:///{target}")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("restore: ") and message in refused.stderr, refused.stderr
    assert not target.exists()


@pytest.mark.parametrize("path, message", [
    ("missing/shop.backup", "cannot write beside {tmp}/missing/shop.backup: No such file or directory"),
    ("a-file/shop.backup", "cannot write beside {tmp}/a-file/shop.backup: Not a directory"),
    (".", "{tmp} is a directory: name the file to write"),
    ("source.db", "PATH is the database itself: write the backup to another file"),
    # The files SQLite keeps beside a live database: replacing its WAL loses the commits not
    # yet checkpointed, and the server's next read finds "file is not a database".
    ("source.db-wal", "PATH is the database's -wal file: write the backup to another file"),
    ("source.db-shm", "PATH is the database's -shm file: write the backup to another file"),
    ("source.db-journal", "PATH is the database's -journal file: write the backup to another file"),
])
def test_backup_refuses_a_path_it_cannot_write(tmp_path, path, message):
    source_url, _ = sqlite_backup(tmp_path)
    (tmp_path / "a-file").write_text("a file, not a directory")
    before = sorted(os.listdir(tmp_path))
    refused = shop_command("backup", str(tmp_path / path), database_url=source_url)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == f"backup: {message.format(tmp=tmp_path)}\n"
    assert sorted(os.listdir(tmp_path)) == before


def test_a_backup_of_no_database_says_so_and_keeps_the_previous_backup(tmp_path):
    previous = tmp_path / "shop.backup"
    previous.write_bytes(b"yesterday's backup")
    refused = shop_command("backup", str(previous), database_url=f"sqlite:///{tmp_path / 'nothing.db'}")
    assert (refused.returncode, refused.stderr) == (
        1, f"backup: there is no SQLite database at {tmp_path / 'nothing.db'}: is DATABASE_URL right?\n")
    assert previous.read_bytes() == b"yesterday's backup" and os.listdir(tmp_path) == ["shop.backup"]


# -- PostgreSQL's client programs --------------------------------------------------------------

def real_program(name):
    found = shutil.which(name)
    if found is None:
        unavailable(f"{name} is not installed (Debian: postgresql-client)")
    return found


def fake_programs(directory, scripts):
    """Executables in `directory`, one per {name: shell script body}; the directory."""
    directory.mkdir(exist_ok=True)
    for name, body in scripts.items():
        program = directory / name
        program.write_text(f"#!/bin/sh\n{body}\n")
        program.chmod(0o755)
    return directory


@pytest.mark.parametrize("engine", ["postgresql"])
def test_pg_dump_missing_or_older_than_the_server_is_a_clear_error(engine, new_database, tmp_path):
    source_url = new_database()
    with opened(source_url, migrated=True):
        pass
    empty_path = fake_programs(tmp_path / "empty", {})
    missing = shop_command("backup", str(tmp_path / "shop.dump"), database_url=source_url, PATH=str(empty_path))
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr.startswith("backup: pg_dump was not found on PATH: install PostgreSQL's client programs")

    old = fake_programs(tmp_path / "old", {"pg_dump": 'echo "pg_dump (PostgreSQL) 9.6.24"'})
    older = shop_command("backup", str(tmp_path / "shop.dump"), database_url=source_url, PATH=str(old))
    assert older.returncode == 1
    assert older.stderr.startswith("backup: pg_dump is version 9, older than the server's ")
    assert not (tmp_path / "shop.dump").exists()


@pytest.mark.parametrize("engine", ["postgresql"])
def test_a_pg_dump_that_fails_half_way_leaves_the_previous_backup(engine, new_database, tmp_path):
    source_url = new_database()
    with opened(source_url, migrated=True):
        pass
    previous = tmp_path / "shop.dump"
    previous.write_bytes(b"yesterday's backup")
    # pg_dump as it would be with its disk full: its version, then half a file and an error.
    failing = fake_programs(tmp_path / "bin", {"pg_dump": f"""
        [ "$1" = --version ] && exec {real_program("pg_dump")} --version
        for argument; do case $argument in --file=*) echo half > "${{argument#--file=}}";; esac; done
        echo 'pg_dump: error: could not write to output file: No space left on device' >&2; exit 1"""})
    failed = shop_command("backup", str(previous), database_url=source_url, PATH=f"{failing}:{os.environ['PATH']}")
    assert failed.returncode == 1
    assert failed.stderr == ("backup: pg_dump failed:"
                             " pg_dump: error: could not write to output file: No space left on device\n")
    assert previous.read_bytes() == b"yesterday's backup" and sorted(os.listdir(tmp_path)) == ["bin", "shop.dump"]


@pytest.mark.parametrize("engine", ["postgresql"])
def test_the_password_is_never_in_a_command_line_nor_in_a_message(engine, new_database, tmp_path):
    """pg_dump and pg_restore get it through PGPASSWORD; wrappers record what they were given."""
    source_url, target_url = new_database(PASSWORD), new_database(PASSWORD)
    with opened(source_url, migrated=True):
        pass
    log = tmp_path / "calls.log"
    recording = f'echo "$0 $* PGPASSWORD=$PGPASSWORD" >> {log}; exec {{real}} "$@"'
    wrappers = fake_programs(tmp_path / "bin", {name: recording.format(real=real_program(name))
                                                for name in ("pg_dump", "pg_restore")})
    path_variable = f"{wrappers}:{os.environ['PATH']}"
    dump = tmp_path / "shop.dump"
    outputs = [shop_command("backup", str(dump), database_url=source_url, PATH=path_variable),
               shop_command("restore", str(dump), database_url=target_url, PATH=path_variable),
               shop_command("restore", str(dump), database_url=target_url, PATH=path_variable),  # refused
               shop_command("backup", str(dump), database_url=postgres_url("no_such_database", PASSWORD))]
    assert [done.returncode for done in outputs] == [0, 0, 1, 1]
    calls = log.read_text().splitlines()
    assert len(calls) >= 5  # versions, the dump, its read-back, the restore's read and the restore
    for call in calls:
        arguments, _, given = call.partition(" PGPASSWORD=")
        # Only the calls that connect get it (not `pg_dump --version`, nor an archive read back).
        assert PASSWORD not in arguments and given == (PASSWORD if " --dbname=" in arguments else ""), call
    assert all(PASSWORD not in done.stdout + done.stderr for done in outputs)


@pytest.mark.parametrize("engine", ["postgresql"])
def test_a_damaged_archive_is_refused_and_the_database_stays_empty(engine, new_database, tmp_path):
    source_url, target_url = new_database(), new_database()
    with opened(source_url, migrated=True) as source:
        make_item(source, 3, name="Teapot")
    dump = tmp_path / "shop.dump"
    backup.backup_database(source_url, dump)
    damaged = tmp_path / "damaged.dump"
    damaged.write_bytes(dump.read_bytes()[: dump.stat().st_size // 2])
    sqlite_file = sqlite_backup(tmp_path)[1]
    for path in (damaged, sqlite_file):
        refused = shop_command("restore", str(path), database_url=target_url)
        assert refused.returncode == 1 and refused.stderr.startswith("restore: "), refused.stderr
        with opened(target_url) as target, target.connection() as connection:
            assert connection.fetch_value(backup.POSTGRES_TABLE_COUNT) == 0


def test_an_older_backup_is_restored_and_the_newer_migrations_named(tmp_path):
    _, good = sqlite_backup(tmp_path)
    with contextlib.closing(sqlite3.connect(good)) as connection, connection:
        connection.execute("DELETE FROM schema_migrations WHERE version = :latest", {"latest": latest_version()})
    target = tmp_path / "restored.db"
    restored = shop_command("restore", str(good), database_url=f"sqlite:///{target}")
    older = migrate.known_versions()[-2]
    assert (restored.returncode, restored.stderr) == (0, "")
    assert restored.stdout == (f"restored schema version {older} from {good} (SQLite, integrity ok)\n"
                               f"this release has newer migrations ({latest_version()}):"
                               " run `python server.py migrate`\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.parametrize("database_url, message", [
    ("sqlite:///{tmp}/good.backup", "PATH is DATABASE_URL's file itself: restore into another database"),
    ("sqlite:shop.db", "DATABASE_URL: a SQLite URL is sqlite:///relative/path.db or sqlite:////absolute/path.db"),
])
def test_restore_refuses_a_target_that_makes_no_sense(tmp_path, database_url, message):
    _, good = sqlite_backup(tmp_path)
    before = good.read_bytes()
    refused = shop_command("restore", "--force", str(good), database_url=database_url.format(tmp=tmp_path))
    assert (refused.returncode, refused.stderr) == (1, f"restore: {message}\n")
    assert good.read_bytes() == before
