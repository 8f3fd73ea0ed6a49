"""Every query the shop runs is served by an index: EXPLAIN, on both engines.

For each function of sql_*.py, the test runs it on a small database through a
`RecordingConnection`, then asks the engine for the plan of the statement it ran:

    SQLite      EXPLAIN QUERY PLAN SELECT ... FROM items WHERE deleted_at IS NULL ORDER BY price_cents, id
                SCAN items USING INDEX items_live_price_cents_id            <- an index, and no sort
    PostgreSQL  EXPLAIN (COSTS OFF) SELECT ...
                Index Scan using items_live_price_cents_id on items

A plan that reads a whole table ("SCAN items" without USING, "Seq Scan") or sorts what an
index could have given in order ("USE TEMP B-TREE FOR ORDER BY", "Sort") fails. On tables
this small PostgreSQL would rightly prefer a scan, so `query_plan` discourages scans (and,
for ordered queries, sorts): the question asked is "could an index serve this, in order?".
A cursor must also bound the index scan (keyset pages: page 500 as cheap as page 1).
"""

import pytest
from conftest import insert_orders

import accounts
import seed
import sql_credentials
import sql_events
import sql_exports
import sql_idempotency
import sql_items
import sql_jobs
import sql_orders
import sql_reports
import sql_users
import sql_webhooks
from pagination import parse_sort

KEY = "5f0c4ae1-6b0e-4a3c-9e55-0d5c1e2b7a10"
STATUSES = ("pending", "paid", "shipped", "cancelled")
CATALOGUE_SIZE = 300


def query_plan(database, run_query, *, ordered):
    """The plan of the last statement `run_query(connection)` runs: a `Plan` with the engine,
    the SQL and the plan's lines.

    SQLite: EXPLAIN QUERY PLAN. PostgreSQL: EXPLAIN with scans (and, when `ordered`, sorts)
    discouraged, since scanning these tiny tables would rightly win otherwise. SET LOCAL
    ends with the transaction, which also rolls back whatever `run_query` wrote.
    """
    with database.transaction() as connection:
        recording = RecordingConnection(connection)
        run_query(recording)
        sql, params = recording.last
        if connection.engine == "sqlite":
            rows = connection.fetch_all("EXPLAIN QUERY PLAN " + sql, params)
            return Plan("sqlite", sql, [row["detail"] for row in rows])
        connection.execute("SET LOCAL enable_seqscan = off")
        if ordered:
            connection.execute("SET LOCAL enable_sort = off")
        rows = connection.fetch_all("EXPLAIN (COSTS OFF) " + sql, params)
        return Plan("postgresql", sql, [row["QUERY PLAN"].strip().removeprefix("->  ") for row in rows])


class Plan:
    def __init__(self, engine, sql, lines):
        self.engine, self.sql, self.lines = engine, sql, lines
        self.text = " | ".join(lines)


def assert_uses_an_index(plan, tables, indexes, *, ordered):
    """The plan reads `tables` through one of `indexes`, never by scanning a whole table, and
    when `ordered` it needs no sort of its own (the index gives the order)."""
    text = plan.text
    if plan.engine == "sqlite":
        scans = [["SCAN", table] for table in tables]
        assert not [step for step in plan.lines if step.split(" ")[:2] in scans and "USING" not in step], text
        if ordered:
            assert "TEMP B-TREE" not in text, text
    else:
        assert "Seq Scan" not in text, text
        if ordered:
            assert "Sort" not in text, text
    assert any(index in text for index in indexes), text


class RecordingConnection:
    """Passes calls through to a db.Connection and remembers the last SQL and parameters."""

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

    def fetch_value(self, sql, params=None):
        self.last = (sql, params)
        return self.connection.fetch_value(sql, params)

    def stream(self, sql, params, *, batch_size):
        self.last = (sql, params)
        return self.connection.stream(sql, params, batch_size=batch_size)


# -- the catalogue ---------------------------------------------------------------------------

def by(sort_text):
    return parse_sort(sort_text, sql_items.SORTABLE_COLUMNS)


