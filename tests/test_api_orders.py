"""Orders over HTTP: placing, reading, listing, cancelling, and the admin state machine,
on both engines. The sales reports are in test_api_reports.py, Idempotency-Key in
test_idempotency.py, and the SQL's plans in test_query_plans.py.

The `seeded` catalogue (seed.demo_items, the same on every run) holds items 1..30, each at
version 1. The ones these tests lean on:

    item  name                     price_cents  stock
       1  Handmade Bamboo Pen            16870     27
       4  Quiet Copper Apron              2744     26
       7  Smart Walnut Mug               11253      0   (sold out)
      13  Organic Glass Candle           15801      7
      14  Cosy Copper Kettle              4326    181
      25  Bright Stone Scarf              2205    128

Where the tests run:
- `client`: four times, {sqlite, postgresql} x {wsgi in process, live socket}.
- `wsgi_client`: on each engine, in process: the long tables whose rows each change the
  database (the state machine, date filters), and the query count (it patches db.Connection).
- `checker` (conftest): one SQLite app for the whole module, in process, for requests that
  are refused before any SQL could run (parameter and body checks, missing credentials).
  Each such test also checks that nothing was written. This keeps the long tables fast.

Rows that must be older than "now" (date filters) are written with SQL by
conftest's `insert_orders`, since the API always stamps the present moment.
"""

import threading
from urllib.parse import urlencode

import pytest
from conftest import (
    assert_problem,
    bodies_that_are_not_json,
    follow_next_links,
    insert_orders,
    item,
    move,
    nothing_was_ordered,
    order_statuses,
    patch_item,
    place,
    place_body,
)

import db
import seed

SEEDED = {number: row for number, row in enumerate(seed.demo_items(30), start=1)}
ORDER_FIELDS = {"id", "user_id", "status", "total_cents", "created_at", "updated_at", "lines"}
VALID = {"item_id": 1, "quantity": 1}
BAD_TIME = "must be a date (2026-11-28) or an RFC 3339 time with an offset (2026-11-28T09:00:00Z)"


# -- POST /v1/orders -----------------------------------------------------------------------

def test_placing_an_order_answers_201_with_the_order_priced_from_the_database(client, alice):
    user_id, headers = alice
    response = place(client, headers, [{"item_id": 25, "quantity": 3}, {"item_id": 4, "quantity": 2}])
    assert response.status == 201, response
    assert response.header("Content-Type") == "application/json"
    assert response.header("Location") == "/v1/orders/1"
    assert response.header("ETag") == '"order-1-pending"'
    order = response.json()
    assert set(order) == ORDER_FIELDS
    assert (order["id"], order["user_id"], order["status"]) == (1, user_id, "pending")
    # Lines in item id order, each with the name and the price the database holds.
    assert order["lines"] == [
        {"item_id": 4, "name": "Quiet Copper Apron", "quantity": 2, "unit_price_cents": 2744},
        {"item_id": 25, "name": "Bright Stone Scarf", "quantity": 3, "unit_price_cents": 2205},
    ]
    assert order["total_cents"] == 2 * 2744 + 3 * 2205 == 12103
    assert order["created_at"] == order["updated_at"] and order["created_at"].endswith("Z")
    # Committed before the answer: readable at once, the same.
    read = client.get("/v1/orders/1", headers=headers)
    assert read.status == 200 and read.json() == order
    assert read.header("ETag") == '"order-1-pending"'


def test_placing_an_order_takes_the_stock_and_bumps_each_items_version(client, customer):
    assert place(client, customer, [{"item_id": 4, "quantity": 2}, {"item_id": 25, "quantity": 3}]).status == 201
    for item_id, stock in ((4, 26 - 2), (25, 128 - 3)):
        response = client.get(f"/v1/items/{item_id}")
        assert (response.json()["stock"], response.json()["version"]) == (stock, 2)
        assert response.header("ETag") == f'"item-{item_id}-v2"'
    assert (item(client, 1)["stock"], item(client, 1)["version"]) == (27, 1)  # not in the order


def test_the_price_is_the_databases_and_a_later_change_does_not_rewrite_the_order(client, admin, customer):
    assert patch_item(client, admin, 4, {"price_cents": 1000}, if_match='"item-4-v1"').status == 200
    order = place(client, customer, [{"item_id": 4, "quantity": 3}]).json()
    assert order["lines"][0]["unit_price_cents"] == 1000 and order["total_cents"] == 3000
    changes = {"price_cents": 5, "name": "Renamed Apron"}
    assert patch_item(client, admin, 4, changes, if_match='"item-4-v3"').status == 200
    # The line keeps the name and the price it was sold under, as a receipt does.
    assert order["lines"][0]["name"] == "Quiet Copper Apron"
    assert client.get(f"/v1/orders/{order['id']}", headers=customer).json() == order


def test_an_order_may_take_the_last_unit_and_the_largest_quantity(client, admin, customer):
    assert place(client, customer, [{"item_id": 13, "quantity": 7}]).status == 201
    assert item(client, 13)["stock"] == 0
    assert patch_item(client, admin, 14, {"stock": 1000}, if_match="*").status == 200
    response = place(client, customer, [{"item_id": 14, "quantity": 1000}])
    assert response.status == 201 and response.json()["total_cents"] == 1000 * 4326
    assert item(client, 14)["stock"] == 0


