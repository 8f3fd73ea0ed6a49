"""The catalogue through its cache (api_items.py, cache.py): X-Cache, never stale, one read.

Every test runs on both engines and both backends (`backend`: memory, or the real Redis
under a key prefix of the test's own): a change made through the API is read back at once,
HIT and MISS are as said, ETags and 304s are as without the cache, and fifty requests for a
missing entry read the database once. The seeded catalogue holds items 1..30.
"""

import threading
import time

import pytest
from conftest import (
    REDIS_TEST_URL,
    WSGIClient,
    client_for,
    free_port,
    json_headers,
    make_item,
    move,
    place,
    require_redis,
)

import sql_items

WAIT_SECONDS = 10  # a test's bound on waiting for other threads; never reached when it passes
# Rate limits are another feature's: a burst of reads from one address must not meet them here.
PAGE = "/v1/items?limit=5&sort=-price_cents"


@pytest.fixture
def shop(make_app, backend, seeded):
    """An in-process client of an app with the cache on, in memory or on Redis."""
    return WSGIClient(make_app(**backend))


def get(client, path):
    response = client.get(path)
    assert response.status == 200, response
    return response


def x_cache(client, path):
    return get(client, path).header("X-Cache")


def shown(client, item_id):
    """Item `item_id` as GET shows it, and as the page of it in the list shows it."""
    item = get(client, f"/v1/items/{item_id}").json()
    listed = [entry for entry in get(client, f"/v1/items?limit=100&offset={item_id - 1}").json()["data"]
              if entry["id"] == item_id]
    return item, listed[0] if listed else None


def warm(client, *paths):
    for path in paths:
        get(client, path)
        assert x_cache(client, path) == "HIT", path


# -- HIT and MISS, and the same answer either way -----------------------------------------------

@pytest.mark.parametrize("path", ["/v1/items/7", PAGE, "/v1/items?q=pen&in_stock=true&limit=2"])
def test_a_miss_then_a_hit_with_the_same_answer(shop, path):
    first, second = get(shop, path), get(shop, path)
    assert (first.header("X-Cache"), second.header("X-Cache")) == ("MISS", "HIT")
    assert second.body == first.body

    def headers(response):
        return [(name, value) for name, value in response.headers
                if name not in ("X-Cache", "X-Request-ID", "traceresponse")]

    assert headers(second) == headers(first)


def test_each_page_has_its_own_entry(shop):
    get(shop, "/v1/items?limit=5&sort=-price_cents")
    assert x_cache(shop, "/v1/items?limit=5&sort=-price_cents") == "HIT"
    assert x_cache(shop, "/v1/items?limit=6&sort=-price_cents") == "MISS"
    assert x_cache(shop, "/v1/items?limit=5&sort=price_cents") == "MISS"
    assert x_cache(shop, "/v1/items?limit=5&sort=-price_cents&offset=5") == "MISS"


def test_every_page_of_a_cursor_walk_is_cached(shop):
    pages, url = [], "/v1/items?limit=10&sort=name"
    while url:
        pages.append(get(shop, url))
        url = pages[-1].json()["links"].get("next")
    assert len(pages) == 3 and all(page.header("X-Cache") == "MISS" for page in pages)
    again = get(shop, pages[1].json()["links"]["self"])
    assert again.header("X-Cache") == "HIT" and again.body == pages[1].body


def test_a_missing_item_is_a_404_and_never_cached(shop, database):
    assert shop.get("/v1/items/31").status == 404
    make_item(database, 5)  # item 31, written around the API: only a new read can see it
    assert get(shop, "/v1/items/31").header("X-Cache") == "MISS"


def test_etags_304_and_head_are_as_without_the_cache(make_app, backend, seeded):
    cached, plain = WSGIClient(make_app(**backend)), WSGIClient(make_app(CACHE="off"))

    def without_volatile(response):
        return response.status, [(name, value) for name, value in response.headers
                                 if name not in ("X-Cache", "X-Request-ID", "traceresponse")], response.body

    for client in (cached, plain):
        get(client, "/v1/items/7")
    for headers in ({"If-None-Match": '"item-7-v1"'}, {"If-None-Match": 'W/"item-7-v1", "x"'},
                    {"If-None-Match": '"item-7-v2"'}, {"If-None-Match": "*"}):
        assert without_volatile(cached.get("/v1/items/7", headers=headers)) == without_volatile(
            plain.get("/v1/items/7", headers=headers)), headers
    not_modified = cached.get("/v1/items/7", headers={"If-None-Match": '"item-7-v1"'})
    assert not_modified.status == 304 and not_modified.body == b""
    assert [name for name, _ in not_modified.headers if name != "X-Request-ID"][:2] == ["ETag", "Cache-Control"]
    head = cached.head("/v1/items/7")
    assert head.header("X-Cache") == "HIT" and head.body == b""
    assert head.header("Content-Length") == str(len(get(plain, "/v1/items/7").body))