CATALOGUE_QUERIES = {
    # name: (run the query, the index that must serve it; "items" is the key or items_live_id)
    "get by id": (lambda c: sql_items.get_item(c, 5), "items"),
    "list by id": (lambda c: sql_items.list_items(c, sort=by("id"), limit=21, offset=40), "items_live_id"),
    "list by price": (lambda c: sql_items.list_items(c, sort=by("price_cents"), limit=21), "items_live_price_cents_id"),
    "list by price, descending": (
        lambda c: sql_items.list_items(c, sort=by("-price_cents"), limit=21), "items_live_price_cents_id"),
    "list by name after a cursor": (
        lambda c: sql_items.list_items(c, sort=by("name"), limit=21, after=("M", 10)), "items_live_name_id"),
    "list by creation": (
        lambda c: sql_items.list_items(c, sort=by("created_at"), limit=21), "items_live_created_at_id"),
    "list in stock": (lambda c: sql_items.list_items(c, sort=by("id"), limit=21, in_stock=True), "items_live_id"),
    "list a price range by price": (
        lambda c: sql_items.list_items(c, sort=by("price_cents"), limit=21, min_price_cents=500, max_price_cents=900),
        "items_live_price_cents_id"),
}


@pytest.fixture
def catalogue(database):
    """The database with CATALOGUE_SIZE items."""
    seed.seed_items(database, CATALOGUE_SIZE)
    return database


@pytest.mark.parametrize("query_name", list(CATALOGUE_QUERIES))
def test_every_catalogue_query_uses_an_index_and_needs_no_sort(catalogue, query_name):
    run_query, index_name = CATALOGUE_QUERIES[query_name]
    plan = query_plan(catalogue, run_query, ordered=True)
    text = plan.text
    if plan.engine == "sqlite":
        assert "TEMP B-TREE" not in text, text  # no sort step: the index gives the order
        if index_name == "items":
            assert ("USING INTEGER PRIMARY KEY" in text or "USING INDEX items_live_id" in text
                    or (text.startswith("SCAN items") and "ORDER BY id" in plan.sql)), text
        else:
            assert f"USING INDEX {index_name}" in text or f"USING COVERING INDEX {index_name}" in text, text
    else:
        assert "Seq Scan" not in text and "Sort" not in text, text
        if index_name == "items":  # by id: the key, or the index of live rows
            assert "using items_pkey" in text or "using items_live_id" in text, text
        else:
            assert f"using {index_name}" in text, text


@pytest.mark.parametrize("sort_text", ["-price_cents", "name"])
def test_a_catalogue_cursor_starts_the_index_scan(catalogue, sort_text):
    """Page 500 costs what page 1 does: the cursor bounds the index scan (SQLite: SEARCH;
    PostgreSQL: an Index Cond), instead of filtering every row before it."""
    sort = by(sort_text)
    after = (5000 if sort[0][0] == "price_cents" else "M", 10)
    plan = query_plan(catalogue, lambda c: sql_items.list_items(c, sort=sort, limit=21, after=after), ordered=False)
    if plan.engine == "sqlite":
        assert plan.text.startswith("SEARCH items USING INDEX"), plan.text
    else:
        assert f"Index Cond: (ROW({sort[0][0]}, id)" in plan.text, plan.text


# -- orders, idempotency keys and reports ------------------------------------------------------

