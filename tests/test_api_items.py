"""The public catalogue, on both engines, in-process and over a socket."""

from urllib.parse import quote

import pytest
from conftest import assert_problem, follow_next_links, make_item

import seed

pytestmark = pytest.mark.usefixtures("seeded")
SEEDED = seed.demo_items(30)
INVALID_CURSOR = "the cursor is invalid, or was made for another sort or filter"
# Creation times for `restamp`: in an order unlike the ids', three items on each of ten
# days, so that a sort by created_at that is ignored, reversed or not tie-broken by id shows.
CREATED_AT = {item_id: f"2026-01-{1 + item_id * 7 % 10:02d}T12:00:00.000000Z" for item_id in range(1, 31)}


def test_get_item_returns_the_row_with_an_etag(client):
    response = client.get("/v1/items/1")
    assert response.status == 200
    assert response.header("Content-Type") == "application/json"
    assert response.header("ETag") == '"item-1-v1"'
    assert response.header("Cache-Control") == "no-cache"
    item = response.json()
    assert item["id"] == 1
    assert item["name"] == SEEDED[0]["name"]
    assert item["price_cents"] == SEEDED[0]["price_cents"]
    assert item["in_stock"] is (SEEDED[0]["stock"] > 0)
    assert set(item) == {"id", "name", "description", "price_cents", "stock", "version",
                         "created_at", "updated_at", "in_stock"}
    assert item["created_at"].endswith("Z") and item["created_at"][10] == "T"


def test_unknown_item_is_a_404_problem(client):
    response = client.get("/v1/items/999999")
    assert response.status == 404
    assert response.header("Content-Type") == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 404
    assert problem["title"] == "Not Found"
    assert problem["detail"] == "item 999999 does not exist"
    assert problem["instance"] == "/v1/items/999999"
    assert problem["request_id"] == response.header("X-Request-ID")


@pytest.mark.parametrize("path", ["/v1/items/abc", "/v1/items/-1", "/v1/items/1.5", "/v1/items/" + "9" * 30])
def test_item_ids_that_are_not_small_whole_numbers_are_404(client, path):
    # The route's pattern does not match: no handler, and no database lookup, ever sees it.
    assert_problem(client.get(path), 404, f"no resource at {path}")


def test_if_none_match_gives_304_without_a_body(client):
    etag = client.get("/v1/items/2").header("ETag")
    response = client.get("/v1/items/2", headers={"If-None-Match": etag})
    assert response.status == 304
    assert response.body == b""
    assert response.header("ETag") == etag
    stale = client.get("/v1/items/2", headers={"If-None-Match": '"item-2-v0"'})
    assert stale.status == 200
    assert (stale.json()["id"], stale.json()["name"]) == (2, SEEDED[1]["name"])
    assert stale.header("ETag") == etag


def test_head_has_the_headers_of_get_and_no_body(client):
    get = client.get("/v1/items/3")
    head = client.head("/v1/items/3")
    assert head.status == 200
    assert head.body == b""
    assert head.header("Content-Length") == get.header("Content-Length") == str(len(get.body))
    assert head.header("ETag") == get.header("ETag")


def test_list_has_envelope_link_header_and_default_limit(client):
    response = client.get("/v1/items")
    assert response.status == 200
    body = response.json()
    assert set(body) == {"data", "pagination", "links"}
    assert [item["id"] for item in body["data"]] == list(range(1, 21))
    assert body["pagination"]["limit"] == 20
    assert body["pagination"]["has_more"] is True
    assert body["pagination"]["next_cursor"]
    link = response.header("Link")
    assert f'<{body["links"]["next"]}>; rel="next"' in link
    assert '<' + body["links"]["first"] + '>; rel="first"' in link


def test_offset_pages_have_next_and_prev_links(client):
    body = client.get("/v1/items?limit=10&offset=10").json()
    assert [item["id"] for item in body["data"]] == list(range(11, 21))
    assert body["pagination"] == {"limit": 10, "has_more": True, "offset": 10}
    assert body["links"]["next"] == "/v1/items?limit=10&sort=id&offset=20"
    assert body["links"]["prev"] == "/v1/items?limit=10&sort=id&offset=0"
    last = client.get("/v1/items?limit=10&offset=20").json()
    assert last["pagination"]["has_more"] is False
    assert "next" not in last["links"]


@pytest.mark.parametrize("sort", ["id", "-id", "name", "-price_cents,name", "price_cents", "-created_at",
                                  "name,-price_cents"])
