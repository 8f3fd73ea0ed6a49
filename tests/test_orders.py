"""orders.py, below the HTTP layer: the row lock that makes two orders for one item take turns.

    first order                                  second order
    SELECT ... WHERE id IN (7) FOR UPDATE   -> row 7 locked
    UPDATE items SET stock = stock - 1 ...       SELECT ... WHERE id IN (7) FOR UPDATE
    (held open here by the test)                   waits for the first one's lock
    COMMIT                                  ->   reads stock 0: OutOfStock, 0 available

Without `FOR UPDATE` the second order would read the stock the first had not committed yet
(1), and only the guarded UPDATE would stop it: still no oversell, but a refusal that says
"1 available". The test holds the first transaction open until PostgreSQL reports the
second blocked by it, so the outcome never depends on which thread the scheduler runs first.
SQLite needs no such test: one writer at a time (BEGIN IMMEDIATE) is its whole story.

The races over HTTP and the deliberately unlocked demonstration are in test_orders_concurrency.py.
"""

import threading
import time

import pytest
from conftest import count_rows, make_item

import orders

WAIT_SECONDS = 15  # for a thread or a lock wait: far longer than either takes when all is well
POLL_SECONDS = 0.01


@pytest.mark.parametrize("engine", ["postgresql"])
def test_a_second_order_waits_for_the_row_lock_and_reads_the_stock_the_first_left(database, users):
    item = make_item(database, stock=1)
    first_buyer, second_buyer = users.create(), users.create()
    line = [{"item_id": item["id"], "quantity": 1}]
    first_backend = []
    first_holds_its_locks, commit_first = threading.Event(), threading.Event()

    def hold_open(connection, order):
        """before_commit of the first order: everything written, nothing committed yet."""
        first_backend.append(connection.fetch_value("SELECT pg_backend_pid()"))
        first_holds_its_locks.set()
        assert commit_first.wait(WAIT_SECONDS)

    def second_order():
        assert first_holds_its_locks.wait(WAIT_SECONDS)
        return orders.place_order(database, second_buyer["id"], line)

    first, second = Outcome(orders.place_order, database, first_buyer["id"], line, before_commit=hold_open), \
        Outcome(second_order)
    assert first_holds_its_locks.wait(WAIT_SECONDS)
    wait_until_blocked_by(database, first_backend[0])
    commit_first.set()

    assert first.result()["lines"][0]["quantity"] == 1
    refused = second.result()
    assert isinstance(refused, orders.OutOfStock), refused
    assert (refused.requested, refused.available) == (1, 0)


# -- helpers -------------------------------------------------------------------------------

class Outcome:
    """Run `call(*args, **kwargs)` in a thread of its own; `result()` is what it returned, or
    the exception it raised."""

    def __init__(self, call, *args, **kwargs):
        self.value = None

        def run():
            try:
                self.value = call(*args, **kwargs)
            except Exception as error:  # the outcome under test, not a failure of the helper
                self.value = error

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def result(self):
        self.thread.join(WAIT_SECONDS)
        assert not self.thread.is_alive(), "the thread is still stuck"
        return self.value


