"""db.py: transactions, engine settings, and a database that is down or stops answering.

Which index serves each query (EXPLAIN) is tested in test_query_plans.py.
"""

import io
import threading
import time
from collections import namedtuple
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import POLL_SECONDS, TEST_SECRET_KEY, WSGIClient, assert_problem, client_for, responses_at_once
from tcpproxy import TCPProxy
from test_migrate import migrate_from_threads

import config
import db
import server
import sql_items
from observe import JSONLogger

# -- connections and transactions ---------------------------------------------------------

def test_a_transaction_commits_or_rolls_back_as_a_whole(database):
    now = db.utc_now()
    item = {"name": "Kettle", "description": "", "price_cents": 100, "stock": 1}
    with pytest.raises(RuntimeError), database.transaction() as connection:
        sql_items.insert_items(connection, [item], now)
        raise RuntimeError("change of plan")
    with database.connection() as connection:
        assert sql_items.count_items(connection) == 0
    with database.transaction() as connection:
        sql_items.insert_items(connection, [item], now)
    with database.connection() as connection:
        assert sql_items.count_items(connection) == 1


@pytest.mark.parametrize("bad_item", [
    {"name": "Negative", "description": "", "price_cents": -1, "stock": 1},
    {"name": "", "description": "", "price_cents": 1, "stock": 1},
    {"name": "Oversold", "description": "", "price_cents": 1, "stock": -1},
])
def test_check_constraints_raise_integrity_error_and_keep_the_data(database, bad_item):
    with pytest.raises(db.IntegrityError), database.transaction() as connection:
        sql_items.insert_items(connection, [bad_item], db.utc_now())
    with database.connection() as connection:
        assert sql_items.count_items(connection) == 0


def test_foreign_keys_are_enforced(database):
    with pytest.raises(db.IntegrityError), database.transaction() as connection:
        connection.execute(
            "INSERT INTO orders (user_id, total_cents, created_at, updated_at) VALUES (:user_id, 0, :now, :now)",
            {"user_id": 12345, "now": db.utc_now()},
        )


def test_sqlite_runs_in_wal_with_full_sync_foreign_keys_and_a_busy_timeout(tmp_path):
    database = db.open_database(f"sqlite:///{tmp_path}/pragmas.db", timeout_seconds=3)
    try:
        with database.connection() as connection:
            assert connection.fetch_value("PRAGMA journal_mode") == "wal"
            assert connection.fetch_value("PRAGMA synchronous") == 2  # FULL
            assert connection.fetch_value("PRAGMA foreign_keys") == 1
            assert connection.fetch_value("PRAGMA busy_timeout") == 3000
    finally:
        database.close()


def test_threads_opening_a_new_sqlite_database_while_one_migrates_it_all_connect(tmp_path):
    """Switching a connection to WAL can meet "database is locked" at once while another
    thread migrates a new file (SQLite's busy handler does not wait there): it was 5 rounds
    in 60 here before db.py tried again. 40 rounds of 4 threads."""
    errors = []
    for round_number in range(40):
        database = db.open_database(f"sqlite:///{tmp_path}/new-{round_number}.db")
        errors += migrate_from_threads(database)
        database.close()
    assert errors == []


def test_sqlite_keeps_one_connection_per_thread(tmp_path):
    database = db.open_database(f"sqlite:///{tmp_path}/threads.db")
    seen = []

    def grab():
        with database.connection() as first, database.connection() as second:
            seen.append((first._raw, second._raw))

    try:
        threads = [threading.Thread(target=grab) for _ in range(2)]
        for thread in threads:
            thread.start()
            thread.join()
        (first_a, first_b), (second_a, second_b) = seen
        assert first_a is first_b and second_a is second_b  # reused within a thread
        assert first_a is not second_a                    # never shared between threads
    finally:
        database.close()


@pytest.mark.parametrize("url, expected", [
    ("sqlite:////srv/shop/shop.db", "/srv/shop/shop.db"),
    ("sqlite:///relative/shop.db", "relative/shop.db"),
])
def test_sqlite_urls(url, expected):
    assert str(db.sqlite_path(url)) == expected


def test_an_unknown_database_url_scheme_is_refused():
    with pytest.raises(ValueError):
        db.open_database("mysql://localhost/shop")


# -- a database that is down --------------------------------------------------------------

# The lowest DATABASE_TIMEOUT_SECONDS config accepts: PostgreSQL's pool waits that long for
# a connection before the 503, so the bound below is five times what a request waits.
UNREACHABLE_TIMEOUT_SECONDS = 1
UNREACHABLE_BOUND_SECONDS = 5.0


def unreachable_app(database_url):
    settings = config.load_settings({
        "APP_ENV": "test", "DATABASE_URL": database_url, "SECRET_KEY": TEST_SECRET_KEY, "ACCESS_LOG": "0",
        "DATABASE_TIMEOUT_SECONDS": str(UNREACHABLE_TIMEOUT_SECONDS),
    })
    return server.create_app(settings)


