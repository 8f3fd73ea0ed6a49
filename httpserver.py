"""A small, strict HTTP/1.1 server for any WSGI application (PEP 3333): sockets and threads.

http11.py parses requests and frames responses; this module does the I/O around it: the
event loop, the workers, keep-alive, timeouts, shutdown, and the WSGI glue. The request
``POST /v1/orders?dry_run=1`` (``Host: shop.example``, an 11-byte JSON body) becomes an
``environ``: REQUEST_METHOD="POST", PATH_INFO="/v1/orders", QUERY_STRING="dry_run=1",
CONTENT_TYPE="application/json", CONTENT_LENGTH="11", HTTP_HOST="shop.example", wsgi.input=
the 11 bytes, read before the app runs. The app's ``start_response("201 Created", [...])``
and iterable of bytes become the response, framed by http11_responses.ResponseFramer.

Concurrency and shutdown
------------------------
Two kinds of thread. The *event loop* (the caller of ``serve_forever``) watches every idle or
half-read connection with one selector (epoll, kqueue): it accepts clients, reads bytes as they
come, and once a connection holds a complete request head it queues the connection for a
*worker*. A small, fixed pool of workers takes connections from that queue in arrival order,
reads the body, runs the app, writes the response, and hands the connection back to the
selector to wait for its next request. Threads are created once, so per-thread resources (one
SQLite connection per thread) are opened once.

Why not a thread per connection, as ``http.server`` does? Waiting is cheap in a selector and
dear in a thread: an idle keep-alive client, or a slow one sending a byte a second, costs a
selector entry here, never a worker. And under the GIL, Python threads take turns: every time a
thread leaves the GIL (to recv, send, or let SQLite run) it queues behind all the others to get
it back. With 32 busy connections on 32 threads that queue made the slowest 1% of requests
several times slower than the median; with 2 workers taking requests in order, far less
(docs/performance.md has the figures). Throughput hardly suffers: one core runs Python at
a time however many threads wait for it.

``request_shutdown()`` sets a flag and writes one byte to a pipe the loop watches. The loop
closes the listener and every idle connection, then waits (at most SHUTDOWN_DEADLINE_SECONDS)
for requests in flight, whose responses say ``Connection: close``.
"""
import io
import logging
import os
import queue
import selectors
import socket
import sys
import threading
import time
from urllib.parse import unquote

import http11
import http11_responses

HEADER_TIMEOUT_SECONDS = 10.0          # whole request head must arrive within this -> 408
BODY_TIMEOUT_SECONDS = 30.0            # whole body within this -> 408
KEEPALIVE_TIMEOUT_SECONDS = 5.0        # idle keep-alive connection closed silently after this
SHUTDOWN_DEADLINE_SECONDS = 30.0       # in-flight requests get this long after request_shutdown()
DEFAULT_MAX_WORKERS = 16               # threads running requests (see "Concurrency" above)
DEFAULT_MAX_CONNECTIONS = 1000         # open client connections; more wait in the backlog
SEND_TIMEOUT_SECONDS = 30.0            # one response write may block this long on a slow reader
LINGER_SECONDS = 2.0                   # drain the client's leftovers this long before close()
LISTEN_BACKLOG = 1024                  # connections the kernel queues while the server is full
RECV_BYTES = 64 * 1024                 # one recv() at most
SWEEP_SECONDS = 0.1                    # how often the event loop looks for expired deadlines
ACCEPTS_PER_WAKE = 64                  # new connections taken per loop turn, before reading others

_log = logging.getLogger("httpserver")


