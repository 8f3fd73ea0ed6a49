"""Tests for httpserver.py against clients that are slow on purpose, and for its lanes.

A worker must never wait for a client: a body that trickles, or a response the client does
not read, is the event loop's to wait for, and a probe must never wait behind application
work. Each test has one worker (or one per lane) and shows a second client served while the
first one dawdles. Timing rules as in test_httpserver.py: bounds at least 3x what they guard.
"""
import json
import os
import socket
import threading
import time
from wsgiref.validate import validator

import pytest
from test_http11 import H
from test_httpserver import READ_TIMEOUT, echo_app, get, running, wait_until_readable

import httpserver

# The test servers' sockets keep at most 64 KiB unsent (SO_SNDBUF; the kernel doubles it) and
# the slow clients' take 64 KiB: BIG_BODY is more than both hold, less than the outbox.
BUFFER_BYTES = 64 * 1024
BIG_BODY = b"x" * (768 * 1024)


@pytest.fixture
def short_grace(monkeypatch):
    """A body (or a response) may take 0.3 s to start moving, then 1 KB/s (the real: 5 s)."""
    monkeypatch.setattr(httpserver, "BODY_GRACE_SECONDS", 0.3)


def big_app(environ, start_response):
    """BIG_BODY for /big, else the echo."""
    if environ["PATH_INFO"] != "/big":
        return echo_app(environ, start_response)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BIG_BODY)))])
    return [BIG_BODY]


def served_within(server, connect, seconds, path="/quick"):
    """Serve GET path to a new client; assert it took less than seconds."""
    started = time.monotonic()
    client = connect(server)
    client.send(get(path))
    status, _, body = client.response()
    assert status == 200 and json.loads(body)["path"] == path
    assert time.monotonic() - started < seconds


# -- bodies are read by the event loop ---------------------------------------------------------

def test_a_trickled_body_holds_no_worker_and_gets_a_408(connect, short_grace):
    with running(validator(echo_app), max_workers=1) as server:
        slow = connect(server)
        slow.send(b"POST /upload HTTP/1.1\r\n" + H + b"Content-Length: 10000\r\n\r\nx")
        served_within(server, connect, 0.25)   # before the grace is over: the worker is free
        started = time.monotonic()
        status, headers, body = slow.response()
        assert status == 408 and headers["connection"] == "close"
        assert json.loads(body)["instance"] == "/upload"
        assert slow.is_closed()
        assert time.monotonic() - started < 3 * 0.3


