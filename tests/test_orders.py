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
from conftest import make_item

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
