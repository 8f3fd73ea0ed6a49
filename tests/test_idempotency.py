"""Idempotency-Key over HTTP and in idempotency.py: a retried POST gets the first answer.

    POST /v1/orders  Idempotency-Key: K  {"lines": [...]}     -> 201, order 1
    the same again                                            -> 201, order 1, Idempotent-Replayed: true
    K with another body                                       -> 422
    K from another user                                       -> a key of their own: 201, order 2
    K while its first request still runs                      -> 409, Retry-After: 1
    the first request, having lost K to a retry meanwhile     -> 409, and its order rolled back

Most tests run four times (the `client` fixture). The races over real sockets, the lease
taken over from a dead holder, and a key surviving a restart are in
test_orders_concurrency.py. Expired keys are removed by `begin` itself, at most once per
PURGE_INTERVAL_SECONDS per process, whoever they belonged to: that is tested here.
"""

import pytest
from conftest import (
    assert_problem,
    item,
    json_headers,
    nothing_was_ordered,
    order_statuses,
    patch_item,
    place,
)

import db
import idempotency
import sql_idempotency

KEY = "5f0c4ae1-6b0e-4a3c-9e55-0d5c1e2b7a10"
VALID = {"item_id": 1, "quantity": 1}
LOST_HOLD = "this request outlived its hold on the Idempotency-Key; retry it"
STILL_RUNNING = "a request with this Idempotency-Key is still being processed; retry shortly"


# -- replays and refusals over HTTP --------------------------------------------------------

def test_the_same_key_and_body_replay_the_first_answer(client, customer, seeded):
    lines = [{"item_id": 4, "quantity": 2}, {"item_id": 25, "quantity": 1}]
    first = place(client, customer, lines, key=KEY)
    assert first.status == 201 and first.header("Idempotent-Replayed") is None
    second = place(client, customer, lines, key=KEY)
    assert second.status == 201
    assert second.header("Idempotent-Replayed") == "true"
    assert second.body == first.body
    for name in ("Location", "ETag", "Content-Type"):
        assert second.header(name) == first.header(name)
    assert second.header("X-Request-ID") != first.header("X-Request-ID")
    # Keys in another order and other spacing: the same request.
    reordered = b'{ "lines" : [ {"quantity": 2, "item_id": 4},\n {"quantity":1,"item_id":25} ] }'
    third = client.post("/v1/orders", body=reordered, headers=json_headers(customer, idempotency_key=KEY))
    assert third.status == 201 and third.header("Idempotent-Replayed") == "true" and third.body == first.body
    assert order_statuses(seeded) == {1: "pending"}
    assert (item(client, 4)["stock"], item(client, 25)["stock"]) == (24, 127)


def test_the_same_key_with_another_body_is_422(client, customer, seeded):
    assert place(client, customer, [{"item_id": 4, "quantity": 2}], key=KEY).status == 201
    for lines in ([{"item_id": 4, "quantity": 3}], [{"item_id": 4, "quantity": 2}, VALID]):
        assert_problem(
            place(client, customer, lines, key=KEY), 422,
            "this Idempotency-Key belongs to another request; use a new key for a new request",
            errors=[{"field": "Idempotency-Key", "message": "was already used with a different request"}])
    assert order_statuses(seeded) == {1: "pending"}
    assert item(client, 4)["stock"] == 24
    # The first request still replays.
    assert place(client, customer, [{"item_id": 4, "quantity": 2}], key=KEY).header("Idempotent-Replayed") == "true"


def test_keys_belong_to_their_user(client, alice, bob, seeded):
    first = place(client, alice[1], [VALID], key="order-1")
    second = place(client, bob[1], [VALID], key="order-1")
    assert (first.status, second.status) == (201, 201)
    assert second.header("Idempotent-Replayed") is None
    assert (first.json()["user_id"], second.json()["user_id"]) == (alice[0], bob[0])
    assert order_statuses(seeded) == {1: "pending", 2: "pending"}
    assert item(client, 1)["stock"] == 25