def test_an_order_of_fifty_lines_is_accepted(wsgi_client, admin, customer):
    for item_id in (7, 9, 19):  # the sold-out ones
        assert patch_item(wsgi_client, admin, item_id, {"stock": 1}, if_match="*").status == 200
    for number in range(31, 51):
        body = {"name": f"Extra {number}", "price_cents": 100, "stock": 1}
        assert wsgi_client.post("/v1/items", json=body, headers=admin).json()["id"] == number
    response = place(wsgi_client, customer, [{"item_id": item_id, "quantity": 1} for item_id in range(50, 0, -1)])
    assert response.status == 201, response
    order = response.json()
    assert [line["item_id"] for line in order["lines"]] == list(range(1, 51))
    assert order["total_cents"] == sum(SEEDED[item_id]["price_cents"] for item_id in range(1, 31)) + 20 * 100


# -- validation ----------------------------------------------------------------------------

def entries(count):
    return [{"item_id": item_id, "quantity": 1} for item_id in range(1, count + 1)]


WHOLE = "must be a whole number"
AT_LEAST_1 = "must be a whole number of at least 1"
FROM_1_TO_1000 = "must be a whole number from 1 to 1000"
UNKNOWN = "is not a known field"
EVERY_PROBLEM_AT_ONCE = (
    {"lines": [{"item_id": 0, "quantity": 0}, {"item_id": "x"}, 5], "total_cents": 0, "status": "paid"},
    [("total_cents", UNKNOWN), ("status", UNKNOWN), ("lines[0].item_id", AT_LEAST_1),
     ("lines[0].quantity", FROM_1_TO_1000), ("lines[1].item_id", WHOLE), ("lines[1].quantity", "is required"),
     ("lines[2]", "must be a JSON object")],
)
BAD_ORDERS: list[tuple[object, list[tuple[str, str]]]] = [
    # body                                                errors: (field, message)
    ([VALID],                                             [("", "the body must be a JSON object")]),
    ("lines",                                             [("", "the body must be a JSON object")]),
    (None,                                                [("", "the body must be a JSON object")]),
    ({},                                                  [("lines", "is required")]),
    ({"line": [VALID]},                                   [("line", UNKNOWN), ("lines", "is required")]),
    ({"lines": VALID},                                    [("lines", "must be a list")]),
    ({"lines": "1x2"},                                    [("lines", "must be a list")]),
    ({"lines": None},                                     [("lines", "must be a list")]),
    ({"lines": []},                                       [("lines", "must hold 1 to 50 entries")]),
    ({"lines": entries(51)},                              [("lines", "must hold 1 to 50 entries")]),
    ({"lines": [7]},                                      [("lines[0]", "must be a JSON object")]),
    ({"lines": [VALID, [2, 1]]},                          [("lines[1]", "must be a JSON object")]),
    ({"lines": [{"quantity": 1}]},                        [("lines[0].item_id", "is required")]),
    ({"lines": [{"item_id": 0, "quantity": 1}]},          [("lines[0].item_id", AT_LEAST_1)]),
    ({"lines": [{"item_id": -4, "quantity": 1}]},         [("lines[0].item_id", AT_LEAST_1)]),
    ({"lines": [{"item_id": "1", "quantity": 1}]},        [("lines[0].item_id", WHOLE)]),
    ({"lines": [{"item_id": True, "quantity": 1}]},       [("lines[0].item_id", WHOLE)]),
    ({"lines": [{"item_id": 1.25, "quantity": 1}]},       [("lines[0].item_id", WHOLE)]),  # 1.0 is 1: JSON
    ({"lines": [{"item_id": None, "quantity": 1}]},       [("lines[0].item_id", WHOLE)]),
    ({"lines": [{"item_id": 1}]},                         [("lines[0].quantity", "is required")]),
    ({"lines": [{"item_id": 1, "quantity": 0}]},          [("lines[0].quantity", FROM_1_TO_1000)]),
    ({"lines": [{"item_id": 1, "quantity": -1}]},         [("lines[0].quantity", FROM_1_TO_1000)]),
    ({"lines": [{"item_id": 1, "quantity": 1001}]},       [("lines[0].quantity", FROM_1_TO_1000)]),
    ({"lines": [{"item_id": 1, "quantity": 1.5}]},        [("lines[0].quantity", WHOLE)]),
    ({"lines": [{"item_id": 1, "quantity": 2.000001}]},   [("lines[0].quantity", WHOLE)]),
    ({"lines": [{"item_id": 1, "quantity": "2"}]},        [("lines[0].quantity", WHOLE)]),
    ({"lines": [dict(VALID, unit_price_cents=1)]},        [("lines[0].unit_price_cents", UNKNOWN)]),
    ({"lines": [dict(VALID, name="Pen")]},                [("lines[0].name", UNKNOWN)]),
    # Fields a client might hope to set: the server decides them.
    ({"lines": [VALID], "total_cents": 1},                [("total_cents", UNKNOWN)]),
    ({"lines": [VALID], "status": "paid"},                [("status", UNKNOWN)]),
    ({"lines": [VALID], "user_id": 1},                    [("user_id", UNKNOWN)]),
    # One line per item: the later mention is the one named.
    ({"lines": [VALID, {"item_id": 1, "quantity": 2}]},
     [("lines[1].item_id", "item 1 is already in lines[0]; one line per item")]),
    ({"lines": [{"item_id": 2, "quantity": 1}, VALID, {"item_id": 2, "quantity": 1}, dict(VALID, quantity=3)]},
     [("lines[2].item_id", "item 2 is already in lines[0]; one line per item"),
      ("lines[3].item_id", "item 1 is already in lines[1]; one line per item")]),
    EVERY_PROBLEM_AT_ONCE,
]