NEWEST_FIRST = parse_sort("-created_at", sql_orders.SORTABLE_COLUMNS)
OLDEST_FIRST = parse_sort("created_at", sql_orders.SORTABLE_COLUMNS)
JANUARY = ("2026-01-01T00:00:00.000000Z", "2026-02-01T00:00:00.000000Z")
# SQLite plan steps that read a whole table (a "SCAN t USING INDEX i" walks an index instead).
TABLE_SCANS = [["SCAN", "orders"], ["SCAN", "order_items"], ["SCAN", "items"]]
IDEMPOTENCY_KEY_INDEXES = ("idempotency_keys_pkey", "sqlite_autoindex_idempotency_keys_1")
ORDER_QUERIES = {
    # name: (run the query, the indexes that may serve it, must the index also give the order?)
    "a user's orders": (
        lambda c: sql_orders.list_orders(c, sort=NEWEST_FIRST, limit=21, user_id=1),
        ("orders_user_id_created_at",), True),
    "a user's orders after a cursor": (
        lambda c: sql_orders.list_orders(c, sort=NEWEST_FIRST, limit=21, user_id=1, after=(JANUARY[0], 10)),
        ("orders_user_id_created_at",), True),
    "a user's orders in a range, oldest first": (
        lambda c: sql_orders.list_orders(c, sort=OLDEST_FIRST, limit=21, user_id=1,
                                         created_from=JANUARY[0], created_to=JANUARY[1]),
        ("orders_user_id_created_at",), True),
    "every order (admin)": (
        lambda c: sql_orders.list_orders(c, sort=NEWEST_FIRST, limit=21),
        ("orders_created_at_id",), True),
    "every order, oldest first, at an offset (admin)": (
        lambda c: sql_orders.list_orders(c, sort=OLDEST_FIRST, limit=21, offset=20),
        ("orders_created_at_id",), True),
    "every order with a status (admin)": (
        lambda c: sql_orders.list_orders(c, sort=NEWEST_FIRST, limit=21, status="paid"),
        ("orders_status_created_at",), True),
    "every order with a status after a cursor (admin)": (
        lambda c: sql_orders.list_orders(c, sort=NEWEST_FIRST, limit=21, status="paid", after=(JANUARY[1], 10)),
        ("orders_status_created_at",), True),
    "the lines of a page of orders": (
        lambda c: sql_orders.lines_of_orders(c, [9, 3, 5, 1]),
        ("order_items_pkey", "sqlite_autoindex_order_items_1"), True),
    "lock the items of an order": (
        lambda c: sql_orders.lock_items(c, [12, 3, 7]),
        ("items_pkey", "items_live_id", "INTEGER PRIMARY KEY"), True),
    "one order of a user": (
        lambda c: sql_orders.get_order(c, 3, user_id=1),
        ("orders_pkey", "INTEGER PRIMARY KEY"), True),
    # The writes of placing, cancelling and moving an order, each one row found by its key.
    "take an item's stock": (
        lambda c: sql_orders.take_stock(c, 5, 1, JANUARY[0]),
        ("items_pkey", "INTEGER PRIMARY KEY"), False),
    "give an item's stock back": (
        lambda c: sql_orders.return_stock(c, 5, 1, JANUARY[0]),
        ("items_pkey", "INTEGER PRIMARY KEY"), False),
    "move an order along": (
        lambda c: sql_orders.set_status(c, 3, "pending", "paid", JANUARY[0]),
        ("orders_pkey", "INTEGER PRIMARY KEY"), False),
    # Idempotency keys: by the primary key (user_id, idempotency_key), or by expiry.
    "read a key": (
        lambda c: sql_idempotency.get_key(c, 1, KEY),
        IDEMPOTENCY_KEY_INDEXES, False),
    "take a key again": (
        lambda c: sql_idempotency.retake_key(c, 1, KEY, "hash", *JANUARY),
        IDEMPOTENCY_KEY_INDEXES, False),
    "save a key's response": (
        lambda c: sql_idempotency.save_response(c, 1, KEY, JANUARY[0], 201, "[]", "{}"),
        IDEMPOTENCY_KEY_INDEXES, False),
    "give a key back": (
        lambda c: sql_idempotency.delete_key(c, 1, KEY, JANUARY[0]),
        IDEMPOTENCY_KEY_INDEXES, False),
    "purge expired keys": (
        lambda c: sql_idempotency.delete_expired(c, JANUARY[0]),
        ("idempotency_keys_expires_at",), False),
    # Reports group and rank, so they sort; what matters is that orders are found by index.
    # PostgreSQL may take the creation range from either index that leads with it.
    "sales per day": (
        lambda c: sql_reports.sales_by_day(c, *JANUARY),
        ("orders_status_created_at", "orders_created_at_id"), False),
    "sales per item": (
        lambda c: sql_reports.sales_by_item(c, *JANUARY, 20),
        ("orders_status_created_at", "orders_created_at_id"), False),
    # The CSV export streams its rows; test_the_export_needs_no_sort_of_the_whole_range checks the order.
    "every line of the orders of a range, oldest first (CSV export)": (
        lambda c: list(sql_exports.order_lines(c, *JANUARY, batch_size=100)),
        ("orders_created_at_id",), False),
}