@pytest.mark.parametrize("mode", ["cursor", "offset"])
def test_following_next_links_visits_every_row_exactly_once(client, seeded, sort, mode):
    restamp(seeded)
    first = f"/v1/items?limit=7&sort={sort}" + ("&offset=0" if mode == "offset" else "")
    ids = listed_ids(client, first)
    assert sorted(ids) == list(range(1, 31))
    assert len(ids) == len(set(ids)) == 30
    # And in the promised order, ties broken by id.
    rows = [dict(item, id=number, created_at=CREATED_AT[number]) for number, item in enumerate(SEEDED, start=1)]
    keys = [(part.lstrip("-"), part.startswith("-")) for part in sort.split(",")]
    expected = rows
    for column, descending in reversed([*keys, ("id", keys[-1][1])]):  # id follows the last key
        expected = sorted(expected, key=lambda row: row[column], reverse=descending)
    assert ids == [row["id"] for row in expected]


def test_filters_are_applied_and_kept_in_links(client):
    body = client.get("/v1/items?in_stock=true&min_price_cents=1000&max_price_cents=15000&limit=5").json()
    expected = [number for number, item in enumerate(SEEDED, start=1)
                if item["stock"] > 0 and 1000 <= item["price_cents"] <= 15000]
    assert [item["id"] for item in body["data"]] == expected[:5]
    assert all(item["in_stock"] for item in body["data"])
    assert "in_stock=true" in body["links"]["next"] and "min_price_cents=1000" in body["links"]["next"]
    assert listed_ids(client, "/v1/items?in_stock=true&min_price_cents=1000&max_price_cents=15000&limit=5") == expected


def test_in_stock_false_lists_only_sold_out_items(client):
    body = client.get("/v1/items?in_stock=false&limit=100").json()
    expected = [number for number, item in enumerate(SEEDED, start=1) if item["stock"] == 0]
    assert [item["id"] for item in body["data"]] == expected
    assert all(item["in_stock"] is False for item in body["data"])


def test_q_matches_names_case_insensitively_and_escapes_wildcards(client):
    word = SEEDED[0]["name"].split()[1]  # a material, e.g. "Bamboo"
    body = client.get(f"/v1/items?q={word.upper()}&limit=100").json()
    expected = [number for number, item in enumerate(SEEDED, start=1) if word.lower() in item["name"].lower()]
    assert expected and [item["id"] for item in body["data"]] == expected
    assert client.get("/v1/items?q=%25").json()["data"] == []  # "%" is text, not a wildcard
    assert client.get("/v1/items?q=_").json()["data"] == []


@pytest.mark.parametrize("query, message", [
    ("limit=", "'limit' must be a whole number from 1 to 100"),
    ("limit=0", "'limit' must be a whole number from 1 to 100"),
    ("limit=-5", "'limit' must be a whole number from 1 to 100"),
    ("limit=abc", "'limit' must be a whole number from 1 to 100"),
    ("limit=101", "'limit' must be a whole number from 1 to 100"),
    ("limit=" + "9" * 40, "'limit' must be a whole number from 1 to 100"),
    ("limit=1&limit=2", "query parameter 'limit' is given more than once"),
    ("offset=-1", "'offset' must be a whole number from 0 to 100000"),
    ("offset=x", "'offset' must be a whole number from 0 to 100000"),
    ("sort=password_hash", "cannot sort by 'password_hash'; choose from created_at, id, name, price_cents"),
    ("sort=-password_hash", "cannot sort by 'password_hash'; choose from created_at, id, name, price_cents"),
    ("sort=-id,stock", "cannot sort by 'stock'; choose from created_at, id, name, price_cents"),
    ("sort=name;DROP%20TABLE%20items",
     "cannot sort by 'name;DROP TABLE items'; choose from created_at, id, name, price_cents"),
    ("sort=name,name", "'name' appears twice in sort"),
    ("sort=", "cannot sort by ''; choose from created_at, id, name, price_cents"),
    ("color=red", "unknown query parameter(s): color"),
    ("in_stock=yes", "'in_stock' must be true or false"),
    ("min_price_cents=-1", "'min_price_cents' must be a whole number of cents from 0 to 1000000000000"),
    ("max_price_cents=1e3", "'max_price_cents' must be a whole number of cents from 0 to 1000000000000"),
    ("min_price_cents=500&max_price_cents=100", "'min_price_cents' is greater than 'max_price_cents'"),
    ("q=", "'q' must be 1 to 100 characters"),
    ("q=" + "a" * 101, "'q' must be 1 to 100 characters"),
    ("cursor=abc", "the cursor is invalid, or was made for another sort or filter"),
    ("cursor=abc&offset=0", "use either 'offset' or 'cursor', not both"),
    ("q=%ff", "the query string is not valid UTF-8"),
])
def test_bad_list_parameters_are_400_problems(client, query, message):
    response = client.get("/v1/items?" + query)
    assert response.status == 400, response
    assert response.header("Content-Type") == "application/problem+json"
    assert response.json()["detail"] == message