@pytest.mark.parametrize("body, errors", BAD_ORDERS)
def test_a_bad_order_is_422_naming_every_bad_field_and_changes_nothing(checker, body, errors):
    response = place_body(checker.client, checker.customer, body)
    assert_problem(response, 422, "the request has invalid fields" if errors[0][0] else None,
                   errors=[{"field": field, "message": message} for field, message in errors])
    assert nothing_was_ordered(checker.client, checker.database)


def test_a_bad_order_is_422_on_every_engine_and_transport(client, customer, seeded):
    body, errors = EVERY_PROBLEM_AT_ONCE
    assert_problem(place_body(client, customer, body), 422, "the request has invalid fields",
                   errors=[{"field": field, "message": message} for field, message in errors])
    assert nothing_was_ordered(client, seeded)


def test_a_bad_entry_and_a_repeated_item_are_reported_in_one_422(checker):
    """api_orders._order_lines promises "every problem (each bad entry, each repeated item)
    in one 422", and STYLE.md rule 8 asks for it."""
    body = {"lines": [{"item_id": 1, "quantity": 0}, {"item_id": 1, "quantity": 1}]}
    assert_problem(place_body(checker.client, checker.customer, body), 422, errors=[
        {"field": "lines[0].quantity", "message": "must be a whole number from 1 to 1000"},
        {"field": "lines[1].item_id", "message": "item 1 is already in lines[0]; one line per item"},
    ])
    assert nothing_was_ordered(checker.client, checker.database)


def test_an_item_id_too_large_is_refused_with_its_upper_bound(checker):
    """2**53 is "at least 1": a message that says only that cannot help the client."""
    response = place(checker.client, checker.customer, [{"item_id": 2**53, "quantity": 1}])
    assert_problem(response, 422, errors=[
        {"field": "lines[0].item_id", "message": "must be a whole number from 1 to 9007199254740991"},
    ])
    assert nothing_was_ordered(checker.client, checker.database)


@pytest.mark.parametrize("body, content_type, status, detail",
                         bodies_that_are_not_json(b'{"lines": [{"item_id": 1, "quantity": 1}]}'))
def test_a_body_that_is_not_json_is_refused(checker, body, content_type, status, detail):
    headers = dict(checker.customer, **({"Content-Type": content_type} if content_type else {}))
    assert_problem(checker.client.post("/v1/orders", body=body, headers=headers), status, detail)
    assert nothing_was_ordered(checker.client, checker.database)


@pytest.mark.parametrize("lines, errors", [
    ([{"item_id": 999, "quantity": 1}], [("lines[0].item_id", "item 999 does not exist")]),
    ([{"item_id": 2, "quantity": 1}, {"item_id": 31, "quantity": 1}, {"item_id": 3, "quantity": 1},
      {"item_id": 2**53 - 1, "quantity": 1}],
     [("lines[1].item_id", "item 31 does not exist"), ("lines[3].item_id", "item 9007199254740991 does not exist")]),
])
def test_unknown_items_are_422_naming_their_lines(client, customer, seeded, lines, errors):
    assert_problem(place(client, customer, lines), 422, "the request has invalid fields",
                   errors=[{"field": field, "message": message} for field, message in errors])
    assert nothing_was_ordered(client, seeded)


def test_an_archived_item_counts_as_unknown(client, admin, customer, seeded):
    assert client.request("DELETE", "/v1/items/5", headers=admin).status == 204
    response = place(client, customer, [VALID, {"item_id": 5, "quantity": 1}])
    assert_problem(response, 422, errors=[{"field": "lines[1].item_id", "message": "item 5 does not exist"}])
    assert nothing_was_ordered(client, seeded)


# -- stock ---------------------------------------------------------------------------------

@pytest.mark.parametrize("item_id, quantity, available", [(13, 8, 7), (7, 1, 0), (1, 1000, 27)])
def test_short_stock_is_a_409_naming_the_item(client, customer, seeded, item_id, quantity, available):
    response = place(client, customer, [{"item_id": item_id, "quantity": quantity}])
    name = SEEDED[item_id]["name"]
    problem = assert_problem(
        response, 409, f"not enough stock for item {item_id} ({name}): {quantity} requested, {available} available")
    assert (problem["item_id"], problem["requested"], problem["available"]) == (item_id, quantity, available)
    assert item(client, item_id)["stock"] == available
    assert nothing_was_ordered(client, seeded)


def test_a_short_second_line_leaves_the_first_lines_stock_alone(client, customer, seeded):
    response = place(client, customer, [{"item_id": 1, "quantity": 5}, {"item_id": 13, "quantity": 8}])
    assert assert_problem(response, 409)["item_id"] == 13
    first = item(client, 1)
    assert (first["stock"], first["version"]) == (27, 1)  # taken, then rolled back with the rest
    assert nothing_was_ordered(client, seeded)
    # The same order within the stock goes through.
    assert place(client, customer, [{"item_id": 1, "quantity": 5}, {"item_id": 13, "quantity": 7}]).status == 201
    assert (item(client, 1)["stock"], item(client, 13)["stock"]) == (22, 0)


# -- who may do what -----------------------------------------------------------------------

