"""Tests for events.py: events recorded in the change's own transaction, the broadcaster and
its streams, ids that commit in order on PostgreSQL, bounded queues, retention.

The HTTP side (the wire format, a real socket, several processes) is tests/test_api_events.py.
"""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from conftest import POLL_SECONDS, settings_with

import db
import events
import orders
import sql_events

ONE_PEN = [{"item_id": 1, "quantity": 1}]
LOCAL = "ip:127.0.0.1"  # the client address of a stream, as ratelimit.address_caller spells it


@pytest.fixture
def broadcaster(settings, database, logger):
    """A broadcaster that only a wake-up can hurry: its poll is 30 s."""
    broadcaster = events.Broadcaster(database, settings_with(settings, EVENT_POLL_SECONDS="30"), logger)
    yield broadcaster
    broadcaster.close()


def stored_events(database):
    with database.connection() as connection:
        return [(row["type"], row["order_id"]) for row in sql_events.events_after(connection, 0, 100)]


def collect(stream, count, timeout=5.0):
    """The next `count` events of `stream`, within `timeout`."""
    deadline, found = time.monotonic() + timeout, []
    while len(found) < count and time.monotonic() < deadline:
        batch = stream.next_events(max(0.0, deadline - time.monotonic()))
        assert batch is not None, f"the stream ended after {found}"
        found += batch
    return found


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(POLL_SECONDS)


# -- recorded with the change, or not at all -----------------------------------------------------

def test_an_order_and_each_change_of_its_status_record_one_event(seeded, alice):
    alice_id, _ = alice
    order = orders.place_order(seeded, alice_id, ONE_PEN)
    orders.change_status(seeded, order["id"], "paid")
    orders.change_status(seeded, order["id"], "shipped")
    assert stored_events(seeded) == [("order.created", order["id"]), ("order.paid", order["id"]),
                                     ("order.shipped", order["id"])]


def test_a_refused_order_or_move_records_nothing(seeded, alice):
    alice_id, _ = alice
    with pytest.raises(orders.OutOfStock):
        orders.place_order(seeded, alice_id, [{"item_id": 1, "quantity": 1000}])
    order = orders.place_order(seeded, alice_id, ONE_PEN)
    with pytest.raises(orders.InvalidTransition):
        orders.change_status(seeded, order["id"], "shipped")  # pending cannot be shipped
    assert stored_events(seeded) == [("order.created", order["id"])]


# -- the broadcaster and its streams ---------------------------------------------------------

def test_a_commit_in_this_process_wakes_the_streams_at_once(broadcaster, seeded, alice):
    alice_id, _ = alice
    stream = broadcaster.open_stream(alice_id, admin=False, client=LOCAL)
    started = time.monotonic()
    order = orders.place_order(seeded, alice_id, ONE_PEN)
    [event] = collect(stream, 1, timeout=1.0)
    assert time.monotonic() - started < 1.0  # not the 30 s poll
    assert (event["type"], event["order_id"], event["user_id"]) == ("order.created", order["id"], alice_id)


def test_a_stream_resumes_after_an_id_from_the_table_then_live(broadcaster, seeded, alice, bob):
    alice_id, bob_id = alice[0], bob[0]
    first = orders.place_order(seeded, alice_id, ONE_PEN)
    orders.place_order(seeded, bob_id, ONE_PEN)  # not for alice
    orders.change_status(seeded, first["id"], "paid")
    stream = broadcaster.open_stream(alice_id, admin=False, client=LOCAL, last_event_id=1)
    orders.change_status(seeded, first["id"], "shipped")
    assert [event["type"] for event in collect(stream, 2)] == ["order.paid", "order.shipped"]


def test_a_stream_that_falls_too_far_behind_is_ended_not_buffered(broadcaster, seeded, alice, monkeypatch):
    monkeypatch.setattr(events, "STREAM_QUEUE_EVENTS", 3)
    alice_id, _ = alice
    stream = broadcaster.open_stream(alice_id, admin=True, client=LOCAL)
    for _ in range(5):  # its client reads nothing meanwhile
        orders.place_order(seeded, alice_id, ONE_PEN)
    wait_for(lambda: broadcaster.streams() == 0)
    assert stream.next_events(0) is None  # ended: the client reconnects with its Last-Event-ID
    assert len(stream._queue) <= 3


def test_close_ends_every_stream_and_refuses_new_ones(broadcaster, seeded, alice):
    stream = broadcaster.open_stream(alice[0], admin=False, client=LOCAL)
    broadcaster.request_close()
    assert stream.next_events(5.0) is None
    with pytest.raises(events.Closed):
        broadcaster.open_stream(alice[0], admin=False, client=LOCAL)