def test_tampered_or_foreign_cursors_are_400(client):
    next_url = client.get("/v1/items?limit=5&sort=name").json()["links"]["next"]
    cursor = next_url.split("cursor=")[1]
    payload, signature = cursor.split(".")
    tampered_payload = ("A" if payload[5] != "A" else "B").join([payload[:5], payload[6:]])
    for bad in (tampered_payload + "." + signature, payload + "." + signature[::-1], payload, cursor + "x"):
        assert_problem(client.get(f"/v1/items?limit=5&sort=name&cursor={bad}"), 400, INVALID_CURSOR)
    # A real cursor, but for another sort or other filters.
    assert_problem(client.get(f"/v1/items?limit=5&sort=-name&cursor={cursor}"), 400, INVALID_CURSOR)
    assert_problem(client.get(f"/v1/items?limit=5&sort=name&in_stock=true&cursor={cursor}"), 400, INVALID_CURSOR)
    # The untouched cursor works: the second page of names.
    response = client.get(f"/v1/items?limit=5&sort=name&cursor={cursor}")
    assert response.status == 200
    by_name = sorted(range(1, 31), key=lambda item_id: (SEEDED[item_id - 1]["name"], item_id))
    assert [item["id"] for item in response.json()["data"]] == by_name[5:10]


def test_catalogue_writes_need_credentials(client):
    before = client.get("/v1/items/1").json()
    for method, path in (("POST", "/v1/items"), ("PATCH", "/v1/items/1"), ("DELETE", "/v1/items/1")):
        response = client.request(method, path)
        assert response.status == 401, (method, response)
        assert_problem(response, 401, "this endpoint needs credentials")
        assert response.header("WWW-Authenticate") == 'Bearer realm="shop"'
    assert client.get("/v1/items/1").status == 200  # nothing was deleted
    assert client.get("/v1/items/1").json() == before  # nor changed
    assert client.get("/v1/items?limit=100").json()["pagination"]["has_more"] is False
    assert len(client.get("/v1/items?limit=100").json()["data"]) == 30  # nor created


def test_an_unknown_method_is_405_with_allow(client):
    response = client.request("PUT", "/v1/items/1")
    assert response.status == 405
    assert_problem(response, 405, "allowed methods: DELETE, GET, HEAD, OPTIONS, PATCH")
    assert response.header("Allow") == "DELETE, GET, HEAD, OPTIONS, PATCH"


def test_options_answers_with_allow(client):
    response = client.request("OPTIONS", "/v1/items")
    assert response.status == 204
    assert response.header("Allow") == "GET, HEAD, OPTIONS, POST"
    assert response.body == b""


# -- helpers -------------------------------------------------------------------------------

def listed_ids(client, url):
    """The ids of every row from `url` on, following the next links."""
    return [item["id"] for page in follow_next_links(client, url) for item in page["data"]]


def restamp(database):
    """Give the seeded items the CREATED_AT times (seeding stamps them all alike)."""
    with database.transaction() as connection:
        for item_id, created_at in CREATED_AT.items():
            connection.execute("UPDATE items SET created_at = :created_at WHERE id = :item_id",
                               {"created_at": created_at, "item_id": item_id})


@pytest.mark.parametrize("query", ["q=%00", "q=%00zzzz", "q=tea%00", "sort=name%00"])
def test_a_nul_in_the_query_is_a_400_on_both_engines_never_a_500_or_the_whole_catalogue(client, seeded, query):
    # On PostgreSQL this was a 500 ("text fields cannot contain NUL"); on SQLite, where
    # instr() stops at NUL, "%00zzzz" matched every item.
    assert_problem(client.get("/v1/items?" + query), 400,
                   "the query string must not contain the NUL character (%00)")


UNICODE_NAMES = ["Élan Vital", "ÉCLAIR AU CAFÉ", "Große Straße", "ΣΑΣ Greek Tea", "Чай Russian Tea", "Plain tea"]


@pytest.mark.parametrize("q, expected", [
    ("élan", ["Élan Vital"]),
    ("ÉLAN", ["Élan Vital"]),
    ("café", ["ÉCLAIR AU CAFÉ"]),
    ("straße", ["Große Straße"]),
    ("σας", []),  # no context rules: the final-sigma letter is a letter of its own on both engines
    ("σασ", ["ΣΑΣ Greek Tea"]),
    ("чай", ["Чай Russian Tea"]),
    ("TEA", ["ΣΑΣ Greek Tea", "Чай Russian Tea", "Plain tea"]),
])
def test_q_matches_every_alphabet_without_case_and_the_same_rows_on_both_engines(client, database, q, expected):
    # SQLite's own lower() knows ASCII only: "élan" found "Élan Vital" on PostgreSQL and not
    # on SQLite. db.py gives SQLite a lower() that lowers every letter, as PostgreSQL does.
    for name in UNICODE_NAMES:
        make_item(database, 1, name=name)
    response = client.get(f"/v1/items?q={quote(q)}")
    assert response.status == 200
    assert [item["name"] for item in response.json()["data"]] == expected