@pytest.mark.parametrize("method, path, body", [
    ("POST", "/v1/orders", {"lines": [VALID]}),
    ("GET", "/v1/orders", None),
    ("GET", "/v1/orders/1", None),
    ("PATCH", "/v1/orders/1", {"status": "paid"}),
    ("POST", "/v1/orders/1/cancel", None),
    ("GET", "/v1/reports/sales", None),
])
def test_every_order_route_needs_credentials(checker, method, path, body):
    response = checker.client.request(method, path, json=body)
    assert_problem(response, 401, "this endpoint needs credentials")
    assert response.header("WWW-Authenticate") == 'Bearer realm="shop"'
    assert nothing_was_ordered(checker.client, checker.database)


@pytest.mark.parametrize("method, path, body", [
    ("PATCH", "/v1/orders/1", {"status": "paid"}),
    ("GET", "/v1/reports/sales", None),
    ("GET", "/v1/reports/sales?group_by=item", None),
])
def test_admin_routes_are_403_for_a_customer(checker, method, path, body):
    response = checker.client.request(method, path, json=body, headers=checker.customer)
    assert_problem(response, 403, "this endpoint is for admins")


@pytest.mark.parametrize("method, path, allow", [
    ("DELETE", "/v1/orders/1", "GET, HEAD, OPTIONS, PATCH"),
    ("PUT", "/v1/orders", "GET, HEAD, OPTIONS, POST"),
    ("GET", "/v1/orders/1/cancel", "OPTIONS, POST"),
    ("POST", "/v1/reports/sales", "GET, HEAD, OPTIONS"),
])
def test_a_wrong_method_is_405_with_allow(checker, method, path, allow):
    response = checker.client.request(method, path, headers=checker.admin)
    assert_problem(response, 405)
    assert response.header("Allow") == allow


def test_a_customer_cannot_patch_their_own_order_nor_anyone_cancel_it_anonymously(client, customer, seeded):
    order_id = place(client, customer, [VALID]).json()["id"]
    for status in ("paid", "cancelled"):
        assert_problem(move(client, customer, order_id, status), 403, "this endpoint is for admins")
    assert_problem(cancel(client, {}, order_id), 401, "this endpoint needs credentials")
    assert_problem(client.get(f"/v1/orders/{order_id}"), 401)
    assert order_statuses(seeded) == {order_id: "pending"}
    assert item(client, 1)["stock"] == 26


def test_another_users_order_is_404_exactly_like_a_missing_one(client, alice, bob):
    order = place(client, alice[1], [VALID]).json()
    theirs = client.get(f"/v1/orders/{order['id']}", headers=bob[1])
    missing = client.get("/v1/orders/2", headers=bob[1])
    assert_problem(theirs, 404, f"order {order['id']} does not exist")
    assert_problem(missing, 404, "order 2 does not exist")
    assert set(theirs.json()) == set(missing.json()) == {"type", "title", "status", "detail", "instance", "request_id"}
    assert without_ids(theirs.json(), order["id"]) == without_ids(missing.json(), 2)
    assert sorted(name for name, _ in theirs.headers) == sorted(name for name, _ in missing.headers)
    assert theirs.header("ETag") is None


def test_another_users_order_cannot_be_cancelled(client, alice, bob):
    order = place(client, alice[1], [{"item_id": 4, "quantity": 3}]).json()
    assert_problem(cancel(client, bob[1], order["id"]), 404, f"order {order['id']} does not exist")
    assert_problem(cancel(client, bob[1], 99), 404, "order 99 does not exist")
    assert client.get(f"/v1/orders/{order['id']}", headers=alice[1]).json()["status"] == "pending"
    assert item(client, 4)["stock"] == 23


def test_an_admin_reads_any_order(client, admin, alice):
    order = place(client, alice[1], [VALID]).json()
    response = client.get(f"/v1/orders/{order['id']}", headers=admin)
    assert response.status == 200 and response.json() == order
    assert_problem(client.get("/v1/orders/404", headers=admin), 404, "order 404 does not exist")


def test_a_customer_lists_only_their_orders_and_an_admin_lists_all(client, admin, alice, bob):
    first = place(client, alice[1], [VALID]).json()
    second = place(client, bob[1], [{"item_id": 2, "quantity": 1}]).json()
    third = place(client, alice[1], [{"item_id": 3, "quantity": 1}]).json()
    assert listed(client, alice[1]) == [third["id"], first["id"]]
    assert listed(client, bob[1]) == [second["id"]]
    assert client.get("/v1/orders", headers=admin).json()["data"] == [third, second, first]  # with their lines
    assert_problem(client.get(f"/v1/orders?user_id={bob[0]}", headers=alice[1]), 400,
                   "unknown query parameter(s): user_id")


# -- GET /v1/orders ------------------------------------------------------------------------

def test_the_list_is_newest_first_unless_asked_otherwise(client, customer):
    ids = [place(client, customer, [{"item_id": item_id, "quantity": 1}]).json()["id"] for item_id in (1, 2, 3)]
    response = client.get("/v1/orders", headers=customer)
    assert response.status == 200 and response.header("Content-Type") == "application/json"
    body = response.json()
    assert [order["id"] for order in body["data"]] == ids[::-1]
    assert [set(order) for order in body["data"]] == [ORDER_FIELDS] * 3
    assert body["data"][0]["lines"] == [{"item_id": 3, "name": SEEDED[3]["name"], "quantity": 1,
                                         "unit_price_cents": SEEDED[3]["price_cents"]}]
    assert body["pagination"] == {"limit": 20, "has_more": False, "next_cursor": None}
    assert 'rel="next"' not in (response.header("Link") or "")
    assert listed(client, customer, "sort=-created_at") == ids[::-1]
    assert listed(client, customer, "sort=created_at") == ids


