"""Who runs each request: a worker thread of its lane, or the event loop's own thread.

httpserver.py reads each request whole, in its event loop, then hands it over here. By
default a request goes to a *worker*: one of a few threads of its lane, which runs the app
(httpworkers.respond) and gives the connection back to the loop.

Inline requests
---------------
Handing a request to a worker costs more than a cheap request itself: the worker must be
woken, and the GIL passed from thread to thread and back, each time a thread waits for the
kernel (a few dozen futex calls a request; docs/performance.md has the figures). When
every request is CPU work in this process anyway (SQLite, no Redis), those switches buy
nothing, and ``inline_for(method, lane)`` lets the loop's own thread run the request, as
an asyncio server does, and go straight on with the next. But a thread that runs a request
is not watching the network: if one request takes long (a disk that stalls, a lock held by
another process), every other client would wait for it. So a *watchdog* thread looks every
INLINE_CHECK_SECONDS, and when one inline request has run for INLINE_BUDGET_SECONDS it
gives the loop to a second loop thread that stands by for this; the first finishes its
request as a worker would, then stands by in turn. Until that request is over, every
request goes to the workers, so two loop threads are always enough. (Go's scheduler does
the same when a goroutine blocks in a system call: its "sysmon" hands the processor to
another thread.)

With the shop on SQLite: 5,000 GET /health on 32 connections cost 91 µs of CPU each through
workers, with 37 futex calls a request (strace -c), and 72 µs inline, with none (the
figures for the other endpoints are in docs/performance.md).

Responses held for the end of the turn
--------------------------------------
An inline request's response is not sent the moment it is ready. It waits in its
connection's outbox (httpworkers.Connection.hold) while the loop runs the other requests
that came in the same turn, and then they all go out together (_send_held). Sending is
the costly half of a cheap request: each send() runs the kernel's TCP path and wakes the
client up, and a send between two requests leaves the next one to run on caches the
kernel has just filled with its own work. Back to back, the requests run warm, the sends
run warm, and a client woken by the first answer is often still awake for the next ones.
With 32 clients asking for one cached item, a request cost 49 µs of CPU with each answer
sent at once, and 43.5 µs held (docs/performance.md, "Answers held for the end of the turn").

The wait is bounded. Before each costly piece of work of its turn (a request, a step of a
TLS handshake, a batch of new connections), the loop sends what it holds if the first of
those answers has waited HOLD_SECONDS: an answer is late by that at most, plus one such
piece of work (a request's run is cut short by the watchdog after INLINE_BUDGET_SECONDS,
and a moved loop's new thread sends the held answers first thing, INLINE_CHECK_SECONDS and
a switch of threads later). A lone request's answer goes out as soon as it is ready: its
turn ends with it. An answer whose pipelined next request is already read is not held: it
goes out before that one runs, as before.

A held connection waits in the selector for its next request, its answer still in its
outbox, so nothing may read from it, refuse it or close it before that answer is out. The
loop sends the held answers at the end of every turn, after the connections given back
(whose pipelined requests may add to them), before it looks at the network again; at the
start of a turn, for a loop thread that takes over from one that lost the loop mid-turn;
and before a shutdown closes the idle connections.

``RequestThreads`` is this half of ``httpserver.HTTPServer``, which inherits it (a mixin, as
``socketserver.ThreadingMixIn`` is the half of a socketserver that starts threads). It
works on the server's books, kept by httpserver.py: ``_lock`` guards ``_waiting`` (the
connections in the selector), ``_busy`` (requests a thread runs), ``_inline``, ``_moved``
and ``_watchdog_asleep``; ``_held`` lists the connections whose answers wait for the end
of the turn (only the thread that has the loop touches it, or them); ``_returned`` takes
connections back to the loop, and
``_handover`` hands the loop to the standby loop thread (each of serve_forever's loop
threads runs _loop_thread).
"""
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable

import httpsockets
import httpworkers
from httpworkers import READING, ClientGone

INLINE_BUDGET_SECONDS = 0.01           # an inline request running longer loses the loop ...
INLINE_CHECK_SECONDS = 0.005           # ... as the watchdog, looking this often, finds
WATCHDOG_IDLE_SECONDS = 1.0            # after this long without an inline request, it sleeps until the next
MOVES_REPORT_SECONDS = 10.0            # at most one warning this often, counting the moves since
HOLD_SECONDS = 0.001                   # a response held this long goes out before the loop does more work

_log = logging.getLogger("httpserver")


class LoopMoved(Exception):
    """Raised in the thread that lost the event loop to the watchdog, to leave the loop."""


