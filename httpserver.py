"""A small, strict HTTP/1.1 server (RFC 9112) for any WSGI application (PEP 3333).

HTTP/1.1 on the wire
--------------------
A request is a *head* of CRLF-terminated text lines, an empty line, then an optional body:

    POST /v1/orders?dry_run=1 HTTP/1.1\\r\\n     request line: method SP target SP version (§3)
    Host: shop.example\\r\\n                      field lines: name ":" OWS value OWS (§5)
    Content-Type: application/json\\r\\n
    Content-Length: 11\\r\\n                      framing: exactly 11 body bytes follow (§6.3)
    \\r\\n                                        the empty line ends the head
    {"qty": 2}\\n                                the body

and the answer has the same shape:

    HTTP/1.1 201 Created\\r\\n
    Content-Type: application/json\\r\\n
    Content-Length: 12\\r\\n
    Date: Sat, 28 Nov 2026 04:20:00 GMT\\r\\n
    Server: shop\\r\\n
    \\r\\n
    {"id": 4711}

WSGI turns that request into a dict, ``environ``: REQUEST_METHOD="POST", PATH_INFO="/v1/orders",
QUERY_STRING="dry_run=1", CONTENT_TYPE="application/json", CONTENT_LENGTH="11", HTTP_HOST=
"shop.example", wsgi.input=a file holding the 11 bytes. The app calls
``start_response("201 Created", [("Content-Type", "application/json")])`` and returns an
iterable of bytes; this module frames them and writes them back.

Framing is where servers go wrong. If two programs (a proxy and this server) disagree on where
a body ends, the rest of the body is read as a second, hidden request: "request smuggling".
So the parser is strict where ``http.server`` is lax: bare LF line endings, whitespace before
a colon, folded lines, odd Content-Length values, and Content-Length together with
Transfer-Encoding are all rejected with a problem+json error (RFC 9457) and a closed connection.
Sizes and times are bounded (the constants below), so a slow or huge request costs a worker
seconds, not forever. The body is read completely before the app runs: wsgi.input is in memory.

The response body is framed by the app's Content-Length, else by one the server counts (when
the app returns a list), else by chunked transfer-coding (§7.1), else (HTTP/1.0) by closing
the connection. HTTP/1.1 connections persist unless a side sends ``Connection: close`` (§9.3).

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
it back. With 32 busy connections on 32 threads that queue made the slowest 1% of requests 7x
slower than the median; with 2 workers taking requests in order, 2x. Throughput hardly
suffers: one core runs Python at a time however many threads wait for it.

``request_shutdown()`` sets a flag and writes one byte to a pipe the loop watches. The loop
closes the listener and every idle connection, then waits (at most SHUTDOWN_DEADLINE_SECONDS)
for requests in flight, whose responses say ``Connection: close``.
"""
import email.utils
import io
import json
import logging
import os
import queue
import re
import selectors
import socket
import sys
import threading
import time
from urllib.parse import unquote

MAX_REQUEST_LINE_BYTES = 8 * 1024      # 414 beyond
MAX_HEADER_COUNT = 100                 # 431 beyond
MAX_HEADER_BYTES = 64 * 1024           # 431 beyond
MAX_BODY_BYTES = 1024 * 1024           # 413 beyond (decoded size for chunked)
HEADER_TIMEOUT_SECONDS = 10.0          # whole request head must arrive within this -> 408
BODY_TIMEOUT_SECONDS = 30.0            # whole body within this -> 408
KEEPALIVE_TIMEOUT_SECONDS = 5.0        # idle keep-alive connection closed silently after this
SHUTDOWN_DEADLINE_SECONDS = 30.0       # in-flight requests get this long after request_shutdown()
DEFAULT_MAX_WORKERS = 16               # threads running requests (see "Concurrency" above)
DEFAULT_MAX_CONNECTIONS = 1000         # open client connections; more wait in the backlog
SEND_TIMEOUT_SECONDS = 30.0            # one response write may block this long on a slow reader
LINGER_SECONDS = 2.0                   # drain the client's leftovers this long before close()
LISTEN_BACKLOG = 1024                  # connections the kernel queues while the server is full
MAX_CHUNK_LINE_BYTES = 4 * 1024        # chunk size plus extensions (which are ignored)
RECV_BYTES = 64 * 1024                 # one recv() at most
SWEEP_SECONDS = 0.1                    # how often the event loop looks for expired deadlines
ACCEPTS_PER_WAKE = 64                  # new connections taken per loop turn, before reading others

