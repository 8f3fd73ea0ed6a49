"""Tests for sql_paging.py: the keyset WHERE clause, ORDER BY and IN lists.

The keyset tests check `keyset_condition` against the plainest possible definition of "the
rows after this one": sort every row in Python and take the ones that follow. An in-memory
SQLite table holds random rows with many ties, and random sorts walk it.
"""

import random
import sqlite3

import pytest

from pagination import parse_sort
from sql_paging import in_list, keyset_condition, order_by, page_sql

SORTABLE = frozenset({"id", "name", "price_cents", "created_at"})


# -- keyset_condition -------------------------------------------------------------------------

@pytest.mark.parametrize("sort, after, condition", [
    ((("id", False),), (7,), "(id > :after_0)"),
    ((("id", True),), (7,), "(id < :after_0)"),
    ((("price_cents", True), ("id", False)), (500, 7),
     "(price_cents < :after_0 OR (price_cents = :after_0 AND id > :after_1))"),
    ((("name", False), ("price_cents", True), ("id", False)), ("Tea", 450, 7),
     "(name > :after_0"
     " OR (name = :after_0 AND price_cents < :after_1)"
     " OR (name = :after_0 AND price_cents = :after_1 AND id > :after_2))"),
])
def test_keyset_condition_text_and_parameters(sort, after, condition):
    assert keyset_condition(sort, after) == (condition, {f"after_{index}": value for index, value in enumerate(after)})


def test_keyset_condition_puts_values_only_in_parameters():
    condition, params = keyset_condition((("name", False), ("id", False)), ("x'); DROP TABLE items; --", 1))
    assert "DROP" not in condition
    assert params["after_0"] == "x'); DROP TABLE items; --"


def test_order_by_spells_every_direction():
    assert order_by((("price_cents", True), ("name", False), ("id", False))) == "price_cents DESC, name ASC, id ASC"


NAMES = ["Tea", "tea", "Mug", "Éclair", "éclair", "Zebra", "apple", "茶", "Tea cup"]
PRICES = [0, 100, 450, 450, 9900]
TIMES = ["2026-11-28T04:05:50.123456Z", "2026-11-28T04:05:50.123457Z", "2027-01-01T00:00:00.000000Z"]


@pytest.fixture(scope="module")
def catalogue():
    """80 random rows with many ties, in Python and in an in-memory SQLite table."""
    chooser = random.Random(8288)
    rows = [
        {"id": item_id, "name": chooser.choice(NAMES), "price_cents": chooser.choice(PRICES),
         "created_at": chooser.choice(TIMES)}
        for item_id in chooser.sample(range(1, 1000), 80)
    ]
    connection = sqlite3.connect(":memory:")
    connection.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " price_cents INTEGER NOT NULL, created_at TEXT NOT NULL)"
    )
    connection.executemany("INSERT INTO items VALUES (:id, :name, :price_cents, :created_at)", rows)
    yield rows, connection
    connection.close()


def random_sort_text(chooser):
    columns = chooser.sample(["name", "price_cents", "created_at"], chooser.randint(0, 3))
    if not columns or (len(columns) < 3 and chooser.random() < 0.3):
        columns.append("id")  # explicitly, in either direction; at most 3 keys may be written
    return ",".join(("-" if chooser.random() < 0.5 else "") + column for column in columns)


def python_order(rows, sort):
    """The rows sorted by `sort`: stable sorts from the last key to the first."""
    ordered = list(rows)
    for column, descending in reversed(sort):
        ordered.sort(key=lambda row: row[column], reverse=descending)
    return ordered


def rows_after(connection, sort, pivot, limit=-1):
    condition, params = keyset_condition(sort, tuple(pivot[column] for column, _ in sort))
    sql = f"SELECT id FROM items WHERE {condition} ORDER BY {order_by(sort)} LIMIT {limit}"
    return [item_id for (item_id,) in connection.execute(sql, params)]


@pytest.mark.parametrize("seed", range(10))
def test_keyset_condition_selects_exactly_the_rows_after_the_pivot(catalogue, seed):
    rows, connection = catalogue
    chooser = random.Random(seed)
    for _ in range(30):
        sort = parse_sort(random_sort_text(chooser), SORTABLE)
        ordered = python_order(rows, sort)
        pivot = chooser.choice(rows)
        expected = [row["id"] for row in ordered[ordered.index(pivot) + 1:]]
        assert rows_after(connection, sort, pivot) == expected, sort


@pytest.mark.parametrize("sort_text", ["id", "-id", "name", "-price_cents,name", "created_at,-name,price_cents"])
def test_walking_keyset_pages_visits_every_row_once_in_order(catalogue, sort_text):
    rows, connection = catalogue
    sort = parse_sort(sort_text, SORTABLE)
    ordered = python_order(rows, sort)
    by_id = {row["id"]: row for row in rows}
    seen = [ordered[0]["id"]]
    while True:
        page = rows_after(connection, sort, by_id[seen[-1]], limit=7)
        if not page:
            break
        seen.extend(page)
    assert seen == [row["id"] for row in ordered]


def test_in_list_names_one_placeholder_per_value():
    assert in_list("order", [5, 5, 9]) == ("(:order_0, :order_1, :order_2)", {"order_0": 5, "order_1": 5, "order_2": 9})


def test_page_sql_pages_by_offset_only_when_one_is_given():
    sort = (("price_cents", True), ("id", True))
    assert page_sql("SELECT id FROM items", [], {}, sort=sort, limit=21, offset=40) == (
        "SELECT id FROM items ORDER BY price_cents DESC, id DESC LIMIT :limit OFFSET :offset",
        {"limit": 21, "offset": 40},
    )
    assert page_sql("SELECT id FROM items", [], {}, sort=sort, limit=21, offset=0) == (
        "SELECT id FROM items ORDER BY price_cents DESC, id DESC LIMIT :limit", {"limit": 21},
    )
