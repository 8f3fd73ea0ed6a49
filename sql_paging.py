"""The SQL half of a page of rows: WHERE for a keyset cursor, ORDER BY, LIMIT/OFFSET, IN lists.

pagination.py reads what a client asked for (limit, offset or cursor, sort) and checks it
against allow-lists; this module turns that checked request into SQL text with bound
parameters. Column names reach it only from the checked sort, values only as parameters:

    sort   (("price_cents", True), ("id", True))       from pagination.parse_sort("-price_cents")
    after  (500, 7)                                     the last row the client saw
    SQL    SELECT ... WHERE (price_cents, id) < (:after_0, :after_1)
           ORDER BY price_cents DESC, id DESC LIMIT :limit

"The rows after this one" (keyset pagination) is found by the sort's index, so page 500
costs what page 1 does; an OFFSET walks every skipped row. Both engines accept the same text.
"""

from collections.abc import Iterable, Sequence
from typing import Any

Sort = Sequence[tuple[str, bool]]  # ((column, descending), ...), from pagination.parse_sort


def page_sql(select: str, conditions: Iterable[str], params: dict[str, Any], *, sort: Sort, limit: int,
             offset: int | None = None, after: Sequence[Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters of one page: `select` ("SELECT ... FROM table") filtered by
    `conditions` (SQL texts whose values are in `params`), then the rows after the cursor,
    in `sort` order, `limit` of them, or skipping `offset`.

    >>> sql, params = page_sql("SELECT id FROM items", ["stock > 0"], {}, sort=(("id", False),), limit=21, after=(40,))
    >>> sql
    'SELECT id FROM items WHERE stock > 0 AND (id > :after_0) ORDER BY id ASC LIMIT :limit'
    >>> params
    {'after_0': 40, 'limit': 21}
    """
    conditions, params = list(conditions), dict(params)
    if after is not None:
        condition, after_params = keyset_condition(sort, after)
        conditions.append(condition)
        params.update(after_params)
    sql = select
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    sql += f" ORDER BY {order_by(sort)} LIMIT :limit"
    params["limit"] = limit
    if offset:
        sql += " OFFSET :offset"
        params["offset"] = offset
    return sql, params


def keyset_condition(sort: Sort, after: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """The WHERE clause for "rows after `after` in this order", with its bound parameters.

    When every key runs in one direction (the usual case: the id tie-breaker follows the
    last key), it is a row-value comparison, which both engines turn into the start of an
    index scan, so page 500 costs what page 1 does:

    >>> keyset_condition((("price_cents", True), ("id", True)), (500, 7))
    ('(price_cents, id) < (:after_0, :after_1)', {'after_0': 500, 'after_1': 7})

    With mixed directions no row comparison fits, and it is spelled out: past the last row on
    the first column, or equal on it and past it on the second, and so on. (PostgreSQL can
    only filter with this form, not start its scan from it.) Column names come from the
    checked sort (the allow-list), values only as parameters.

    >>> keyset_condition((("price_cents", True), ("id", False)), (500, 7))
    ('(price_cents < :after_0 OR (price_cents = :after_0 AND id > :after_1))', {'after_0': 500, 'after_1': 7})
    """
    params = {f"after_{position}": value for position, value in enumerate(after[: len(sort)])}
    directions = {descending for _, descending in sort}
    if len(sort) > 1 and len(directions) == 1:
        columns = ", ".join(column for column, _ in sort)
        values = ", ".join(f":{name}" for name in params)
        return f"({columns}) {'<' if directions.pop() else '>'} ({values})", params
    alternatives = []
    for position, (column, descending) in enumerate(sort):
        equal_before = [f"{earlier} = :after_{index}" for index, (earlier, _) in enumerate(sort[:position])]
        past = f"{column} {'<' if descending else '>'} :after_{position}"
        terms = [*equal_before, past]
        alternatives.append(terms[0] if len(terms) == 1 else "(" + " AND ".join(terms) + ")")
    return "(" + " OR ".join(alternatives) + ")", params


def order_by(sort: Sort) -> str:
    """ORDER BY text for a checked sort.

    >>> order_by((("price_cents", True), ("id", False)))
    'price_cents DESC, id ASC'
    """
    return ", ".join(f"{column} {'DESC' if descending else 'ASC'}" for column, descending in sort)


def in_list(prefix: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """Placeholders and parameters for `IN (...)` over `values` (at most a few hundred):
    one named placeholder per value, a text both engines accept.

    >>> in_list("item", [7, 3])
    ('(:item_0, :item_1)', {'item_0': 7, 'item_1': 3})
    """
    names = [f"{prefix}_{position}" for position in range(len(values))]
    placeholders = "(" + ", ".join(f":{name}" for name in names) + ")"
    return placeholders, dict(zip(names, values, strict=True))
