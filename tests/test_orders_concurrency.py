"""Orders under concurrency: races over real sockets, Idempotency-Key, a kill -9, an oversell.

What docs/concurrency.md teaches, proved on both engines (the `engine`-parametrized fixtures):

    50 buyers, 10 units, one moment        -> 10 x 201, 40 x 409, stock 0, 10 orders
    20 copies of one keyed request         -> one order; 201 (the same body) or 409 + Retry-After
    10 cancels of one order                -> one 200, nine 409, the stock back once
    201 read, then kill -9, then restart   -> the order is there, exactly as the 201 said
    two buyers of the last unit, no lock   -> sold twice (PostgreSQL); SQLITE_BUSY (SQLite)

The demonstration of the bug and of its fix: `pytest tests/test_orders_concurrency.py -k oversell -v`.
"""

import dataclasses
import json
import sys
import threading
from contextlib import contextmanager

import pytest
from conftest import (
    TEST_ITERATIONS,
    LiveClient,
    assert_problem,
    count_rows,
    free_port,
    http_request,
    json_headers,
    make_item,
    responses_at_once,
    running_server,
    send_at_once,
    server_env,
)

import api_orders
import db
import idempotency
import orders
import server
import sql_orders

STOCK = 10
BUYERS = 50
KEYED_COPIES = 20
CANCELLERS = 10
PRICE_CENTS = 1250
THREAD_TIMEOUT_SECONDS = 15
KEY = "9b2c4e1a-concurrency-test-key"
STILL_RUNNING = "a request with this Idempotency-Key is still being processed; retry shortly"


# -- helpers -----------------------------------------------------------------------------

def stock_of(database, item_id):
    with database.connection() as connection:
        return connection.fetch_value("SELECT stock FROM items WHERE id = :item_id", {"item_id": item_id})


def order_ids(database):
    with database.connection() as connection:
        return [row["id"] for row in connection.fetch_all("SELECT id FROM orders ORDER BY id")]


def sold_quantity(database):
    """How many units the order_items rows say were sold (cancelled orders included)."""
    with database.connection() as connection:
        return connection.fetch_value("SELECT COALESCE(SUM(quantity), 0) FROM order_items")


def set_key_column(database, user_id, column, value):
    """Rewrite locked_at or expires_at of the test key's row, as time passing would."""
    assert column in ("locked_at", "expires_at")
    with database.transaction() as connection:
        connection.execute(
            f"UPDATE idempotency_keys SET {column} = :value WHERE user_id = :user_id AND idempotency_key = :key",
            {"value": value, "user_id": user_id, "key": KEY})


def order_document(item_id, quantity=1):
    return {"lines": [{"item_id": item_id, "quantity": quantity}]}


def keyed_order(database, users):
    """A new item and customer, an order document for one unit of it, and the customer's
    headers with KEY: (user, item, document, headers)."""
    item = make_item(database, STOCK)
    user = users.create()
    document = order_document(item["id"])
    return user, item, document, json_headers(users.headers(user), idempotency_key=KEY)


def claim_as_a_first_request(database, user, document):
    """Take KEY for `document` just as create_order would, and keep it: a request still running."""
    return idempotency.begin(database, user["id"], KEY, idempotency.fingerprint("POST", "/v1/orders", document))


def run_at_once(*calls):
    """Run each call in a thread of its own; what each returned, or the exception it raised."""
    outcomes = [None] * len(calls)

    def run(position, call):
        try:
            outcomes[position] = call()
        except Exception as error:  # the outcome under test, not a failure of the helper
            outcomes[position] = error

    threads = [threading.Thread(target=run, args=(position, call)) for position, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_TIMEOUT_SECONDS)
    assert not any(thread.is_alive() for thread in threads), "a thread is still stuck"
    return outcomes


# -- 1. many buyers, few units -----------------------------------------------------------

