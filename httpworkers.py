"""The worker side of httpserver.py: lanes of worker threads, and one whole request through
the WSGI application (PEP 3333).

The event loop in httpserver.py reads a request, head and body, and hands a worker thread
only a complete one: ``respond(app, conn, head, body)`` builds the ``environ``, runs the app,
and gives the framed response (http11_responses.ResponseFramer) to ``conn.deliver()``.

A worker never waits on a slow client. Reading was the loop's job; writing is done without
blocking: ``deliver()`` sends what the kernel takes at once and keeps the rest in the
connection's *outbox*, which the event loop sends once the worker has moved on. Only a
response of more than OUTBOX_BYTES to a client that reads nothing makes its worker wait: at
most SEND_TIMEOUT_SECONDS each time the outbox fills up. Without this, a client that reads
one byte a second (a "slow read" attack) would hold a worker for as long as it liked. An
event stream (text/event-stream) is the exception: each event goes out before the app waits
for the next one, so its worker (which the stream holds anyway) waits for its client.

Workers are a few threads, each started the first time its lane has a request that no
idle thread can take, and kept from then on (so one SQLite connection per thread is opened
once): a lane of 200 threads for event streams costs nothing until streams come. Why not a
thread per connection, as ``http.server`` does? Under the GIL, threads take turns: with 32
busy threads the slowest 1% of requests were several times slower than the median, with 2
far less (docs/performance.md has the figures).

They come in *lanes* (the bulkhead pattern: a ship's compartments keep one leak from
sinking it): each Lane has its own threads and its own bounded queue, and httpserver's
``lane_for(method, path)`` names the lane of each request. The shop puts /health and /ready
on a lane of their own, so a probe never waits behind application work, and password logins
on another, so that 50 logins each hashing for 0.3 s cannot take every worker.

The request ``POST /v1/orders?dry_run=1`` (``Host: shop.example``, an 11-byte JSON body)
becomes an ``environ``: REQUEST_METHOD="POST", PATH_INFO="/v1/orders",
QUERY_STRING="dry_run=1", CONTENT_TYPE="application/json", CONTENT_LENGTH="11",
HTTP_HOST="shop.example", wsgi.input=the 11 bytes.
"""
import io
import logging
import os
import queue
from dataclasses import dataclass
from urllib.parse import unquote

import http11_responses
from httpsockets import send_some

RECV_BYTES = 64 * 1024                 # one recv() at most
OUTBOX_BYTES = 1024 * 1024             # response bytes a worker may leave for the event loop
HOLD_BYTES = 64 * 1024                 # a response held for the end of the loop's turn: at most this
SEND_TIMEOUT_SECONDS = 30.0            # past OUTBOX_BYTES, a worker waits this long at most
EVENT_STREAM_TYPE = "text/event-stream"  # server-sent events: see _Response.send

# What the event loop waits for on a connection (Connection.state).
HANDSHAKING = "handshaking"  # TLS only: the client's side of the handshake (httpsockets.py)
READING = "reading"    # the next request: its head, then its body
SENDING = "sending"    # the client to take the rest of a response (the outbox)
CLOSING = "closing"    # the client to finish, after our last response, before close()

_log = logging.getLogger("httpserver")


@dataclass(frozen=True)
class Lane:
    """A group of worker threads with a queue of its own. max_waiting: requests that may wait
    for one of its threads (None: no limit but max_connections); one more gets a 503."""

    name: str
    threads: int
    max_waiting: int | None = None


class LaneQueue:
    """A lane's queue of complete requests, how many of them wait for a thread, and the
    lane's threads: how many are started, and how many of those wait for a request."""

    def __init__(self, lane):
        self.lane, self.queue, self.waiting = lane, queue.SimpleQueue(), 0
        self.started = self.idle = 0


