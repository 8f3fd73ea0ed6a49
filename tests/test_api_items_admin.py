"""Admin writes to the catalogue: POST, PATCH with If-Match, DELETE (archive), on both engines.

The `seeded` catalogue holds items 1..30, each at version 1 ("item-N-v1"). Most tests run
four times (the `client` fixture); the race tests run on each engine over a real socket.
`admin` and `customer` are conftest's: the Authorization headers of an admin and of a user.
"""

import http.client
import json
from urllib.parse import urlsplit

import pytest
from conftest import assert_problem, bodies_that_are_not_json, json_headers, send_at_once

import seed
import sql_items
import web

pytestmark = pytest.mark.usefixtures("seeded")
SEEDED = seed.demo_items(30)
ITEM_FIELDS = {"id", "name", "description", "price_cents", "stock", "version",
               "created_at", "updated_at", "in_stock"}
NEW_ITEM = {"name": "Linen apron", "description": "Stone-washed, one size.", "price_cents": 2450, "stock": 12}
RACERS = 10


# -- helpers -----------------------------------------------------------------------------

def etag(item_id, version):
    return f'"item-{item_id}-v{version}"'


def create(client, headers, body=NEW_ITEM):
    return client.post("/v1/items", json=body, headers=headers)


def patch(client, item_id, body, headers, if_match=None):
    if if_match is not None:
        headers = dict(headers, **{"If-Match": if_match})
    return client.request("PATCH", f"/v1/items/{item_id}", json=body, headers=headers)


def delete(client, item_id, headers, if_match=None):
    if if_match is not None:
        headers = dict(headers, **{"If-Match": if_match})
    return client.request("DELETE", f"/v1/items/{item_id}", headers=headers)


def read(client, item_id):
    """The item as GET shows it (asserting it exists)."""
    response = client.get(f"/v1/items/{item_id}")
    assert response.status == 200, response
    return response.json()


def listed_ids(client):
    return [item["id"] for item in client.get("/v1/items?limit=100").json()["data"]]


def live_count(database):
    with database.connection() as connection:
        return sql_items.count_items(connection)


def live_get(live_server, path):
    """GET over a fresh socket: (ETag, parsed body)."""
    parts = urlsplit(live_server)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.getheader("ETag"), json.loads(response.read())
    finally:
        connection.close()


# -- POST /v1/items ----------------------------------------------------------------------

def test_create_answers_201_with_location_etag_and_the_item(client, admin):
    response = create(client, admin)
    assert response.status == 201, response
    item = response.json()
    assert set(item) == ITEM_FIELDS
    assert item["id"] == 31
    assert response.header("Location") == "/v1/items/31"
    assert response.header("ETag") == etag(31, 1)
    assert {name: item[name] for name in NEW_ITEM} == NEW_ITEM
    assert item["version"] == 1 and item["in_stock"] is True
    assert item["created_at"] == item["updated_at"] and item["created_at"].endswith("Z")
    assert read(client, 31) == item
    assert client.get("/v1/items/31").header("ETag") == etag(31, 1)
    assert 31 in listed_ids(client)


def test_description_defaults_to_empty_and_zero_stock_is_not_in_stock(client, admin):
    response = create(client, admin, {"name": "Clay cup", "price_cents": 0, "stock": 0})
    assert response.status == 201, response
    item = response.json()
    assert item["description"] == "" and item["in_stock"] is False and item["price_cents"] == 0


def test_a_charset_parameter_on_the_content_type_is_fine(client, admin):
    response = client.post("/v1/items", body=json.dumps(NEW_ITEM).encode(),
                           headers=dict(admin, **{"Content-Type": "application/json; charset=utf-8"}))
    assert response.status == 201, response


def test_every_bad_field_is_named_in_one_422(client, admin, seeded):
    body = {"price_cents": -1, "stock": "5", "id": 7, "description": "fine"}
    problem = assert_problem(create(client, admin, body), 422, "the request has invalid fields")
    assert sorted(problem["errors"], key=lambda error: error["field"]) == [
        {"field": "id", "message": "is not a known field"},
        {"field": "name", "message": "is required"},
        {"field": "price_cents", "message": "must be a whole number from 0 to 1000000000000"},
        {"field": "stock", "message": "must be a whole number"},
    ]
    assert live_count(seeded) == 30