def wait_until_blocked_by(database, backend_pid):
    """Return once some session waits for a lock held by `backend_pid` (pg_blocking_pids)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        with database.connection() as connection:
            if connection.fetch_value(
                "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))",
                {"pid": backend_pid},
            ):
                return
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"no session waited for the locks of backend {backend_pid}")


# -- found by mutation testing (tools/mutate.py, docs/testing.md) ---------------------------

def test_an_order_may_total_max_total_cents_and_not_a_cent_more(database, users):
    user = users.create()
    priciest = make_item(database, stock=1, price_cents=orders.MAX_TOTAL_CENTS)
    placed = orders.place_order(database, user["id"], [{"item_id": priciest["id"], "quantity": 1}])
    assert placed["total_cents"] == orders.MAX_TOTAL_CENTS
    dearer = make_item(database, stock=1, price_cents=orders.MAX_TOTAL_CENTS + 1)
    with pytest.raises(orders.TotalTooLarge) as refused:
        orders.place_order(database, user["id"], [{"item_id": dearer["id"], "quantity": 1}])
    assert refused.value.args == (orders.MAX_TOTAL_CENTS + 1,)
    assert count_rows(database, "orders") == 1


def test_before_commit_sees_the_order_inside_the_transaction_and_false_undoes_it(database, users):
    user, teapot = users.create(), make_item(database, stock=5)
    line = [{"item_id": teapot["id"], "quantity": 1}]
    seen = []

    def record(connection, order):
        seen.append((order, connection.fetch_value("SELECT count(*) FROM orders WHERE id = :id", {"id": order["id"]})))

    placed = orders.place_order(database, user["id"], line, before_commit=record)
    assert seen == [(placed, 1)]
    lost_ids = []

    def lose_the_claim(connection, order):
        lost_ids.append(order["id"])
        return False

    with pytest.raises(orders.LostClaim) as lost:
        orders.place_order(database, user["id"], line, before_commit=lose_the_claim)
    assert lost.value.args == (lost_ids[0],)
    assert orders.get_order(database, lost_ids[0]) is None
    assert count_rows(database, "orders") == 1


def test_the_refusals_carry_their_facts_and_say_them():
    unknown, short = orders.UnknownItems([7, 9]), orders.OutOfStock(7, "Teapot", 3, 1)
    invalid, changed = orders.InvalidTransition(5, "shipped", "cancelled"), orders.StatusChanged(5, "paid")
    assert (str(unknown), unknown.item_ids) == ("unknown items: [7, 9]", [7, 9])
    assert str(short) == "item 7: 3 requested, 1 in stock"
    assert (short.item_id, short.name, short.requested, short.available) == (7, "Teapot", 3, 1)
    assert str(invalid) == "order 5 is shipped; it cannot become cancelled"
    assert (invalid.order_id, invalid.from_status, invalid.to_status) == (5, "shipped", "cancelled")
    assert (str(changed), changed.order_id, changed.status) == ("order 5 is now paid", 5, "paid")


def test_change_status_names_the_order_it_refuses(database, users):
    user, teapot = users.create(), make_item(database, stock=5)
    order_id = orders.place_order(database, user["id"], [{"item_id": teapot["id"], "quantity": 1}])["id"]
    with pytest.raises(orders.StatusChanged) as changed:
        orders.change_status(database, order_id, "shipped", expected_status="paid")
    assert (changed.value.order_id, changed.value.status) == (order_id, "pending")
    with pytest.raises(orders.InvalidTransition) as refused:
        orders.change_status(database, order_id, "shipped")
    assert (refused.value.order_id, refused.value.from_status, refused.value.to_status) == \
        (order_id, "pending", "shipped")


@pytest.mark.parametrize("expected_status", [None, "pending"])
def test_an_order_moved_by_another_request_after_the_read_is_refused_with_its_new_status(
        database, users, monkeypatch, expected_status):
    # On PostgreSQL two requests can both read "pending"; the second one's UPDATE then finds
    # the first one's committed move. Made here deterministic: the move happens, in the same
    # transaction, just before the UPDATE, which therefore matches nothing.
    user, teapot = users.create(), make_item(database, stock=5)
    order_id = orders.place_order(database, user["id"], [{"item_id": teapot["id"], "quantity": 1}])["id"]
    set_status = orders.sql_orders.set_status

    def paid_meanwhile(connection, order_id, from_status, to_status, now):
        set_status(connection, order_id, "pending", "paid", now)
        return set_status(connection, order_id, from_status, to_status, now)

    monkeypatch.setattr(orders.sql_orders, "set_status", paid_meanwhile)
    with pytest.raises(orders.StatusChanged if expected_status else orders.InvalidTransition) as refused:
        orders.change_status(database, order_id, "cancelled", expected_status=expected_status)
    if expected_status:
        assert (refused.value.order_id, refused.value.status) == (order_id, "paid")
    else:
        assert (refused.value.order_id, refused.value.from_status, refused.value.to_status) == \
            (order_id, "paid", "cancelled")
    monkeypatch.undo()
    assert orders.get_order(database, order_id)["status"] == "pending"  # all of it rolled back
    with database.connection() as connection:
        assert connection.fetch_value("SELECT stock FROM items WHERE id = :id", {"id": teapot["id"]}) == 4