@pytest.mark.parametrize("query, detail", [
    ("sort=total_cents", "cannot sort by 'total_cents'; choose from created_at"),
    ("sort=id", "cannot sort by 'id'; choose from created_at"),
    ("sort=", "cannot sort by ''; choose from created_at"),
    ("sort=created_at,created_at", "'created_at' appears twice in sort"),
    ("status=refunded", "'status' must be one of: pending, paid, shipped, cancelled"),
    ("status=PAID", "'status' must be one of: pending, paid, shipped, cancelled"),
    ("status=", "'status' must be one of: pending, paid, shipped, cancelled"),
    ("status=paid&status=shipped", "query parameter 'status' is given more than once"),
    ("state=paid", "unknown query parameter(s): state"),
    ("page=2&per_page=5", "unknown query parameter(s): page, per_page"),
    ("limit=0", "'limit' must be a whole number from 1 to 100"),
    ("limit=101", "'limit' must be a whole number from 1 to 100"),
    ("offset=-1", "'offset' must be a whole number from 0 to 100000"),
    ("cursor=not-a-cursor", None),
    ("offset=0&cursor=abc", "use either 'offset' or 'cursor', not both"),
])
def test_bad_list_parameters_are_400(checker, query, detail):
    assert_problem(checker.client.get(f"/v1/orders?{query}", headers=checker.customer), 400, detail)


def test_the_status_filter(client, admin, alice, bob):
    ids = [place(client, headers, [{"item_id": item_id, "quantity": 1}]).json()["id"]
           for item_id, headers in ((1, alice[1]), (2, alice[1]), (3, bob[1]), (4, alice[1]))]
    for order_id, status in ((ids[0], "paid"), (ids[2], "paid"), (ids[3], "cancelled")):
        assert move(client, admin, order_id, status).status == 200
    assert listed(client, admin, "status=paid") == [ids[2], ids[0]]
    assert listed(client, alice[1], "status=paid") == [ids[0]]
    assert listed(client, alice[1], "status=pending") == [ids[1]]
    assert listed(client, alice[1], "status=cancelled") == [ids[3]]
    assert listed(client, admin, "status=shipped") == []


# Five of Alice's orders at known times (see `dated_orders`): ids 1..5.
DATED = ["2026-01-01T12:00:00.000000Z", "2026-01-02T00:00:00.000000Z", "2026-01-02T12:00:00.000000Z",
         "2026-01-03T00:00:00.000000Z", "2026-01-03T23:59:59.999999Z"]


@pytest.mark.parametrize("params, expected_ids", [
    ({"created_from": "2026-01-02"}, [5, 4, 3, 2]),
    ({"created_to": "2026-01-02"}, [1]),                                    # to is exclusive
    ({"created_from": "2026-01-02", "created_to": "2026-01-03"}, [3, 2]),
    ({"created_from": "2026-01-03", "created_to": "2026-01-03"}, []),
    ({"created_from": "2026-01-02T12:00:00Z"}, [5, 4, 3]),                 # from is inclusive
    ({"created_from": "2026-01-02T12:00:00.000001Z"}, [5, 4]),
    ({"created_to": "2026-01-02T12:00:00Z"}, [2, 1]),
    ({"created_to": "2026-01-02T12:00:00.000001Z"}, [3, 2, 1]),
    ({"created_from": "2026-01-02T14:00:00+02:00"}, [5, 4, 3]),            # the same instant as 12:00Z
    ({"created_to": "2026-01-02T23:00:00-01:00"}, [3, 2, 1]),              # 2026-01-03T00:00Z
    ({"created_from": "2026-01-01T00:00:00Z", "created_to": "2026-01-04"}, [5, 4, 3, 2, 1]),
    ({"created_from": "2026-01-04"}, []),
    # Any year is compared as fixed-width text: "0999-..." sorts before "2026-...".
    ({"created_from": "0999-01-01"}, [5, 4, 3, 2, 1]),
    ({"created_to": "0999-01-01T00:00:00+01:00"}, []),
])
def test_created_from_and_created_to(wsgi_client, alice, seeded, params, expected_ids):
    dated_orders(seeded, alice[0])
    assert listed(wsgi_client, alice[1], urlencode(params)) == expected_ids
    assert listed(wsgi_client, alice[1], urlencode(dict(params, sort="created_at"))) == expected_ids[::-1]