@pytest.mark.parametrize("one_buyer", [False, True], ids=["50-users", "1-user-50-times"])
def test_fifty_buyers_racing_for_ten_units_get_ten_201_and_forty_409(live_server, live_client, database, users,
                                                                     one_buyer):
    item = make_item(database, STOCK)
    body = json.dumps(order_document(item["id"])).encode()
    buyers = [users.create()] * BUYERS if one_buyer else [users.create() for _ in range(BUYERS)]
    requests = [("POST", "/v1/orders", json_headers(users.headers(user)), body) for user in buyers]

    statuses = send_at_once(live_server, requests)

    assert sorted(statuses) == [201] * STOCK + [409] * (BUYERS - STOCK)
    shown = live_client.get(f"/v1/items/{item['id']}").json()
    assert (shown["stock"], shown["in_stock"]) == (0, False)
    assert stock_of(database, item["id"]) == 0
    assert count_rows(database, "orders") == STOCK
    assert count_rows(database, "order_items") == STOCK
    assert sold_quantity(database) == STOCK   # sold + left = what there was: nothing sold twice


# -- 2-5. Idempotency-Key ----------------------------------------------------------------

def test_twenty_copies_of_one_keyed_request_place_one_order(live_server, live_client, database, users):
    item = make_item(database, STOCK)
    headers = json_headers(users.headers(users.create()), idempotency_key=KEY)
    body = json.dumps(order_document(item["id"], quantity=2)).encode()

    replies = responses_at_once(live_server, [("POST", "/v1/orders", headers, body)] * KEYED_COPIES)

    assert {reply.status for reply in replies} <= {201, 409}, replies
    created = [reply for reply in replies if reply.status == 201]
    assert len({reply.body for reply in created}) == 1   # the first answer, or its replay
    assert [reply.header("Idempotent-Replayed") for reply in created].count(None) == 1
    for busy in (reply for reply in replies if reply.status == 409):
        assert busy.header("Retry-After") == "1"
        assert busy.json()["detail"] == STILL_RUNNING
    (order_id,) = order_ids(database)
    assert json.loads(created[0].body)["id"] == order_id
    assert stock_of(database, item["id"]) == STOCK - 2

    retry = live_client.post("/v1/orders", body=body, headers=headers)
    assert (retry.status, retry.header("Idempotent-Replayed")) == (201, "true")
    assert retry.body == created[0].body
    assert retry.header("Location") == f"/v1/orders/{order_id}"
    assert order_ids(database) == [order_id]


def test_a_key_held_by_a_running_request_is_409_and_another_body_is_422(wsgi_client, database, users):
    user, item, document, headers = keyed_order(database, users)
    claim = claim_as_a_first_request(database, user, document)
    assert isinstance(claim, idempotency.Claim)

    busy = wsgi_client.post("/v1/orders", json=document, headers=headers)
    assert_problem(busy, 409, STILL_RUNNING)
    assert busy.header("Retry-After") == "1"
    other = wsgi_client.post("/v1/orders", json=order_document(item["id"], quantity=2), headers=headers)
    assert_problem(other, 422, errors=[
        {"field": "Idempotency-Key", "message": "was already used with a different request"},
    ])
    assert (order_ids(database), stock_of(database, item["id"])) == ([], STOCK)

    # The first request changed nothing and gave the key back: a retry is judged afresh.
    idempotency.release(database, claim)
    retry = wsgi_client.post("/v1/orders", json=document, headers=headers)
    assert (retry.status, retry.header("Idempotent-Replayed")) == (201, None)


def test_a_key_held_past_its_lease_is_taken_over_and_its_dead_holder_cannot_save(wsgi_client, database, users):
    user, item, document, headers = keyed_order(database, users)
    claim = claim_as_a_first_request(database, user, document)
    # That request took the key longer ago than the lease and never answered (it hangs, or died).
    long_ago = db.utc_now(-(idempotency.LEASE_SECONDS + 1))
    set_key_column(database, user["id"], "locked_at", long_ago)
    dead_holder = dataclasses.replace(claim, locked_at=long_ago)

    response = wsgi_client.post("/v1/orders", json=document, headers=headers)
    assert (response.status, response.header("Idempotent-Replayed")) == (201, None)
    order_id = response.json()["id"]

    # The old request wakes and finishes its work: the key is no longer its own, so its
    # save is refused and its whole order rolls back.
    def remember_response(connection, order):
        return idempotency.save(connection, dead_holder, api_orders.created_response(order))

    with pytest.raises(orders.LostClaim):
        orders.place_order(database, user["id"], document["lines"], before_commit=remember_response)
    assert order_ids(database) == [order_id]
    assert count_rows(database, "order_items") == 1
    assert stock_of(database, item["id"]) == STOCK - 1
    replay = wsgi_client.post("/v1/orders", json=document, headers=headers)
    assert (replay.status, replay.header("Idempotent-Replayed"), replay.body) == (201, "true", response.body)