class HTTPServer:
    """Serve one WSGI app over HTTP/1.1 on (host, port) with a bounded pool of worker threads.

    The socket is bound and listening when the constructor returns (port=0 picks a free port;
    read ``server_address``). ``serve_forever()`` blocks until ``request_shutdown()``; then
    ``drained`` tells whether every request in flight finished before the deadline.

    A request this server refuses itself (400, 408, 413, 414, 431, 501, 505) never reaches the
    app, so its access log cannot see it: ``on_reject(status=, detail=, client=, request_id=)``
    is called for each one instead, with the request id sent in the response's X-Request-ID.
    """

    def __init__(self, app, host="127.0.0.1", port=8000, *, max_workers=DEFAULT_MAX_WORKERS,
                 max_connections=DEFAULT_MAX_CONNECTIONS,
                 header_timeout=HEADER_TIMEOUT_SECONDS, body_timeout=BODY_TIMEOUT_SECONDS,
                 keepalive_timeout=KEEPALIVE_TIMEOUT_SECONDS, max_body_bytes=http11.MAX_BODY_BYTES,
                 on_reject=None):
        self.app, self.on_reject, self.max_connections = app, on_reject, max_connections
        self.header_timeout, self.body_timeout = header_timeout, body_timeout
        self.keepalive_timeout = keepalive_timeout
        self.drained = False
        self.limits = http11.Limits(body_bytes=max_body_bytes)
        self._listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            # Restart at once after a crash instead of waiting out TIME_WAIT on the port.
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(LISTEN_BACKLOG)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
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
        self._waiting = {}                    # socket -> _Connection: in the selector, loop-owned
        self._ready = queue.SimpleQueue()     # connections with a request to run, oldest first
        self._workers = [threading.Thread(target=self._work, name=f"http-worker-{number}")
                         for number in range(max_workers)]
        self._lock = threading.Condition()    # guards the fields below
        self._open = 0                        # every open client connection
        self._busy = 0                        # connections a worker owns right now
        self._lingering = set()               # sockets in _close_lingering, cut short at shutdown
        self._draining = False
        self._base_environ = {
            "SERVER_NAME": str(self.server_address[0]), "SERVER_PORT": str(self.server_address[1]),
            "SCRIPT_NAME": "", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
            "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "wsgi.input_terminated": True}

    def serve_forever(self) -> None:
        """Run the event loop until request_shutdown(); then refuse new clients, close idle
        connections, and return when the requests in flight are done (at most
        SHUTDOWN_DEADLINE_SECONDS later; their responses say ``Connection: close``)."""
        next_sweep = time.monotonic() + SWEEP_SECONDS
        for worker in self._workers:
            worker.start()
        try:
            while not self._shutdown_requested:
                for key, _ in self._selector.select(SWEEP_SECONDS):
                    if key.fileobj is self._listener:
                        self._accept_waiting_clients()
                    elif key.fileobj == self._wake_read:
                        os.read(self._wake_read, 4096)  # the byte of request_shutdown()
                    else:
                        self._read_ready(key.data)
                now = time.monotonic()
                if now >= next_sweep:
                    self._close_expired(now)
                    self._resume_accepting()
                    next_sweep = now + SWEEP_SECONDS
        finally:
            self._drain()

    def request_shutdown(self) -> None:
        """Ask serve_forever() to stop. Non-blocking; safe in a signal handler or any thread."""
        self._shutdown_requested = True
        self._wake()

    # ---- the event loop: waiting connections, in one thread ---------------------------------

    def _accept_waiting_clients(self) -> None:
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
            except OSError:  # out of file descriptors: back off rather than spin
                _log.exception("accept() failed")
                return
            # Without this, a response written in two pieces waits for the client's delayed
            # ACK (Nagle's algorithm): keep-alive falls from thousands of requests/s to hundreds.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            conn = _Connection(sock, dict(self._base_environ, REMOTE_ADDR=peer[0],
                                          REMOTE_PORT=str(peer[1]), **{"wsgi.errors": sys.stderr}))
            # The first head must arrive within header_timeout of the connection.
            conn.deadline, conn.started = time.monotonic() + self.header_timeout, True
            with self._lock:
                self._open += 1
            self._waiting[conn.sock] = conn
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _resume_accepting(self) -> None:
        if not self._accepting:
            with self._lock:
                full = self._open >= self.max_connections
            if not full:
                self._selector.register(self._listener, selectors.EVENT_READ)
                self._accepting = True

    def _read_ready(self, conn) -> None:
        """Bytes arrived on a waiting connection: read them; a complete head goes to a worker."""
        try:
            count = conn.sock.recv_into(conn.chunk)
        except BlockingIOError:
            return
        except OSError:
            count = 0
        if count == 0:  # the client closed (or reset) the connection
            self._stop_waiting(conn)
            self._close(conn.sock)
            return
        conn.buffer += conn.view[:count]
        if not conn.started:  # the first byte of a new request starts its head's deadline
            conn.deadline, conn.started = time.monotonic() + self.header_timeout, True
        if http11.head_is_ready(conn.buffer, self.limits):  # a worker takes it from here
            self._stop_waiting(conn)
            with self._lock:
                self._busy += 1
            self._ready.put(conn)

    def _stop_waiting(self, conn) -> None:
        self._selector.unregister(conn.sock)
        del self._waiting[conn.sock]

    def _close_expired(self, now) -> None:
        """Close waiting connections past their deadline: idle ones silently, half-sent ones 408."""
        # list() copies the values in one step: workers add connections from their threads.
        for conn in [conn for conn in list(self._waiting.values()) if conn.deadline <= now]:
            self._stop_waiting(conn)
            if conn.buffer.strip(b"\r\n"):
                refusal = self._refusal(conn, 408, "the request head did not arrive in time")
                try:  # best effort, without blocking the loop: this client is slow anyway
                    conn.sock.send(refusal)
                except OSError:
                    pass
            self._close(conn.sock)

    def _drain(self) -> None:
        with self._lock:  # from here on, workers close connections instead of handing them back
            self._draining = True
            for sock in self._lingering:  # cut short: nobody waits for a goodbye now
                _shutdown_quietly(sock, socket.SHUT_RD)
        self._selector.close()
        self._listener.close()
        for conn in list(self._waiting.values()):  # idle keep-alive: close without a word
            self._close(conn.sock)
        self._waiting.clear()
        with self._lock:
            finished = self._lock.wait_for(lambda: self._busy == 0, SHUTDOWN_DEADLINE_SECONDS)
        if not finished:
            _log.warning("shutdown deadline passed with %d requests in flight", self._busy)
        self.drained = finished
        for _ in self._workers:
            self._ready.put(None)  # one "stop" for each worker, after any work still queued
        if finished:
            for worker in self._workers:
                worker.join()
        wake_read, wake_write, self._wake_write = self._wake_read, self._wake_write, -1
        os.close(wake_read)
        os.close(wake_write)

    # ---- workers: run requests, one connection at a time -------------------------------------

    def _work(self) -> None:
        while (conn := self._ready.get()) is not None:
            self._serve_connection(conn)

    def _serve_connection(self, conn) -> None:
        keep = False
        try:
            keep = self._serve_requests(conn)
        except (_ClientGone, OSError):
            pass  # the client went away: not news
        except Exception:
            _log.exception("unexpected error on a connection from %s", conn.environ["REMOTE_ADDR"])
        finally:
            with self._lock:
                handed_back = keep and not self._draining
                if handed_back:
                    # Back to the event loop to wait for the next request. Registering from
                    # this thread is safe: the kernel's epoll/kqueue takes changes while the
                    # loop waits in select(), and the lock keeps us clear of _drain().
                    conn.sock.setblocking(False)
                    self._waiting[conn.sock] = conn
                    self._selector.register(conn.sock, selectors.EVENT_READ, conn)
                self._busy -= 1
                self._lock.notify_all()
            if not handed_back:
                self._close_lingering(conn.sock)

    def _serve_requests(self, conn) -> bool:
        """Serve the requests already buffered. True: keep the connection for the next one."""
        while True:
            try:
                head, environ = self._read_request(conn)
            except http11.ProtocolError as error:
                conn.sendall(self._refusal(conn, error.status, error.detail, error.path))
                return False
            if not self._respond(conn, head, environ) or self._draining:
                return False
            # The next request: its head deadline counts from its first byte, or from now if
            # it is already here (pipelined); meanwhile the connection may idle this long.
            conn.started = bool(conn.buffer)
            conn.deadline = time.monotonic() + (
                self.header_timeout if conn.started else self.keepalive_timeout)
            if not http11.head_is_ready(conn.buffer, self.limits):
                return True

    def _refusal(self, conn, status, detail, path=None) -> bytes:
        """The problem response to a request refused here; on_reject hears of it first."""
        request_id = os.urandom(16).hex()
        if self.on_reject is not None:
            self.on_reject(status=status, detail=detail, client=conn.environ["REMOTE_ADDR"],
                           request_id=request_id)
        return http11_responses.problem_response(status, detail, request_id=request_id, path=path)

    def _close(self, sock) -> None:
        sock.close()
        with self._lock:
            self._open -= 1

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"\0")
        except OSError:  # the pipe is full (the loop is awake anyway) or closed (stopped)
            pass

    def _read_request(self, conn):
        """Read one request head and its whole body: (head, WSGI environ). Raises ProtocolError."""
        while (head := http11.take_head(conn.buffer, self.limits)) is None:
            conn.recv_more(conn.deadline, "request head")
        try:
            body = self._read_body(conn, head)
        except http11.ProtocolError as error:
            error.path = head.path  # the problem's instance
            raise
        return head, _environ(conn.environ, head, body)

    def _read_body(self, conn, head) -> bytes:
        decoder = http11.body_decoder(head, self.limits)
        # RFC 9110 §10.1.1: a client that sent "Expect: 100-continue" and no body yet may be
        # waiting for this interim answer before it sends one; an HTTP/1.0 client never is.
        send_continue = "expect" in head.fields and head.version == "HTTP/1.1" and not conn.buffer
        deadline = time.monotonic() + self.body_timeout
        while (body := decoder.decode(conn.buffer)) is None:
            if send_continue:
                conn.sendall(http11_responses.CONTINUE_RESPONSE)
                send_continue = False
            conn.recv_more(deadline, "request body")
        return body

    def _respond(self, conn, head, environ) -> bool:
        """Run the app for one request and send its response. True: keep the connection."""
        response = _Response(conn, head, self)
        try:
            result = self.app(environ, response.start_response)
            try:
                response.send(result)
            finally:
                if hasattr(result, "close"):  # PEP 3333: always, even after an error
                    result.close()
        except _ClientGone:
            return False
        except Exception:
            _log.exception("application error: %s %s", head.method, head.target)
            if not response.framer.head_sent:
                conn.sendall(http11_responses.problem_response(
                    500, "the server could not complete the request", path=head.path,
                    request_id=os.urandom(16).hex(), with_body=head.method != "HEAD"))
            return False  # after a partial body the client can only learn of it by the close
        return response.framer.keep_alive

    def _close_lingering(self, sock) -> None:
        """Close without losing the last response (RFC 9112 §9.6): close() with unread bytes
        in the kernel makes TCP send a reset, which can destroy a response the client has not
        read yet (say a 413 while it still sends its body). So: send our FIN first, read and
        drop what the client still sends, then close."""
        _shutdown_quietly(sock, socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_SECONDS
        with self._lock:
            self._lingering.add(sock)  # so that a shutdown need not wait for the linger to end
            if self._draining:
                _shutdown_quietly(sock, socket.SHUT_RD)
        try:
            for _ in range(self.limits.body_bytes // RECV_BYTES):  # bounded in bytes and in time
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                if not sock.recv(RECV_BYTES):
                    break
        except OSError:
            pass
        finally:
            with self._lock:
                self._lingering.discard(sock)
            self._close(sock)


class _Response:
    """PEP 3333's start_response() and write() for one request; http11 frames the bytes."""

    def __init__(self, conn, head, server):
        self.conn, self.server = conn, server
        self.framer = http11_responses.ResponseFramer(head.method, head.version, head.keep_alive)

    def start_response(self, status, headers, exc_info=None):
        """PEP 3333 start_response: store the status and headers; return write()."""
        if exc_info is not None:
            try:
                if self.framer.head_sent:  # too late to change the status: the error ends it
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the frame <-> traceback reference cycle
        elif self.framer.status is not None:
            raise RuntimeError("start_response() called twice without exc_info")
        self.framer.start(status, headers)
        return self.write

    def write(self, data):
        """PEP 3333 write(): send data now (the head goes out with the first bytes)."""
        if not isinstance(data, bytes):
            raise TypeError(f"the application must send bytes, not {type(data).__name__}")
        # PEP 3333: the head is not sent before the first non-empty body string.
        if data and (out := self._head(None) + self.framer.frame(data)):
            self.conn.sendall(out)

    def send(self, result):
        """Send the app's return value: one sendall for a list, piece by piece otherwise."""
        if isinstance(result, (list, tuple)) and not self.framer.head_sent:
            body = b"".join(result)
            self.conn.sendall(self._head(len(body)) + self.framer.frame(body) + self.framer.end())
            return
        for data in result:
            self.write(data)
        if out := self._head(0) + self.framer.end():
            self.conn.sendall(out)

    def _head(self, total_length) -> bytes:
        """The response head, the first time only. total_length: the whole body's, if known."""
        if self.framer.head_sent:
            return b""
        if self.framer.status is None:
            raise RuntimeError("the application sent a body or returned before start_response()")
        if self.server._shutdown_requested:
            self.framer.keep_alive = False
        return self.framer.head(total_length)


class _Connection:
    """A client socket and the bytes read from it but not yet parsed."""

    __slots__ = ("sock", "environ", "buffer", "chunk", "view", "deadline", "started")

    def __init__(self, sock, environ):
        self.sock, self.environ, self.buffer = sock, environ, bytearray()
        self.chunk = bytearray(RECV_BYTES)
        self.view = memoryview(self.chunk)
        self.deadline = 0.0     # monotonic time by which the awaited bytes must arrive
        self.started = False    # has a request begun (408 if it stalls), or is it idle?

    def recv_more(self, deadline, what) -> None:
        """Receive more of a request that must be complete by deadline (monotonic), else 408."""
        remaining = deadline - time.monotonic()  # a total deadline: a byte a second is not enough
        try:
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            count = self.sock.recv_into(self.chunk)
        except TimeoutError:
            raise http11.ProtocolError(408, f"the {what} did not arrive in time") from None
        if count == 0:
            raise _ClientGone
        self.buffer += self.view[:count]

    def sendall(self, data) -> None:
        try:
            self.sock.settimeout(SEND_TIMEOUT_SECONDS)
            self.sock.sendall(data)
        except OSError as error:
            raise _ClientGone from error


class _ClientGone(Exception):
    """The client closed or reset the connection: nothing more can be sent."""


def _environ(base, head, body) -> dict:
    """The PEP 3333 environ of one request: base (server and client) plus the request's own."""
    environ = dict(base, REQUEST_METHOD=head.method, QUERY_STRING=head.query,
                   SERVER_PROTOCOL=head.version, RAW_URI=head.target)
    environ["PATH_INFO"] = unquote(head.path, "latin-1") if "%" in head.path else head.path
    environ["wsgi.input"] = io.BytesIO(body)
    for name, value in head.fields.items():
        # X_User and X-User would both become HTTP_X_USER; a proxy that strips one spelling
        # could be fooled by the other: drop them, as nginx and gunicorn do. The framing
        # fields stay out too: wsgi.input holds the decoded body.
        if "_" not in name and name not in ("content-length", "transfer-encoding"):
            key = name.upper().replace("-", "_")
            environ[key if key == "CONTENT_TYPE" else "HTTP_" + key] = value
    if "content-length" in head.fields:
        environ["CONTENT_LENGTH"] = head.fields["content-length"]
    elif "transfer-encoding" in head.fields:
        environ["CONTENT_LENGTH"] = str(len(body))  # chunked: the decoded length
    return environ


def _shutdown_quietly(sock, how) -> None:
    try:
        sock.shutdown(how)
    except OSError:  # already closed by the client
        pass
