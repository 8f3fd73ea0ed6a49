"""SQL for the catalogue: one function per query, plain values in, dict rows out.

Every function takes a `db.Connection` first. None of them sees an HTTP object, and none
decides what a missing row means: `get_item` returns None and the handler answers 404.
The indexes these queries use are in schema.sql, each commented with the query it serves.
"""

from sql_paging import page_sql

ITEM_COLUMNS = "id, name, description, price_cents, stock, version, created_at, updated_at"
SORTABLE_COLUMNS = frozenset({"id", "name", "price_cents", "created_at"})
# The columns a client may change; `update_item` writes nothing else (no mass assignment).
WRITABLE_COLUMNS = ("name", "description", "price_cents", "stock")


def get_item(connection, item_id):
    """One live (not archived) item by id, or None."""
    return connection.fetch_one(
        f"SELECT {ITEM_COLUMNS} FROM items WHERE id = :item_id AND deleted_at IS NULL",
        {"item_id": item_id},
    )


def list_items(connection, *, sort, limit, offset=None, after=None,
               in_stock=None, min_price_cents=None, max_price_cents=None, name_contains=None):
    """Up to `limit` items in `sort` order, filtered; `after` (keyset) or `offset` says where to start.

    `sort` must come from pagination.parse_sort (its columns are in SORTABLE_COLUMNS): column
    names are the one part of this SQL not passed as parameters.
    """
    # Spelled as in the partial indexes' WHERE, so the planner can use them.
    conditions, params = ["deleted_at IS NULL"], {}
    if in_stock is True:
        conditions.append("stock > 0")
    elif in_stock is False:
        conditions.append("stock = 0")
    if min_price_cents is not None:
        conditions.append("price_cents >= :min_price_cents")
        params["min_price_cents"] = min_price_cents
    if max_price_cents is not None:
        conditions.append("price_cents <= :max_price_cents")
        params["max_price_cents"] = max_price_cents
    if name_contains is not None:
        # A substring search cannot use a B-tree index; it scans the (filtered) rows.
        # The pattern's own % and _ are escaped so a user's "50%" means the text "50%".
        # Both sides are lowered by the same SQL function, so the engines agree on case.
        conditions.append("lower(name) LIKE lower(:name_pattern) ESCAPE '\\'")
        params["name_pattern"] = "%" + _escape_like(name_contains) + "%"
    sql, params = page_sql(
        f"SELECT {ITEM_COLUMNS} FROM items", conditions, params, sort=sort, limit=limit, offset=offset, after=after
    )
    return connection.fetch_all(sql, params)


def insert_items(connection, items, now):
    """Insert many items at once (the seed command); `items` are dicts of the writable fields."""
    connection.execute_many(
        "INSERT INTO items (name, description, price_cents, stock, created_at, updated_at)"
        " VALUES (:name, :description, :price_cents, :stock, :now, :now)",
        [dict(item, now=now) for item in items],
    )


def insert_item(connection, item, now):
    """Insert one item (name, description, price_cents, stock); return it as stored."""
    return connection.fetch_one(
        "INSERT INTO items (name, description, price_cents, stock, created_at, updated_at)"
        " VALUES (:name, :description, :price_cents, :stock, :now, :now)"
        f" RETURNING {ITEM_COLUMNS}",
        dict(item, now=now),
    )


def update_item(connection, item_id, expected_version, changes, now):
    """Apply `changes` (a dict of writable fields) if the item is still at `expected_version`.

    Optimistic concurrency in one statement: the WHERE clause checks the version the client
    last saw, and the SET bumps it, so of two writers who read version 3 only the first
    matches; the second updates nothing and gets None. `expected_version` None (If-Match: *)
    takes whatever version is current. Returns the updated item, or None when no live item
    has that id and version.
    """
    assignments = ", ".join(f"{column} = :{column}" for column in changes if column in WRITABLE_COLUMNS)
    return connection.fetch_one(
        f"UPDATE items SET {assignments}, version = version + 1, updated_at = :now"
        f" WHERE id = :item_id AND deleted_at IS NULL{_version_check(expected_version)}"
        f" RETURNING {ITEM_COLUMNS}",
        dict(changes, item_id=item_id, expected_version=expected_version, now=now),
    )


def archive_item(connection, item_id, now, expected_version=None):
    """Take an item out of the catalogue, keeping the row for the orders that name it.

    With `expected_version`, only that version is archived (If-Match), checked in the same
    statement, so a change committed since the client read the item is never archived
    unseen. Returns True if a live item was archived, False if there was none.
    """
    cursor = connection.execute(
        "UPDATE items SET deleted_at = :now, updated_at = :now, version = version + 1"
        f" WHERE id = :item_id AND deleted_at IS NULL{_version_check(expected_version)}",
        {"item_id": item_id, "now": now, "expected_version": expected_version},
    )
    return cursor.rowcount == 1


def count_items(connection):
    """How many live items the catalogue holds."""
    return connection.fetch_value("SELECT count(*) AS total FROM items WHERE deleted_at IS NULL")


def _escape_like(text):
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _version_check(expected_version):
    # A separate clause rather than `(:expected_version IS NULL OR ...)`: PostgreSQL cannot
    # type a parameter that is only compared with NULL, and the plain form keeps the plan simple.
    return "" if expected_version is None else " AND version = :expected_version"