@pytest.fixture
def planned(seeded, users):
    """The database with 60 orders of three users, over January 2026, in every status."""
    user_ids = [users.create()["id"] for _ in range(3)]
    insert_orders(seeded, [
        (user_ids[number % 3], f"2026-01-{1 + number % 28:02d}T{number % 24:02d}:00:00.000000Z",
         STATUSES[number % 4], [(1 + number % 30, 1, 100), (1 + (number + 7) % 30, 2, 50)])
        for number in range(60)
    ])
    return seeded


@pytest.mark.parametrize("query_name", list(ORDER_QUERIES))
def test_every_order_query_uses_an_index(planned, query_name):
    run_query, indexes, ordered = ORDER_QUERIES[query_name]
    plan = query_plan(planned, run_query, ordered=ordered)
    text = plan.text
    if plan.engine == "sqlite":
        assert not [step for step in plan.lines if step.split(" ")[:2] in TABLE_SCANS and "USING" not in step], text
        if ordered:
            assert "TEMP B-TREE" not in text, text  # no sort step: the index gives the order
    else:
        assert "Seq Scan" not in text, text
        if ordered:
            assert "Sort" not in text, text
    assert any(index in text for index in indexes), text


def test_the_export_needs_no_sort_of_the_whole_range(planned):
    """The export's first rows reach the file before its last are read: the orders come in
    order from orders_created_at_id, and nothing waits for the whole range to be sorted.
    PostgreSQL may sort each order's few lines by item (an Incremental Sort whose presorted
    key is the order's); SQLite reads them in item order from order_items' key."""
    plan = query_plan(planned, lambda c: list(sql_exports.order_lines(c, *JANUARY, batch_size=100)), ordered=True)
    if plan.engine == "sqlite":
        assert "TEMP B-TREE" not in plan.text, plan.text
    else:
        sorts = [line for line in plan.lines if "Sort" in line and not line.startswith("Sort Key")]
        assert sorts in ([], ["Incremental Sort"]), plan.text
        assert not sorts or "Presorted Key: orders.created_at, orders.id" in plan.text, plan.text


@pytest.mark.parametrize("query_name", [name for name in ORDER_QUERIES if "after a cursor" in name])
def test_a_cursor_bounds_the_index_scan(planned, query_name):
    """pagination.py promises keyset pages "as fast on page 500 as on page 1": the index
    must start at the cursor, not walk every newer row and filter it out."""
    run_query, _, ordered = ORDER_QUERIES[query_name]
    plan = query_plan(planned, run_query, ordered=ordered)
    if plan.engine == "sqlite":
        bounded = [step for step in plan.lines if step.startswith("SEARCH orders") and "created_at<" in step]
    else:
        bounded = [step for step in plan.lines if step.startswith("Index Cond") and "created_at" in step]
    assert bounded, plan.text


# -- API keys --------------------------------------------------------------------------------

API_KEY_PAGES = {
    # sort: (the index, the sort values of a cursor's last row)
    "id": ("api_keys_user_id_id", (40,)),
    "-id": ("api_keys_user_id_id", (40,)),
    "created_at": ("api_keys_user_id_created_at_id", ("2026-01-01T00:00:05.000000Z", 40)),
    "-created_at": ("api_keys_user_id_created_at_id", ("2026-01-01T00:00:05.000000Z", 40)),
}