@pytest.mark.parametrize("key", ["k" * 255, "~!#$%&'*+-.^_`|0123456789"])
def test_a_key_of_visible_ascii_up_to_255_characters_is_accepted(client, customer, key):
    assert place(client, customer, [VALID], key=key).status == 201
    assert place(client, customer, [VALID], key=key).header("Idempotent-Replayed") == "true"


@pytest.mark.parametrize("key", ["k" * 256, "a b", "clé", "tab\there", ""])
def test_a_malformed_key_is_400(checker, key):
    assert_problem(place(checker.client, checker.customer, [VALID], key=key), 400,
                   "Idempotency-Key must be 1 to 255 visible ASCII characters")
    assert nothing_was_ordered(checker.client, checker.database)


def test_a_key_refused_for_stock_may_be_used_again(client, admin, customer, seeded):
    lines = [{"item_id": 13, "quantity": 10}]
    assert_problem(place(client, customer, lines, key=KEY), 409)
    assert_problem(place(client, customer, lines, key=KEY), 409)  # judged afresh, not replayed
    assert patch_item(client, admin, 13, {"stock": 20}, if_match='"item-13-v1"').status == 200
    retry = place(client, customer, lines, key=KEY)
    assert retry.status == 201, retry
    assert retry.header("Idempotent-Replayed") is None
    assert item(client, 13)["stock"] == 10
    assert place(client, customer, lines, key=KEY).header("Idempotent-Replayed") == "true"
    assert order_statuses(seeded) == {1: "pending"}


def test_a_key_refused_for_an_unknown_item_may_be_used_again(client, customer, seeded):
    assert_problem(place(client, customer, [{"item_id": 31, "quantity": 1}], key=KEY), 422)
    # The key was given back: another body with it is a new request, not "a different request".
    assert place(client, customer, [VALID], key=KEY).status == 201
    assert order_statuses(seeded) == {1: "pending"}


def test_a_key_another_user_sent_with_another_body_is_theirs_alone(client, alice, bob, seeded):
    """Scoping: the 422 "belongs to another request" is about the same user's key only."""
    first = place(client, alice[1], [VALID], key=KEY)
    second = place(client, bob[1], [{"item_id": 4, "quantity": 2}], key=KEY)
    assert (first.status, second.status) == (201, 201), second
    assert second.header("Idempotent-Replayed") is None
    assert (second.json()["user_id"], second.json()["lines"][0]["item_id"]) == (bob[0], 4)
    # Each user's retry replays their own first answer.
    for (_, headers), lines, original in ((alice, [VALID], first), (bob, [{"item_id": 4, "quantity": 2}], second)):
        replay = place(client, headers, lines, key=KEY)
        assert (replay.status, replay.header("Idempotent-Replayed"), replay.body) == (201, "true", original.body)
    assert order_statuses(seeded) == {1: "pending", 2: "pending"}
    assert (item(client, 1)["stock"], item(client, 4)["stock"]) == (26, 24)


# -- a request that lost its hold on the key -------------------------------------------------