def test_cache_off_reads_the_database_every_time_and_says_nothing(make_app, seeded, monkeypatch):
    client = WSGIClient(make_app(CACHE="off"))
    reads = count_calls(monkeypatch, "get_item")
    for _ in range(3):
        assert get(client, "/v1/items/7").header("X-Cache") is None
    assert len(reads) == 3


# -- never stale ---------------------------------------------------------------------------------

def test_an_admin_patch_is_read_back_at_once(shop, admin):
    warm(shop, "/v1/items/7", "/v1/items?limit=100&offset=6", PAGE)
    response = shop.request("PATCH", "/v1/items/7", json={"price_cents": 999_999, "stock": 0},
                            headers=json_headers(admin, if_match='"item-7-v1"'))
    assert response.status == 200, response
    item, listed = shown(shop, 7)
    assert item["version"] == listed["version"] == 2
    assert (item["price_cents"], item["in_stock"]) == (listed["price_cents"], listed["in_stock"]) == (999_999, False)
    assert get(shop, PAGE).json()["data"][0]["id"] == 7  # the most expensive now
    assert x_cache(shop, "/v1/items/7") == "HIT"  # and cached again


def test_a_new_item_is_listed_at_once_and_an_archived_one_is_gone_at_once(shop, admin):
    warm(shop, "/v1/items?limit=100", "/v1/items/7")
    created = shop.post("/v1/items", json={"name": "Linen apron", "price_cents": 2450, "stock": 12}, headers=admin)
    assert created.status == 201
    assert [item["id"] for item in get(shop, "/v1/items?limit=100").json()["data"]][-1] == 31
    assert shop.request("DELETE", "/v1/items/7", headers=admin).status == 204
    assert shop.get("/v1/items/7").status == 404
    assert 7 not in [item["id"] for item in get(shop, "/v1/items?limit=100").json()["data"]]


def test_an_order_a_cancel_and_an_admin_cancel_are_read_back_at_once(shop, database, admin, customer):
    item_id = make_item(database, 10)["id"]  # 31, with stock to sell
    page = f"/v1/items?limit=100&offset={item_id - 1}"
    warm(shop, f"/v1/items/{item_id}", page)
    placed = place(shop, customer, [{"item_id": item_id, "quantity": 2}])
    assert placed.status == 201
    assert [entry["stock"] for entry in shown(shop, item_id)] == [8, 8]
    assert shop.post(f"/v1/orders/{placed.json()['id']}/cancel", headers=customer).status == 200
    assert [entry["stock"] for entry in shown(shop, item_id)] == [10, 10]
    placed = place(shop, customer, [{"item_id": item_id, "quantity": 3}])
    assert [entry["stock"] for entry in shown(shop, item_id)] == [7, 7]
    assert move(shop, admin, placed.json()["id"], "paid").status == 200
    assert x_cache(shop, f"/v1/items/{item_id}") == "HIT"  # paying moves no stock: nothing to drop
    assert move(shop, admin, placed.json()["id"], "cancelled").status == 200
    assert [entry["stock"] for entry in shown(shop, item_id)] == [10, 10]


def test_a_change_through_one_process_is_read_back_at_once_by_another(make_app, redis_prefix, seeded, admin):
    """With Redis, every process shares the generation: a bump through one reaches all."""
    shared = {"REDIS_URL": REDIS_TEST_URL, "REDIS_PREFIX": redis_prefix}
    writer, reader = WSGIClient(make_app(**shared)), WSGIClient(make_app(**shared))
    warm(reader, "/v1/items/7", PAGE)
    assert x_cache(writer, "/v1/items/7") == "HIT"  # the other process's entry
    response = writer.request("PATCH", "/v1/items/7", json={"price_cents": 999_999},
                              headers=json_headers(admin, if_match='"item-7-v1"'))
    assert response.status == 200
    read = get(reader, "/v1/items/7")
    assert (read.header("X-Cache"), read.json()["version"]) == ("MISS", 2)
    assert get(reader, PAGE).json()["data"][0] == read.json()


def test_a_read_from_before_a_change_stored_after_it_is_never_served(shop, admin, monkeypatch):
    """The race, forced: a reader reads item 7, then an admin's PATCH commits and bumps, and
    only then does the reader store what it read. The next reader gets the new version."""
    real_get_item = sql_items.get_item
    read_done, patched = threading.Event(), threading.Event()

    def get_item_then_wait(connection, item_id):
        row = real_get_item(connection, item_id)
        if threading.current_thread().name == "slow reader":
            read_done.set()
            assert patched.wait(WAIT_SECONDS)
        return row

    monkeypatch.setattr(sql_items, "get_item", get_item_then_wait)
    answers = []
    reader = threading.Thread(target=lambda: answers.append(get(shop, "/v1/items/7")), name="slow reader")
    reader.start()
    assert read_done.wait(WAIT_SECONDS)
    response = shop.request("PATCH", "/v1/items/7", json={"price_cents": 1}, headers=json_headers(
        admin, if_match='"item-7-v1"'))
    assert response.status == 200
    patched.set()
    reader.join(WAIT_SECONDS)
    assert answers[0].json()["version"] == 1  # it began before the PATCH: old, and fine
    after = get(shop, "/v1/items/7")
    assert (after.header("X-Cache"), after.json()["version"]) == ("MISS", 2)