def test_an_expired_key_is_a_new_key_and_purge_removes_expired_keys(wsgi_client, database, users, monkeypatch):
    # begin() also purges expired keys, at most once a minute per process. Kept away here,
    # so that begin() itself meets the expired row and must treat it as new.
    monkeypatch.setattr(idempotency, "_next_purge", float("inf"))
    user, item, document, headers = keyed_order(database, users)
    first = wsgi_client.post("/v1/orders", json=document, headers=headers)
    assert first.status == 201

    set_key_column(database, user["id"], "expires_at", db.utc_now(-1))
    second = wsgi_client.post("/v1/orders", json=document, headers=headers)
    assert (second.status, second.header("Idempotent-Replayed")) == (201, None)
    assert second.json()["id"] != first.json()["id"]
    assert order_ids(database) == [first.json()["id"], second.json()["id"]]
    assert stock_of(database, item["id"]) == STOCK - 2
    again = wsgi_client.post("/v1/orders", json=document, headers=headers)   # the key now means order 2
    assert (again.status, again.header("Idempotent-Replayed"), again.body) == (201, "true", second.body)

    live = wsgi_client.post("/v1/orders", json=document,
                            headers=json_headers(users.headers(user), idempotency_key="still-fresh"))
    assert live.status == 201
    set_key_column(database, user["id"], "expires_at", db.utc_now(-1))
    assert idempotency.purge_expired(database) == 1
    with database.connection() as connection:
        kept = connection.fetch_all("SELECT idempotency_key FROM idempotency_keys")
    assert kept == [{"idempotency_key": "still-fresh"}]


def test_a_key_survives_a_restart_of_the_app(app, settings, database, users, logger):
    item = make_item(database, STOCK)
    headers = json_headers(users.headers(users.create()), idempotency_key=KEY)
    document = order_document(item["id"], quantity=3)
    with running_server(app) as base_url:
        first = LiveClient(base_url).post("/v1/orders", json=document, headers=headers)
    assert first.status == 201

    # A new app with a database object of its own: nothing shared with the first but the tables.
    fresh_database = db.open_database(settings.database_url, timeout_seconds=settings.database_timeout_seconds)
    try:
        with running_server(server.create_app(settings, database=fresh_database, logger=logger)) as base_url:
            retry = LiveClient(base_url).post("/v1/orders", json=document, headers=headers)
    finally:
        fresh_database.close()
    assert (retry.status, retry.header("Idempotent-Replayed"), retry.body) == (201, "true", first.body)
    assert order_ids(database) == [first.json()["id"]]
    assert stock_of(database, item["id"]) == STOCK - 3


# -- 7. the state machine under racing requests ------------------------------------------

def test_ten_racing_cancels_one_wins_and_the_stock_comes_back_once(live_server, live_client, database, users):
    item = make_item(database, STOCK)
    owner = users.create()
    order = orders.place_order(database, owner["id"], [{"item_id": item["id"], "quantity": 3}])
    assert stock_of(database, item["id"]) == STOCK - 3
    cancel = ("POST", f"/v1/orders/{order['id']}/cancel", users.headers(owner), None)

    statuses = send_at_once(live_server, [cancel] * CANCELLERS)

    assert sorted(statuses) == [200] + [409] * (CANCELLERS - 1)
    assert stock_of(database, item["id"]) == STOCK
    shown = live_client.get(f"/v1/orders/{order['id']}", headers=users.headers(owner)).json()
    assert shown["status"] == "cancelled"