def test_a_request_whose_key_was_taken_over_is_409_and_places_nothing(client, alice, seeded, monkeypatch):
    """A request that outlives its lease (idempotency.LEASE_SECONDS) sees a retry take the
    key over; when it finally commits, `save` finds the key no longer its own, so its order
    rolls back and it answers 409: only the retry's answer may be remembered."""
    user_id, headers = alice
    taken_over_at = db.utc_now(1)  # later than any claim this test makes
    real_begin = idempotency.begin

    def begin_then_lose_the_key(database, claimer_id, key, request_hash):
        claim = real_begin(database, claimer_id, key, request_hash)
        # While this request works, a retry takes the key over (as begin does after the lease).
        with database.transaction() as connection:
            sql_idempotency.retake_key(connection, claimer_id, key, request_hash, taken_over_at,
                                       db.utc_now(idempotency.KEY_TTL_SECONDS))
        return claim

    monkeypatch.setattr(idempotency, "begin", begin_then_lose_the_key)
    response = place(client, headers, [{"item_id": 4, "quantity": 2}], key=KEY)
    assert_problem(response, 409, LOST_HOLD)
    assert response.header("Retry-After") == "1"
    assert order_statuses(seeded) == {}
    assert item(client, 4)["stock"] == 26
    with seeded.connection() as connection:
        row = sql_idempotency.get_key(connection, user_id, KEY)
    assert (row["locked_at"], row["response_status"]) == (taken_over_at, None)  # still the retry's

    # The retry holds the key, so until it answers a third copy is told to wait.
    monkeypatch.setattr(idempotency, "begin", real_begin)
    busy = place(client, headers, [{"item_id": 4, "quantity": 2}], key=KEY)
    assert_problem(busy, 409, STILL_RUNNING)


# -- expired keys ----------------------------------------------------------------------------

def test_begin_purges_every_users_expired_keys_at_most_once_an_interval(database, users, monkeypatch):
    alice, bob = users.create(), users.create()
    monkeypatch.setattr(idempotency, "_next_purge", float("inf"))  # no purge while the keys are made
    for key in ("old", "fresh"):
        assert isinstance(idempotency.begin(database, alice["id"], key, "hash"), idempotency.Claim)
    expire(database, alice["id"], "old")

    monkeypatch.setattr(idempotency, "_next_purge", 0.0)  # a purge is due
    assert isinstance(idempotency.begin(database, bob["id"], "new", "hash"), idempotency.Claim)
    assert stored_keys(database) == {(alice["id"], "fresh"), (bob["id"], "new")}

    # Within the interval, the next begin leaves a newly expired key for the next purge.
    expire(database, alice["id"], "fresh")
    assert isinstance(idempotency.begin(database, bob["id"], "newer", "hash"), idempotency.Claim)
    assert stored_keys(database) == {(alice["id"], "fresh"), (bob["id"], "new"), (bob["id"], "newer")}


# -- helpers -------------------------------------------------------------------------------

def expire(database, user_id, key):
    """Make a key's expiry a second ago, as time passing would."""
    with database.transaction() as connection:
        connection.execute(
            "UPDATE idempotency_keys SET expires_at = :expired WHERE user_id = :user_id AND idempotency_key = :key",
            {"expired": db.utc_now(-1), "user_id": user_id, "key": key})


def stored_keys(database):
    """{(user id, key)} of every row of idempotency_keys."""
    with database.connection() as connection:
        rows = connection.fetch_all("SELECT user_id, idempotency_key FROM idempotency_keys")
    return {(row["user_id"], row["idempotency_key"]) for row in rows}


# -- found by mutation testing (tools/mutate.py, docs/testing.md) ---------------------------

# A fixed clock for begin(): db.utc_now(offset) as it would read at NOW.
NOW = "2026-11-28T10:00:00.000000Z"
CLOCK = {0: NOW, idempotency.KEY_TTL_SECONDS: "2026-11-29T10:00:00.000000Z",
         -idempotency.LEASE_SECONDS: "2026-11-28T09:59:00.000000Z"}


@pytest.fixture
def fixed_clock(monkeypatch):
    """begin() at NOW, with no purge on the way."""
    monkeypatch.setattr(idempotency, "_next_purge", float("inf"))
    monkeypatch.setattr(idempotency.db, "utc_now", lambda offset_seconds=0: CLOCK[offset_seconds])


def set_key(database, user_id, key, **columns):
    """Rewrite some columns of a key's row, as time passing or another request would."""
    assignments = ", ".join(f"{column} = :{column}" for column in columns)
    with database.transaction() as connection:
        connection.execute(
            f"UPDATE idempotency_keys SET {assignments} WHERE user_id = :user_id AND idempotency_key = :key",
            dict(columns, user_id=user_id, key=key))


