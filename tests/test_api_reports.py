"""The sales reports over HTTP (GET /v1/reports/sales), on both engines: revenue per day
with a running total, and per item with a rank (SQL window functions, sql_reports.py).

Only paid and shipped orders count. Orders on past days are written with SQL by
conftest's `insert_orders`, since the API always stamps the present moment; the ones placed
through the API are "today", the day the server stamped.

    GET /v1/reports/sales?group_by=item&from=2026-01-01&to=2026-01-31
    {"from": "2026-01-01", "to": "2026-01-31", "group_by": "item", "data": [
      {"item_id": 1, "name": "...", "quantity": 1, "revenue_cents": 3000,
       "revenue_rank": 1, "running_revenue_cents": 3000}, ...]}

Parameter checks run against conftest's `checker` (one SQLite app per module, in process).
"""

import datetime as dt
from urllib.parse import urlencode

import pytest
from conftest import assert_problem, insert_orders, move, patch_item, place

import seed

SEEDED = {number: row for number, row in enumerate(seed.demo_items(30), start=1)}


def test_sales_per_item_and_per_day_count_only_paid_and_shipped_orders(client, admin, customer):
    for item_id, price_cents in ((1, 3000), (2, 1000), (3, 500), (4, 250)):
        assert patch_item(client, admin, item_id, {"price_cents": price_cents},
                          if_match=f'"item-{item_id}-v1"').status == 200
    paid = place(client, customer, [{"item_id": 1, "quantity": 1}, {"item_id": 2, "quantity": 2}]).json()
    shipped = place(client, customer, [{"item_id": 3, "quantity": 4}, {"item_id": 4, "quantity": 2}]).json()
    place(client, customer, [{"item_id": 1, "quantity": 5}])                      # stays pending
    cancelled = place(client, customer, [{"item_id": 2, "quantity": 3}]).json()
    refunded = place(client, customer, [{"item_id": 4, "quantity": 10}]).json()
    for order, path in ((paid, ["paid"]), (shipped, ["paid", "shipped"]), (cancelled, ["cancelled"]),
                        (refunded, ["paid", "cancelled"])):
        for status in path:
            assert move(client, admin, order["id"], status).status == 200
    today = dt.datetime.now(dt.UTC).date()

    response = client.get("/v1/reports/sales?group_by=item", headers=admin)
    assert response.status == 200 and response.header("Content-Type") == "application/json"
    assert response.json() == {
        "from": days_ago(today, 29), "to": today.isoformat(), "group_by": "item",
        "data": [
            # Items 2 and 3 tie at 2000: one rank for both, and the next rank skips one.
            sale(1, quantity=1, revenue_cents=3000, revenue_rank=1, running_revenue_cents=3000),
            sale(2, quantity=2, revenue_cents=2000, revenue_rank=2, running_revenue_cents=5000),
            sale(3, quantity=4, revenue_cents=2000, revenue_rank=2, running_revenue_cents=7000),
            sale(4, quantity=2, revenue_cents=500, revenue_rank=4, running_revenue_cents=7500),
        ],
    }
    assert report(client, admin, group_by="item", limit=2) == response.json()["data"][:2]
    by_day = client.get("/v1/reports/sales?group_by=day", headers=admin).json()
    assert by_day == {"from": days_ago(today, 29), "to": today.isoformat(), "group_by": "day", "data": [
        {"day": today.isoformat(), "orders": 2, "items_sold": 9, "revenue_cents": 7500, "running_revenue_cents": 7500},
    ]}
    assert client.get("/v1/reports/sales", headers=admin).json() == by_day  # day is the default


def test_sales_per_day_with_a_running_total(client, admin, alice, seeded):
    user_id, headers = alice
    placed = place(client, headers, [{"item_id": 4, "quantity": 2}]).json()  # today, 2 x 2744
    assert move(client, admin, placed["id"], "paid").status == 200
    # "Today" is the day the server stamped, so a test running across midnight still agrees.
    today = dt.date.fromisoformat(placed["created_at"][:10])

    def at(days, clock="12:00:00.000000"):
        return f"{days_ago(today, days)}T{clock}Z"

    insert_orders(seeded, [
        (user_id, at(40), "paid", [(1, 1, 1000)]),
        (user_id, at(3, "00:00:00.000000"), "paid", [(2, 2, 700)]),
        (user_id, at(3, "23:59:59.999999"), "shipped", [(3, 1, 300), (4, 1, 200)]),
        (user_id, at(2), "pending", [(1, 3, 1000)]),
        (user_id, at(2), "cancelled", [(1, 3, 1000)]),
        (user_id, at(1, "00:00:00.000000"), "paid", [(5, 4, 250)]),
    ])

    def day(days, orders, items_sold, revenue_cents, running_revenue_cents):
        return {"day": days_ago(today, days), "orders": orders, "items_sold": items_sold,
                "revenue_cents": revenue_cents, "running_revenue_cents": running_revenue_cents}

    assert report(client, admin, group_by="day") == [
        day(3, 2, 4, 1900, 1900), day(1, 1, 4, 1000, 2900), day(0, 1, 2, 5488, 8388)]
    # `from` and `to` are whole days, both included.
    assert report(client, admin, **{"from": days_ago(today, 40), "to": days_ago(today, 3)}) == [
        day(40, 1, 1, 1000, 1000), day(3, 2, 4, 1900, 2900)]
    assert report(client, admin, **{"from": days_ago(today, 3), "to": days_ago(today, 3)}) == [
        day(3, 2, 4, 1900, 1900)]
    assert report(client, admin, **{"from": days_ago(today, 2), "to": days_ago(today, 2)}) == []
    assert report(client, admin, to=days_ago(today, 1)) == [day(3, 2, 4, 1900, 1900), day(1, 1, 4, 1000, 2900)]
    by_item = report(client, admin, group_by="item", **{"from": days_ago(today, 40)})
    assert [(row["item_id"], row["quantity"], row["revenue_cents"]) for row in by_item] == [
        (4, 3, 200 + 5488), (2, 2, 1400), (1, 1, 1000), (5, 4, 1000), (3, 1, 300)]
    assert [row["revenue_rank"] for row in by_item] == [1, 2, 3, 3, 5]
    assert [row["running_revenue_cents"] for row in by_item] == [5688, 7088, 8088, 9088, 9388]