SERVER_HEADER = "Server: shop\r\n"     # no version: it only helps an attacker pick an exploit

_log = logging.getLogger("httpserver")

# Every status this module produces itself, with its RFC 9110 reason phrase.
_REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large",
            414: "URI Too Long", 417: "Expectation Failed", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 501: "Not Implemented",
            505: "HTTP Version Not Supported"}
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"                         # RFC 9110 §5.6.2
_FIELD_VALUE = r"[\t\x20-\x7e\x80-\xff]*"                      # §5.5: no CR, LF, NUL or DEL
# §3: exactly one SP between the parts; the target is visible ASCII without "#" (no fragments).
_REQUEST_LINE = re.compile(rf"({_TOKEN}) ([\x21\x22\x24-\x7e]+) (HTTP/[0-9]\.[0-9])")
_FIELD_LINE = re.compile(rf"({_TOKEN}):({_FIELD_VALUE})")     # §5.1: no space before the colon
_ABSOLUTE_FORM = re.compile(r"http://([^/?]+)(/[^?]*)?(?:\?(.*))?", re.IGNORECASE)  # §3.2.2
# RFC 3986 §3.2.2 host [":" port]: a reg-name or an IP literal; no userinfo, spaces or slashes.
_HOST = re.compile(r"(?:[-A-Za-z0-9._~!$&'()*+,;=%]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?")
_STATUS = re.compile(rf"([2-9][0-9][0-9]) {_FIELD_VALUE}")
_NAME = re.compile(_TOKEN)
_VALUE = re.compile(_FIELD_VALUE)
_DIGITS = re.compile(r"[0-9]+")
_HEX_DIGITS = re.compile(rb"[0-9A-Fa-f]{1,16}")
_SINGLETON_KEYS = {"HTTP_HOST", "HTTP_CONTENT_LENGTH"}  # a second copy is an attack (§3.2, §6.3)
# PEP 3333: framing and connection management belong to the server, never to the app.
_HOP_BY_HOP = {"keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "proxy-connection"}
_SERVER_OWNED = {"date", "server"}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


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
                 keepalive_timeout=KEEPALIVE_TIMEOUT_SECONDS, max_body_bytes=MAX_BODY_BYTES,
                 on_reject=None):
        self.app = app
        self.on_reject = on_reject
        self.drained = False
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.keepalive_timeout = keepalive_timeout
        self.max_body_bytes = max_body_bytes
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
        # Workers write to it too, to hand a connection back (see _hand_back).
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
        """Run the event loop until request_shutdown(), then drain and return.

        On shutdown: the listener closes (new clients are refused), idle keep-alive connections
        close at once, requests in flight finish with ``Connection: close``, and this returns
        when they are done or SHUTDOWN_DEADLINE_SECONDS have passed.
        """
        next_sweep = time.monotonic() + SWEEP_SECONDS
        for worker in self._workers:
            worker.start()
        try:
            while not self._shutdown_requested:
                for key, _ in self._selector.select(SWEEP_SECONDS):
                    if key.fileobj is self._listener:
                        self._accept_waiting_clients()
                    elif key.fileobj == self._wake_read:
                        _drain_pipe(self._wake_read)
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
            # ACK (Nagle's algorithm): keep-alive falls from thousands of requests/s to ~700.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            conn = _Connection(sock, dict(self._base_environ, REMOTE_ADDR=peer[0],
                                          REMOTE_PORT=str(peer[1]), **{"wsgi.errors": sys.stderr}))
            # The first head must arrive within header_timeout of the connection.
            conn.deadline, conn.started = time.monotonic() + self.header_timeout, True
            with self._lock:
                self._open += 1
            self._wait_for_request(conn)

    def _resume_accepting(self) -> None:
        if not self._accepting:
            with self._lock:
                full = self._open >= self.max_connections
            if not full:
                self._selector.register(self._listener, selectors.EVENT_READ)
                self._accepting = True

    def _wait_for_request(self, conn) -> None:
        self._waiting[conn.sock] = conn
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)

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
        if _head_is_complete(conn.buffer):
            self._stop_waiting(conn)
            self._dispatch(conn)

    def _stop_waiting(self, conn) -> None:
        self._selector.unregister(conn.sock)
        del self._waiting[conn.sock]

    def _dispatch(self, conn) -> None:
        """Hand a connection with a complete request head (or a hopeless one) to a worker.

        Workers take connections in arrival order from the executor's queue. Only requests
        ready to run ever wait for a worker: an idle keep-alive client or a slow one costs
        a selector entry, not a thread.
        """
        with self._lock:
            self._busy += 1
        self._ready.put(conn)

    def _close_expired(self, now) -> None:
        """Close waiting connections past their deadline: idle ones silently, half-sent ones 408."""
        # list() copies the values in one step: workers add connections from their threads.
        for conn in [conn for conn in list(self._waiting.values()) if conn.deadline <= now]:
            self._stop_waiting(conn)
            if conn.buffer.strip(b"\r\n"):
                detail = "the request head did not arrive in time"
                request_id = self._report_rejection(conn, 408, detail)
                try:  # best effort, without blocking the loop: this client is slow anyway
                    conn.sock.send(_problem(408, detail, request_id=request_id))
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
                environ = self._read_request(conn, conn.environ.copy(), conn.deadline)
            except _HTTPError as error:
                request_id = self._report_rejection(conn, error.status, error.detail)
                conn.sendall(_problem(error.status, error.detail, request_id=request_id))
                return False
            if not self._respond(conn, environ) or self._draining:
                return False
            # The next request: its head deadline counts from its first byte, or from now if
            # it is already here (pipelined); meanwhile the connection may idle this long.
            conn.started = bool(conn.buffer)
            conn.deadline = time.monotonic() + (
                self.header_timeout if conn.started else self.keepalive_timeout)
            if not _head_is_complete(conn.buffer):
                return True

    def _report_rejection(self, conn, status, detail) -> str:
        request_id = os.urandom(16).hex()
        if self.on_reject is not None:
            self.on_reject(status=status, detail=detail, client=conn.environ["REMOTE_ADDR"],
                           request_id=request_id)
        return request_id

    def _close(self, sock) -> None:
        sock.close()
        with self._lock:
            self._open -= 1

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"\0")
        except OSError:  # the pipe is full (the loop is awake anyway) or closed (stopped)
            pass

    def _read_request(self, conn, environ, deadline) -> dict:
        """Read one request head and its whole body; return the WSGI environ. Raises _HTTPError."""
        buffer = conn.buffer
        while True:
            while buffer.startswith(b"\r\n"):  # §2.2: ignore empty lines before a request
                del buffer[:2]
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            _check_incomplete_head(buffer)
            conn.recv_more(deadline, "request head")
        if end > MAX_HEADER_BYTES:
            raise _HTTPError(431, f"the request head is over {MAX_HEADER_BYTES} bytes")
        request_line, *field_lines = buffer[:end].decode("latin-1").split("\r\n")
        del buffer[:end + 4]
        if len(request_line) > MAX_REQUEST_LINE_BYTES:
            raise _HTTPError(414, f"the request line is over {MAX_REQUEST_LINE_BYTES} bytes")
        if len(field_lines) > MAX_HEADER_COUNT:
            raise _HTTPError(431, f"more than {MAX_HEADER_COUNT} header fields")
        match = _REQUEST_LINE.fullmatch(request_line)
        if match is None:
            raise _HTTPError(400, "malformed request line")
        method, target, version = match.groups()
        if version != "HTTP/1.1" and version != "HTTP/1.0":
            raise _HTTPError(505, f"{version} is not supported; use HTTP/1.1")

        authority = None
        if target[0] == "/":                              # §3.2.1 origin-form
            path, _, query = target.partition("?")
        elif target == "*" and method == "OPTIONS":       # §3.2.4 asterisk-form
            path, query = "", ""
        else:                                             # §3.2.2 absolute-form
            absolute = _ABSOLUTE_FORM.fullmatch(target)
            if absolute is None:
                raise _HTTPError(400, "the request target must be /path, http://host/path or *")
            authority, path, query = absolute.groups()
            path, query = path or "/", query or ""

        for line in field_lines:
            field = _FIELD_LINE.fullmatch(line)
            if field is None:
                if line[:1] in (" ", "\t"):
                    raise _HTTPError(400, "obsolete line folding is not allowed (RFC 9112 §5.2)")
                raise _HTTPError(400, "malformed header field line")
            name, value = field.groups()
            if "_" in name:
                # X_User and X-User would both become HTTP_X_USER; a proxy that strips one
                # spelling could be fooled by the other. Drop them, as nginx and gunicorn do.
                continue
            key = "HTTP_" + name.upper().replace("-", "_")
            value = value.strip(" \t")
            if key in environ:
                if key in _SINGLETON_KEYS:
                    raise _HTTPError(400, f"more than one {name} header field")
                value = environ[key] + ("; " if key == "HTTP_COOKIE" else ", ") + value
            environ[key] = value
        if "HTTP_HOST" not in environ and version == "HTTP/1.1":
            raise _HTTPError(400, "HTTP/1.1 requests need a Host header field (RFC 9112 §3.2)")
        if authority is not None:
            environ["HTTP_HOST"] = authority  # §3.2.2: the target's authority wins over Host
        if _HOST.fullmatch(environ.get("HTTP_HOST", "")) is None:
            raise _HTTPError(400, "invalid Host")

        environ["REQUEST_METHOD"] = method
        environ["PATH_INFO"] = unquote(path, "latin-1") if "%" in path else path  # PEP 3333
        environ["QUERY_STRING"] = query
        environ["SERVER_PROTOCOL"] = version
        environ["RAW_URI"] = target
        if "HTTP_CONTENT_TYPE" in environ:
            environ["CONTENT_TYPE"] = environ.pop("HTTP_CONTENT_TYPE")
        environ["wsgi.input"] = io.BytesIO(self._read_body(conn, environ, version))
        return environ

    def _read_body(self, conn, environ, version) -> bytes:
        transfer_encoding = environ.pop("HTTP_TRANSFER_ENCODING", None)
        content_length = environ.pop("HTTP_CONTENT_LENGTH", None)
        if transfer_encoding is not None:
            if version == "HTTP/1.0":   # §6.1: 1.0 has no chunked, so the framing is unknowable
                raise _HTTPError(400, "Transfer-Encoding is not allowed in HTTP/1.0")
            if content_length is not None:  # §6.1: the classic request-smuggling setup
                raise _HTTPError(400, "Content-Length and Transfer-Encoding together")
            if transfer_encoding.lower() != "chunked":
                raise _HTTPError(501, f"unsupported Transfer-Encoding: {transfer_encoding}")
            declared = None
        elif content_length is not None:
            if _DIGITS.fullmatch(content_length) is None:  # §8.6: 1*DIGIT, no sign, no list
                raise _HTTPError(400, "Content-Length must be a single decimal number")
            if len(content_length.lstrip("0")) > 18:  # over any limit; spare int() the work
                raise _HTTPError(413, f"the body is over {self.max_body_bytes} bytes")
            declared = int(content_length)
            environ["CONTENT_LENGTH"] = content_length
        else:
            declared = 0  # §6.3: no framing fields in a request means no body
        expect = environ.get("HTTP_EXPECT")
        if expect is not None and expect.lower() != "100-continue":
            raise _HTTPError(417, "the only supported expectation is 100-continue")
        if declared == 0:
            return b""
        if declared is not None and declared > self.max_body_bytes:
            raise _HTTPError(413, f"the body is over {self.max_body_bytes} bytes")
        # RFC 9110 §10.1.1: tell a waiting client to send the body; never to an HTTP/1.0 client.
        if expect is not None and version == "HTTP/1.1" and not conn.buffer:
            conn.sendall(_CONTINUE)
        deadline = time.monotonic() + self.body_timeout
        if declared is None:
            body = self._read_chunked(conn, deadline)
            environ["CONTENT_LENGTH"] = str(len(body))
            return body
        buffer = conn.buffer
        while len(buffer) < declared:
            conn.recv_more(deadline, "request body")
        body = bytes(buffer[:declared])
        del buffer[:declared]
        return body

    def _read_chunked(self, conn, deadline) -> bytes:
        """Decode a chunked body (RFC 9112 §7.1): size CRLF data CRLF ... 0 CRLF trailers CRLF."""
        buffer, body = conn.buffer, bytearray()
        while True:
            size_line = conn.read_line(deadline, MAX_CHUNK_LINE_BYTES)
            size_text = size_line.split(b";", 1)[0].rstrip(b" \t")  # §7.1.1: extensions ignored
            if _HEX_DIGITS.fullmatch(size_text) is None:
                raise _HTTPError(400, "malformed chunk size")
            size = int(size_text, 16)
            if len(body) + size > self.max_body_bytes:
                raise _HTTPError(413, f"the decoded body is over {self.max_body_bytes} bytes")
            if size == 0:
                break
            while len(buffer) < size + 2:
                conn.recv_more(deadline, "request body")
            if buffer[size:size + 2] != b"\r\n":
                raise _HTTPError(400, "chunk data must end in CRLF")
            body += buffer[:size]
            del buffer[:size + 2]
        trailer_bytes = 0   # §7.1.2: trailer fields are read, held to the header limits, dropped
        for _ in range(MAX_HEADER_COUNT + 1):
            line = conn.read_line(deadline, MAX_HEADER_BYTES)
            if not line:
                return bytes(body)
            trailer_bytes += len(line) + 2
            if trailer_bytes > MAX_HEADER_BYTES:
                break
            if _FIELD_LINE.fullmatch(line.decode("latin-1")) is None:
                raise _HTTPError(400, "malformed trailer field line")
        raise _HTTPError(431, "the trailer section is over the header limits")

    def _respond(self, conn, environ) -> bool:
        """Run the app for one request and send its response. True: keep the connection."""
        response = _Response(conn, environ, self)
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
            _log.exception("application error: %s %s",
                           environ["REQUEST_METHOD"], environ["RAW_URI"])
            if not response.head_sent:
                conn.sendall(_problem(500, "the server could not complete the request",
                                      with_body=environ["REQUEST_METHOD"] != "HEAD"))
            return False  # after a partial body the client can only learn of it by the close
        return response.keep_alive

    def _close_lingering(self, sock) -> None:
        """Close without losing the last response (RFC 9112 §9.6).

        close() with unread bytes in the kernel makes TCP send a reset, which can destroy a
        response the client has not read yet (say a 413 while the client is still sending its
        body). So: send our FIN first, read and drop what the client still sends, then close.
        """
        _shutdown_quietly(sock, socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_SECONDS
        with self._lock:
            self._lingering.add(sock)  # so that a shutdown need not wait for the linger to end
            if self._draining:
                _shutdown_quietly(sock, socket.SHUT_RD)
        try:
            for _ in range(MAX_BODY_BYTES // RECV_BYTES):  # bounded in bytes as well as time
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
    """One response: what start_response() stored, and how the body is framed on the wire."""

    __slots__ = ("conn", "server", "method", "http_10", "keep_alive", "status", "status_code",
                 "header_block", "content_length", "head_sent", "framing", "length_left")

    def __init__(self, conn, environ, server):
        self.conn, self.server = conn, server
        self.method = environ["REQUEST_METHOD"]
        self.http_10 = environ["SERVER_PROTOCOL"] == "HTTP/1.0"
        # §9.3: HTTP/1.1 is persistent unless either side says close; 1.0 only if asked for.
        connection = environ.get("HTTP_CONNECTION")
        if connection is None:
            self.keep_alive = not self.http_10
        else:
            tokens = [token.strip() for token in connection.lower().split(",")]
            self.keep_alive = "keep-alive" in tokens if self.http_10 else "close" not in tokens
        self.status = None
        self.head_sent = False

    def start_response(self, status, headers, exc_info=None):
        """PEP 3333 start_response: store the status and headers; return write()."""
        if exc_info is not None:
            try:
                if self.head_sent:  # too late to change the status: the error ends the connection
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the frame <-> traceback reference cycle
        elif self.status is not None:
            raise RuntimeError("start_response() called twice without exc_info")
        if type(status) is not str or _STATUS.fullmatch(status) is None:
            raise ValueError(f"status must be a str like '200 OK', not {status!r}")
        lines, content_length = [], None
        for name, value in headers:
            if type(name) is not str or type(value) is not str:
                raise TypeError(f"header names and values must be str: {name!r}: {value!r}")
            # A CR or LF in a value would let the app's input forge headers: response splitting.
            if _NAME.fullmatch(name) is None or _VALUE.fullmatch(value) is None:
                raise ValueError(f"invalid header field {name!r}: {value!r}")
            lowered = name.lower()
            if lowered == "content-length":
                if content_length is not None or _DIGITS.fullmatch(value) is None:
                    raise ValueError(f"invalid Content-Length from the application: {value!r}")
                content_length = int(value)
            elif lowered == "connection":
                if "close" in value.lower():
                    self.keep_alive = False
                continue  # the server writes its own Connection field
            elif lowered in _HOP_BY_HOP:
                raise ValueError(f"hop-by-hop header {name!r} is the server's job (PEP 3333)")
            elif lowered in _SERVER_OWNED:
                continue
            lines.append(f"{name}: {value}\r\n")
        self.status, self.status_code = status, int(status[:3])
        self.header_block, self.content_length = "".join(lines), content_length
        return self.write

    def write(self, data):
        """PEP 3333 write(): send data now (the head goes out with the first bytes)."""
        if not isinstance(data, bytes):
            raise TypeError(f"the application must send bytes, not {type(data).__name__}")
        if self.status is None:
            raise RuntimeError("the application sent a body before calling start_response()")
        if data:  # PEP 3333: the head is not sent before the first non-empty body string
            head = b"" if self.head_sent else self._head(None)
            out = head + self._frame(data)
            if out:
                self.conn.sendall(out)

    def send(self, result):
        """Send the app's return value: one sendall for a list, chunk by chunk otherwise."""
        if isinstance(result, (list, tuple)) and not self.head_sent:
            body = b"".join(result)
            if self.status is None:
                raise RuntimeError("the application returned without calling start_response()")
            self.conn.sendall(self._head(len(body)) + self._frame(body) + self._end())
            return
        for data in result:
            self.write(data)
        if self.status is None:
            raise RuntimeError("the application returned without calling start_response()")
        out = (b"" if self.head_sent else self._head(0)) + self._end()
        if out:
            self.conn.sendall(out)

    def _head(self, total_length) -> bytes:
        """The status line and header fields; decides the framing. total_length: if known."""
        extra = ""
        if self.method == "HEAD" or self.status_code in (204, 304):
            self.framing = "none"   # §6.3: these end at the empty line, whatever the fields say
        elif self.content_length is not None:
            self.framing, self.length_left = "length", self.content_length
        elif total_length is not None:
            self.framing, self.length_left = "length", total_length
            extra = f"Content-Length: {total_length}\r\n"
        elif not self.http_10:
            self.framing, extra = "chunked", "Transfer-Encoding: chunked\r\n"
        else:
            self.framing, self.keep_alive = "close", False  # 1.0 has no chunked: close ends it
        if self.server._shutdown_requested:
            self.keep_alive = False
        if not self.keep_alive:
            extra += "Connection: close\r\n"
        elif self.http_10:
            extra += "Connection: keep-alive\r\n"
        self.head_sent = True
        return (f"HTTP/1.1 {self.status}\r\n{self.header_block}{extra}{_date_line()}"
                f"{SERVER_HEADER}\r\n").encode("latin-1")

    def _frame(self, data) -> bytes:
        if self.framing == "length":
            if len(data) > self.length_left:  # more would be read as the next response
                _log.error("application sent more than its Content-Length; truncated")
                data, self.keep_alive = data[:self.length_left], False
            self.length_left -= len(data)
            return data
        if self.framing == "chunked":
            return b"%x\r\n%b\r\n" % (len(data), data)
        return data if self.framing == "close" else b""

    def _end(self) -> bytes:
        if self.framing == "chunked":
            return b"0\r\n\r\n"
        if self.framing == "length" and self.length_left:
            _log.error("application sent less than its Content-Length; closing")
            self.keep_alive = False  # the client is still waiting for bytes: only close ends it
        return b""


class _Connection:
    """A client socket and the bytes read from it but not yet parsed."""

    __slots__ = ("sock", "environ", "buffer", "chunk", "view", "deadline", "started")

    def __init__(self, sock, environ):
        self.sock, self.environ, self.buffer = sock, environ, bytearray()
        self.chunk = bytearray(RECV_BYTES)
        self.view = memoryview(self.chunk)
        self.deadline = 0.0     # monotonic time by which the awaited bytes must arrive
        self.started = False    # has a request begun (408 if it stalls), or is it idle?

    def receive(self, timeout) -> int:
        """One recv() into the buffer; returns the byte count (0: the client closed)."""
        self.sock.settimeout(timeout)
        count = self.sock.recv_into(self.chunk)
        self.buffer += self.view[:count]
        return count

    def recv_more(self, deadline, what) -> None:
        """Receive more of a request that must be complete by deadline (monotonic), else 408."""
        remaining = deadline - time.monotonic()  # a total deadline: a byte a second is not enough
        try:
            count = self.receive(remaining) if remaining > 0 else None
        except TimeoutError:
            count = None
        if count is None:
            raise _HTTPError(408, f"the {what} did not arrive in time")
        if count == 0:
            raise _ClientGone

    def read_line(self, deadline, limit) -> bytes:
        """The next CRLF-terminated line (without CRLF) of the body; 400 if not CRLF or too long."""
        buffer = self.buffer
        while (end := buffer.find(b"\n")) < 0:
            if len(buffer) > limit:
                raise _HTTPError(400, f"a line in the body is over {limit} bytes")
            self.recv_more(deadline, "request body")
        if end == 0 or buffer[end - 1] != 0x0D or buffer.find(b"\r", 0, end - 1) >= 0:
            raise _HTTPError(400, "lines must end in CRLF")
        if end > limit:
            raise _HTTPError(400, f"a line in the body is over {limit} bytes")
        line = bytes(buffer[:end - 1])
        del buffer[:end + 1]
        return line

    def sendall(self, data) -> None:
        try:
            self.sock.settimeout(SEND_TIMEOUT_SECONDS)
            self.sock.sendall(data)
        except OSError as error:
            raise _ClientGone from error


class _HTTPError(Exception):
    """A request the server refuses itself; answered with problem+json and a closed connection."""

    def __init__(self, status, detail):
        super().__init__(detail)
        self.status, self.detail = status, detail


class _ClientGone(Exception):
    """The client closed or reset the connection: nothing more can be sent."""


def _head_is_complete(buffer) -> bool:
    """True when the buffer holds a whole request head, or one that can never become valid."""
    while buffer.startswith(b"\r\n"):  # §2.2: ignore empty lines before a request
        del buffer[:2]
    if b"\r\n\r\n" in buffer:
        return True
    try:
        _check_incomplete_head(buffer)
    except _HTTPError:
        return True  # a worker reads it again and answers the error
    return False


def _drain_pipe(descriptor) -> None:
    try:
        while os.read(descriptor, 4096):
            pass
    except BlockingIOError:
        pass


def _check_incomplete_head(buffer) -> None:
    """Fail at once on a head that can never become valid, rather than wait for the timeout."""
    line_end = buffer.find(b"\r\n")
    if line_end > MAX_REQUEST_LINE_BYTES or (line_end < 0 and len(buffer) > MAX_REQUEST_LINE_BYTES):
        raise _HTTPError(414, f"the request line is over {MAX_REQUEST_LINE_BYTES} bytes")
    if len(buffer) > MAX_HEADER_BYTES:
        raise _HTTPError(431, f"the request head is over {MAX_HEADER_BYTES} bytes")
    # §2.2: a bare LF or CR is an error. Without this check an LF-only client would wait for
    # a CRLF CRLF that never comes. A CR at the very end may be half of a CRLF still in transit.
    crlf_count = buffer.count(b"\r\n")
    if (buffer.count(b"\n") != crlf_count
            or buffer.count(b"\r") - buffer.endswith(b"\r") != crlf_count):
        raise _HTTPError(400, "lines must end in CRLF, not a bare LF or CR")


def _problem(status, detail, *, with_body=True, request_id=None) -> bytes:
    """A complete RFC 9457 problem+json response that closes the connection."""
    request_id = request_id or os.urandom(16).hex()
    title = _REASONS[status]
    body = json.dumps({"type": "about:blank", "title": title, "status": status,
                       "detail": detail, "request_id": request_id}).encode()
    # nosniff: a browser must not read this JSON as anything else, as for the app's responses.
    head = (f"HTTP/1.1 {status} {title}\r\nContent-Type: application/problem+json\r\n"
            f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\n"
            f"X-Request-ID: {request_id}\r\n{_date_line()}{SERVER_HEADER}"
            "Connection: close\r\n\r\n")
    return head.encode("latin-1") + (body if with_body else b"")


_date_cache = (0, "")


def _date_line() -> str:
    """The Date field (RFC 9110 §6.6.1), formatted once per second rather than per request."""
    global _date_cache
    now = int(time.time())
    second, line = _date_cache
    if second != now:
        line = f"Date: {email.utils.formatdate(now, usegmt=True)}\r\n"
        _date_cache = (now, line)  # one tuple assignment: atomic, so no lock is needed
    return line


def _shutdown_quietly(sock, how) -> None:
    try:
        sock.shutdown(how)
    except OSError:  # already closed by the client
        pass