def key_row(database, user_id, key):
    with database.connection() as connection:
        return sql_idempotency.get_key(connection, user_id, key)


def test_the_fingerprint_is_the_sha256_of_the_request_as_compact_sorted_json():
    # Stored with the key, so it must not change between versions: a retry sent across a
    # deploy must still match. sha256(b'["POST","/v1/orders",{"lines":[{"item_id":4,"quantity":2}]}]')
    assert idempotency.fingerprint("POST", "/v1/orders", {"lines": [{"quantity": 2, "item_id": 4}]}) == \
        "d07de073e0f53181d3d5b6824471324689839d7dec400e19a8b465294ff1cc50"


def test_a_key_that_expires_at_this_very_moment_is_a_new_key(database, users, fixed_clock):
    user_id = users.create()["id"]
    assert isinstance(idempotency.begin(database, user_id, KEY, "first"), idempotency.Claim)
    set_key(database, user_id, KEY, expires_at=NOW)
    claim = idempotency.begin(database, user_id, KEY, "second")
    assert claim == idempotency.Claim(user_id, KEY, NOW)
    assert key_row(database, user_id, KEY)["request_hash"] == "second"


def test_a_key_held_exactly_as_long_as_the_lease_is_still_held(database, users, fixed_clock):
    user_id = users.create()["id"]
    idempotency.begin(database, user_id, KEY, "hash")
    set_key(database, user_id, KEY, locked_at=CLOCK[-idempotency.LEASE_SECONDS])
    with pytest.raises(idempotency.KeyInUse) as in_use:
        idempotency.begin(database, user_id, KEY, "hash")
    assert in_use.value.args == (KEY,)
    set_key(database, user_id, KEY, locked_at="2026-11-28T09:58:59.999999Z")   # a microsecond past the lease
    assert idempotency.begin(database, user_id, KEY, "hash") == idempotency.Claim(user_id, KEY, NOW)


def test_a_key_used_with_another_request_is_refused_by_its_name(database, users, fixed_clock):
    user_id = users.create()["id"]
    idempotency.begin(database, user_id, KEY, "first")
    with pytest.raises(idempotency.KeyReused) as reused:
        idempotency.begin(database, user_id, KEY, "second")
    assert reused.value.args == (KEY,)


@pytest.mark.parametrize("a_faster_request_took_it", [False, True])
def test_a_key_purged_between_the_insert_and_the_select_is_taken_again(
        database, users, fixed_clock, monkeypatch, a_faster_request_took_it):
    # On PostgreSQL another process's purge can commit between begin()'s INSERT (which found
    # the row) and its SELECT (which then finds none); made deterministic here by purging in
    # the SELECT itself. A faster request may then take the key before our second INSERT.
    user_id = users.create()["id"]
    idempotency.begin(database, user_id, KEY, "the expired request")
    get_key = sql_idempotency.get_key

    def purged_meanwhile(connection, user_id, key):
        connection.execute("DELETE FROM idempotency_keys WHERE user_id = :user_id AND idempotency_key = :key",
                           {"user_id": user_id, "key": key})
        row = get_key(connection, user_id, key)
        if a_faster_request_took_it:
            sql_idempotency.insert_key(connection, user_id, key, "a faster request", NOW, NOW)
        return row

    monkeypatch.setattr(idempotency.sql_idempotency, "get_key", purged_meanwhile)
    if a_faster_request_took_it:
        with pytest.raises(idempotency.KeyInUse) as in_use:
            idempotency.begin(database, user_id, KEY, "ours")
        assert in_use.value.args == (KEY,)
        return
    assert idempotency.begin(database, user_id, KEY, "ours") == idempotency.Claim(user_id, KEY, NOW)
    with database.connection() as connection:
        row = get_key(connection, user_id, KEY)
    assert (row["request_hash"], row["locked_at"], row["expires_at"], row["response_status"]) == (
        "ours", NOW, CLOCK[idempotency.KEY_TTL_SECONDS], None)