BAD_FIELDS = [
    ("name", "x" * 201, "must be 1 to 200 characters"),
    ("name", "", "must be 1 to 200 characters"),
    ("name", 42, "must be a string"),
    ("name", None, "must be a string"),
    ("description", "x" * 5001, "must be 0 to 5000 characters"),
    ("description", ["a"], "must be a string"),
    ("name", "Tea\u0000cup", "must not contain the NUL character"),   # PostgreSQL cannot store it
    ("description", "\u0000", "must not contain the NUL character"),
    ("price_cents", 1.5, "must be a whole number"),
    ("price_cents", "450", "must be a whole number"),
    ("price_cents", -1, "must be a whole number from 0 to 1000000000000"),
    ("price_cents", 10**13, "must be a whole number from 0 to 1000000000000"),
    ("stock", True, "must be a whole number"),
    ("stock", "5", "must be a whole number"),
    ("stock", -3, "must be a whole number from 0 to 1000000000"),
    ("stock", 10**9 + 1, "must be a whole number from 0 to 1000000000"),
]


@pytest.mark.parametrize("field, value, message", BAD_FIELDS)
def test_a_bad_field_is_422_naming_it(client, admin, seeded, field, value, message):
    body = dict(NEW_ITEM, **{field: value})
    assert_problem(create(client, admin, body), 422, errors=[{"field": field, "message": message}])
    assert live_count(seeded) == 30


def test_a_whole_number_written_with_a_fraction_part_is_that_number(client, admin, seeded):
    """JSON has one kind of number, and JSON Schema's "integer" holds 2450.0: refused before,
    it was a schema-valid body the server turned down (found by tests/test_schemathesis.py)."""
    response = create(client, admin, dict(NEW_ITEM, price_cents=2450.0, stock=12.0))
    assert response.status == 201, response
    assert (response.json()["price_cents"], response.json()["stock"]) == (2450, 12)
    assert response.body.count(b"2450.0") == 0


@pytest.mark.parametrize("body", [[], "an apron", 7, None])
def test_a_body_that_is_not_an_object_is_422(client, admin, body):
    response = client.post("/v1/items", body=json.dumps(body).encode(),
                           headers=dict(admin, **{"Content-Type": "application/json"}))
    assert_problem(response, 422, errors=[{"field": "", "message": "the body must be a JSON object"}])


@pytest.mark.parametrize("body, content_type, status, detail", bodies_that_are_not_json(json.dumps(NEW_ITEM).encode()))
def test_bodies_that_are_not_json_are_refused(client, admin, seeded, body, content_type, status, detail):
    headers = dict(admin, **({"Content-Type": content_type} if content_type else {}))
    assert_problem(client.post("/v1/items", body=body, headers=headers), status, detail)
    assert live_count(seeded) == 30


def test_a_body_over_1_mib_is_413(client, admin, seeded):
    padding = "x" * web.MAX_BODY_BYTES
    body = json.dumps(dict(NEW_ITEM, description=padding)).encode()
    response = client.post("/v1/items", body=body, headers=dict(admin, **{"Content-Type": "application/json"}))
    assert_problem(response, 413)
    assert live_count(seeded) == 30


def test_creating_needs_an_admin(client, customer, seeded):
    assert_problem(create(client, customer), 403, "this endpoint is for admins")
    response = create(client, {})
    assert_problem(response, 401, "this endpoint needs credentials")
    assert response.header("WWW-Authenticate") == 'Bearer realm="shop"'
    assert live_count(seeded) == 30
    assert client.get("/v1/items/31").status == 404


# -- PATCH /v1/items/{id} ----------------------------------------------------------------

def test_patch_with_the_current_etag_changes_only_the_sent_fields(client, admin):
    before = read(client, 4)
    response = patch(client, 4, {"price_cents": 199, "stock": 0}, admin, if_match=etag(4, 1))
    assert response.status == 200, response
    assert response.header("ETag") == etag(4, 2)
    after = response.json()
    assert after["version"] == 2 and after["price_cents"] == 199 and after["stock"] == 0
    assert after["in_stock"] is False
    unchanged = {"id", "name", "description", "created_at"}
    assert {name: after[name] for name in unchanged} == {name: before[name] for name in unchanged}
    assert after["updated_at"] > before["updated_at"]
    assert read(client, 4) == after


def test_a_stale_etag_is_412_and_the_item_is_unchanged(client, admin):
    assert patch(client, 5, {"name": "First"}, admin, if_match=etag(5, 1)).status == 200
    before = read(client, 5)
    response = patch(client, 5, {"name": "Second"}, admin, if_match=etag(5, 1))
    assert_problem(response, 412, "the item changed since you read it; GET it again")
    assert read(client, 5) == before and before["name"] == "First"


def test_patch_without_if_match_is_428(client, admin):
    response = patch(client, 6, {"name": "Blind write"}, admin)
    assert_problem(response, 428, "send If-Match with the item's ETag")
    assert read(client, 6)["version"] == 1


def test_if_match_star_matches_whatever_version_exists(client, admin):
    assert patch(client, 7, {"stock": 3}, admin, if_match="*").json()["version"] == 2
    response = patch(client, 7, {"stock": 4}, admin, if_match="*")
    assert response.status == 200 and response.header("ETag") == etag(7, 3)