@pytest.mark.parametrize("sort_text", API_KEY_PAGES)
@pytest.mark.parametrize("page", ["first", "after a cursor"])
def test_every_api_key_page_is_served_by_an_index_without_a_sort(database, users, sort_text, page):
    user = users.create()
    for number in range(300):
        accounts.create_api_key(database, user["id"], f"key {number}")
    sort = parse_sort(sort_text, sql_credentials.API_KEY_SORTABLE_COLUMNS)
    index, cursor_values = API_KEY_PAGES[sort_text]
    after = cursor_values if page == "after a cursor" else None
    plan = query_plan(
        database, lambda connection: sql_credentials.list_api_keys(connection, user["id"], sort=sort, limit=21,
                                                                  after=after),
        ordered=True,
    )
    if plan.engine == "sqlite":
        assert "TEMP B-TREE" not in plan.text, plan.text  # no sort step: the index gives the order
        assert plan.text.startswith(f"SEARCH api_keys USING INDEX {index} (user_id=?"), plan.text
        if after is not None:  # the cursor bounds the scan, not a filter after it
            assert f"{index} (user_id=? AND {sort[0][0]}" in plan.text, plan.text
    else:
        assert "Seq Scan" not in plan.text and "Sort" not in plan.text, plan.text
        assert f"using {index}" in plan.text, plan.text
        if after is not None:
            bound = "ROW(created_at, id)" if sort[0][0] == "created_at" else "(id "
            assert "Index Cond: ((user_id = " in plan.text and bound in plan.text, plan.text


# -- refresh tokens and sessions: each found by a UNIQUE hash, a family, a user or an id -------

HASH = "0" * 64
CREDENTIAL_QUERIES = {
    # name: (run the query, the table it reads, the indexes that may serve it)
    "a refresh token (or its successor) by its hash": (
        lambda c: sql_credentials.get_refresh_token(c, HASH),
        "refresh_tokens", ("refresh_tokens_token_hash_unique", "sqlite_autoindex_refresh_tokens_1")),
    "spend a refresh token": (
        lambda c: sql_credentials.mark_refresh_token_used(c, 1, JANUARY[0]),
        "refresh_tokens", ("refresh_tokens_pkey", "INTEGER PRIMARY KEY")),
    "revoke a family": (
        lambda c: sql_credentials.revoke_refresh_family(c, "f" * 32, JANUARY[0]),
        "refresh_tokens", ("refresh_tokens_family_id",)),
    "a live, active session's user": (
        lambda c: sql_credentials.get_session_user(c, HASH, *JANUARY),
        "sessions", ("sessions_session_hash_unique", "sqlite_autoindex_sessions_1")),
    "record a session's use": (
        lambda c: sql_credentials.touch_session(c, 1, JANUARY[0]),
        "sessions", ("sessions_pkey", "INTEGER PRIMARY KEY")),
}


@pytest.mark.parametrize("query_name", list(CREDENTIAL_QUERIES))
def test_every_refresh_token_and_session_query_uses_an_index(database, query_name):
    run_query, table, indexes = CREDENTIAL_QUERIES[query_name]
    plan = query_plan(database, run_query, ordered=False)
    if plan.engine == "sqlite":
        assert not [step for step in plan.lines if step.split(" ")[:2] == ["SCAN", table]], plan.text
    else:
        assert "Seq Scan" not in plan.text, plan.text
    assert any(index in plan.text for index in indexes), plan.text


# -- token epochs: what every token-authenticated request reads, by the primary key ------------

USER_STATE_QUERIES = {
    # name: (run the query, the indexes that may serve it)
    "a user's role and token epoch": (lambda c: sql_users.get_token_state(c, 1), ("users_pkey", "INTEGER PRIMARY KEY")),
    "bump a user's token epoch": (lambda c: sql_users.bump_token_epoch(c, 1), ("users_pkey", "INTEGER PRIMARY KEY")),
}


@pytest.mark.parametrize("query_name", list(USER_STATE_QUERIES))
def test_the_token_epoch_queries_use_the_primary_key(database, users, query_name):
    for _ in range(20):
        users.create()
    run_query, indexes = USER_STATE_QUERIES[query_name]
    plan = query_plan(database, run_query, ordered=False)
    if plan.engine == "sqlite":
        assert not [step for step in plan.lines if step.split(" ")[:2] == ["SCAN", "users"]], plan.text
    else:
        assert "Seq Scan" not in plan.text, plan.text
    assert any(index in plan.text for index in indexes), plan.text


# -- the job queue: claims, leases, the admin's lists, retention --------------------------------

