"""Orders: placing one, and the state machine that moves it along. The shop's business rules.

Placing an order is one transaction, and the response is sent only after its COMMIT:

    BEGIN                                           (SQLite: BEGIN IMMEDIATE, the write lock)
    SELECT id, name, price_cents, stock FROM items WHERE id IN (...) ORDER BY id FOR UPDATE
        -> unknown item: ROLLBACK, 422          short stock: ROLLBACK, 409 naming the item
    UPDATE items SET stock = stock - 2 WHERE id = 7 AND stock >= 2      (for each line)
    INSERT INTO orders (...) RETURNING ...      total computed here, from the database's prices
    INSERT INTO order_items (...)               each line keeps the name and price it was sold at
    COMMIT

Why the lock: without it, two orders for the last unit both read "stock 1", both decide
there is enough, and both sell it (docs/concurrency.md shows this happening). With it, the
second waits at the SELECT until the first commits, then reads "stock 0" and is refused.

The state machine (ALLOWED_TRANSITIONS); anything else is refused with InvalidTransition:

    pending --pay--> paid --ship--> shipped
       |               |
       +---------------+--> cancelled    (the stock comes back, in the same transaction)

The owner may cancel while the order is pending; an admin may move it along any arrow.

Both move stock, which the catalogue shows: after the COMMIT, each calls the catalogue
cache's `invalidate()` (cache.py), so no cached page or item shows the stock from before.
Both also record an order event in their transaction (events.py), which live streams send.
"""

import db
import events
import mailer
import sql_orders
import webhooks

MAX_LINES = 50
MAX_QUANTITY = 1000
# The largest integer every JSON client reads exactly (validation.MAX_INTEGER): 1,000 units
# of 50 items at the highest price the catalogue allows would pass it.
MAX_TOTAL_CENTS = 2**53 - 1
STATUSES = ("pending", "paid", "shipped", "cancelled")
ALLOWED_TRANSITIONS = {
    "pending": frozenset({"paid", "cancelled"}),
    "paid": frozenset({"shipped", "cancelled"}),
    "shipped": frozenset(),
    "cancelled": frozenset(),
}


class UnknownItems(Exception):
    """Some lines name items that do not exist (or are archived); `item_ids` lists them."""

    def __init__(self, item_ids):
        super().__init__(f"unknown items: {item_ids}")
        self.item_ids = item_ids


class OutOfStock(Exception):
    """Not enough of an item: `item_id`, `name`, how many were `requested` and are `available`."""

    def __init__(self, item_id, name, requested, available):
        super().__init__(f"item {item_id}: {requested} requested, {available} in stock")
        self.item_id, self.name, self.requested, self.available = item_id, name, requested, available


class InvalidTransition(Exception):
    """The order cannot move from its status to the one asked for."""

    def __init__(self, order_id, from_status, to_status):
        super().__init__(f"order {order_id} is {from_status}; it cannot become {to_status}")
        self.order_id, self.from_status, self.to_status = order_id, from_status, to_status


class TotalTooLarge(Exception):
    """The order's total is above MAX_TOTAL_CENTS."""


class StatusChanged(Exception):
    """The order is no longer in the status the client expected (If-Match)."""

    def __init__(self, order_id, status):
        super().__init__(f"order {order_id} is now {status}")
        self.order_id, self.status = order_id, status


class LostClaim(Exception):
    """`before_commit` refused (the idempotency key is no longer this request's): rolled back."""