@pytest.mark.parametrize("if_match", [
    etag(9, 1),                   # another item's tag
    'W/"item-8-v1"',              # weak tags never match If-Match (RFC 9110 §13.1.1)
    '"item-8-v0"',
    '"item-08-v1"',               # strong comparison is of the strings, not the numbers
    '"item-8-v01"',
    '"item-8"',
    "item-8-v1",                  # not quoted
    '"8"',
    "",
])
def test_an_if_match_that_is_not_this_version_is_412(client, admin, if_match):
    assert_problem(patch(client, 8, {"name": "Mismatch"}, admin, if_match=if_match), 412)
    assert read(client, 8)["version"] == 1


@pytest.mark.parametrize("if_match", [etag(999999, 1), "*"])
def test_patching_an_unknown_item_is_404(client, admin, if_match):
    assert_problem(patch(client, 999999, {"name": "Ghost"}, admin, if_match=if_match), 404,
                   "item 999999 does not exist")


@pytest.mark.parametrize("body, errors", [
    ({"price_cents": -1}, [{"field": "price_cents", "message": "must be a whole number from 0 to 1000000000000"}]),
    ({"name": ""}, [{"field": "name", "message": "must be 1 to 200 characters"}]),
    ({"stock": None}, [{"field": "stock", "message": "must be a whole number"}]),
    ({}, [{"field": "", "message": "send at least one of: name, description, price_cents, stock"}]),
    ({"version": 9}, [{"field": "version", "message": "is not a known field"}]),
    ({"id": 99, "name": "Stolen id"}, [{"field": "id", "message": "is not a known field"}]),
    ({"created_at": "2000-01-01T00:00:00.000000Z"}, [{"field": "created_at", "message": "is not a known field"}]),
    ({"deleted_at": "2000-01-01T00:00:00.000000Z"}, [{"field": "deleted_at", "message": "is not a known field"}]),
    ({"in_stock": False}, [{"field": "in_stock", "message": "is not a known field"}]),
])
def test_bad_patches_are_422_and_change_nothing(client, admin, body, errors):
    before = read(client, 10)
    assert_problem(patch(client, 10, body, admin, if_match=etag(10, 1)), 422, errors=errors)
    assert read(client, 10) == before


def test_patching_needs_an_admin(client, customer):
    assert_problem(patch(client, 11, {"name": "Mine"}, customer, if_match=etag(11, 1)), 403)
    assert_problem(patch(client, 11, {"name": "Mine"}, {}, if_match=etag(11, 1)), 401)
    assert read(client, 11)["version"] == 1


def test_two_patches_with_one_etag_one_after_the_other_200_then_412(client, admin):
    first = patch(client, 12, {"price_cents": 100}, admin, if_match=etag(12, 1))
    second = patch(client, 12, {"price_cents": 200}, admin, if_match=etag(12, 1))
    assert (first.status, second.status) == (200, 412)
    item = read(client, 12)
    assert item["price_cents"] == 100 and item["version"] == 2


def test_ten_racing_patches_with_one_etag_exactly_one_wins(live_server, admin):
    headers = json_headers(admin, if_match=etag(13, 1))
    requests = [("PATCH", "/v1/items/13", headers, json.dumps({"price_cents": 1000 + number}))
                for number in range(RACERS)]
    assert sorted(send_at_once(live_server, requests)) == [200] + [412] * (RACERS - 1)
    tag, item = live_get(live_server, "/v1/items/13")
    assert item["version"] == 2 and tag == etag(13, 2)
    assert 1000 <= item["price_cents"] < 1000 + RACERS


def test_racing_patches_with_if_match_star_all_win(live_server, admin):
    """`*` asks only that the item exists: no writer may be refused for another's change."""
    headers = json_headers(admin, if_match="*")
    requests = [("PATCH", "/v1/items/22", headers, json.dumps({"stock": number})) for number in range(RACERS)]
    assert send_at_once(live_server, requests) == [200] * RACERS
    assert live_get(live_server, "/v1/items/22")[1]["version"] == 1 + RACERS


@pytest.mark.parametrize("item_id", range(1, 11))
def test_a_racing_patch_and_delete_with_one_etag_cannot_both_win(live_server, admin, item_id):
    """DELETE checks If-Match in its UPDATE too: a change made after its read is never archived."""
    headers = json_headers(admin, if_match=etag(item_id, 1))
    patches = [("PATCH", f"/v1/items/{item_id}", headers, json.dumps({"stock": 5}))] * 3
    deletes = [("DELETE", f"/v1/items/{item_id}", headers, None)] * 3
    statuses = send_at_once(live_server, patches + deletes)
    assert sum(status in (200, 204) for status in statuses) == 1, statuses
    assert set(statuses) <= {200, 204, 404, 412}