JOB_NOW, JOB_LATER = "2026-01-15T00:00:00.000000Z", "2026-01-15T00:00:30.000000Z"
NEWEST_JOBS_FIRST = parse_sort("-id", sql_jobs.SORTABLE_COLUMNS)
JOB_KEY = ("jobs_pkey", "INTEGER PRIMARY KEY")
# The running jobs: either index that starts with the status finds them (PostgreSQL may pick either).
STATUS_FIRST = ("jobs_status_id", "jobs_status_kind")
JOB_QUERIES = {
    # name: (run the query, the indexes that may serve it, must the index also give the order?)
    "claim the due jobs, oldest first": (
        lambda c: sql_jobs.claim_jobs(c, "worker-a", 5, JOB_NOW, JOB_LATER), ("jobs_status_run_at_id",), True),
    "renew a worker's leases": (
        lambda c: sql_jobs.renew_leases(c, "worker-a", JOB_LATER, JOB_NOW), STATUS_FIRST, False),
    "put back the jobs whose lease expired": (
        lambda c: sql_jobs.requeue_expired(c, "expired", JOB_NOW), STATUS_FIRST, False),
    "finish a claim": (lambda c: sql_jobs.finish_job(c, 7, 1, JOB_NOW), JOB_KEY, False),
    "reschedule a claim": (lambda c: sql_jobs.reschedule_job(c, 7, 1, JOB_LATER, "error", JOB_NOW), JOB_KEY, False),
    "bury a claim": (lambda c: sql_jobs.bury_job(c, 7, 1, "error", JOB_NOW), JOB_KEY, False),
    "retry a dead job": (lambda c: sql_jobs.retry_dead_job(c, 7, JOB_NOW), JOB_KEY, False),
    "one job": (lambda c: sql_jobs.get_job(c, 7), JOB_KEY, False),
    "the job of a unique key": (
        lambda c: sql_jobs.job_id_by_unique_key(c, "email.order:7:created"),
        ("jobs_unique_key_unique", "sqlite_autoindex_jobs_1"), False),
    "every job, newest first (admin)": (
        lambda c: sql_jobs.list_jobs(c, sort=NEWEST_JOBS_FIRST, limit=21), JOB_KEY, True),
    "the jobs with a status (admin)": (
        lambda c: sql_jobs.list_jobs(c, sort=NEWEST_JOBS_FIRST, limit=21, status="dead"), ("jobs_status_id",), True),
    "the jobs with a status after a cursor (admin)": (
        lambda c: sql_jobs.list_jobs(c, sort=NEWEST_JOBS_FIRST, limit=21, status="done", after=(150,)),
        ("jobs_status_id",), True),
    "the jobs of a kind (admin)": (
        lambda c: sql_jobs.list_jobs(c, sort=NEWEST_JOBS_FIRST, limit=21, kind="email.order"), ("jobs_kind_id",), True),
    "the jobs of a kind with a status (admin)": (
        lambda c: sql_jobs.list_jobs(c, sort=NEWEST_JOBS_FIRST, limit=21, kind="email.order", status="dead"),
        ("jobs_kind_id", "jobs_status_id", "jobs_status_kind"), True),
    "delete a batch of finished jobs": (
        lambda c: sql_jobs.delete_finished(c, JOB_NOW, 1000), ("jobs_finished_at",), False),
    # GET /metrics: the index alone, already grouped (no sort); the queued job due the longest.
    "count the jobs of each status and kind (metrics)": (
        sql_jobs.count_jobs, ("jobs_status_kind",), True),
    "the oldest due job (metrics)": (
        lambda c: sql_jobs.oldest_due_run_at(c, JOB_NOW), ("jobs_status_run_at_id",), False),
}


EXPORT_KEYS = ("exports_pkey", "sqlite_autoindex_exports_1")
EXPORT_QUERIES = {
    # name: (run the query, the indexes that may serve it): one export, or a few, by key.
    "one export and its job": (lambda c: sql_exports.get_export(c, 7), EXPORT_KEYS),
    "record an export's file": (
        lambda c: sql_exports.finish_export(c, 7, 1, "export-7-1.csv", 10, 1000, JOB_NOW), EXPORT_KEYS),
    "the records of the files a sweep found": (
        lambda c: sql_exports.recorded_file_names(c, [3, 7, 12]), EXPORT_KEYS),
    "the exports in progress": (
        lambda c: sql_exports.exports_in_progress(c, "orders.export"),
        ("jobs_status_id", "jobs_kind_id", "jobs_status_kind")),
}