class Connection:
    """A client socket, the bytes read from it and not yet parsed (``buffer``), the bytes
    of responses not yet sent (``outbox``), and where the event loop is with it."""

    __slots__ = ("sock", "environ", "buffer", "checked", "outbox", "state", "deadline", "started",
                 "head", "decoder", "since", "moved", "then_close", "hold")

    def __init__(self, sock, environ):
        self.sock, self.environ = sock, environ
        self.buffer, self.outbox = bytearray(), bytearray()
        self.checked = 0        # bytes of buffer that http11.take_head has looked at already
        self.state = ""         # what the event loop waits for (READING, ... above)
        self.deadline = 0.0     # monotonic time by which that must have happened
        self.started = False    # has a request begun (408 if it stalls), or is it idle?
        self.head = None        # the head of the request whose body is being read
        self.decoder = None     # ... and the http11 decoder of that body
        self.since = 0.0        # when the body (or the outbox) began to move
        self.moved = 0          # bytes of it received (or sent) since then
        self.then_close = False  # once the outbox is sent: close, rather than read again
        self.hold = False       # keep a response in the outbox, for the loop to send (httpthreads.py)

    def deliver(self, data) -> None:
        """Send data now, as much as the kernel takes; keep the rest for the event loop.
        Raises ClientGone when the client has closed or reset the connection.
        With `hold` set (a request the event loop runs itself), data of at most HOLD_BYTES
        waits in an empty outbox instead: the loop sends it at the end of its turn, with the
        other responses of the turn (httpthreads.py, "Responses held for the end of the
        turn"). More data after it goes out at once, behind it."""
        if self.hold and not self.outbox and len(data) <= HOLD_BYTES:
            self.outbox += data
            return
        if self.outbox:  # earlier bytes still wait: these go after them
            self.outbox += data
            del self.outbox[:self._send_now(self.outbox)]
        else:  # the usual case: all of it fits in the kernel's buffer, and nothing is copied
            self.outbox += memoryview(data)[self._send_now(data):]
        if len(self.outbox) > OUTBOX_BYTES:  # a big streamed body: wait for the client after all
            self.send_outbox_blocking()

    def _send_now(self, data) -> int:
        """Send what the kernel takes without waiting: how many bytes that was. (Over TLS,
        bytes OpenSSL took but could not send yet are not counted: they stay at the front
        of the outbox, to be offered again, as it needs: httpsockets.send_some.)"""
        try:
            return send_some(self.sock, data)
        except OSError as error:
            raise ClientGone from error

    def send_outbox_blocking(self) -> None:
        """Send the whole outbox, waiting at most SEND_TIMEOUT_SECONDS for the client. (With a
        timeout, an SSLSocket waits for whatever OpenSSL wants, readable or writable, itself.)"""
        try:
            self.sock.settimeout(SEND_TIMEOUT_SECONDS)
            self.sock.sendall(self.outbox)
        except OSError as error:  # TimeoutError included: a client that reads nothing is gone
            raise ClientGone from error
        finally:
            self.sock.setblocking(False)
        self.outbox.clear()


class ClientGone(Exception):
    """The client closed or reset the connection, or stopped reading: nothing more can be sent."""


def respond(app, conn, head, body, *, shutting_down) -> bool:
    """Run the app for one complete request and deliver its response. True: keep the
    connection for another request. shutting_down(): is the server stopping (then close)?"""
    response = _Response(conn, head, shutting_down)
    try:
        result = app(environ_of(conn.environ, head, body), response.start_response)
        try:
            response.send(result)
        finally:
            if hasattr(result, "close"):  # PEP 3333: always, even after an error
                result.close()
    except ClientGone:
        raise
    except Exception:
        _log.exception("application error: %s %s", head.method, head.target)
        if not response.framer.head_sent:
            conn.deliver(http11_responses.problem_response(
                500, "the server could not complete the request", path=head.path,
                request_id=os.urandom(16).hex(), with_body=head.method != "HEAD"))
        return False  # after a partial body the client can only learn of it by the close
    return response.framer.keep_alive


def environ_of(base, head, body) -> dict:
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


class _Response:
    """PEP 3333's start_response() and write() for one request; http11_responses frames the bytes."""

    def __init__(self, conn, head, shutting_down):
        self.conn, self.shutting_down = conn, shutting_down
        self.event_stream = False  # text/event-stream (server-sent events): each piece sent whole
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
        content_type = self.framer.content_type
        self.event_stream = content_type is not None and content_type.lower().startswith(EVENT_STREAM_TYPE)
        return self.write

    def write(self, data):
        """PEP 3333 write(): send data now (the head goes out with the first bytes)."""
        if not isinstance(data, bytes):
            raise TypeError(f"the application must send bytes, not {type(data).__name__}")
        # PEP 3333: the head is not sent before the first non-empty body string.
        if data and (out := self._head(None) + self.framer.frame(data)):
            self.conn.deliver(out)

    def send(self, result):
        """Send the app's return value: one piece for a list, piece by piece otherwise."""
        if isinstance(result, (list, tuple)) and not self.framer.head_sent:
            body = b"".join(result)
            self.conn.deliver(self._head(len(body)) + self.framer.frame(body) + self.framer.end())
            return
        for data in result:
            self.write(data)
            # An event stream's next piece may be seconds away: what the kernel did not take of
            # this one is sent now, waiting on the client, rather than left in the outbox
            # until then (PEP 3333: a block must be sent before the next one is asked for).
            if self.event_stream and self.conn.outbox:
                self.conn.send_outbox_blocking()
        if out := self._head(0) + self.framer.end():
            self.conn.deliver(out)

    def _head(self, total_length) -> bytes:
        """The response head, the first time only. total_length: the whole body's, if known."""
        if self.framer.head_sent:
            return b""
        if self.framer.status is None:
            raise RuntimeError("the application sent a body or returned before start_response()")
        if self.shutting_down():
            self.framer.keep_alive = False
        return self.framer.head(total_length)