# -- DELETE /v1/items/{id} ---------------------------------------------------------------

def test_delete_archives_the_item(client, admin, seeded):
    response = delete(client, 14, admin)
    assert response.status == 204
    assert response.body == b""
    assert_problem(client.get("/v1/items/14"), 404, "item 14 does not exist")
    assert client.head("/v1/items/14").status == 404
    assert 14 not in listed_ids(client) and len(listed_ids(client)) == 29
    with seeded.connection() as connection:
        row = connection.fetch_one("SELECT name, deleted_at FROM items WHERE id = :id", {"id": 14})
    assert row["name"] == SEEDED[13]["name"]
    assert row["deleted_at"] is not None and row["deleted_at"].endswith("Z")
    assert_problem(delete(client, 14, admin), 404, "item 14 does not exist")
    assert_problem(patch(client, 14, {"stock": 1}, admin, if_match="*"), 404)


def test_delete_with_a_matching_if_match_archives(client, admin):
    assert delete(client, 15, admin, if_match=etag(15, 1)).status == 204
    assert client.get("/v1/items/15").status == 404
    assert delete(client, 16, admin, if_match="*").status == 204


@pytest.mark.parametrize("if_match", [etag(17, 0), etag(17, 2), etag(18, 1), 'W/"item-17-v1"'])
def test_delete_with_a_stale_if_match_is_412_and_the_item_stays(client, admin, if_match):
    assert_problem(delete(client, 17, admin, if_match=if_match), 412)
    assert read(client, 17)["version"] == 1
    assert 17 in listed_ids(client)


def test_delete_after_a_change_needs_the_new_etag(client, admin):
    assert patch(client, 19, {"stock": 1}, admin, if_match=etag(19, 1)).status == 200
    assert_problem(delete(client, 19, admin, if_match=etag(19, 1)), 412)
    assert delete(client, 19, admin, if_match=etag(19, 2)).status == 204


def test_deleting_needs_an_admin(client, customer):
    assert_problem(delete(client, 20, customer), 403, "this endpoint is for admins")
    assert_problem(delete(client, 20, {}), 401)
    assert read(client, 20)["version"] == 1


def test_an_archived_id_is_never_reused(client, admin):
    assert delete(client, 30, admin).status == 204
    response = create(client, admin)
    assert response.status == 201
    assert response.json()["id"] == 31
    assert client.get("/v1/items/30").status == 404


# -- reading a changed item ----------------------------------------------------------------

def test_get_and_head_of_a_changed_item_give_the_new_etag(client, admin):
    old = client.get("/v1/items/21").header("ETag")
    assert old == etag(21, 1)
    assert patch(client, 21, {"name": "Renamed"}, admin, if_match=old).status == 200
    get = client.get("/v1/items/21")
    head = client.head("/v1/items/21")
    assert get.header("ETag") == head.header("ETag") == etag(21, 2)
    assert head.status == 200 and head.body == b""
    # The old tag no longer matches: a full 200 with the new body, not a 304.
    response = client.get("/v1/items/21", headers={"If-None-Match": old})
    assert response.status == 200
    assert response.json()["name"] == "Renamed"
    assert client.get("/v1/items/21", headers={"If-None-Match": etag(21, 2)}).status == 304



@pytest.mark.parametrize("content_type", ["application/json; charset=utf-16", "text/plain"])
def test_a_415_names_the_media_type_it_accepts_and_changes_nothing(client, admin, seeded, content_type):
    body = json.dumps(NEW_ITEM).encode("utf-16" if "utf-16" in content_type else "utf-8")
    response = client.post("/v1/items", body=body, headers=dict(admin, **{"Content-Type": content_type}))
    assert_problem(response, 415)
    assert response.header("Accept") == "application/json"
    assert live_count(seeded) == 30


@pytest.mark.parametrize("price_cents", ["9223372036854775808", "-9223372036854775809", "1" + "0" * 40])
def test_an_integer_past_any_column_is_a_422_naming_its_field_not_a_400(client, admin, seeded, price_cents):
    # Well-formed JSON with an out-of-range value: the validator names the field.
    body = json.dumps(dict(NEW_ITEM, price_cents=0)).replace('"price_cents": 0', f'"price_cents": {price_cents}')
    headers = dict(admin, **{"Content-Type": "application/json"})
    response = client.post("/v1/items", body=body.encode(), headers=headers)
    assert_problem(response, 422, errors=[
        {"field": "price_cents", "message": "must be a whole number from 0 to 1000000000000"}])
    assert live_count(seeded) == 30