class RequestThreads:
    """Run requests: inline on the loop's thread, with the watchdog, or on lanes of workers."""

    # The server's books this half works on, set by httpserver.HTTPServer.__init__ ...
    app: Callable
    on_loop_moved: Callable[[], None] | None
    keepalive_timeout: float
    _lock: threading.Condition
    _selector: selectors.BaseSelector
    _waiting: dict[socket.socket, httpworkers.Connection]
    _workers: list[threading.Thread]
    _busy: int
    _moved: int
    _inline: httpworkers.Connection | None
    _inline_since: float
    _watchdog_asleep: bool
    _watchdog_wake: threading.Event
    _held: list[httpworkers.Connection]
    _held_since: float
    _returned: queue.SimpleQueue
    _handover: queue.SimpleQueue
    _stopped: threading.Event
    _shutdown_requested: bool
    _draining: bool
    # ... and what the loop does for it.
    _failure: BaseException | None
    _run_loop: Callable[[], bool]
    _unwatch: Callable[[httpworkers.Connection], None]
    _close: Callable[[socket.socket], None]
    _start_sending: Callable[[httpworkers.Connection], None]
    _wake: Callable[[], None]

    def _loop_thread(self, has_loop) -> None:
        """A thread of serve_forever's: run the event loop now (has_loop) or when the
        watchdog hands it over, until the server has stopped."""
        try:
            while has_loop or self._handover.get():
                has_loop = False
                if self._run_loop():
                    return
        except BaseException as error:  # the server cannot go on without its loop: stop it
            _log.exception("the event loop failed")
            self._failure = error
            self._stopped.set()
            self._watchdog_wake.set()
            self._handover.put(False)  # the standby loop thread stops too (_drain, which tells it, may have failed)

    def _serve_inline(self, conn, head, body) -> None:
        """Run a request on the loop's thread; its connection stays in the selector meanwhile
        (nothing else reads from it: its client waits for the answer, or pipelines into the
        kernel's buffer). Raises LoopMoved if the watchdog gave the loop away meanwhile."""
        self._send_held_if_late()  # not to wait for this request too
        with self._lock:
            self._inline, self._inline_since = conn, time.monotonic()
            if self._watchdog_asleep:  # the first inline request after a quiet spell: wake it
                self._watchdog_asleep = False
                self._watchdog_wake.set()
        conn.hold = not conn.buffer  # a pipelined request waits: its answer goes now
        try:
            keep, gone = self._run(conn, head, body)
        finally:
            conn.hold = False
            with self._lock:
                moved = self._inline is not conn
                self._inline = None
                if moved:
                    self._moved -= 1
        if moved:  # the watchdog made this a worker's request: finish it as one, then leave
            self._finish(conn, keep, gone)
            raise LoopMoved
        if not gone and keep and not conn.buffer and not self._shutdown_requested:
            conn.state, conn.started = READING, False  # the usual case: wait for the next request ...
            now = time.monotonic()
            conn.deadline = now + self.keepalive_timeout
            if conn.outbox:  # ... once the answer, held, has gone out with the turn's others
                if not self._held:
                    self._held_since = now
                self._held.append(conn)
            return
        self._unwatch(conn)
        if gone:
            self._close(conn.sock)
            return
        conn.then_close = not keep  # an outbox to send, pipelined bytes, or a goodbye
        self._returned.put(conn)    # ... taken back at the end of this turn

    def _send_held_if_late(self) -> None:
        """Send the held answers now if the first of them has waited HOLD_SECONDS. Asked
        before each costly piece of work of a turn: a request (_serve_inline), a step of a
        TLS handshake, a batch of new connections."""
        if self._held and time.monotonic() - self._held_since >= HOLD_SECONDS:
            self._send_held()

    def _send_held(self) -> None:
        """Send the answers held for the end of the turn. What a client does not take at once
        (its window is full), the loop sends as the client reads, like any outbox."""
        held, self._held = self._held, []
        for conn in held:
            try:
                sent = httpsockets.send_some(conn.sock, conn.outbox)
            except OSError:  # the client has gone
                self._unwatch(conn)
                self._close(conn.sock)
                continue
            del conn.outbox[:sent]
            if conn.outbox:
                self._unwatch(conn)
                self._start_sending(conn)

    def _watch_inline(self) -> None:
        """The watchdog: give the loop to the standby thread when an inline request runs too long.
        (When the loop's thread holds the GIL, this one gets it within sys.getswitchinterval().)
        Each move means other clients waited: an operator hears of them in a warning, at most
        one every MOVES_REPORT_SECONDS, however many there were. After WATCHDOG_IDLE_SECONDS
        without an inline request it sleeps, rather than wake 200 times a second for nothing,
        until the next one wakes it (_serve_inline), or the server stops."""
        moves, report_at = 0, 0.0
        while not self._stopped.is_set():
            if self._watchdog_asleep:
                self._watchdog_wake.wait()
                continue
            if self._stopped.wait(INLINE_CHECK_SECONDS):
                return
            with self._lock:
                conn = self._inline
                if conn is None:
                    if time.monotonic() - self._inline_since >= WATCHDOG_IDLE_SECONDS:
                        self._watchdog_asleep = True  # in the lock: the next inline request sees it
                        self._watchdog_wake.clear()
                    continue
                if time.monotonic() - self._inline_since < INLINE_BUDGET_SECONDS:
                    continue
                # The request becomes a worker's, as if handed to a lane: it is counted as
                # busy, its connection leaves the selector, and no request runs inline until it is over.
                self._inline, self._moved, self._busy = None, self._moved + 1, self._busy + 1
                del self._waiting[conn.sock]
                self._selector.unregister(conn.sock)
            self._handover.put(True)
            if self.on_loop_moved is not None:
                try:
                    self.on_loop_moved()
                except Exception:  # a broken hook must not stop the watchdog
                    _log.exception("on_loop_moved failed")
            moves += 1
            if (now := time.monotonic()) >= report_at:
                _log.warning("the event loop moved to its standby thread %d time(s) since the last report: a request"
                             " ran for over %s s on the loop's thread (a slow disk, a lock, a client that reads"
                             " slowly)", moves, INLINE_BUDGET_SECONDS)
                moves, report_at = 0, now + MOVES_REPORT_SECONDS

    # ---- workers: run requests, one at a time ------------------------------------------------

    def _grow(self, lane, name) -> None:
        """Start one more thread for `lane` when a request waits that no idle thread will take,
        up to the lane's count: its threads come as they are needed, then stay."""
        with self._lock:
            if lane.waiting <= lane.idle or lane.started >= lane.lane.threads:
                return
            lane.started += 1
            worker = threading.Thread(target=self._work, args=(lane,), name=f"http-{name}-{lane.started - 1}")
            self._workers.append(worker)
        try:
            worker.start()
        except RuntimeError:  # no thread to be had (a system limit): the loop's sweep tries again
            _log.exception("could not start a worker thread for the %s lane", name)
            with self._lock:
                lane.started -= 1
                self._workers.remove(worker)

    def _work(self, lane) -> None:
        with self._lock:
            lane.idle += 1
        while (job := lane.queue.get()) is not None:
            conn, head, body = job
            with self._lock:
                lane.waiting -= 1
                lane.idle -= 1
            self._serve(conn, head, body)
            with self._lock:
                lane.idle += 1

    def _serve(self, conn, head, body) -> None:
        """Run one request; then give the connection back to the event loop (or close it)."""
        keep, gone = self._run(conn, head, body)
        self._finish(conn, keep, gone)

    def _run(self, conn, head, body) -> tuple[bool, bool]:
        """Run the app for one request: (keep the connection?, is the client gone?)."""
        try:
            return httpworkers.respond(self.app, conn, head, body, shutting_down=self._stopping), False
        except ClientGone:
            return False, True  # the client went away: not news
        except Exception:
            _log.exception("unexpected error on a connection from %s", conn.environ["REMOTE_ADDR"])
            return False, True

    def _stopping(self) -> bool:
        return self._shutdown_requested

    def _finish(self, conn, keep, gone) -> None:
        """A worker's request is over: the connection goes back to the event loop (or is closed)."""
        with self._lock:
            self._busy -= 1
            self._lock.notify_all()
            if gone or self._draining:
                self._close(conn.sock)
                return
            if keep and not conn.outbox and not conn.buffer and not self._shutdown_requested:
                # The usual case: straight back into the selector to wait for the next request.
                # Registering from this thread is safe: epoll/kqueue take changes while the
                # loop waits in select(), and the lock keeps us clear of _drain().
                conn.state, conn.started = READING, False
                conn.deadline = time.monotonic() + self.keepalive_timeout
                self._waiting[conn.sock] = conn
                self._selector.register(conn.sock, selectors.EVENT_READ, conn)
                return
            # Anything else is the loop's: an outbox to send, pipelined bytes, or a goodbye.
            # Put in the lock, so that _drain() never sees this connection nowhere.
            conn.then_close = not keep
            self._returned.put(conn)
        self._wake()