def test_a_body_that_keeps_the_minimum_rate_gets_more_than_the_grace(connect, short_grace, monkeypatch):
    monkeypatch.setattr(httpserver, "MIN_BYTES_PER_SECOND", 100)  # 10 bytes buy 0.1 s more
    with running(validator(echo_app), max_workers=1) as server:
        client = connect(server)
        client.send(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 120\r\n\r\n")
        started = time.monotonic()
        for _ in range(6):   # 20 bytes every 0.1 s: 200 bytes/s, twice the minimum, for 0.6 s
            time.sleep(0.1)
            client.send(b"y" * 20)
        status, _, body = client.response()
        assert status == 200 and json.loads(body)["body"] == "y" * 120
        assert time.monotonic() - started > 0.3   # longer than the grace alone allowed


def test_the_body_timeout_caps_even_a_steady_body(connect, monkeypatch):
    monkeypatch.setattr(httpserver, "MIN_BYTES_PER_SECOND", 10)
    with running(validator(echo_app), max_workers=1, body_timeout=0.5) as server:
        client = connect(server)
        client.send(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1000\r\n\r\n")
        started = time.monotonic()
        while not wait_until_readable(client, within=0.05):   # 400 bytes/s: 40 times the minimum
            client.send(b"z" * 20)
        assert 0.5 <= time.monotonic() - started < 3 * 0.5
        assert client.response()[0] == 408


def test_a_chunked_body_that_trickles_holds_no_worker_either(connect, short_grace):
    with running(validator(echo_app), max_workers=1) as server:
        slow = connect(server)
        slow.send(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
        served_within(server, connect, 0.25)
        assert slow.response()[0] == 408


# -- responses are sent by the event loop when the client is slow to take them ---------------

def test_a_client_that_does_not_read_holds_no_worker(connect, monkeypatch):
    with running(validator(big_app), max_workers=1, send_buffer_bytes=BUFFER_BYTES) as server:
        reader = connect(server, receive_buffer=BUFFER_BYTES)
        reader.send(get("/big"))
        time.sleep(0.2)   # the worker has run and moved on; the loop holds the rest
        served_within(server, connect, 0.5)
        status, _, body = reader.response()   # and the slow reader still gets it whole
        assert status == 200 and body == BIG_BODY
        reader.send(get("/after"))   # on the same connection: it is kept alive
        assert reader.response()[0] == 200


def test_a_client_that_never_reads_is_cut_off(connect, short_grace, monkeypatch):
    # What the kernels' buffers took moved, and buys time at the minimum rate: make it little.
    monkeypatch.setattr(httpserver, "MIN_BYTES_PER_SECOND", 10_000_000)
    with running(validator(big_app), max_workers=1, send_buffer_bytes=BUFFER_BYTES) as server:
        reader = connect(server, receive_buffer=BUFFER_BYTES)
        reader.send(get("/big"))
        time.sleep(3 * 0.3)   # the grace runs out while the outbox has not moved
        received = b""
        with pytest.raises(ConnectionResetError):   # what was sent, then the end
            while chunk := reader.sock.recv(65536):
                received += chunk
            raise ConnectionResetError   # a plain end of file is an end as well
        assert len(received) < len(BIG_BODY)


def test_shutdown_waits_for_a_response_still_being_sent(connect):
    with running(validator(big_app), max_workers=1, send_buffer_bytes=BUFFER_BYTES) as server:
        reader = connect(server, receive_buffer=BUFFER_BYTES)
        reader.send(get("/big"))
        time.sleep(0.2)
        server.request_shutdown()
        status, headers, body = reader.response()
        assert status == 200 and body == BIG_BODY and headers.get("connection") != "close"
        assert reader.is_closed()


def test_shutdown_does_not_reset_a_response_when_the_client_sent_more(connect):
    # RFC 9112 §9.6: close() with unread bytes in the kernel makes TCP send a reset, which
    # destroys what the client has not read yet. Here the unread bytes are a pipelined request
    # that arrived while the app ran; the server reads it only after the response.
    in_app, release = threading.Event(), threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/big":
            in_app.set()
            release.wait(READ_TIMEOUT)
        return big_app(environ, start_response)

    with running(validator(app), max_workers=1) as server:
        client = connect(server)
        client.send(get("/big"))
        assert in_app.wait(READ_TIMEOUT)
        client.send(get("/next"))
        server.request_shutdown()
        release.set()
        server.loop_threads[0].join(0.5)   # the server may close before the client reads: that is the point
        try:
            status, headers, body = client.response()
        except ConnectionResetError:
            pytest.fail("the response in flight was destroyed by a reset")
        assert status == 200 and headers["connection"] == "close" and body == BIG_BODY


def _loop_cpu_seconds(server):
    """CPU seconds the server's event loop thread has used so far (Linux: /proc)."""
    loop = server.loop_threads[0]
    with open(f"/proc/self/task/{loop.native_id}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")   # utime + stime


def test_a_head_that_trickles_in_costs_the_loop_little_cpu(connect):
    # A slowloris that sends 16 bytes every 0.25 ms finishes a 60 KB head well within the
    # head timeout. If each piece makes the loop scan the whole buffer again (http11's
    # find, count and regex), the cost grows with the square of the head: ~3750 scans of up
    # to 60 KB, a fifth of the loop's time for one client; five such clients stall it. A scan
    # of the new bytes only costs the loop about a twentieth (measured: 0.07-0.10 s of 1.4 s).
    head = b"GET / HTTP/1.1\r\n" + H + b"X-Filler: " + b"v" * 60_000 + b"\r\n\r\n"
    with running(validator(echo_app)) as server:
        client = connect(server)
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cpu, wall = _loop_cpu_seconds(server), time.monotonic()
        for start in range(0, len(head), 16):
            client.send(head[start:start + 16])
            time.sleep(0.00025)
        assert client.response()[0] == 200
        cpu, wall = _loop_cpu_seconds(server) - cpu, time.monotonic() - wall
        assert cpu < wall / 8, f"the loop was busy {cpu:.2f} s of {wall:.2f} s with one client"


def _resident_bytes():
    with open("/proc/self/status") as status:   # Linux
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def test_an_idle_connection_costs_the_server_little_memory(connect):
    # max_connections (1000) clients that only connect are what a flood costs: each held a
    # 64 KiB receive chunk of its own (measured: 58 MiB for 900), though only the event loop
    # ever reads, one connection at a time.
    with running(validator(echo_app)) as server:
        warm = connect(server)   # the loop and its first allocations are warm
        warm.send(get())
        assert warm.response()[0] == 200
        before = _resident_bytes()
        idle = [connect(server) for _ in range(200)]
        idle[-1].send(get())   # answered: every connection before it has been accepted
        assert idle[-1].response()[0] == 200
        per_connection = (_resident_bytes() - before) / len(idle)
        assert per_connection < 16 * 1024, f"{per_connection / 1024:.0f} KiB per idle connection"


# -- lanes: probes and password work have threads of their own ----------------------------------

def blocking_app(release, blocked):
    """An app whose /block requests wait for release; the rest answer at once."""
    def app(environ, start_response):
        if environ["PATH_INFO"].startswith("/block"):
            blocked.release()
            release.wait(READ_TIMEOUT)
        return echo_app(environ, start_response)
    return app


def test_a_probe_lane_answers_while_every_default_worker_is_busy(connect):
    release, blocked = threading.Event(), threading.Semaphore(0)
    lanes = [httpserver.Lane("probes", threads=1, max_waiting=4)]
    with running(blocking_app(release, blocked), max_workers=1, lanes=lanes,
                 lane_for=lambda method, path: "probes" if path == "/health" else None) as server:
        busy = connect(server)
        busy.send(get("/block"))
        assert blocked.acquire(timeout=READ_TIMEOUT)   # the only default worker is taken
        served_within(server, connect, 0.5, path="/health")
        release.set()
        assert busy.response()[0] == 200


def test_a_full_lane_answers_503_with_retry_after_at_once(connect):
    release, blocked = threading.Event(), threading.Semaphore(0)
    lanes = [httpserver.Lane("passwords", threads=1, max_waiting=1)]
    lane_for = lambda method, path: "passwords" if path.startswith("/block") else None  # noqa: E731
    with running(blocking_app(release, blocked), max_workers=1, lanes=lanes, lane_for=lane_for) as server:
        running_now, waiting = connect(server), connect(server)
        running_now.send(get("/block/1"))
        assert blocked.acquire(timeout=READ_TIMEOUT)   # the lane's thread is taken ...
        waiting.send(get("/block/2"))                  # ... its one waiting place too
        time.sleep(0.1)
        refused = connect(server)
        started = time.monotonic()
        refused.send(get("/block/3"))
        status, headers, body = refused.response()
        assert time.monotonic() - started < 0.5
        assert (status, headers["retry-after"], headers["connection"]) == (503, "1", "close")
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(body)["detail"] == "the server is busy; try again shortly"
        served_within(server, connect, 0.5)   # the default lane is not affected
        release.set()
        assert running_now.response()[0] == 200 and waiting.response()[0] == 200


# -- what can never be HTTP/1.1 is refused at once -----------------------------------------------

@pytest.mark.parametrize("raw", [
    b"GET /\r\n",                                   # HTTP/0.9: no version, no head to follow
    bytes.fromhex("16030100f8010000f40303") + b"\x00" * 32,   # a TLS ClientHello's start
])
def test_http_09_and_tls_are_a_400_at_once_not_a_408_later(connect, raw):
    with running(validator(echo_app)) as server:   # the default 10 s head timeout
        client = connect(server)
        started = time.monotonic()
        client.send(raw)
        status, headers, body = client.response()
        assert (status, json.loads(body)["detail"]) == (400, "malformed request line")
        assert headers["x-content-type-options"] == "nosniff"
        assert client.is_closed()
        assert time.monotonic() - started < httpserver.HEADER_TIMEOUT_SECONDS / 3


def test_each_piece_of_an_event_stream_goes_out_before_the_next_is_made(connect):
    """A piece bigger than the kernel's buffers, then a wait for the next one (a live event
    stream between events): the client must get the whole first piece during the wait, not
    when the next piece comes (PEP 3333; httpworkers._Response.send)."""
    next_piece = threading.Event()

    def event_stream_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        yield BIG_BODY
        next_piece.wait(10)
        yield b"last"

    with running(validator(event_stream_app), max_workers=1, send_buffer_bytes=BUFFER_BYTES) as server:
        client = connect(server)
        client.send(get("/events"))
        status_line = client.file.readline()
        while client.file.readline() != b"\r\n":  # the head
            pass
        size = int(client.file.readline(), 16)
        first = client.file.read(size)  # READ_TIMEOUT: fails if the rest waits for the next piece
        next_piece.set()
        assert status_line.startswith(b"HTTP/1.1 200") and first == BIG_BODY