@pytest.mark.parametrize("database_url", [
    "postgresql://postgres@127.0.0.1:1/test",              # nothing listens on port 1
    "sqlite:////proc/no-such-directory/shop.db",           # a file that cannot be created
])
@pytest.mark.parametrize("path", ["/v1/items", "/v1/items/1", "/ready"])
def test_an_unreachable_database_gives_a_503_problem_within_5_seconds(database_url, path):
    if database_url.startswith("postgresql"):
        pytest.importorskip("psycopg")
    app = unreachable_app(database_url)
    client = WSGIClient(app)
    started = time.monotonic()
    response = client.get(path)
    elapsed = time.monotonic() - started
    app.services.database.close()
    assert response.status == 503, response
    assert response.header("Content-Type") == "application/problem+json"
    assert response.header("Retry-After") == "5"
    assert response.json()["status"] == 503
    assert response.json()["detail"].startswith("the database is not answering")
    assert elapsed < UNREACHABLE_BOUND_SECONDS


def test_health_stays_up_while_the_database_is_down():
    pytest.importorskip("psycopg")
    app = unreachable_app("postgresql://postgres@127.0.0.1:1/test")
    try:
        assert WSGIClient(app).get("/health").status == 200
    finally:
        app.services.database.close()


# -- a database that stops answering ---------------------------------------------------------

# PostgreSQL behind a proxy that can be paused (tests/tcpproxy.py): the link stays open, the
# proxy's kernel acknowledges every byte, and no answer comes, as when a server hangs.
HANG_TIMEOUT_SECONDS = 1  # DATABASE_TIMEOUT_SECONDS in these tests
HANG_MARGIN_SECONDS = 0.5  # threads scheduled late on a busy machine
READY_BOUND_SECONDS = 5  # what the issue asks of /ready, whatever the timeout
RECOVERY_BOUND_SECONDS = 5  # from resume() to the first 200


Link = namedtuple("Link", "proxy url database")


@pytest.fixture
def link(database_url, seeded):
    """A proxy between this test and its seeded PostgreSQL schema: the proxy, the URL that
    leads through it, and a database that talks through it with DATABASE_TIMEOUT_SECONDS=1."""
    parts = urlsplit(database_url)
    with TCPProxy((parts.hostname, parts.port or 5432)) as proxy:
        user = parts.netloc.rpartition("@")[0]
        url = urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{proxy.port}"))
        database = db.open_database(url, timeout_seconds=HANG_TIMEOUT_SECONDS)
        try:
            yield Link(proxy, url, database)
        finally:
            proxy.resume()
            database.close()


@pytest.mark.parametrize("engine", ["postgresql"])
@pytest.mark.parametrize("block", ["connection", "transaction"])
def test_a_block_cut_off_at_its_deadline_never_returns_its_connection_to_the_pool(link, block):
    used = []
    started = time.monotonic()
    with (pytest.raises(db.DatabaseUnavailable, match="PostgreSQL did not answer within 1 s"),
          getattr(link.database, block)() as connection):
        used.append(connection._raw)
        link.proxy.pause()
        connection.fetch_value("SELECT count(*) FROM items")
    assert time.monotonic() - started < HANG_TIMEOUT_SECONDS + HANG_MARGIN_SECONDS
    assert used[0].closed
    link.proxy.resume()
    with link.database.connection() as connection:
        assert connection._raw is not used[0]
        assert connection.fetch_value("SELECT count(*) FROM items") == 30


@pytest.mark.parametrize("engine", ["postgresql"])
def test_over_a_link_that_stops_answering_requests_get_503_in_time_and_then_recover(link):
    # CACHE=off: the catalogue's cache would answer item 1 without the database.
    settings = config.load_settings({"APP_ENV": "test", "DATABASE_URL": link.url, "SECRET_KEY": TEST_SECRET_KEY,
                                     "DATABASE_TIMEOUT_SECONDS": str(HANG_TIMEOUT_SECONDS), "CACHE": "off"})
    app = server.create_app(settings, database=link.database, logger=JSONLogger(stream=io.StringIO()))
    proxy = link.proxy
    with client_for(app, "live") as client:
        assert client.get("/ready").status == 200
        assert client.get("/v1/items/1").status == 200
        proxy.pause()

        # While paused: every request, one alone or several at once, ends in time with a 503.
        ready, ready_seconds = timed(client.get, "/ready")
        assert_problem(ready, 503, "the database is not answering")
        assert ready.json()["checks"] == {"database": "unavailable"}
        assert ready_seconds < min(READY_BOUND_SECONDS, HANG_TIMEOUT_SECONDS + HANG_MARGIN_SECONDS)
        item, item_seconds = timed(client.get, "/v1/items/1")
        assert_problem(item, 503, "the database is not answering; try again shortly")
        assert item.header("Retry-After") == "5"
        assert item_seconds < HANG_TIMEOUT_SECONDS + HANG_MARGIN_SECONDS
        at_once = [("GET", f"/v1/items/{item_id}", {}, None) for item_id in (1, 2, 3, 4)]
        responses, seconds = timed(responses_at_once, f"http://127.0.0.1:{client.port}", at_once)
        assert [response.status for response in responses] == [503] * 4
        assert seconds < HANG_TIMEOUT_SECONDS + HANG_MARGIN_SECONDS

        # The link answers again: so does the server, with nothing restarted.
        proxy.resume()
        started = time.monotonic()
        for path in ("/ready", "/v1/items/1"):
            while (response := client.get(path)).status != 200:
                assert time.monotonic() - started < RECOVERY_BOUND_SECONDS, response
                time.sleep(POLL_SECONDS)
        assert response.json()["id"] == 1


def timed(function, *arguments):
    """(what function(*arguments) returns, the seconds it took)."""
    started = time.monotonic()
    result = function(*arguments)
    return result, time.monotonic() - started