def place_order(database, user_id, lines, *, before_commit=None, catalogue_cache=None):
    """Place an order for `lines` ([{item_id, quantity}], each item once); return the order
    with its lines. `catalogue_cache` (a cache.Cache, when there is one) is invalidated
    after the COMMIT: the stock it shows has changed.

    Raises UnknownItems, OutOfStock or TotalTooLarge, and then nothing was written.
    `before_commit`, when given, is called as before_commit(connection, order) inside the
    transaction, after the order is written (the idempotency key records the response
    there); if it returns False the transaction is rolled back and LostClaim is raised.
    """
    with database.transaction() as connection:
        items = {item["id"]: item for item in sql_orders.lock_items(connection, [line["item_id"] for line in lines])}
        # The time is read after waiting for the locks, so orders are stamped in commit order.
        now = db.utc_now()
        unknown = [line["item_id"] for line in lines if line["item_id"] not in items]
        if unknown:
            raise UnknownItems(unknown)
        priced_lines = []
        # In item id order, the order the rows were locked in.
        for line in sorted(lines, key=lambda line: line["item_id"]):
            item = items[line["item_id"]]
            if not sql_orders.take_stock(connection, item["id"], line["quantity"], now):
                raise OutOfStock(item["id"], item["name"], line["quantity"], item["stock"])
            priced_lines.append({
                "item_id": item["id"], "name": item["name"],
                "quantity": line["quantity"], "unit_price_cents": item["price_cents"],
            })
        total_cents = sum(line["quantity"] * line["unit_price_cents"] for line in priced_lines)
        if total_cents > MAX_TOTAL_CENTS:
            raise TotalTooLarge(total_cents)
        order = sql_orders.insert_order(connection, user_id, total_cents, now)
        sql_orders.insert_lines(connection, order["id"], priced_lines)
        order["lines"] = priced_lines
        # Committed with the order, or not at all: its email, and its webhooks.
        mailer.enqueue_order_email(connection, order["id"], "created")
        webhooks.enqueue_order_event(connection, order, "order.created")
        if before_commit is not None and before_commit(connection, order) is False:
            raise LostClaim(order["id"])
        events.record(connection, order, "order.created")  # last: see sql_events.lock_event_ids
    if catalogue_cache is not None:
        catalogue_cache.invalidate()
    return order


def get_order(database, order_id, *, user_id=None):
    """The order with its lines, or None. With `user_id`, only that user's order: another
    user's order is None, exactly like one that does not exist."""
    with database.connection() as connection:
        order = sql_orders.get_order(connection, order_id, user_id=user_id)
        if order is not None:
            attach_lines(connection, [order])
    return order


def list_orders(database, **query):
    """A page of orders (see sql_orders.list_orders for the arguments), each with its
    lines: two queries for the whole page, however many orders it holds."""
    with database.connection() as connection:
        orders = sql_orders.list_orders(connection, **query)
        attach_lines(connection, orders)
    return orders


def attach_lines(connection, orders):
    """Give each order its `lines`, fetched for all of them at once (no N+1 queries)."""
    by_id = {order["id"]: order for order in orders}
    for order in orders:
        order["lines"] = []
    for line in sql_orders.lines_of_orders(connection, list(by_id)):
        order_id = line.pop("order_id")
        by_id[order_id]["lines"].append(line)


def change_status(database, order_id, to_status, *, user_id=None, only_from=None, expected_status=None,
                  catalogue_cache=None):
    """Move an order to `to_status`; return it, or None if there is no such order (for
    `user_id`, when given). A cancelled order's stock goes back, in the same transaction,
    and `catalogue_cache` (when given) is invalidated after its COMMIT.

    Raises StatusChanged when `expected_status` is given and the order is no longer in it
    (the client decided on a status that has changed since), and InvalidTransition when the
    state machine does not allow the move (or the order is not in `only_from`, when given),
    including when another request changed the status first.
    """
    with database.transaction() as connection:
        now = db.utc_now()
        order = sql_orders.get_order(connection, order_id, user_id=user_id)
        if order is None:
            return None
        if expected_status is not None and order["status"] != expected_status:
            raise StatusChanged(order_id, order["status"])
        allowed = to_status in ALLOWED_TRANSITIONS[order["status"]]
        if not allowed or (only_from is not None and order["status"] != only_from):
            raise InvalidTransition(order_id, order["status"], to_status)
        # The status we read is checked again by the UPDATE: if another request moved the
        # order since (on PostgreSQL both can read "pending" at once), nothing changes here.
        changed = sql_orders.set_status(connection, order_id, order["status"], to_status, now)
        if changed is None:
            current = sql_orders.get_order(connection, order_id)
            if expected_status is not None:
                raise StatusChanged(order_id, current["status"])
            raise InvalidTransition(order_id, current["status"], to_status)
        attach_lines(connection, [changed])
        mailer.enqueue_order_email(connection, order_id, to_status)
        webhooks.enqueue_order_event(connection, changed, f"order.{to_status}")
        if to_status == "cancelled":
            for line in changed["lines"]:  # in item id order, like place_order's locks
                sql_orders.return_stock(connection, line["item_id"], line["quantity"], now)
        events.record(connection, changed, events.EVENT_TYPES[to_status])  # last, like place_order's
    if to_status == "cancelled" and catalogue_cache is not None:
        catalogue_cache.invalidate()
    return changed
