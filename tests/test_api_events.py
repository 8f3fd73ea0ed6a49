"""Tests for GET /v1/orders/events (api_events.py): server-sent events over a real socket,
on both engines, and the WSGI app's part of it in process.

Streams are read with `EventStreamReader`, a small SSE client on http.client that waits for
each event with a deadline, never with a sleep.
"""

import contextlib
import http.client
import json
import signal
import statistics
import sys
import time
import wsgiref.util
from urllib.parse import urlsplit

import pytest
from conftest import (
    REDIS_TEST_URL,
    TEST_PASSWORD,
    WSGIClient,
    assert_problem,
    free_port,
    move,
    place,
    running_server,
    server_env,
    start_session,
)

import orders
import server

EVENTS = "/v1/orders/events"
ONE_PEN = [{"item_id": 1, "quantity": 1}]
DELIVERY_SECONDS = 1.0  # the promise: an event reaches its streams within a second


# -- an SSE client --------------------------------------------------------------------------

class EventStreamReader:
    """GET /v1/orders/events on a connection of its own; `next_block()` returns the next
    event or comment as it arrives, parsed: {"id": 4, "event": "order.paid", "data": {...}}
    or {"comment": "keep-alive"} or {"retry": 3000}; None once the server ended the stream."""

    def __init__(self, base_url, headers=None, *, path=EVENTS):
        parts = urlsplit(base_url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        self.connection.request("GET", path, headers=headers or {})
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.buffer = b""

    def header(self, name):
        return self.response.getheader(name)

    def next_block(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while b"\n\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no complete event within {timeout} s; have {self.buffer!r}")
            self.connection.sock.settimeout(remaining)
            try:
                data = self.response.read1(65536)
            except TimeoutError:
                continue
            if not data:
                return None
            self.buffer += data
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        return parse_block(block.decode())

    def events(self, count, timeout=5.0):
        """The next `count` events (comments and `retry` skipped), within `timeout` in all."""
        deadline, found = time.monotonic() + timeout, []
        while len(found) < count:
            block = self.next_block(max(0.0, deadline - time.monotonic()))
            assert block is not None, f"the stream ended after {found}"
            if "id" in block:
                found.append(block)
        return found

    def ended(self, timeout=5.0):
        """True once the server ends the stream, within `timeout` (blocks before the end skipped)."""
        deadline = time.monotonic() + timeout
        while self.next_block(max(0.0, deadline - time.monotonic())) is not None:
            pass
        return True

    def close(self):
        self.connection.close()


def parse_block(text):
    """One SSE block as a dict (the fields this server sends)."""
    block = {}
    for line in text.split("\n"):
        if line.startswith(":"):
            block["comment"] = line[1:].strip()
        else:
            name, _, value = line.partition(": ")
            block[name] = int(value) if name in ("id", "retry") else json.loads(value) if name == "data" else value
    return block


# -- fixtures -------------------------------------------------------------------------------

@contextlib.contextmanager
def serving(app, **options):
    """Serve `app` with the shop's lanes (the event-stream lane among them), as `python
    server.py` does; at the end, close its streams first, as its SIGTERM handler does."""
    options.setdefault("max_workers", 2)  # the default lane as small as on SQLite
    server_lanes = server.server_lanes(app.services.settings)
    with running_server(app, lanes=server_lanes, lane_for=server.lane_for, **options) as base_url:
        try:
            yield base_url
        finally:
            app.services.order_events.request_close()


@pytest.fixture
def readers():
    """open(base_url, headers) -> an EventStreamReader, closed after the test."""
    opened = []

    def open_reader(base_url, headers=None, **options):
        opened.append(EventStreamReader(base_url, headers, **options))
        return opened[-1]

    yield open_reader
    for reader in opened:
        reader.close()


@pytest.fixture
def shop(make_app, admin):
    """An app (no rate limits, a short heartbeat) on a live server: (base_url, app, client)."""
    app = make_app(EVENT_HEARTBEAT_SECONDS="0.3")
    with serving(app) as base_url:
        yield base_url, app, WSGIClient(app)


# -- delivery -------------------------------------------------------------------------------

def test_a_client_sees_order_paid_within_a_second_of_the_admins_patch(shop, readers, alice, admin):
    base_url, _, client = shop
    alice_id, alice_headers = alice
    order_id = place(client, alice_headers, ONE_PEN).json()["id"]
    reader = readers(base_url, alice_headers)
    assert reader.status == 200
    assert reader.header("Content-Type") == "text/event-stream"
    assert reader.header("Cache-Control") == "no-store"
    assert reader.header("X-Accel-Buffering") == "no"
    assert reader.header("Transfer-Encoding") == "chunked" and reader.header("Content-Length") is None
    assert reader.next_block() == {"retry": 3000}
    started = time.monotonic()
    assert move(client, admin, order_id, "paid").status == 200
    [event] = reader.events(1, timeout=DELIVERY_SECONDS)
    elapsed = time.monotonic() - started
    assert elapsed < DELIVERY_SECONDS
    assert event["event"] == "order.paid"
    assert event["data"]["order_id"] == order_id and event["data"]["user_id"] == alice_id
    assert event["data"]["status"] == "paid" and event["data"]["total_cents"] > 0


def test_a_user_sees_only_their_own_orders_and_an_admin_sees_all(shop, readers, alice, bob, admin):
    base_url, _, client = shop
    alice_stream, bob_stream = readers(base_url, alice[1]), readers(base_url, bob[1])
    admin_stream = readers(base_url, admin)
    alices = place(client, alice[1], ONE_PEN).json()["id"]
    bobs = place(client, bob[1], ONE_PEN).json()["id"]
    move(client, admin, bobs, "paid")
    move(client, admin, alices, "cancelled")
    everything = admin_stream.events(4)
    assert [(event["event"], event["data"]["order_id"]) for event in everything] == [
        ("order.created", alices), ("order.created", bobs), ("order.paid", bobs), ("order.cancelled", alices)]
    ids = [event["id"] for event in everything]
    assert ids == sorted(ids)
    assert [event["id"] for event in alice_stream.events(2)] == [ids[0], ids[3]]
    assert [event["id"] for event in bob_stream.events(2)] == [ids[1], ids[2]]
    # Nothing else arrives: the next block of each is a heartbeat, not someone else's event.
    assert "comment" in alice_stream.next_block() and "comment" in bob_stream.next_block()


def test_resuming_with_last_event_id_gets_exactly_the_missed_events(shop, readers, alice, admin):
    base_url, _, client = shop
    headers = alice[1]
    first = place(client, headers, ONE_PEN).json()["id"]
    reader = readers(base_url, headers)
    move(client, admin, first, "paid")
    [seen] = reader.events(1)
    reader.close()
    # While the client is away: two events of its own, one of someone else's (not for it).
    move(client, admin, first, "shipped")
    second = place(client, headers, ONE_PEN).json()["id"]
    place(client, admin, ONE_PEN)
    resumed = readers(base_url, {**headers, "Last-Event-ID": str(seen["id"])})
    missed = resumed.events(2)
    assert [(event["event"], event["data"]["order_id"]) for event in missed] == [
        ("order.shipped", first), ("order.created", second)]
    move(client, admin, second, "paid")  # and then live again, each event once
    [live] = resumed.events(1)
    assert live["event"] == "order.paid" and live["id"] > missed[-1]["id"]
    assert "comment" in resumed.next_block()  # no duplicate follows


def test_last_event_id_0_replays_every_kept_event_and_none_means_only_new_ones(shop, readers, alice, admin):
    base_url, _, client = shop
    order_id = place(client, alice[1], ONE_PEN).json()["id"]
    move(client, admin, order_id, "paid")
    everything = readers(base_url, {**alice[1], "Last-Event-ID": "0"}).events(2)
    assert [event["event"] for event in everything] == ["order.created", "order.paid"]
    only_new = readers(base_url, alice[1])
    assert only_new.next_block() == {"retry": 3000}
    assert only_new.next_block() == {"comment": "keep-alive"}  # the old events are not sent again
    move(client, admin, order_id, "shipped")
    assert only_new.events(1)[0]["event"] == "order.shipped"


def test_a_last_event_id_beyond_every_event_starts_from_the_newest(shop, readers, alice, admin):
    base_url, _, client = shop
    reader = readers(base_url, {**alice[1], "Last-Event-ID": "999999"})  # say, a database reset since
    order_id = place(client, alice[1], ONE_PEN).json()["id"]
    assert reader.events(1)[0]["data"]["order_id"] == order_id


def test_an_idle_stream_sends_heartbeats(shop, readers, alice):
    reader = readers(shop[0], alice[1])
    assert reader.next_block() == {"retry": 3000}
    started = time.monotonic()
    assert reader.next_block(timeout=2) == {"comment": "keep-alive"}
    assert reader.next_block(timeout=2) == {"comment": "keep-alive"}
    assert time.monotonic() - started < 2  # EVENT_HEARTBEAT_SECONDS=0.3 here


# -- who may open a stream, and how many -----------------------------------------------------

def test_a_stream_needs_credentials(checker):
    assert_problem(checker.client.get(EVENTS), 401)


@pytest.mark.parametrize("last_event_id", ["abc", "-1", "01", "1.5", "1e3", "9" * 19, ""])
def test_a_last_event_id_that_is_not_an_event_id_is_a_400(checker, last_event_id):
    response = checker.client.get(EVENTS, headers={**checker.customer, "Last-Event-ID": last_event_id})
    assert_problem(response, 400, "Last-Event-ID must be the id of an event this server sent (a whole number)")


def test_query_parameters_are_refused(checker):
    response = checker.client.get(EVENTS + "?lastEventId=3", headers=checker.customer)
    assert_problem(response, 400)


def test_api_keys_and_browser_sessions_open_streams_too(shop, readers, users, alice):
    base_url, _, client = shop
    key = client.post("/v1/api-keys", json={"name": "feed"}, headers=alice[1]).json()["key"]
    assert readers(base_url, {"X-API-Key": key}).status == 200
    user = users.create("carol@example.com")
    session_headers, _ = start_session(client, user["email"], TEST_PASSWORD)
    assert readers(base_url, session_headers).status == 200  # a GET: no CSRF token needed


def test_an_address_may_hold_only_a_few_streams_whatever_its_accounts(make_app, readers, users):
    app = make_app(EVENT_STREAMS_PER_ADDRESS="2", EVENT_HEARTBEAT_SECONDS="0.1")
    with serving(app) as base_url:
        accounts = [users.headers(users.create()) for _ in range(3)]
        opened = [readers(base_url, accounts[0]), readers(base_url, accounts[1])]
        assert [stream.status for stream in opened] == [200, 200]
        third = readers(base_url, accounts[2])  # a third account, from the same address (127.0.0.1)
        assert third.status == 429
        assert json.loads(third.response.read())["detail"] == ("at most 2 event streams per client address:"
                                                               " close one first")


def open_stream_from(app, address, headers):
    """GET /v1/orders/events from `address`, straight through the WSGI app: (status, body)."""
    environ = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ.update({"REQUEST_METHOD": "GET", "PATH_INFO": "/v1/orders/events", "REMOTE_ADDR": address})
    environ.update({"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()})
    started = []
    body = app(environ, lambda status, response_headers, exc_info=None: started.append(status))
    return int(started[0][:3]), body


def test_an_ipv6_client_counts_as_its_64_for_the_limit_per_address(make_app, users):
    """An IPv6 client holds a whole /64 (2^64 addresses): counted as one, as the rate limits count it."""
    app = make_app(EVENT_STREAMS_PER_ADDRESS="2")
    accounts = [users.headers(users.create()) for _ in range(3)]
    bodies = []
    try:
        for number, address in enumerate(["2001:db8:7:1::1", "2001:db8:7:1::2"]):
            status, body = open_stream_from(app, address, accounts[number])
            bodies.append(body)
            assert status == 200
        status, body = open_stream_from(app, "2001:db8:7:1:ffff::3", accounts[2])
        bodies.append(body)
        assert status == 429  # the same /64
        status, body = open_stream_from(app, "2001:db8:7:2::1", accounts[2])
        bodies.append(body)
        assert status == 200  # another /64
    finally:
        for body in bodies:
            getattr(body, "close", lambda: None)()  # a stream's body: its place is free again
        app.services.order_events.close()  # and its reader thread ends with this test, not later


def test_a_user_may_hold_only_a_few_streams(make_app, readers, alice, bob):
    app = make_app(EVENT_STREAMS_PER_USER="2", EVENT_HEARTBEAT_SECONDS="0.1")
    with serving(app) as base_url:
        first, _ = readers(base_url, alice[1]), readers(base_url, alice[1])
        third = readers(base_url, alice[1])
        assert third.status == 429
        assert json.loads(third.response.read())["detail"] == "at most 2 event streams per user: close one first"
        assert readers(base_url, bob[1]).status == 200  # the limit is each user's own
        first.close()  # the server notices at its next heartbeat, and the slot is free again
        deadline = time.monotonic() + 5
        while (again := readers(base_url, alice[1])).status != 200 and time.monotonic() < deadline:
            again.close()
        assert again.status == 200


def test_a_process_with_every_stream_open_answers_503(make_app, readers, users, seeded):
    app = make_app(MAX_EVENT_STREAMS="2")
    with serving(app) as base_url:
        for _ in range(2):
            assert readers(base_url, users.headers(users.create())).status == 200
        refused = readers(base_url, users.headers(users.create()))
        assert refused.status == 503 and refused.header("Retry-After") == "5"


# -- the WSGI app alone ------------------------------------------------------------------------

def test_the_app_returns_a_stream_that_ends_unsubscribed_when_closed(app, database, alice, admin):
    from wsgiref.util import setup_testing_defaults
    from wsgiref.validate import validator

    alice_id, headers = alice
    order = orders.place_order(database, alice_id, ONE_PEN)
    environ = {"PATH_INFO": EVENTS, "SCRIPT_NAME": "", "QUERY_STRING": "", "HTTP_LAST_EVENT_ID": "0",
               "HTTP_AUTHORIZATION": headers["Authorization"]}
    setup_testing_defaults(environ)
    started = {}
    body = validator(app)(environ, lambda status, fields, exc_info=None: started.update(status=status, fields=fields))
    assert started["status"] == "200 OK"
    fields = dict(started["fields"])
    assert fields["Content-Type"] == "text/event-stream" and "Content-Length" not in fields
    pieces = iter(body)
    assert next(pieces) == b"retry: 3000\n\n"
    assert next(pieces).startswith(b"id: 1\nevent: order.created\ndata: {")
    assert app.services.order_events.streams() == 1
    orders.change_status(database, order["id"], "paid")
    assert next(pieces).startswith(b"id: 2\nevent: order.paid\n")
    body.close()
    assert app.services.order_events.streams() == 0
    app.services.order_events.close()


def test_a_stream_ends_when_its_caller_is_no_longer_an_admin(app, database, users, alice, admin):
    """A stream opened by an admin shows every customer's orders: once the caller is made a
    plain user, it must end before it hands over another customer's event (the client then
    reconnects, and sees its own orders only)."""
    from wsgiref.util import setup_testing_defaults

    demoted = users.admin()
    environ = {"PATH_INFO": EVENTS, "SCRIPT_NAME": "", "QUERY_STRING": "",
               "HTTP_AUTHORIZATION": users.headers(demoted)["Authorization"]}
    setup_testing_defaults(environ)
    body = app(environ, lambda status, fields, exc_info=None: None)
    pieces = iter(body)
    assert next(pieces) == b"retry: 3000\n\n"
    changed = WSGIClient(app).request("PATCH", f"/v1/users/{demoted['id']}", json={"role": "user"}, headers=admin)
    assert changed.status == 200
    orders.place_order(database, alice[0], ONE_PEN)  # alice's, not the demoted caller's
    assert next(pieces, None) is None  # ended: alice's order.created is never sent
    body.close()
    assert app.services.order_events.streams() == 0
    app.services.order_events.close()


def test_head_gives_the_headers_of_a_stream_and_opens_none(app, customer):
    response = WSGIClient(app).head(EVENTS, headers=customer)
    assert response.status == 200 and response.header("Content-Type") == "text/event-stream"
    assert response.body == b"" and app.services.order_events.streams() == 0


# -- shutdown ----------------------------------------------------------------------------------

def test_stopping_the_server_ends_every_stream_promptly(make_app, readers, users, seeded):
    app = make_app()
    running = running_server(app, lanes=server.server_lanes(app.services.settings), lane_for=server.lane_for)
    base_url = running.__enter__()
    streams = [readers(base_url, users.headers(users.create())) for _ in range(3)]
    for stream in streams:
        assert stream.next_block() == {"retry": 3000}
    started = time.monotonic()
    app.services.order_events.request_close()  # what `python server.py` does on SIGTERM
    running.server.request_shutdown()
    for stream in streams:
        assert stream.ended(timeout=2)
    running.thread.join(5)
    assert not running.thread.is_alive() and running.server.drained
    assert time.monotonic() - started < 3


def test_sigterm_ends_the_streams_of_python_server_py(settings, database, users, seeded, start_program, tmp_path):
    headers = users.headers(users.create())
    port = free_port()
    program = start_program([sys.executable, "server.py", "--port", str(port)],
                            server_env(settings.database_url, PBKDF2_ITERATIONS="1000")).wait_for_url()
    reader = EventStreamReader(program.url, headers)
    assert reader.status == 200 and reader.next_block() == {"retry": 3000}
    started = time.monotonic()
    program.send_signal(signal.SIGTERM)
    assert reader.ended(timeout=5)
    assert program.wait(timeout=10) == 0
    assert time.monotonic() - started < 5, "the server waited for its streams instead of ending them"
    reader.close()


# -- streams do not slow the rest down -----------------------------------------------------------

def timed_item_reads(base_url, count):
    """Milliseconds of `count` GET /v1/items/1 on one kept-alive connection."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    timings = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            connection.request("GET", "/v1/items/1")
            response = connection.getresponse()
            assert response.status == 200 and response.read()
            timings.append((time.perf_counter() - started) * 1000)
    finally:
        connection.close()
    return sorted(timings)


def test_a_hundred_open_streams_leave_an_item_answering_at_its_usual_speed(make_app, readers, users, seeded):
    # Each read goes to the database, as a cache miss does. All 100 streams come from this
    # machine's one address: its limit is raised for them.
    app = make_app(CACHE="off", EVENT_STREAMS_PER_ADDRESS="100")
    with serving(app) as base_url:
        timed_item_reads(base_url, 50)  # warm up: connections, caches
        before = timed_item_reads(base_url, 300)
        headers = [users.headers(users.create()) for _ in range(20)]
        streams = [readers(base_url, headers[number % 20]) for number in range(100)]
        assert [stream.status for stream in streams] == [200] * 100
        assert app.services.order_events.streams() == 100
        during = timed_item_reads(base_url, 300)
        median_before, median_during = statistics.median(before), statistics.median(during)
        p99_before, p99_during = before[int(0.99 * len(before))], during[int(0.99 * len(during))]
        print(f"\nGET /v1/items/1 ms: before p50 {median_before:.2f} p99 {p99_before:.2f};"
              f" with 100 streams p50 {median_during:.2f} p99 {p99_during:.2f}")
        assert median_during < max(3 * median_before, 5.0)
        assert p99_during < max(5 * p99_before, 50.0)


# -- fan-out across processes ------------------------------------------------------------------

def start_servers(count, start_program, settings, **environment):
    """`count` processes of `python server.py` on the test's database."""
    env = server_env(settings.database_url, PBKDF2_ITERATIONS="1000", RATE_LIMITS="off", **environment)
    return [start_program([sys.executable, "server.py", "--port", str(free_port())], env).wait_for_url()
            for _ in range(count)]


def test_an_event_committed_by_one_process_reaches_the_streams_of_another(engine, settings, database, users, seeded,
                                                                          start_program, request):
    """PostgreSQL: NOTIFY wakes the other process. SQLite: Redis pub/sub does (the poll is
    set to 30 s, so only a wake-up can deliver within the second)."""
    environment = {"EVENT_POLL_SECONDS": "30"}
    if engine == "sqlite":
        environment.update(REDIS_URL=REDIS_TEST_URL, REDIS_PREFIX=request.getfixturevalue("redis_prefix"))
    alice = users.create()
    admin = users.headers(users.admin())
    a, b = start_servers(2, start_program, settings, **environment)
    reader = EventStreamReader(a.url, users.headers(alice))
    try:
        assert reader.status == 200 and reader.next_block() == {"retry": 3000}
        order_id = orders.place_order(database, alice["id"], ONE_PEN)["id"]  # a third process, in effect
        status, _, _ = patch_status(b.port, admin, order_id, "paid")
        started = time.monotonic()
        assert status == 200
        events = reader.events(2, timeout=DELIVERY_SECONDS + 0.5)
        assert [event["event"] for event in events] == ["order.created", "order.paid"]
        assert time.monotonic() - started < DELIVERY_SECONDS
    finally:
        reader.close()


def test_with_redis_down_events_still_arrive_in_process_and_by_polling(settings, database, users, seeded,
                                                                       start_program, make_app, readers):
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app = make_app(REDIS_URL=dead_redis, EVENT_POLL_SECONDS="0.2")
    alice = users.create()
    admin = users.headers(users.admin())
    with serving(app) as base_url:
        reader = readers(base_url, users.headers(alice))
        assert reader.next_block() == {"retry": 3000}
        order_id = place(WSGIClient(app), users.headers(alice), ONE_PEN).json()["id"]  # this process
        assert reader.events(1, timeout=DELIVERY_SECONDS)[0]["data"]["order_id"] == order_id
        # Another process, which cannot publish either: the poll finds it.
        [other] = start_servers(1, start_program, settings, REDIS_URL=dead_redis)
        assert patch_status(other.port, admin, order_id, "paid")[0] == 200
        assert reader.events(1, timeout=DELIVERY_SECONDS)[0]["event"] == "order.paid"


def patch_status(port, headers, order_id, status):
    from conftest import http_request

    return http_request(port, f"/v1/orders/{order_id}", method="PATCH",
                        headers={**headers, "Content-Type": "application/json"},
                        body=json.dumps({"status": status}).encode())

