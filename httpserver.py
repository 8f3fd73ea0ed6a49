"""A small, strict HTTP/1.1 server for any WSGI application (PEP 3333): sockets and threads.

http11.py parses requests and http11_responses.py frames responses; httpworkers.py runs the
app for one request, and httpthreads.py decides which thread does. This module does the
I/O around them: the event loop, keep-alive, timeouts and shutdown.

Concurrency
-----------
Two kinds of thread. The *event loop* (a thread ``serve_forever`` starts) watches every
connection that waits for the network with one selector (epoll, kqueue): it accepts
clients, reads each request, head *and body*, as its bytes come, and hands a worker only a
complete request. The loop also sends what a worker could not send at once (the outbox, see
httpworkers.py) and says goodbye to closing connections. So a worker never waits for a
client: a slow or stalled sender, or a slow reader, costs a selector entry here, never a
thread. A request whose head or body arrives too slowly gets a 408:

- a head must arrive whole within HEADER_TIMEOUT_SECONDS of its first byte;
- a body must keep up a minimum rate: BODY_GRACE_SECONDS, plus one second for every
  MIN_BYTES_PER_SECOND received, and never more than BODY_TIMEOUT_SECONDS in all. A client
  that trickles a byte a second is cut off after the grace; a 1 MiB upload at 40 KB/s is fine.
  Responses the loop sends are held to the same rule (then the connection is just closed).

*Workers* run the app: a few threads, started as needed and kept, in *lanes*, each with its
own threads and bounded queue (httpworkers.py tells why so few, and why lanes); ``lane_for(method,
path)`` names the lane of each request. A request whose lane queue is full is refused at
once: 503 with Retry-After, rather than a wait without bound. Or, with ``inline_for``, the
loop's own thread runs cheap requests itself, and a watchdog moves the loop to a standby
thread when one runs long (httpthreads.py, "Inline requests").

With a TLS context the server speaks HTTPS: the loop drives each handshake too, before the
first request, under the same head deadline (httpsockets.py).

Shutdown
--------
``request_shutdown()`` sets a flag and writes one byte to a pipe the loop watches. The loop
closes the listener and every connection that waits for a request, then goes on with the
requests in flight (a body still arriving, a worker running the app, a response still
being sent) until all are done, at most SHUTDOWN_DEADLINE_SECONDS; their responses say
``Connection: close``.
"""
import logging
import os
import queue
import selectors
import ssl
import sys
import threading
import time

import http11
import http11_responses
import httpsockets
import httpworkers
from httpthreads import LoopMoved, RequestThreads
from httpworkers import CLOSING, HANDSHAKING, READING, SENDING, Lane, LaneQueue

HEADER_TIMEOUT_SECONDS = 10.0          # whole request head must arrive within this -> 408
BODY_GRACE_SECONDS = 5.0               # a body (or a response) may start this slowly ...
MIN_BYTES_PER_SECOND = 1024            # ... then must move at least this fast on average ...
BODY_TIMEOUT_SECONDS = 30.0            # ... and be done within this -> 408
KEEPALIVE_TIMEOUT_SECONDS = 5.0        # idle keep-alive connection closed silently after this
SHUTDOWN_DEADLINE_SECONDS = 30.0       # in-flight requests get this long after request_shutdown()
DEFAULT_MAX_WORKERS = 16               # threads of the default lane (see "Concurrency" above)
DEFAULT_MAX_CONNECTIONS = 1000         # open client connections; more wait in the backlog
LINGER_SECONDS = 2.0                   # drain the client's leftovers this long before close()
SWEEP_SECONDS = 0.1                    # how often the event loop looks for expired deadlines
ACCEPTS_PER_WAKE = 64                  # new connections taken per loop turn, before reading others
ACCEPT_PAUSE_SECONDS = 0.1             # no accept() this long after one failed (no descriptors)
LANE_FULL_RETRY_AFTER_SECONDS = 1      # what a 503 for a full lane tells the client
DEFAULT_LANE = "default"


_log = logging.getLogger("httpserver")