def test_readers_racing_a_writer_never_read_an_acknowledged_change_undone(make_app, backend, seeded, admin):
    """Four readers read item 7 and its page as fast as they can while an admin changes its
    price twenty times; after each change is answered, a read shows it (or a later one)."""
    app = make_app(**backend)
    writer, done, failures = WSGIClient(app), threading.Event(), []

    def read_all_the_time():
        client = WSGIClient(app)
        while not done.is_set():
            for path in ("/v1/items/7", "/v1/items?limit=10&offset=5"):
                if client.get(path).status != 200:
                    failures.append(path)

    readers = [threading.Thread(target=read_all_the_time) for _ in range(4)]
    for reader in readers:
        reader.start()
    try:
        for version in range(1, 21):
            response = writer.request("PATCH", "/v1/items/7", json={"price_cents": version},
                                      headers=json_headers(admin, if_match=f'"item-7-v{version}"'))
            assert response.status == 200, response
            item, listed = shown(writer, 7)
            assert (item["version"], item["price_cents"]) == (version + 1, version)
            assert (listed["version"], listed["price_cents"]) == (version + 1, version)
    finally:
        done.set()
        for reader in readers:
            reader.join(WAIT_SECONDS)
    assert failures == []


# -- one read per process -----------------------------------------------------------------------

def count_calls(monkeypatch, function_name, *, until_followers=None, app=None):
    """Count calls of sql_items.<function_name>; with `until_followers`, each call first waits
    until that many requests of `app` wait for a read under way (the single flight's)."""
    calls, real = [], getattr(sql_items, function_name)

    def counted(*args, **kwargs):
        calls.append(1)
        if until_followers is not None:
            flights = app.services.catalogue_cache._flights
            deadline = time.monotonic() + WAIT_SECONDS
            while sum(flight.followers for flight in list(flights.values())) < until_followers:
                assert time.monotonic() < deadline, "the other requests never waited for this read"
                time.sleep(0.001)
        return real(*args, **kwargs)

    monkeypatch.setattr(sql_items, function_name, counted)
    return calls


@pytest.mark.parametrize("path, function_name", [("/v1/items/7", "get_item"), (PAGE, "list_items")])
def test_fifty_requests_for_an_expired_entry_read_the_database_once(make_app, backend, seeded, monkeypatch,
                                                                   path, function_name):
    app = make_app(**backend)
    client = WSGIClient(app)
    warm(client, path)
    expire_everything(app)
    assert x_cache(client, path) == "MISS"
    expire_everything(app)
    reads = count_calls(monkeypatch, function_name, until_followers=49, app=app)
    barrier, responses = threading.Barrier(50), []

    def ask():
        barrier.wait(WAIT_SECONDS)
        responses.append(client.get(path))

    threads = [threading.Thread(target=ask) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_SECONDS)
    assert len(reads) == 1
    assert sorted(response.header("X-Cache") for response in responses) == ["HIT"] * 49 + ["MISS"]
    assert len({response.body for response in responses}) == 1


def expire_everything(app):
    """What a TTL does to every entry: memory's clock moves past it, Redis's keys are gone."""
    store = app.services.catalogue_cache.store
    if app.services.redis is None:
        clock, ttl_seconds = store.clock, app.services.settings.cache_ttl_seconds
        store.clock = lambda: clock() + ttl_seconds
    else:
        client = require_redis()
        keys = [key for key in client.scan_iter(match=store.entry_prefix + "*") if key != store.generation_key.encode()]
        if keys:
            client.delete(*keys)


# -- Redis down ----------------------------------------------------------------------------------

def test_with_redis_down_every_read_goes_to_the_database_and_nothing_fails(make_app, seeded, admin):
    client = WSGIClient(make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"))  # nothing listens there
    for _ in range(2):
        assert x_cache(client, "/v1/items/7") == "MISS"
        assert x_cache(client, PAGE) == "MISS"
    response = client.request("PATCH", "/v1/items/7", json={"price_cents": 1},
                              headers=json_headers(admin, if_match='"item-7-v1"'))
    assert response.status == 200
    assert shown(client, 7)[0]["version"] == 2


def test_the_catalogue_answers_the_same_over_a_real_socket(make_app, backend, seeded):
    with client_for(make_app(**backend), "live") as client:
        first, second = get(client, "/v1/items/7"), get(client, "/v1/items/7")
    assert (first.header("X-Cache"), second.header("X-Cache")) == ("MISS", "HIT")
    assert first.body == second.body and first.header("ETag") == second.header("ETag") == '"item-7-v1"'