def test_a_racing_payment_and_cancel_cannot_both_win(live_server, database, users):
    item = make_item(database, STOCK)
    owner, admin = users.create(), users.admin()
    expected_stock = STOCK
    for _ in range(4):
        order = orders.place_order(database, owner["id"], [{"item_id": item["id"], "quantity": 2}])
        pay = ("PATCH", f"/v1/orders/{order['id']}", json_headers(users.headers(admin)), b'{"status": "paid"}')
        cancel = ("POST", f"/v1/orders/{order['id']}/cancel", users.headers(owner), None)
        requests = [pay, cancel] * 3

        statuses = send_at_once(live_server, requests)

        assert statuses.count(200) == 1 and set(statuses) <= {200, 409}, statuses
        winner = "paid" if requests[statuses.index(200)] is pay else "cancelled"
        assert orders.get_order(database, order["id"])["status"] == winner
        if winner == "paid":
            expected_stock -= 2   # sold; a cancelled order's 2 units went back
        assert stock_of(database, item["id"]) == expected_stock


# -- 8. kill -9 right after the 201 ------------------------------------------------------

@pytest.fixture
def start_server(database_url, start_program):
    """start_server() -> `python server.py` on the test's database, serving (a conftest.Program)."""
    def start():
        env = server_env(database_url, PBKDF2_ITERATIONS=str(TEST_ITERATIONS), PORT=str(free_port()))
        return start_program([sys.executable, "server.py"], env).wait_for_url()

    return start


def test_an_order_answered_201_survives_kill_9_of_the_server(database, users, start_server):
    item = make_item(database, STOCK)
    user = users.create()
    headers = json_headers(users.headers(user), idempotency_key=KEY)
    body = json.dumps(order_document(item["id"], quantity=4)).encode()

    first = start_server()
    status, _, created = http_request(first.port, "/v1/orders", method="POST", headers=headers, body=body)
    first.kill()   # SIGKILL: no shutdown, no flush, nothing after the answer gets to run
    assert status == 201, created

    second = start_server()
    order = json.loads(created)
    status, _, shown = http_request(second.port, f"/v1/orders/{order['id']}", headers=users.headers(user))
    assert (status, json.loads(shown)) == (200, order)
    status, _, shown = http_request(second.port, f"/v1/items/{item['id']}")
    assert (status, json.loads(shown)["stock"]) == (200, STOCK - 4)
    status, replay_headers, replayed = http_request(second.port, "/v1/orders", method="POST", headers=headers,
                                                    body=body)
    assert (status, replay_headers["Idempotent-Replayed"], replayed) == (201, "true", created)
    assert order_ids(database) == [order["id"]]


# -- 9. the oversell, without the lock and with it ---------------------------------------

@contextmanager
def naive_transaction(database):
    """A plain transaction, with none of db.transaction()'s protection for writers: on
    PostgreSQL READ COMMITTED (the default), on SQLite a DEFERRED BEGIN (no write lock
    until the first write) and without the process's write lock."""
    if database.engine == "postgresql":
        with database.transaction() as connection:
            yield connection
        return
    with database.connection() as connection:
        connection.execute("BEGIN DEFERRED")
        try:
            yield connection
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise


def sell_one_without_the_lock(database, item_id, user_id, both_have_read):
    """DELIBERATELY WRONG, to show the bug: read the stock, check it, write it back, with
    nothing to stop another buyer between the read and the write. orders.place_order is
    the right way (SELECT ... FOR UPDATE, and a guarded UPDATE)."""
    with naive_transaction(database) as connection:
        stock_read = connection.fetch_value("SELECT stock FROM items WHERE id = :item_id", {"item_id": item_id})
        both_have_read.wait(THREAD_TIMEOUT_SECONDS)   # each buyer has now seen "stock 1"
        if stock_read < 1:
            return None
        connection.execute("UPDATE items SET stock = :stock_read - 1 WHERE id = :item_id",
                           {"stock_read": stock_read, "item_id": item_id})
        order = sql_orders.insert_order(connection, user_id, PRICE_CENTS, db.utc_now())
        line = {"item_id": item_id, "name": "Teapot", "quantity": 1, "unit_price_cents": PRICE_CENTS}
        sql_orders.insert_lines(connection, order["id"], [line])
        return order["id"]


def two_buyers_race_without_the_lock(database, users):
    """Two buyers of the last unit, each through sell_one_without_the_lock, at one moment:
    (the item, what each buyer's sale returned or raised)."""
    item = make_item(database, stock=1)
    buyers = [users.create(), users.create()]
    both_have_read = threading.Barrier(2)
    outcomes = run_at_once(*[
        lambda buyer=buyer: sell_one_without_the_lock(database, item["id"], buyer["id"], both_have_read)
        for buyer in buyers])
    return item, outcomes


