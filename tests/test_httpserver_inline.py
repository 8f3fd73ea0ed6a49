"""Tests for the requests the event loop runs itself (httpthreads.py): the watchdog that
moves the loop when one runs long, and the answers held for the end of the loop's turn.

Same rules as test_httpserver.py, whose server and client these tests use: raw bytes on a
real socket, bounds at least 3x what they guard, and ordering from events, not sleeps.
"""
import json
import os
import select
import socket
import threading
import time
from wsgiref.validate import validator

import pytest
from test_http11 import get
from test_httpserver import (
    LOOP_THREAD,
    READ_TIMEOUT,
    SERVE_THREAD,
    echo_app,
    inline_everything,
    running,
    server_threads,
    thread_naming_app,
    wait_until_readable,
)

import httpserver
import httpthreads
import httpworkers


def test_an_inline_request_runs_on_the_loops_thread_and_others_on_workers(connect):
    inline_gets = lambda method, lane: method == "GET"  # noqa: E731
    with running(thread_naming_app(threading.Event(), threading.Event()), inline_for=inline_gets) as server:
        client = connect(server)
        client.send(get("/a") + b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert client.response()[::2] == (200, LOOP_THREAD.encode())
        status, _, thread_name = client.response()
        assert status == 200 and thread_name.startswith(b"http-default-")


def answered_by(client, path):
    client.send(get(path))
    status, _, thread_name = client.response()
    assert status == 200
    return thread_name.decode()


def test_a_long_inline_request_moves_the_loop_to_the_standby_thread(connect, caplog):
    blocking, release = threading.Event(), threading.Event()
    threads_before = set(threading.enumerate())
    moves = []
    with running(thread_naming_app(blocking, release), max_workers=1, inline_for=inline_everything,
                 on_loop_moved=lambda: moves.append(threading.current_thread().name)) as server:
        blocked, other = connect(server), connect(server)
        assert answered_by(other, "/first") == "http-loop-0"
        # No worker yet: a lane's threads start when a request needs one.
        assert server_threads(threads_before) == ["http-loop-0", "http-loop-1", "http-watchdog", SERVE_THREAD]
        blocked.send(get("/block"))
        assert blocking.wait(READ_TIMEOUT)
        # The loop's thread is stuck in /block; the watchdog gives the loop to the standby,
        # which serves the other client meanwhile, on a worker: no request runs inline while
        # one that ran long is still running.
        started = time.monotonic()
        assert answered_by(other, "/other") == "http-default-0"
        assert time.monotonic() - started < READ_TIMEOUT / 3
        assert "the event loop moved to its standby thread 1 time(s) since the last report" in caplog.text
        assert moves == ["http-watchdog"]  # the hook of http_loop_moves_total (server.py)
        release.set()
        assert blocked.response()[::2] == (200, b"http-loop-0")
        # Once it is over, requests run inline again, on the loop's new thread (the first
        # answer may still come from a worker: the moved request is over a moment after its
        # answer left). No thread was added: http-loop-0 stands by now.
        deadline = time.monotonic() + READ_TIMEOUT
        while answered_by(other, "/again") != "http-loop-1":
            assert time.monotonic() < deadline, "requests never ran inline again"
        assert answered_by(blocked, "/again") == "http-loop-1"
        assert server_threads(threads_before) == ["http-default-0", "http-loop-0", "http-loop-1", "http-watchdog",
                                                  SERVE_THREAD]


def test_the_loop_moves_back_and_forth_between_two_threads(connect, monkeypatch, caplog):
    """Each move hands the loop to the thread that stands by: never a new thread (each would
    open a database connection of its own, for example), however often requests run long."""
    monkeypatch.setattr(httpthreads, "INLINE_BUDGET_SECONDS", 0.001)
    slow_app_threads = []

    def slow_app(environ, start_response):
        slow_app_threads.append(threading.current_thread().name)
        time.sleep(0.03)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slow"]

    threads_before = set(threading.enumerate())
    with running(slow_app, inline_for=inline_everything) as server:
        client = connect(server)
        for _ in range(12):
            client.send(get("/slow"))
            assert client.response()[::2] == (200, b"slow")
        assert {"http-loop-0", "http-loop-1"} <= set(slow_app_threads)
        # One warning for the first move; the others, within MOVES_REPORT_SECONDS, are counted
        # for the next one rather than each filling a line of the log.
        assert caplog.text.count("the event loop moved to its standby thread") == 1
        assert [name for name in server_threads(threads_before) if name.startswith("http-loop")] == \
            ["http-loop-0", "http-loop-1"]


def test_without_the_watchdog_a_long_inline_request_would_stall_every_client(connect, monkeypatch):
    """The check that the test above can fail: with a budget of an hour, the loop stays stuck."""
    monkeypatch.setattr(httpthreads, "INLINE_BUDGET_SECONDS", 3600.0)
    blocking, release = threading.Event(), threading.Event()
    with running(thread_naming_app(blocking, release), inline_for=inline_everything) as server:
        blocked, other = connect(server), connect(server)
        blocked.send(get("/block"))
        assert blocking.wait(READ_TIMEOUT)
        other.send(get("/other"))
        assert not wait_until_readable(other, within=0.5)
        release.set()
        assert other.response()[::2] == (200, LOOP_THREAD.encode())


def sleeps_and_wakes(thread):
    """How often the thread has waited and been woken so far: its voluntary context switches (Linux)."""
    with open(f"/proc/self/task/{thread.native_id}/status") as status:
        return int(next(line for line in status if line.startswith("voluntary_ctxt_switches")).split()[1])


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts a thread's wake-ups in /proc (Linux only)")
def test_the_watchdog_sleeps_while_no_request_runs_inline_and_the_next_one_wakes_it(connect, monkeypatch):
    monkeypatch.setattr(httpthreads, "WATCHDOG_IDLE_SECONDS", 0.05)
    blocking, release = threading.Event(), threading.Event()
    threads_before = set(threading.enumerate())
    with running(thread_naming_app(blocking, release), inline_for=inline_everything) as server:
        watchdog = next(thread for thread in set(threading.enumerate()) - threads_before
                        if thread.name == "http-watchdog")
        client = connect(server)
        assert answered_by(client, "/first") == "http-loop-0"
        deadline = time.monotonic() + READ_TIMEOUT
        while not server._watchdog_asleep:  # 0.05 s after that request, or a little more
            assert time.monotonic() < deadline, "the watchdog never fell asleep"
            time.sleep(0.01)
        woken = sleeps_and_wakes(watchdog)
        time.sleep(0.5)  # awake, it would look 100 times meanwhile (every INLINE_CHECK_SECONDS)
        assert sleeps_and_wakes(watchdog) - woken < 10
        # A request that runs long after the quiet spell woke it: it still loses the loop.
        blocked = connect(server)
        blocked.send(get("/block"))
        assert blocking.wait(READ_TIMEOUT)
        assert answered_by(client, "/other") == "http-default-0"
        release.set()
        assert blocked.response()[::2] == (200, b"http-loop-0")
        while not server._watchdog_asleep:  # asleep again, so that the stop must wake it
            assert time.monotonic() < deadline + READ_TIMEOUT, "the watchdog never fell asleep again"
            time.sleep(0.01)
    watchdog.join(READ_TIMEOUT)
    assert not watchdog.is_alive(), "the watchdog did not stop with the server"


def test_a_failure_of_the_event_loop_stops_the_server_and_every_loop_thread(caplog):
    """A bug in the loop itself (here in a turn, and then in the drain too) ends serve_forever
    with its error, and no loop thread is left waiting: each would keep the process alive."""
    server = httpserver.HTTPServer(echo_app, port=0, inline_for=inline_everything)

    def broken(*args):
        raise RuntimeError("a bug in the event loop")

    server._turn, server._drain = broken, broken
    with pytest.raises(RuntimeError, match="a bug in the event loop"):
        server.serve_forever()
    for thread in server.loop_threads:
        thread.join(READ_TIMEOUT)
        assert not thread.is_alive(), f"{thread.name} is still waiting"
    assert "the event loop failed" in caplog.text
    server._listener.close()  # what the broken drain left open
    server._selector.close()
    os.close(server._wake_read)
    os.close(server._wake_write)


def test_pipelined_inline_requests_leave_other_clients_their_turn(connect):
    """A client that pipelines many requests gets one of them answered per turn of the loop,
    in between everyone else's: not all of them before anyone else is heard."""
    with running(validator(echo_app), inline_for=inline_everything) as server:
        greedy, other = connect(server), connect(server)
        greedy.send(get("/greedy") * 2000)
        assert greedy.response()[0] == 200  # the greedy client's requests are being answered
        started = time.monotonic()
        other.send(get("/other"))
        status, _, body = other.response()
        assert status == 200 and json.loads(body)["path"] == "/other"
        assert time.monotonic() - started < 0.1  # 2000 echo requests take about half a second
        for _ in range(1999):
            assert greedy.response()[0] == 200


def test_shutdown_after_the_loop_moved_drains_and_returns(connect):
    blocking, release = threading.Event(), threading.Event()
    server = httpserver.HTTPServer(thread_naming_app(blocking, release), port=0, inline_for=inline_everything)
    loop = threading.Thread(target=server.serve_forever, name=SERVE_THREAD)
    loop.start()
    blocked, idle = connect(server), connect(server)
    idle.send(get("/idle"))
    assert idle.response()[0] == 200
    blocked.send(get("/block"))
    assert blocking.wait(READ_TIMEOUT)
    while server._moved == 0:
        time.sleep(0.01)  # the watchdog moves the loop within INLINE_CHECK_SECONDS or so
    server.request_shutdown()
    assert idle.is_closed()  # the new loop thread closes idle connections at once
    release.set()
    status, headers, _ = blocked.response()
    assert status == 200 and headers["connection"] == "close"
    loop.join(READ_TIMEOUT)
    assert not loop.is_alive(), "serve_forever() did not return"
    assert server.drained


def test_an_inline_request_moved_during_shutdown_is_still_drained_within_the_deadline(connect):
    """Shutdown stops inline requests, and one that runs long meanwhile moves the loop, which
    drains: serve_forever() returns, and its thread never runs app code."""
    blocking, release = threading.Event(), threading.Event()
    with running(thread_naming_app(blocking, release), inline_for=inline_everything) as server:
        blocked = connect(server)
        blocked.send(get("/block"))
        assert blocking.wait(READ_TIMEOUT)
        server.request_shutdown()
        late = connect(server)  # accepted before shutdown was noticed or refused: either way no hang
        release.set()
        status, headers, body = blocked.response()
        assert (status, headers["connection"], body) == (200, "close", b"http-loop-0")
        late.close()
    assert server.drained


# ---- answers held for the end of the turn -----------------------------------------------------

LOOK_SECONDS = 0.3  # how long a request waits to see the first request's answer arrive


@pytest.mark.parametrize("hold_bytes, hold_seconds, seen", [
    (httpworkers.HOLD_BYTES, httpthreads.HOLD_SECONDS, [False, True]),
    (httpworkers.HOLD_BYTES, 3600.0, [False, False]),
    (0, httpthreads.HOLD_SECONDS, [True, True]),
], ids=["held-until-it-waited-hold-seconds", "without-the-bound-held-all-turn", "nothing-held"])
def test_answers_wait_for_the_end_of_the_turn_but_never_behind_more_than_one_request(
        connect, monkeypatch, hold_bytes, hold_seconds, seen):
    """Three requests come in one turn of the loop. The first one's answer is held while the
    second runs; the second takes LOOK_SECONDS, far over HOLD_SECONDS, so the answer goes out
    before the third runs, not at the end of the turn. Each later request looks, while it
    runs, whether the first client has its answer yet. The two other cases show the test
    can fail: without the bound (HOLD_SECONDS of an hour), and with nothing held at all."""
    monkeypatch.setattr(httpthreads, "INLINE_BUDGET_SECONDS", 3600.0)  # no move: one loop thread, one turn
    monkeypatch.setattr(httpworkers, "HOLD_BYTES", hold_bytes)
    monkeypatch.setattr(httpthreads, "HOLD_SECONDS", hold_seconds)
    blocking, release, looked = threading.Event(), threading.Event(), threading.Event()
    clients, ran, looks = {}, [], []

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/block":  # holds the loop until the three requests wait in the kernel
            blocking.set()
            release.wait(READ_TIMEOUT)
        else:
            ran.append(path)
            if len(ran) > 1:
                looks.append(bool(select.select([clients[ran[0]].sock], [], [], LOOK_SECONDS)[0]))
            if len(ran) == 3:
                looked.set()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [path.encode()]

    with running(app, inline_for=inline_everything) as server:
        blocker = connect(server)
        blocker.send(get("/block"))
        assert blocking.wait(READ_TIMEOUT)
        for path in ("/a", "/b", "/c"):
            clients[path] = connect(server)
            clients[path].send(get(path))
        release.set()
        assert looked.wait(READ_TIMEOUT)  # no answer is read before the last look
        for path, client in [("/block", blocker), *clients.items()]:
            assert client.response()[::2] == (200, path.encode())
    assert len(ran) == 3 and looks == seen


def test_a_held_answer_the_client_cannot_take_at_once_goes_out_as_it_reads(connect):
    """An answer held for the end of the turn, bigger than the client's receive window: what
    the kernel does not take at once, the loop sends as the client reads, all of it."""
    body = b"y" * (httpworkers.HOLD_BYTES - 200)  # held (with its head, under HOLD_BYTES)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    with running(app, inline_for=inline_everything, send_buffer_bytes=4096) as server:
        client = connect(server)
        for _ in range(3):  # and the connection serves the next request, as usual
            client.send(get("/big"))
            assert client.response()[::2] == (200, body)


def wait_for_open_connections(server, count):
    deadline = time.monotonic() + READ_TIMEOUT
    while server._open != count:
        assert time.monotonic() < deadline, f"{server._open} connections open, not {count}"
        time.sleep(0.01)


def test_pipelined_requests_then_a_half_close_get_every_answer(connect):
    """The last answer of a pipelined batch is held, and the client's end-of-file is read in
    the next turn: the answer must be out before, and the connection closed once, not twice."""
    with running(validator(echo_app), inline_for=inline_everything) as server:
        client = connect(server)
        client.send(get("/a") + get("/b"))
        client.sock.shutdown(socket.SHUT_WR)
        for path in ("/a", "/b"):
            status, _, body = client.response()
            assert status == 200 and json.loads(body)["path"] == path
        assert client.is_closed()
        wait_for_open_connections(server, 0)


@pytest.mark.parametrize("size", [2, 200_000], ids=["small", "more-than-the-client-takes-at-once"])
def test_a_held_answer_keeps_its_place_before_a_refusal_of_the_next_request(connect, monkeypatch, size):
    """Two pipelined requests, then a broken one while the first runs. The second one's
    answer is held; the 400 of the broken one must come after it, never before, even when
    the held answer does not fit the client's window and the loop sends it bit by bit."""
    monkeypatch.setattr(httpthreads, "INLINE_BUDGET_SECONDS", 3600.0)
    first_runs, broken_sent = threading.Event(), threading.Event()
    body = b"z" * size

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/first":
            first_runs.set()
            broken_sent.wait(READ_TIMEOUT)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    with running(app, inline_for=inline_everything, send_buffer_bytes=4096) as server:
        client = connect(server, receive_buffer=4096)
        client.send(get("/first") + get("/second"))
        assert first_runs.wait(READ_TIMEOUT)
        client.send(b"BOGUS\r\n\r\n")
        broken_sent.set()
        assert client.response()[::2] == (200, body)
        assert client.response()[::2] == (200, body)
        assert client.response()[0] == 400
        assert server._failure is None


@pytest.mark.parametrize("shutdown", [False, True], ids=["the-new-loop-thread-sends-it", "shutdown-sends-it"])
def test_an_answer_held_when_the_loop_moves_still_goes_out(connect, monkeypatch, shutdown):
    """/a's answer is held when /b, in the same turn, runs long and the loop moves: the loop
    thread that takes over sends it, at once, or, when the server is stopping, before it
    closes the idle connections."""
    monkeypatch.setattr(httpthreads, "INLINE_BUDGET_SECONDS", 3600.0)  # no move until the test says
    gate_runs, open_gate, b_runs, release_b = (threading.Event() for _ in range(4))
    ran = []

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        ran.append(path)
        if path == "/gate":  # holds the loop until /a and /b wait in the kernel
            gate_runs.set()
            open_gate.wait(READ_TIMEOUT)
        elif path == "/b":
            b_runs.set()
            release_b.wait(READ_TIMEOUT)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [path.encode()]

    with running(app, inline_for=inline_everything) as server:
        gate, a, b = connect(server), connect(server), connect(server)
        gate.send(get("/gate"))
        assert gate_runs.wait(READ_TIMEOUT)
        a.send(get("/a"))
        b.send(get("/b"))
        open_gate.set()
        assert b_runs.wait(READ_TIMEOUT)
        assert ran == ["/gate", "/a", "/b"]  # /a ran before /b, in the same turn: its answer is held
        if shutdown:
            server.request_shutdown()
        monkeypatch.setattr(httpthreads, "INLINE_BUDGET_SECONDS", 0.01)  # now /b loses the loop
        assert a.response()[::2] == (200, b"/a")  # while /b still runs
        release_b.set()
        assert b.response()[::2] == (200, b"/b")