class HTTPServer(RequestThreads):
    """Serve one WSGI app over HTTP/1.1 on (host, port) with bounded lanes of worker threads.

    The socket is bound and listening when the constructor returns (port=0 picks a free port;
    read ``server_address``). ``serve_forever()`` blocks until ``request_shutdown()``; then
    ``drained`` tells whether every request in flight finished before the deadline.

    Every request runs on the default lane of max_workers threads, unless ``lane_for(method,
    path)`` names one of ``lanes``. A request this server refuses itself (400, 408, 413, 414,
    431, 501, 503, 505) never reaches the app, so its access log cannot see it:
    ``on_reject(status=, detail=, client=, request_id=)`` is called for each one instead,
    with the request id sent in the response's X-Request-ID. send_buffer_bytes: the kernel's
    send buffer of each connection (SO_SNDBUF), if it should not grow as the kernel likes.
    tls_context (httpsockets.server_context): serve HTTPS; each handshake is driven by the event
    loop, within the head's timeout, and the app sees wsgi.url_scheme "https".
    inline_for(method, lane): True for a request the loop's own thread may run (httpthreads.py,
    "Inline requests"); by default every request goes to a worker. on_loop_moved(), if given,
    is called each time one of them runs long and the watchdog moves the loop (a metric).
    """

    def __init__(self, app, host="127.0.0.1", port=8000, *, max_workers=DEFAULT_MAX_WORKERS,
                 max_connections=DEFAULT_MAX_CONNECTIONS, lanes=(), lane_for=None,
                 header_timeout=HEADER_TIMEOUT_SECONDS, body_timeout=BODY_TIMEOUT_SECONDS,
                 keepalive_timeout=KEEPALIVE_TIMEOUT_SECONDS, max_body_bytes=http11.MAX_BODY_BYTES,
                 send_buffer_bytes=None, on_reject=None, tls_context=None, inline_for=None, on_loop_moved=None):
        self.app, self.on_reject, self.on_loop_moved = app, on_reject, on_loop_moved
        self.max_connections = max_connections
        self.send_buffer_bytes, self.tls_context = send_buffer_bytes, tls_context
        self.header_timeout, self.body_timeout = header_timeout, body_timeout
        self.keepalive_timeout = keepalive_timeout
        self.drained = False
        self.limits = http11.Limits(body_bytes=max_body_bytes)
        self._listener = httpsockets.listen(host, port)
        self.server_address = self._listener.getsockname()[:2]
        # request_shutdown() may run inside a signal handler, where taking a lock can deadlock:
        # it only sets a flag and writes one byte to this pipe, which wakes the event loop.
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._shutdown_requested = False
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._accepting = True
        self._next_sweep = 0.0                # when _turn() next looks for expired deadlines
        self._accept_again_at = 0.0           # after accept() failed: not before this time
        self._lane_for, self.inline_for = lane_for, inline_for
        self._lanes = {lane.name: LaneQueue(lane) for lane in (Lane(DEFAULT_LANE, max_workers), *lanes)}
        self._workers = []                    # the lanes' threads started so far (httpthreads.py)
        self._held, self._held_since = [], 0.0  # answers held for the end of the turn (httpthreads.py)
        self._returned = queue.SimpleQueue()  # connections workers give back to the loop
        # Only the loop reads, so one receive buffer serves every connection.
        self._chunk = bytearray(httpworkers.RECV_BYTES)
        self._chunk_view = memoryview(self._chunk)
        self._lock = threading.Condition()    # guards the fields below
        self._waiting = {}                    # socket -> Connection: in the selector
        self._open = 0                        # every open client connection
        self._busy = 0                        # connections a worker owns right now
        self._draining = False
        self._inline = None                   # the connection whose request the loop runs, ...
        self._inline_since = 0.0              # ... since when (monotonic)
        self._watchdog_asleep = False         # httpthreads: is the watchdog asleep until ...
        self._watchdog_wake = threading.Event()  # ... the next inline request sets this?
        self._moved = 0                       # requests that lost the loop and still run
        self._stopped = threading.Event()     # set once the loop has drained, whatever its thread
        self._handover = queue.SimpleQueue()  # to the standby loop thread: True take the loop, False stop
        self._failure = None                  # what broke a loop thread, for serve_forever to raise
        self.loop_threads = []                # serve_forever's threads that run the loop, in turn
        self._base_environ = {
            "SERVER_NAME": str(self.server_address[0]), "SERVER_PORT": str(self.server_address[1]),
            "SCRIPT_NAME": "", "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http" if tls_context is None else "https",
            "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "wsgi.input_terminated": True, "wsgi.errors": sys.stderr}

    def serve_forever(self) -> None:
        """Run the event loop until request_shutdown(); then refuse new clients, close idle
        connections, and return when the requests in flight are done (at most
        SHUTDOWN_DEADLINE_SECONDS later; their responses say ``Connection: close``).

        The loop runs in a thread of its own, http-loop-0; with inline requests a second one,
        http-loop-1, stands by to take it over. This thread only waits, so a signal handler
        that calls request_shutdown() runs here at once, never in the middle of a request."""
        if self.inline_for is not None:
            threading.Thread(target=self._watch_inline, name="http-watchdog", daemon=True).start()
        self.loop_threads = [threading.Thread(target=self._loop_thread, args=(number == 0,), name=f"http-loop-{number}")
                             for number in range(2 if self.inline_for is not None else 1)]
        for thread in self.loop_threads:
            thread.start()
        self._stopped.wait()
        if self._failure is not None:
            raise self._failure

    def request_shutdown(self) -> None:
        """Ask serve_forever() to stop. Non-blocking; safe in a signal handler or any thread."""
        self._shutdown_requested = True
        self._wake()

    # ---- the event loop, in one thread at a time ------------------------------------------

    def _run_loop(self) -> bool:
        """Be the event loop until shutdown, then drain it: True. False: the loop moved to the
        standby thread meanwhile (httpthreads.py), and this one is the standby now."""
        moved = False
        try:
            while not self._shutdown_requested:
                self._turn()
                self._resume_accepting()
        except LoopMoved:
            moved = True  # the thread that has the loop now drains it
        finally:
            if not moved:
                self._drain()
        return not moved

    def _turn(self) -> None:
        """One turn of the loop: handle what the network and the workers have for us."""
        self._send_held()  # none left from a turn that a moved loop cut short (httpthreads.py)
        # Connections given back (a pipelined request waiting, say) are taken at once, not
        # after a wait for the network.
        for key, _ in self._selector.select(0 if not self._returned.empty() else SWEEP_SECONDS):
            if key.fileobj is self._listener:
                self._accept_waiting_clients()
            elif key.fileobj == self._wake_read:
                os.read(self._wake_read, 4096)  # the bytes of request_shutdown() and of workers
            elif key.data.state == SENDING:  # watched for EVENT_WRITE; the others for reading
                self._send_ready(key.data)
            elif key.data.state == HANDSHAKING:  # for EVENT_READ or EVENT_WRITE, as OpenSSL asks
                self._handshake_ready(key.data)
            else:
                self._read_ready(key.data)
        self._take_back_returned()
        self._send_held()  # the answers of the requests run in this turn: before any is read again
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_SECONDS
            for conn in [conn for conn in list(self._waiting.values()) if conn.deadline <= now]:
                self._expired(conn)
            for name, lane in self._lanes.items():  # a thread that could not start: try again
                if lane.waiting > lane.idle and lane.started < lane.lane.threads:
                    self._grow(lane, name)

    def _accept_waiting_clients(self) -> None:
        self._send_held_if_late()
        for _ in range(ACCEPTS_PER_WAKE):  # a bounded batch, so reads are not starved
            with self._lock:
                if self._open >= self.max_connections:
                    # Full: leave the rest in the kernel's backlog until connections close.
                    self._selector.unregister(self._listener)
                    self._accepting = False
                    return
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, ConnectionAbortedError):  # none left, or the client gave up
                return
            except OSError as error:  # out of file descriptors: back off rather than spin
                _log.warning("accept() failed, pausing for %s s: %s", ACCEPT_PAUSE_SECONDS, error)
                self._selector.unregister(self._listener)
                self._accepting, self._accept_again_at = False, time.monotonic() + ACCEPT_PAUSE_SECONDS
                return
            httpsockets.prepare_client(sock, self.send_buffer_bytes)
            conn = httpworkers.Connection(sock, dict(self._base_environ, REMOTE_ADDR=peer[0],
                                                     REMOTE_PORT=str(peer[1])))
            with self._lock:
                self._open += 1
            # The first head (a TLS handshake before it) must arrive within header_timeout of the connection.
            conn.state, conn.started = READING if self.tls_context is None else HANDSHAKING, True
            conn.deadline = time.monotonic() + self.header_timeout
            self._watch(conn, selectors.EVENT_READ)

    def _resume_accepting(self) -> None:
        if not self._accepting and time.monotonic() >= self._accept_again_at:
            with self._lock:
                full = self._open >= self.max_connections
            if not full:
                self._selector.register(self._listener, selectors.EVENT_READ)
                self._accepting = True

    def _handshake_ready(self, conn) -> None:
        """Take the TLS handshake a step further (httpsockets.py); once done, read the request."""
        self._send_held_if_late()  # a step can take a millisecond of CPU
        try:
            if not isinstance(conn.sock, ssl.SSLSocket):  # the client's first bytes are here
                httpsockets.check_client_hello(conn.sock)
                self._unwatch(conn)  # the TLS socket takes this one's place in the selector
                conn.sock = httpsockets.start_handshake(conn.sock, self.tls_context)
                self._watch(conn, selectors.EVENT_READ)
            wait_for = httpsockets.continue_handshake(conn.sock)  # EVENT_READ, EVENT_WRITE, None: done
        except httpsockets.NotTLS as error:
            self._refuse(conn, http11.ProtocolError(400, str(error)))
            return
        except OSError as error:  # ssl.SSLError too: no common version or cipher, garbage
            _log.debug("TLS handshake failed with %s: %s", conn.environ["REMOTE_ADDR"], error)
            self._unwatch(conn)
            self._close(conn.sock)
            return
        self._selector.modify(conn.sock, wait_for or selectors.EVENT_READ, conn)
        if wait_for is None:  # done; the deadline runs on: it is the first head's
            conn.state = READING
            self._read_ready(conn)  # the head may have come with the last flight, read by OpenSSL

    def _read_ready(self, conn) -> None:
        """Bytes arrived: take them, and see whether they complete a request."""
        count = httpsockets.receive_into(conn.sock, self._chunk)
        if count is None:
            return
        if count == 0:  # the client closed (or reset) the connection
            self._unwatch(conn)
            self._close(conn.sock)
            return
        if conn.state == CLOSING:  # a goodbye: what the client still sends is dropped
            return
        conn.buffer += self._chunk_view[:count]
        # TLS: what OpenSSL has decrypted and not handed over yet, select() will not report.
        while httpsockets.pending_plaintext(conn.sock):
            more = httpsockets.receive_into(conn.sock, self._chunk) or 0
            conn.buffer += self._chunk_view[:more]
            count += more
        if conn.head is not None:  # a body: the minimum rate gives it more time
            conn.moved += count
            conn.deadline = self._rate_deadline(conn, self.body_timeout)
        elif not conn.started:  # the first byte of a new request starts its head's deadline
            conn.deadline, conn.started = time.monotonic() + self.header_timeout, True
        self._parse(conn)

    def _parse(self, conn) -> None:
        """Take the next request off conn.buffer: a whole one goes to its lane's workers, a
        broken one is refused, and an unfinished one waits for more bytes."""
        try:
            if conn.head is None:
                conn.head = http11.take_head(conn.buffer, self.limits, conn.checked)
                if conn.head is None:
                    conn.checked = len(conn.buffer)  # not to be looked at again: see take_head
                    return
                conn.checked = 0
                conn.decoder = http11.body_decoder(conn.head, self.limits)
                self._start_body(conn)
            body = conn.decoder.decode(conn.buffer)
        except http11.ProtocolError as error:
            self._refuse(conn, error, conn.head)
            return
        if body is not None:
            head, conn.head, conn.decoder = conn.head, None, None
            self._dispatch(conn, head, body)

    def _start_body(self, conn) -> None:
        conn.since, conn.moved = time.monotonic(), len(conn.buffer)
        conn.deadline = self._rate_deadline(conn, self.body_timeout)
        # RFC 9110 §10.1.1: a client that sent "Expect: 100-continue" and no body yet may be
        # waiting for this interim answer before it sends one; an HTTP/1.0 client never is.
        head = conn.head
        if "expect" in head.fields and head.version == "HTTP/1.1" and not conn.buffer:
            try:  # 25 bytes into an empty send buffer: if even that does not fit, give up
                if conn.sock.send(http11_responses.CONTINUE_RESPONSE) < len(http11_responses.CONTINUE_RESPONSE):
                    raise OSError("100 Continue cut short")
            except OSError:
                conn.deadline = 0.0  # the next sweep answers 408

    def _rate_deadline(self, conn, most_seconds) -> float:
        """The minimum rate, as a deadline: the grace, plus a second per MIN_BYTES_PER_SECOND
        moved so far, and never more than most_seconds after the start."""
        return conn.since + min(BODY_GRACE_SECONDS + conn.moved / MIN_BYTES_PER_SECOND, most_seconds)

    def _dispatch(self, conn, head, body) -> None:
        """Queue a complete request for a worker of its lane, or refuse it if the lane is full."""
        try:
            name = (self._lane_for(head.method, head.path) if self._lane_for else None) or DEFAULT_LANE
            lane = self._lanes[name]
        except Exception:  # a broken lane_for (or an unknown lane): the default lane serves it
            _log.exception("lane_for failed for %s %s", head.method, head.path)
            name, lane = DEFAULT_LANE, self._lanes[DEFAULT_LANE]
        if (self.inline_for is not None and not self._moved and not self._shutdown_requested
                and self.inline_for(head.method, name)):
            self._serve_inline(conn, head, body)
            return
        with self._lock:
            full = lane.lane.max_waiting is not None and lane.waiting >= lane.lane.max_waiting
            if not full:
                lane.waiting += 1
                self._busy += 1
                del self._waiting[conn.sock]
                self._selector.unregister(conn.sock)
        if full:
            self._refuse(conn, http11.ProtocolError(503, "the server is busy; try again shortly"), head,
                         retry_after=LANE_FULL_RETRY_AFTER_SECONDS)
            return
        lane.queue.put((conn, head, body))
        self._grow(lane, name)

    def _send_ready(self, conn) -> None:
        """The client can take more of the outbox: send it; once it is empty, read again."""
        try:
            sent = httpsockets.send_some(conn.sock, conn.outbox)
        except OSError:
            self._unwatch(conn)
            self._close(conn.sock)
            return
        del conn.outbox[:sent]
        conn.moved += sent
        conn.deadline = self._rate_deadline(conn, httpworkers.SEND_TIMEOUT_SECONDS)
        if not conn.outbox:
            self._unwatch(conn)
            self._after_response(conn)

    def _after_response(self, conn) -> None:
        """A response is out: close, or wait for the next request (maybe already buffered)."""
        if conn.then_close or self._shutdown_requested:
            self._start_closing(conn)
            return
        conn.state, conn.started = READING, bool(conn.buffer)
        conn.deadline = time.monotonic() + (self.header_timeout if conn.started else self.keepalive_timeout)
        self._watch(conn, selectors.EVENT_READ)
        if conn.buffer:  # pipelined: the next request may be here already
            self._parse(conn)

    def _take_back_returned(self) -> None:
        """Connections the workers gave back: with an outbox to send, or bytes to parse. Only
        those here now: one given back again in this turn (its next pipelined request ran
        inline) waits for the next, so that other clients get their turn in between."""
        for _ in range(self._returned.qsize()):
            conn = self._returned.get_nowait()
            if conn.outbox:
                self._start_sending(conn)
            else:
                self._after_response(conn)

    def _start_sending(self, conn) -> None:
        """Send the outbox as the client takes it (_send_ready), held to the minimum rate."""
        conn.state, conn.since, conn.moved = SENDING, time.monotonic(), 0
        conn.deadline = self._rate_deadline(conn, httpworkers.SEND_TIMEOUT_SECONDS)
        self._watch(conn, selectors.EVENT_WRITE)

    def _expired(self, conn) -> None:
        """A deadline passed: a started request gets a 408; anything else is just closed."""
        if conn.state == READING and conn.started and (conn.head is not None or conn.buffer.strip(b"\r\n")):
            what = "request body" if conn.head is not None else "request head"
            self._refuse(conn, http11.ProtocolError(408, f"the {what} did not arrive in time"), conn.head)
            return
        self._unwatch(conn)
        self._close(conn.sock)

    def _refuse(self, conn, error, head=None, *, retry_after=None) -> None:
        """Answer a request the server refuses itself (a ProtocolError; head, once it is known),
        then close. on_reject hears of it first."""
        request_id = os.urandom(16).hex()
        if self.on_reject is not None:
            try:  # a broken hook must not stop the loop, which serves every client
                self.on_reject(status=error.status, detail=error.detail,
                               client=conn.environ["REMOTE_ADDR"], request_id=request_id)
            except Exception:
                _log.exception("on_reject failed")
        refusal = http11_responses.problem_response(
            error.status, error.detail, request_id=request_id, retry_after=retry_after,
            path=error.path or (head.path if head is not None else None),
            with_body=head is None or head.method != "HEAD")  # RFC 9110 §9.3.2
        self._unwatch(conn)
        conn.head = conn.decoder = None
        conn.then_close = True
        try:  # a fresh send buffer takes a refusal whole; what it does not is sent later
            conn.outbox += memoryview(refusal)[httpsockets.send_some(conn.sock, refusal):]
        except OSError:
            self._close(conn.sock)
            return
        self._returned.put(conn)

    def _start_closing(self, conn) -> None:
        """Close without losing the last response (RFC 9112 §9.6): close() with unread bytes
        in the kernel makes TCP send a reset, which can destroy a response the client has not
        read yet (say a 413 while it still sends its body). So: send our FIN first, read and
        drop what the client still sends (for LINGER_SECONDS at most), then close. Over TLS,
        the close_notify alert goes first."""
        httpsockets.close_writing(conn.sock)
        conn.state, conn.deadline = CLOSING, time.monotonic() + LINGER_SECONDS
        self._watch(conn, selectors.EVENT_READ)

    def _watch(self, conn, events) -> None:
        with self._lock:
            self._waiting[conn.sock] = conn
            self._selector.register(conn.sock, events, conn)

    def _unwatch(self, conn) -> None:
        with self._lock:
            if self._waiting.pop(conn.sock, None) is not None:
                self._selector.unregister(conn.sock)

    def _drain(self) -> None:
        """Stop: no new clients or requests; finish the requests in flight, then the threads."""
        self._send_held()  # answered already: they go out before idle connections are closed
        if self._accepting:
            self._selector.unregister(self._listener)
            self._accepting = False
        self._listener.close()
        deadline = time.monotonic() + SHUTDOWN_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            for conn in list(self._waiting.values()):
                # A request whose body is arriving is in flight: it is read, run and answered.
                # A connection that waits for a request is closed now; a closing one lingers.
                if conn.state == HANDSHAKING or (conn.state == READING and conn.head is None):
                    self._unwatch(conn)
                    self._close(conn.sock)
            with self._lock:
                if self._busy == 0 and not self._waiting and self._returned.empty():
                    break
            self._turn()  # the last responses go out; connections given back are closed
        with self._lock:
            self._draining, finished = True, self._busy == 0
        if not finished:
            _log.warning("shutdown deadline passed with %d requests in flight", self._busy)
        self.drained = finished
        for conn in list(self._waiting.values()):
            self._close(conn.sock)
        for lane in self._lanes.values():
            for _ in range(lane.started):
                lane.queue.put(None)  # one "stop" for each worker, after any work still queued
        if finished:
            for worker in self._workers:
                worker.join()
        self._selector.close()
        wake_read, wake_write, self._wake_write = self._wake_read, self._wake_write, -1
        os.close(wake_read)
        os.close(wake_write)
        self._stopped.set()
        self._watchdog_wake.set()  # the watchdog, asleep or not, stops too ...
        self._handover.put(False)  # ... and the standby loop thread, if any

    def _close(self, sock) -> None:
        sock.close()
        with self._lock:
            self._open -= 1

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"\0")
        except OSError:  # the pipe is full (the loop is awake anyway) or closed (stopped)
            pass