@pytest.mark.parametrize("query_name", list(EXPORT_QUERIES))
def test_every_export_query_uses_an_index(queue, query_name):
    run_query, indexes = EXPORT_QUERIES[query_name]
    plan = query_plan(queue, run_query, ordered=False)
    assert_uses_an_index(plan, ["jobs", "exports"], indexes, ordered=False)


@pytest.fixture
def queue(database):
    """200 jobs of two kinds in every status, written directly."""
    with database.transaction() as connection:
        for number in range(200):
            status = STATUSES_OF_JOBS[number % 4]
            finished = status in ("done", "dead")
            connection.execute(
                "INSERT INTO jobs (kind, payload, status, attempts, max_attempts, run_at, locked_until, locked_by,"
                " unique_key, created_at, updated_at, finished_at)"
                " VALUES (:kind, '{}', :status, 1, 3, :at, :locked_until, :locked_by, :unique_key, :at, :at,"
                " :finished)",
                {"kind": ("email.order", "noop")[number % 2], "status": status, "at": JANUARY[0],
                 "locked_until": JOB_LATER if status == "running" else None,
                 "locked_by": "worker-a" if status == "running" else None,
                 "unique_key": f"key-{number}", "finished": JANUARY[0] if finished else None},
            )
    return database


STATUSES_OF_JOBS = ("queued", "running", "done", "dead")


@pytest.mark.parametrize("query_name", list(JOB_QUERIES))
def test_every_job_query_uses_an_index(queue, query_name):
    run_query, indexes, ordered = JOB_QUERIES[query_name]
    plan = query_plan(queue, run_query, ordered=ordered)
    text = plan.text
    if plan.engine == "sqlite":
        # SQLite's table is the B-tree of its key: with no condition, "SCAN jobs" walks it in id
        # order, and LIMIT stops the walk (the catalogue's default page does the same).
        walks_the_key = plan.text == "SCAN jobs" and "WHERE" not in plan.sql and "ORDER BY id" in plan.sql
        assert walks_the_key or not [
            step for step in plan.lines if step.split(" ")[:2] == ["SCAN", "jobs"] and "USING" not in step], text
        if ordered:
            assert "TEMP B-TREE" not in text, text
        if walks_the_key:
            return
    else:
        assert "Seq Scan" not in text, text
        if ordered:
            assert "Sort" not in text, text
    assert any(index in text for index in indexes), text


# -- live order events: the broadcaster's reads, a stream's backlog, retention -------------------

EVENT_KEY = ("order_events_pkey", "INTEGER PRIMARY KEY")
EVENT_QUERIES = {
    # name: (run the query, the indexes that may serve it, must the index also give the order?)
    "every event after an id (the broadcaster, an admin's backlog)": (
        lambda c: sql_events.events_after(c, 150, 500), EVENT_KEY, True),
    "every event between two ids (an admin's backlog)": (
        lambda c: sql_events.events_after(c, 150, 500, up_to=250), EVENT_KEY, True),
    "a user's events between two ids (a user's backlog)": (
        lambda c: sql_events.events_after(c, 150, 500, user_id=3, up_to=250), ("order_events_user_id_id",), True),
    # SQLite takes max(id) from the last entry of the table's own B-tree (its key): "SEARCH
    # order_events", with no index named; PostgreSQL from the end of the primary key.
    "the newest event's id": (
        sql_events.latest_event_id, ("order_events_pkey", "SEARCH order_events"), False),
    "delete a batch of old events": (
        lambda c: sql_events.delete_events_before(c, "2026-01-15T00:03:00.000000Z", 1000),
        ("order_events_created_at",), False),
}


@pytest.fixture
def order_events(database):
    """300 events of five users, a second apart, written directly."""
    with database.transaction() as connection:
        for number in range(300):
            sql_events.insert_event(connection, number, number % 5, "order.paid", "{}",
                                    f"2026-01-15T00:{number // 60:02d}:{number % 60:02d}.000000Z")
    return database


