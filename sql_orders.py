"""SQL for orders and their lines: one function per query, plain values in, dict rows out.

The business rules (what may change, in what order, inside which transaction) live in
orders.py; these functions only run the statements. Lists of ids become a list of named
placeholders, `IN (:id_0, :id_1, ...)` (sql_paging.in_list), one text for both engines.
"""

from sql_paging import in_list, page_sql

ORDER_COLUMNS = "id, user_id, status, total_cents, created_at, updated_at"
LINE_COLUMNS = "order_id, item_id, item_name AS name, quantity, unit_price_cents"
# Lists of orders sort by creation time only: each sort has an index (schema.sql) whose
# last column, id, breaks ties, for every filter the API offers.
SORTABLE_COLUMNS = frozenset({"created_at"})


def lock_items(connection, item_ids):
    """The live items with these ids (id, name, price_cents, stock), locked until COMMIT.

    On PostgreSQL `FOR UPDATE` locks each row: a second order for the same item waits here
    until this transaction ends, and then reads the stock this one left. The rows are
    locked in id order, so two orders for the same two items cannot each hold one and wait
    for the other (a deadlock). On SQLite the transaction already holds the database's one
    write lock (BEGIN IMMEDIATE), so nobody else can change the stock meanwhile.
    """
    placeholders, params = in_list("item", item_ids)
    return connection.fetch_all(
        "SELECT id, name, price_cents, stock FROM items"
        f" WHERE id IN {placeholders} AND deleted_at IS NULL ORDER BY id{connection.for_update}",
        params,
    )


def take_stock(connection, item_id, quantity, now):
    """Take `quantity` of an item out of stock; False (and no change) if there is not enough.

    The condition `stock >= :quantity` is checked by the UPDATE itself, in the same step as
    the write, so even without the lock above the stock could never go below zero: the
    CHECK (stock >= 0) in schema.sql is the last line of defence, this is the first.
    """
    cursor = connection.execute(
        "UPDATE items SET stock = stock - :quantity, version = version + 1, updated_at = :now"
        " WHERE id = :item_id AND stock >= :quantity",
        {"item_id": item_id, "quantity": quantity, "now": now},
    )
    return cursor.rowcount == 1


def return_stock(connection, item_id, quantity, now):
    """Put `quantity` of an item back into stock (a cancelled order)."""
    connection.execute(
        "UPDATE items SET stock = stock + :quantity, version = version + 1, updated_at = :now"
        " WHERE id = :item_id",
        {"item_id": item_id, "quantity": quantity, "now": now},
    )


def insert_order(connection, user_id, total_cents, now):
    """A new pending order; returns it as stored."""
    return connection.fetch_one(
        "INSERT INTO orders (user_id, status, total_cents, created_at, updated_at)"
        " VALUES (:user_id, 'pending', :total_cents, :now, :now)"
        f" RETURNING {ORDER_COLUMNS}",
        {"user_id": user_id, "total_cents": total_cents, "now": now},
    )


def insert_lines(connection, order_id, lines):
    """The order's lines: dicts of item_id, name, quantity and unit_price_cents."""
    connection.execute_many(
        "INSERT INTO order_items (order_id, item_id, item_name, quantity, unit_price_cents)"
        " VALUES (:order_id, :item_id, :name, :quantity, :unit_price_cents)",
        [dict(line, order_id=order_id) for line in lines],
    )


def get_order(connection, order_id, *, user_id=None):
    """One order, or None. With `user_id`, only if that user placed it."""
    owner_check = "" if user_id is None else " AND user_id = :user_id"
    return connection.fetch_one(
        f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = :order_id{owner_check}",
        {"order_id": order_id, "user_id": user_id},
    )


def list_orders(connection, *, sort, limit, offset=None, after=None,
                user_id=None, status=None, created_from=None, created_to=None):
    """Up to `limit` orders in `sort` order, filtered, starting after `after` or at `offset`.

    Indexes (schema.sql): one user's orders use orders_user_id_created_at; an admin's
    list uses orders_created_at_id, or orders_status_created_at with a status filter.
    `created_from` is inclusive and `created_to` exclusive, both RFC 3339 text.
    """
    conditions, params = [], {}
    if user_id is not None:
        conditions.append("user_id = :user_id")
        params["user_id"] = user_id
    if status is not None:
        conditions.append("status = :status")
        params["status"] = status
    if created_from is not None:
        conditions.append("created_at >= :created_from")
        params["created_from"] = created_from
    if created_to is not None:
        conditions.append("created_at < :created_to")
        params["created_to"] = created_to
    sql, params = page_sql(
        f"SELECT {ORDER_COLUMNS} FROM orders", conditions, params, sort=sort, limit=limit, offset=offset, after=after
    )
    return connection.fetch_all(sql, params)


def lines_of_orders(connection, order_ids):
    """The lines of all these orders in one query (never one query per order), in order id,
    then item id order: the order of the primary key (order_id, item_id) that finds them."""
    if not order_ids:
        return []
    placeholders, params = in_list("order", order_ids)
    return connection.fetch_all(
        f"SELECT {LINE_COLUMNS} FROM order_items WHERE order_id IN {placeholders} ORDER BY order_id, item_id",
        params,
    )


def set_status(connection, order_id, from_status, to_status, now):
    """Move an order from `from_status` to `to_status`; the changed order, or None when it
    was not in `from_status` (any more).

    The expected status is part of the WHERE: of two requests that both saw "pending" and
    both want to change it, only the first matches; the second changes nothing.
    """
    return connection.fetch_one(
        "UPDATE orders SET status = :to_status, updated_at = :now"
        " WHERE id = :order_id AND status = :from_status"
        f" RETURNING {ORDER_COLUMNS}",
        {"order_id": order_id, "from_status": from_status, "to_status": to_status, "now": now},
    )