def test_the_limits_per_user_and_per_process(settings, database, logger, seeded):
    limited = events.Broadcaster(database, settings_with(settings, EVENT_STREAMS_PER_USER="2", MAX_EVENT_STREAMS="3"),
                                 logger)
    try:
        first = limited.open_stream(1, admin=False, client=LOCAL)
        limited.open_stream(1, admin=False, client=LOCAL)
        with pytest.raises(events.TooManyStreams) as per_user:
            limited.open_stream(1, admin=False, client=LOCAL)
        assert per_user.value.per_caller
        limited.open_stream(2, admin=False, client=LOCAL)
        with pytest.raises(events.TooManyStreams) as per_process:
            limited.open_stream(3, admin=False, client=LOCAL)
        assert not per_process.value.per_caller
        first.close()
        limited.open_stream(3, admin=False, client=LOCAL)  # a closed stream frees its place
    finally:
        limited.close()


def test_the_limit_per_client_address_holds_whatever_the_accounts(settings, database, logger, seeded):
    limited = events.Broadcaster(database, settings_with(settings, EVENT_STREAMS_PER_ADDRESS="2"), logger)
    try:
        first = limited.open_stream(1, admin=False, client="ip:203.0.113.7")
        limited.open_stream(2, admin=False, client="ip:203.0.113.7")
        with pytest.raises(events.TooManyStreams) as per_address:
            limited.open_stream(3, admin=False, client="ip:203.0.113.7")  # a third account, the same machine
        assert per_address.value.per_caller
        assert str(per_address.value) == "at most 2 event streams per client address"
        limited.open_stream(3, admin=False, client="ip:198.51.100.9")  # another address: its own count
        first.close()
        limited.open_stream(3, admin=False, client="ip:203.0.113.7")  # a closed stream frees its place
        for user_id in (4, 5, 6):  # no address known (a unix socket): no address limit, only the others
            limited.open_stream(user_id, admin=False, client="")
    finally:
        limited.close()


# -- PostgreSQL: ids that commit out of order ---------------------------------------------------

def waiting_for_the_event_lock(database):
    with database.connection() as connection:
        return connection.fetch_value(
            "SELECT count(*) AS waiting FROM pg_locks WHERE locktype = 'advisory' AND objid = :lock_id AND NOT granted",
            {"lock_id": sql_events.EVENT_IDS_LOCK_ID}) > 0


def test_on_postgresql_a_later_commit_cannot_overtake_a_smaller_id(engine, broadcaster, seeded, alice):
    """Without the lock: A takes id 2, B takes id 3 and commits, the broadcaster reads 3 and
    moves past it, A commits 2, and 2 is never sent. With it, B waits for A's COMMIT."""
    if engine != "postgresql":
        pytest.skip("SQLite has one writer at a time: its ids always commit in order")
    alice_id, _ = alice
    order = orders.place_order(seeded, alice_id, ONE_PEN)
    stream = broadcaster.open_stream(alice_id, admin=False, client=LOCAL)
    second = {}

    def record_second():
        with seeded.transaction() as connection:
            second["id"] = events.record(connection, dict(order, status="shipped"), "order.shipped")

    with seeded.transaction() as connection:
        first_id = events.record(connection, dict(order, status="paid"), "order.paid")
        thread = threading.Thread(target=record_second)
        thread.start()
        wait_for(lambda: waiting_for_the_event_lock(seeded))  # B waits for A, before taking an id
        assert stream.next_events(0.2) == []  # nothing is committed yet
    thread.join(5)
    assert second["id"] > first_id
    assert [event["id"] for event in collect(stream, 2)] == [first_id, second["id"]]


# -- retention ---------------------------------------------------------------------------------

def test_old_events_are_purged_and_a_resume_from_before_gets_what_is_left(broadcaster, seeded, alice):
    alice_id, _ = alice
    now = datetime.now(UTC)
    with seeded.transaction() as connection:
        for age_hours in (30, 26, 1):
            sql_events.insert_event(connection, 7, alice_id, "order.paid", "{}",
                                    db.utc_text(now - timedelta(hours=age_hours)))
    assert events.purge_old(seeded, retention_seconds=24 * 3600, now=now) == 2
    assert events.purge_old(seeded, retention_seconds=24 * 3600, now=now) == 0
    stream = broadcaster.open_stream(alice_id, admin=False, client=LOCAL, last_event_id=0)
    assert [event["id"] for event in collect(stream, 1)] == [3]