@pytest.mark.parametrize("query, detail", [
    ("group_by=week", "'group_by' must be one of: day, item"),
    ("group_by=DAY", "'group_by' must be one of: day, item"),
    ("from=2026-1-5", "'from' must be a day written YYYY-MM-DD, from 1000-01-01 to 9998-12-31"),
    ("from=2026-02-30", "'from' must be a day written YYYY-MM-DD, from 1000-01-01 to 9998-12-31"),
    ("to=2026-01-05T00:00:00Z", "'to' must be a day written YYYY-MM-DD, from 1000-01-01 to 9998-12-31"),
    ("to=yesterday", "'to' must be a day written YYYY-MM-DD, from 1000-01-01 to 9998-12-31"),
    ("to=9999-12-31", "'to' must be a day written YYYY-MM-DD, from 1000-01-01 to 9998-12-31"),
    ("from=0001-01-01&to=0001-01-02", "'to' must be a day written YYYY-MM-DD, from 1000-01-01 to 9998-12-31"),
    ("to=0001-01-05", "'to' must be a day written YYYY-MM-DD, from 1000-01-01 to 9998-12-31"),
    ("from=2026-01-06&to=2026-01-05", "'from' is after 'to'"),
    ("from=2025-01-01&to=2026-01-02", "the range may cover at most 366 days"),
    ("from=2000-01-01", "the range may cover at most 366 days"),
    ("limit=5", "'limit' applies to group_by=item only"),
    ("group_by=day&limit=5", "'limit' applies to group_by=item only"),
    ("group_by=item&limit=0", "'limit' must be a whole number from 1 to 100"),
    ("group_by=item&limit=101", "'limit' must be a whole number from 1 to 100"),
    ("group_by=item&top=5", "unknown query parameter(s): top"),
    ("since=2026-01-01", "unknown query parameter(s): since"),
    ("from=2026-01-01&from=2026-01-02", "query parameter 'from' is given more than once"),
])
def test_bad_report_parameters_are_400(checker, query, detail):
    assert_problem(checker.client.get(f"/v1/reports/sales?{query}", headers=checker.admin), 400, detail)


def test_a_range_of_366_days_is_allowed(checker):
    response = checker.client.get("/v1/reports/sales?from=2024-01-01&to=2024-12-31&group_by=item",
                                  headers=checker.admin)
    assert response.status == 200 and response.json()["data"] == []


def test_an_empty_group_by_is_400(checker):
    """`status=` and `sort=` are 400s on GET /v1/orders; `group_by=` silently means "day"."""
    assert_problem(checker.client.get("/v1/reports/sales?group_by=", headers=checker.admin), 400,
                   "'group_by' must be one of: day, item")


def test_report_days_are_written_yyyy_mm_dd(checker):
    """The message says YYYY-MM-DD; Python 3.11's date.fromisoformat also takes a week date."""
    response = checker.client.get("/v1/reports/sales?from=2026-W01-1&to=2026-01-31", headers=checker.admin)
    assert_problem(response, 400, "'from' must be a day written YYYY-MM-DD, from 1000-01-01 to 9998-12-31")


# -- helpers -------------------------------------------------------------------------------

def report(client, admin, **params):
    """The rows of GET /v1/reports/sales?params."""
    response = client.get(f"/v1/reports/sales?{urlencode(params)}", headers=admin)
    assert response.status == 200, response
    return response.json()["data"]


def sale(item_id, **figures):
    return dict({"item_id": item_id, "name": SEEDED[item_id]["name"]}, **figures)


def days_ago(today, days):
    return (today - dt.timedelta(days=days)).isoformat()