@pytest.mark.parametrize("params, detail", [
    ({"created_from": "yesterday"}, "'created_from' " + BAD_TIME),
    ({"created_from": ""}, "'created_from' " + BAD_TIME),
    ({"created_from": "2026-13-01"}, "'created_from' " + BAD_TIME),
    ({"created_from": "2026-02-30"}, "'created_from' " + BAD_TIME),
    ({"created_to": "2026-01-02T12:00:00"}, "'created_to' " + BAD_TIME),      # no offset
    ({"created_to": "2026-01-02T25:00:00Z"}, "'created_to' " + BAD_TIME),
    ({"created_to": "2026-01-02T12:00:00Z" + "0" * 40}, "'created_to' " + BAD_TIME),
    # Instants outside the years 1 to 9999 once moved to UTC.
    ({"created_from": "9999-12-31T23:59:59-23:59"}, "'created_from' " + BAD_TIME),
    ({"created_from": "0001-01-01T00:00:00+01:00"}, "'created_from' " + BAD_TIME),
    ({"created_from": "2026-01-03", "created_to": "2026-01-02"}, "'created_from' is after 'created_to'"),
    ({"created_from": "2026-01-02T12:00:00.000001Z", "created_to": "2026-01-02T12:00:00Z"},
     "'created_from' is after 'created_to'"),
])
def test_bad_created_ranges_are_400(checker, params, detail):
    assert_problem(checker.client.get(f"/v1/orders?{urlencode(params)}", headers=checker.customer), 400, detail)


@pytest.mark.parametrize("value", ["2026-W01-5", "20260102T120000Z", "2026-01-02T12Z"])
def test_created_from_accepts_only_rfc_3339(checker, value):
    """ISO 8601 forms that RFC 3339 does not allow (a week date, the basic format, an hour
    alone): Python 3.11's fromisoformat takes them, the API says it wants RFC 3339."""
    response = checker.client.get(f"/v1/orders?{urlencode({'created_from': value})}", headers=checker.customer)
    assert_problem(response, 400, "'created_from' " + BAD_TIME)