@pytest.mark.parametrize("query_name", list(EVENT_QUERIES))
def test_every_event_query_uses_an_index(order_events, query_name):
    run_query, indexes, ordered = EVENT_QUERIES[query_name]
    plan = query_plan(order_events, run_query, ordered=ordered)
    assert_uses_an_index(plan, ["order_events"], indexes, ordered=ordered)


# -- webhooks: the live subscriptions, and a subscription's delivery log ------------------------------

NEWEST_DELIVERIES_FIRST = parse_sort("-id", sql_webhooks.SORTABLE_COLUMNS)
WEBHOOK_KEY = ("webhooks_pkey", "INTEGER PRIMARY KEY", "webhooks_live_id")  # by id: the key, or the live rows
WEBHOOK_QUERIES = {
    # name: (run the query, the table, the indexes that may serve it, must the index also give the order?)
    "the live subscriptions (every order event)": (
        sql_webhooks.live_webhooks, "webhooks", ("webhooks_live_id",), True),
    "count the live subscriptions": (
        sql_webhooks.count_live_webhooks, "webhooks", ("webhooks_live_id",), False),
    "a page of live subscriptions (admin)": (
        lambda c: sql_webhooks.list_webhooks(c, sort=parse_sort("id", sql_webhooks.SORTABLE_COLUMNS), limit=21,
                                             after=(40,)), "webhooks", ("webhooks_live_id",), True),
    "one live subscription": (lambda c: sql_webhooks.get_live_webhook(c, 7), "webhooks", WEBHOOK_KEY, False),
    "a subscription's secret, to sign": (
        lambda c: sql_webhooks.get_signing_secret(c, 7), "webhooks", WEBHOOK_KEY, False),
    "delete a subscription": (
        lambda c: sql_webhooks.delete_webhook(c, 7, JOB_NOW), "webhooks", WEBHOOK_KEY, False),
    "a subscription's deliveries, newest first": (
        lambda c: sql_webhooks.list_deliveries(c, 3, sort=NEWEST_DELIVERIES_FIRST, limit=21),
        "webhook_deliveries", ("webhook_deliveries_webhook_id_id",), True),
    "a subscription's deliveries after a cursor": (
        lambda c: sql_webhooks.list_deliveries(c, 3, sort=NEWEST_DELIVERIES_FIRST, limit=21, after=(150,)),
        "webhook_deliveries", ("webhook_deliveries_webhook_id_id",), True),
    "delete a batch of old deliveries": (
        lambda c: sql_webhooks.delete_old_deliveries(c, JOB_NOW, 1000), "webhook_deliveries",
        ("webhook_deliveries_finished_at",), False),
}


@pytest.fixture
def hooked(database):
    """60 subscriptions, a third of them deleted, and 300 delivery attempts, written directly."""
    with database.transaction() as connection:
        for number in range(60):
            deleted = number % 3 == 0
            connection.execute(
                "INSERT INTO webhooks (url, event_types, secret, created_at, deleted_at)"
                " VALUES ('https://hooks.example/in', 'order.paid', :secret, :at, :deleted_at)",
                {"secret": None if deleted else "whsec_a2tra2tra2tra2tra2tra2tra2tra2tr", "at": JANUARY[0],
                 "deleted_at": JANUARY[0] if deleted else None},
            )
        for number in range(300):
            connection.execute(
                "INSERT INTO webhook_deliveries (webhook_id, message_id, event_type, attempt, status_code,"
                " duration_ms, started_at, finished_at) VALUES (:webhook_id, 'msg_x', 'order.paid', 1, 204, 5,"
                " :at, :at)",
                {"webhook_id": 1 + number % 60, "at": f"2026-01-{1 + number % 28:02d}T00:00:00.000000Z"},
            )
    return database


@pytest.mark.parametrize("query_name", list(WEBHOOK_QUERIES))
def test_every_webhook_query_uses_an_index(hooked, query_name):
    run_query, table, indexes, ordered = WEBHOOK_QUERIES[query_name]
    plan = query_plan(hooked, run_query, ordered=ordered)
    assert_uses_an_index(plan, [table], indexes, ordered=ordered)