@pytest.mark.parametrize("engine", ["postgresql"])
def test_oversell_without_the_lock_sells_the_last_unit_twice_on_postgresql(database, users):
    item, outcomes = two_buyers_race_without_the_lock(database, users)

    # Both committed: the second UPDATE waited for the first one's row lock, then wrote
    # 1 - 1 = 0 over the first one's 0. A lost update, and no error anywhere.
    assert all(isinstance(order_id, int) for order_id in outcomes), outcomes
    assert len(order_ids(database)) == 2
    assert sold_quantity(database) == 2
    assert stock_of(database, item["id"]) == 0   # "0 left" after selling 2 of 1


@pytest.mark.parametrize("engine", ["sqlite"])
def test_oversell_without_the_lock_on_sqlite_fails_with_busy_instead(database, users):
    """SQLite has one writer at a time: the second buyer's write finds that its snapshot
    (stock 1) is out of date and gets SQLITE_BUSY ("database is locked"), which waiting
    cannot cure. No oversell, but an error; hence BEGIN IMMEDIATE in db.py."""
    item, outcomes = two_buyers_race_without_the_lock(database, users)

    sold = [outcome for outcome in outcomes if isinstance(outcome, int)]
    busy = [outcome for outcome in outcomes if isinstance(outcome, db.DatabaseUnavailable)]
    assert (len(sold), len(busy)) == (1, 1), outcomes
    assert "database is locked" in str(busy[0])
    assert order_ids(database) == sold
    assert stock_of(database, item["id"]) == 0


def test_oversell_prevented_place_order_sells_the_last_unit_once(database, users):
    item = make_item(database, stock=1)
    buyers = [users.create(), users.create()]
    start = threading.Barrier(2)

    def buy(buyer):
        start.wait(THREAD_TIMEOUT_SECONDS)
        return orders.place_order(database, buyer["id"], [{"item_id": item["id"], "quantity": 1}])

    outcomes = run_at_once(*[lambda buyer=buyer: buy(buyer) for buyer in buyers])

    sold = [outcome for outcome in outcomes if isinstance(outcome, dict)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, orders.OutOfStock)]
    assert (len(sold), len(refused)) == (1, 1), outcomes
    # The loser read the stock after the winner's COMMIT (it waited for the lock), so it saw 0.
    assert (refused[0].requested, refused[0].available) == (1, 0)
    assert order_ids(database) == [sold[0]["id"]]
    assert stock_of(database, item["id"]) == 0


def test_oversell_the_check_constraint_refuses_a_negative_stock(database):
    """The last line of defence: even a wrong UPDATE cannot store a stock below zero."""
    item = make_item(database, stock=1)
    with pytest.raises(db.IntegrityError), database.transaction() as connection:
        connection.execute("UPDATE items SET stock = stock - 2 WHERE id = :item_id", {"item_id": item["id"]})
    assert stock_of(database, item["id"]) == 1


@pytest.mark.parametrize("held_seconds, retry_after", [
    (0, 1),                                        # most likely still running: retry in a moment
    (idempotency.RUNNING_REQUEST_SECONDS - 2, 1),
    (30, idempotency.LEASE_SECONDS - 30),          # it died: come back when its lease ends
    (idempotency.LEASE_SECONDS - 0.5, 1),          # never less than a second
])
def test_a_held_keys_retry_after_says_how_long_its_lease_has_left(wsgi_client, database, users,
                                                                  held_seconds, retry_after):
    item = make_item(database, STOCK)
    user = users.create()
    document = order_document(item["id"])
    idempotency.begin(database, user["id"], KEY, idempotency.fingerprint("POST", "/v1/orders", document))
    set_key_column(database, user["id"], "locked_at", db.utc_now(-held_seconds))

    headers = json_headers(users.headers(user), idempotency_key=KEY)
    busy = wsgi_client.post("/v1/orders", json=document, headers=headers)
    assert_problem(busy, 409, STILL_RUNNING)
    # The clock moves between the two stamps: a second's slack, never more.
    assert int(busy.header("Retry-After")) in (retry_after, retry_after + 1)
    assert order_ids(database) == []