def test_a_cursor_walks_every_order_once_even_with_equal_times(client, alice, bob, seeded):
    times = ["2026-01-01T00:00:00.000000Z"] * 3 + ["2026-01-02T00:00:00.000000Z"] * 2 + [
        "2026-01-03T00:00:00.000000Z", "2026-01-01T00:00:00.000000Z"]
    insert_orders(seeded, [(alice[0], created_at, "pending", [(1, 1, 100)]) for created_at in times]
                  + [(bob[0], "2026-01-02T00:00:00.000000Z", "pending", [(1, 1, 100)])])  # 8: Bob's
    newest_first = [6, 5, 4, 7, 3, 2, 1]
    for query, limit, expected in (("limit=2", 2, newest_first), ("limit=2&sort=created_at", 2, newest_first[::-1]),
                                   ("limit=3", 3, newest_first)):
        # follow_next_links checks each page's status, has_more and Link header.
        pages = follow_next_links(client, f"/v1/orders?{query}", alice[1])
        for page in pages[:-1]:
            assert page["pagination"]["next_cursor"] in page["links"]["next"]
        assert [order["id"] for page in pages for order in page["data"]] == expected
        assert len(pages) == -(-len(expected) // limit)


def test_a_cursor_keeps_its_filters(client, admin, alice, seeded):
    dated_orders(seeded, alice[0])
    params = {"created_from": "2026-01-02", "created_to": "2026-01-04", "limit": "2"}
    first = client.get(f"/v1/orders?{urlencode(params)}", headers=alice[1]).json()
    assert [order["id"] for order in first["data"]] == [5, 4]
    second = client.get(first["links"]["next"], headers=alice[1]).json()
    assert [order["id"] for order in second["data"]] == [3, 2] and second["pagination"]["has_more"] is False
    # The cursor belongs to these filters, and to Alice's list: anywhere else it is refused.
    cursor = first["pagination"]["next_cursor"]
    assert_problem(client.get(f"/v1/orders?cursor={cursor}", headers=alice[1]), 400)
    assert_problem(client.get(f"/v1/orders?{urlencode(dict(params, cursor=cursor))}", headers=admin), 400)


def test_offset_pages(client, alice, seeded):
    dated_orders(seeded, alice[0])
    response = client.get("/v1/orders?limit=2&offset=2", headers=alice[1])
    body = response.json()
    assert [order["id"] for order in body["data"]] == [3, 2]
    assert body["pagination"] == {"limit": 2, "has_more": True, "offset": 2}
    assert 'rel="next"' in response.header("Link") and body["links"]["next"].endswith("offset=4")
    last = client.get("/v1/orders?limit=2&offset=4", headers=alice[1])
    assert [order["id"] for order in last.json()["data"]] == [1]
    assert 'rel="next"' not in (last.header("Link") or "")
    assert listed(client, alice[1], "limit=2&offset=5") == []


def test_listing_takes_two_queries_whatever_the_page_size(wsgi_client, admin, customer, monkeypatch):
    """No N+1: the orders in one query, the lines of all of them in a second."""
    for _ in range(20):
        lines = [{"item_id": item_id, "quantity": 1} for item_id in (2, 3, 6)]
        assert place(wsgi_client, customer, lines).status == 201
    statements = []
    execute = db.Connection.execute

    request_thread = threading.get_ident()  # the in-process client runs the app in this thread

    def counting_execute(connection, sql, params=None):
        # The caller's role and token epoch (read at most once a second: accounts.UserStates)
        # are the authentication's, not the list's; other threads' queries are not the request's.
        if threading.get_ident() == request_thread and not sql.startswith("SELECT role, token_epoch FROM users"):
            statements.append(sql)
        return execute(connection, sql, params)

    monkeypatch.setattr(db.Connection, "execute", counting_execute)
    counts = {}
    for limit in (1, 20):
        statements.clear()
        response = wsgi_client.get(f"/v1/orders?limit={limit}", headers=admin)
        assert response.status == 200
        assert [len(order["lines"]) for order in response.json()["data"]] == [3] * limit
        counts[limit] = len(statements)
        assert "FROM orders" in statements[0] and "FROM order_items" in statements[1], statements
    assert counts == {1: 2, 20: 2}


# -- cancelling and the state machine ------------------------------------------------------

def test_the_owner_cancels_a_pending_order_and_the_stock_comes_back(client, customer):
    order = place(client, customer, [{"item_id": 4, "quantity": 2}, {"item_id": 25, "quantity": 3}]).json()
    assert (item(client, 4)["stock"], item(client, 25)["stock"]) == (24, 125)
    response = cancel(client, customer, order["id"])
    assert response.status == 200, response
    assert response.header("ETag") == f'"order-{order["id"]}-cancelled"'
    cancelled = response.json()
    assert cancelled["status"] == "cancelled" and cancelled["lines"] == order["lines"]
    assert cancelled["total_cents"] == order["total_cents"] and cancelled["updated_at"] > order["updated_at"]
    for item_id, stock in ((4, 26), (25, 128)):
        assert (item(client, item_id)["stock"], item(client, item_id)["version"]) == (stock, 3)
    assert client.get(f"/v1/orders/{order['id']}", headers=customer).json() == cancelled
    # Twice is a conflict, and the stock comes back only once.
    problem = assert_problem(cancel(client, customer, order["id"]), 409,
                             f"order {order['id']} is cancelled; it cannot become cancelled")
    assert problem["current_status"] == "cancelled"
    assert item(client, 4)["stock"] == 26


@pytest.mark.parametrize("path", [["paid"], ["paid", "shipped"]])
def test_the_owner_cannot_cancel_once_paid(client, admin, customer, path):
    order = place(client, customer, [{"item_id": 4, "quantity": 2}]).json()
    for status in path:
        assert move(client, admin, order["id"], status).status == 200
    problem = assert_problem(cancel(client, customer, order["id"]), 409,
                             f"order {order['id']} is {path[-1]}; it cannot become cancelled")
    assert problem["current_status"] == path[-1]
    assert item(client, 4)["stock"] == 24
    assert client.get(f"/v1/orders/{order['id']}", headers=customer).json()["status"] == path[-1]


def test_an_admin_may_cancel_a_paid_order_and_the_stock_comes_back(client, admin, customer):
    order = place(client, customer, [{"item_id": 4, "quantity": 2}, {"item_id": 13, "quantity": 7}]).json()
    assert move(client, admin, order["id"], "paid").status == 200
    response = move(client, admin, order["id"], "cancelled")
    assert response.status == 200 and response.json()["status"] == "cancelled"
    assert (item(client, 4)["stock"], item(client, 13)["stock"]) == (26, 7)


def test_a_shipped_order_cannot_be_cancelled(client, admin, customer):
    order = place(client, customer, [{"item_id": 4, "quantity": 2}]).json()
    for status in ("paid", "shipped"):
        assert move(client, admin, order["id"], status).status == 200
    assert_problem(move(client, admin, order["id"], "cancelled"), 409,
                   f"order {order['id']} is shipped; it cannot become cancelled")
    assert_problem(cancel(client, admin, order["id"]), 409)
    assert_problem(cancel(client, customer, order["id"]), 409)
    assert item(client, 4)["stock"] == 24


# How each status is reached from "pending", along allowed arrows.
PATH_TO = {"pending": [], "paid": ["paid"], "shipped": ["paid", "shipped"], "cancelled": ["cancelled"]}
STATE_MACHINE = [
    # from         to           status
    ("pending",   "pending",   409),
    ("pending",   "paid",      200),
    ("pending",   "shipped",   409),
    ("pending",   "cancelled", 200),
    ("paid",      "pending",   409),
    ("paid",      "paid",      409),
    ("paid",      "shipped",   200),
    ("paid",      "cancelled", 200),
    ("shipped",   "pending",   409),
    ("shipped",   "paid",      409),
    ("shipped",   "shipped",   409),
    ("shipped",   "cancelled", 409),
    ("cancelled", "pending",   409),
    ("cancelled", "paid",      409),
    ("cancelled", "shipped",   409),
    ("cancelled", "cancelled", 409),
]


@pytest.mark.parametrize("from_status, to_status, status", STATE_MACHINE)
def test_the_admin_state_machine(wsgi_client, admin, customer, from_status, to_status, status):
    order_id = place(wsgi_client, customer, [{"item_id": 14, "quantity": 2}]).json()["id"]
    for step in PATH_TO[from_status]:
        assert move(wsgi_client, admin, order_id, step).status == 200
    response = move(wsgi_client, admin, order_id, to_status)
    if status == 200:
        assert response.status == 200, response
        assert response.json()["status"] == to_status
        assert response.header("ETag") == f'"order-{order_id}-{to_status}"'
    else:
        problem = assert_problem(response, 409, f"order {order_id} is {from_status}; it cannot become {to_status}")
        assert problem["current_status"] == from_status
    final = to_status if status == 200 else from_status
    assert wsgi_client.get(f"/v1/orders/{order_id}", headers=customer).json()["status"] == final
    assert item(wsgi_client, 14)["stock"] == (181 if final == "cancelled" else 179)


@pytest.mark.parametrize("body, errors", [
    ({"status": "refunded"}, [("status", "must be one of: pending, paid, shipped, cancelled")]),
    ({"status": "PAID"}, [("status", "must be one of: pending, paid, shipped, cancelled")]),
    ({"status": 2}, [("status", "must be a string")]),
    ({"status": None}, [("status", "must be a string")]),
    ({}, [("status", "is required")]),
    ({"status": "paid", "total_cents": 0}, [("total_cents", "is not a known field")]),
    (["paid"], [("", "the body must be a JSON object")]),
])
def test_a_bad_status_change_is_422(wsgi_client, admin, customer, body, errors):
    order_id = place(wsgi_client, customer, [VALID]).json()["id"]
    response = wsgi_client.request("PATCH", f"/v1/orders/{order_id}", json=body, headers=admin)
    assert_problem(response, 422, errors=[{"field": field, "message": message} for field, message in errors])
    assert wsgi_client.get(f"/v1/orders/{order_id}", headers=customer).json()["status"] == "pending"


def test_changing_an_unknown_order_is_404(client, admin):
    assert_problem(move(client, admin, 999, "paid"), 404, "order 999 does not exist")
    assert_problem(cancel(client, admin, 999), 404, "order 999 does not exist")


# -- ETag ----------------------------------------------------------------------------------

def test_if_none_match_gives_304_until_the_status_changes(client, admin, customer):
    order_id = place(client, customer, [VALID]).json()["id"]
    response = client.get(f"/v1/orders/{order_id}", headers=customer)
    tag = response.header("ETag")
    assert tag == f'"order-{order_id}-pending"'
    assert response.header("Cache-Control") == "private, no-cache"
    unchanged = client.get(f"/v1/orders/{order_id}", headers=dict(customer, **{"If-None-Match": tag}))
    assert unchanged.status == 304 and unchanged.body == b""
    assert unchanged.header("ETag") == tag
    assert move(client, admin, order_id, "paid").header("ETag") == f'"order-{order_id}-paid"'
    changed = client.get(f"/v1/orders/{order_id}", headers=dict(customer, **{"If-None-Match": tag}))
    assert changed.status == 200 and changed.json()["status"] == "paid"
    assert changed.header("ETag") == f'"order-{order_id}-paid"'
    again = client.get(f"/v1/orders/{order_id}", headers=dict(admin, **{"If-None-Match": changed.header("ETag")}))
    assert again.status == 304


def test_a_patch_with_if_match_moves_only_the_version_it_names(client, admin, customer):
    order_id = place(client, customer, [{"item_id": 14, "quantity": 2}]).json()["id"]
    pending_tag = f'"order-{order_id}-pending"'
    paid = move(client, admin, order_id, "paid", if_match=pending_tag)
    assert (paid.status, paid.header("ETag")) == (200, f'"order-{order_id}-paid"')
    # A second admin read the order while pending and decides to cancel it: it is paid now.
    stale = move(client, admin, order_id, "cancelled", if_match=pending_tag)
    problem = assert_problem(stale, 412, f"order {order_id} is paid now; GET it again")
    assert problem["current_status"] == "paid"
    assert client.get(f"/v1/orders/{order_id}", headers=admin).json()["status"] == "paid"
    assert item(client, 14)["stock"] == SEEDED[14]["stock"] - 2  # nothing was given back
    for tag in (f'W/"order-{order_id}-paid"', f'"order-{order_id + 1}-paid"', '"order-1-paid", "order-2-paid"', "paid"):
        response = move(client, admin, order_id, "shipped", if_match=tag)
        assert_problem(response, 412, "If-Match does not name a version of this order")
    assert move(client, admin, order_id, "shipped", if_match="*").status == 200


def test_a_total_past_what_json_clients_read_exactly_is_422(client, admin, customer):
    top_price = 10**12  # the highest price the catalogue accepts
    for item_id in range(1, 11):
        assert patch_item(client, admin, item_id, {"price_cents": top_price, "stock": 1000}, if_match="*").status == 200
    # Ten lines of 1,000 units at 10**12 cents: 10**16, past 2**53 - 1.
    response = place(client, customer, [{"item_id": item_id, "quantity": 1000} for item_id in range(1, 11)])
    assert_problem(response, 422, errors=[
        {"field": "lines", "message": "the order's total may be at most 9007199254740991 cents"},
    ])
    assert [item(client, item_id)["stock"] for item_id in range(1, 11)] == [1000] * 10
    nine_lines = place(client, customer, [{"item_id": item_id, "quantity": 1000} for item_id in range(1, 10)])
    assert (nine_lines.status, nine_lines.json()["total_cents"]) == (201, 9 * 10**15)


# -- helpers -------------------------------------------------------------------------------

def cancel(client, headers, order_id):
    return client.post(f"/v1/orders/{order_id}/cancel", headers=headers)


def listed(client, headers, query=""):
    """The ids GET /v1/orders?query lists, in its order."""
    response = client.get(f"/v1/orders?{query}", headers=headers)
    assert response.status == 200, response
    return [order["id"] for order in response.json()["data"]]


def without_ids(problem, order_id):
    """What two 404 problems for orders share: all but the request id and the order's id."""
    return {name: value.replace(f"orders/{order_id}", "orders/N").replace(f"order {order_id} ", "order N ")
            for name, value in problem.items() if name != "request_id" and isinstance(value, str)}


def dated_orders(database, user_id):
    """The user's five orders at the DATED times: ids 1..5, oldest first."""
    return insert_orders(database, [(user_id, created_at, "pending", [(1, 1, 100)]) for created_at in DATED])
