"""Tests for httpserver.py: raw bytes on a real socket, the way a client or an attacker sends them.

The parser's rules are tested without sockets in test_http11.py; here its table of bad requests
goes over the wire, to see each one answered and its connection closed. Apps are wrapped in
wsgiref.validate.validator, which checks PEP 3333 compliance of the environ, start_response and
the body iterable on every request; only the tests of app misbehaviour run without it, since
there the server itself must catch the mistake.

Timing: a bound on how long something takes is at least 3x what it guards, and ordering comes
from events and polling, never from a sleep, so that a loaded machine slows tests, not fails them.
"""
import contextlib
import json
import os
import queue
import resource
import select
import signal
import socket
import sys
import threading
import time
from wsgiref.validate import validator

import pytest
from test_http11 import BAD_REQUESTS, H, get

import httpserver
import web

SHORT_TIMEOUT = 0.5   # header, body and keep-alive timeouts of the test server, in seconds
READ_TIMEOUT = 3.0    # a test fails rather than hangs when the server stays silent this long
SERVE_THREAD = "test-serve-forever"   # the test's thread that calls serve_forever() and waits
LOOP_THREAD = "http-loop-0"           # the server's thread that runs the event loop


def echo_app(environ, start_response):
    """Echo the parts of the request a test checks; a few paths misbehave on purpose."""
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise RuntimeError("the application failed")
    if path == "/stream":  # no Content-Length: the server must frame the body itself
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"first,", b"", b"second"])
    length = int(environ.get("CONTENT_LENGTH") or 0)
    echo = {
        "method": environ["REQUEST_METHOD"], "path": path, "query": environ["QUERY_STRING"],
        "raw_uri": environ["RAW_URI"], "protocol": environ["SERVER_PROTOCOL"],
        "body": environ["wsgi.input"].read(length).decode("latin-1"),
        "content_length": environ.get("CONTENT_LENGTH"),
        "headers": {key: value for key, value in environ.items() if key.startswith("HTTP_")},
    }
    body = json.dumps(echo).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


@contextlib.contextmanager
def running(app, **options):
    """An HTTPServer on a free port, served from a background thread, shut down at the end."""
    server = httpserver.HTTPServer(app, port=0, **options)
    thread = threading.Thread(target=server.serve_forever, name=SERVE_THREAD, daemon=True)
    thread.start()
    deadline = time.monotonic() + READ_TIMEOUT
    while not (server.loop_threads and all(thread.is_alive() for thread in server.loop_threads)):
        assert time.monotonic() < deadline, "the server's loop threads did not start"
        time.sleep(0.001)  # until the loop's threads run: some tests look at them
    try:
        yield server
    finally:
        server.request_shutdown()
        thread.join(timeout=10)
        assert not thread.is_alive(), "serve_forever() did not return after request_shutdown()"


def inline_everything(method, lane):
    return True


# Every protocol test runs twice: requests handed to worker threads, and run by the loop's own
# thread (httpserver's "Inline requests"): the wire must not tell them apart.
@pytest.fixture(params=["workers", "inline"])
def server(request):
    inline_for = inline_everything if request.param == "inline" else None
    with running(validator(echo_app), header_timeout=SHORT_TIMEOUT, body_timeout=SHORT_TIMEOUT,
                 keepalive_timeout=SHORT_TIMEOUT, inline_for=inline_for) as server:
        yield server


class Client:
    """A raw socket plus a small HTTP/1.1 response reader, strict enough for these tests."""

    def __init__(self, address, receive_buffer=None):
        self.sock = socket.socket()
        if receive_buffer is not None:  # before connect(), so that the window starts small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(READ_TIMEOUT)
        self.sock.connect(address)
        self.file = self.sock.makefile("rb")

    def send(self, raw: bytes):
        self.sock.sendall(raw)

    def response(self, head_request=False):
        """Read one response: (status, headers with lower-case names, body)."""
        status_line = self.file.readline()
        assert status_line.endswith(b"\r\n"), f"no complete status line: {status_line!r}"
        version, status, _reason = status_line.decode("latin-1").split(" ", 2)
        assert version == "HTTP/1.1"
        headers = {}
        while (line := self.file.readline()) != b"\r\n":
            assert line.endswith(b"\r\n"), f"header line not ending in CRLF: {line!r}"
            name, value = line.decode("latin-1").split(":", 1)
            assert name.lower() not in headers, f"duplicate header {name}"
            headers[name.lower()] = value.strip()
        status = int(status)
        if head_request or status in (100, 204, 304):
            body = b""
        elif "content-length" in headers:
            body = self.file.read(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while (size := int(self.file.readline(), 16)) > 0:
                body += self.file.read(size)
                assert self.file.read(2) == b"\r\n"
            assert self.file.read(2) == b"\r\n"
        else:
            body = self.file.read()   # delimited by the server closing the connection
        return status, headers, body

    def is_closed(self) -> bool:
        """True when the server closed its side: end-of-file with no further bytes."""
        try:
            return self.file.read(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.file.close()
        self.sock.close()


def assert_served_normally(server, connect):
    client = connect(server)
    client.send(get("/still-alive"))
    status, _, body = client.response()
    assert status == 200 and json.loads(body)["path"] == "/still-alive"


def wait_until_readable(client, within=READ_TIMEOUT):
    """Poll until the server has sent something (or closed); False after `within` seconds."""
    return bool(select.select([client.sock], [], [], within)[0])


def server_threads(threads_before):
    """Names of the threads started since threads_before: the server's, if it behaves."""
    return sorted(thread.name for thread in set(threading.enumerate()) - threads_before)


@pytest.mark.parametrize("raw, expected, detail", [row[1:] for row in BAD_REQUESTS],
                         ids=[row[0] for row in BAD_REQUESTS])
def test_bad_request_gets_problem_and_close(server, connect, raw, expected, detail):
    client = connect(server)
    client.send(raw)
    status, headers, body = client.response()
    assert status == expected
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert "date" in headers and headers["server"] == "shop"
    problem = json.loads(body)
    assert problem["status"] == expected and problem["type"] == "about:blank"
    assert problem["detail"] == detail
    assert problem["title"] and problem["request_id"] == headers["x-request-id"]
    assert client.is_closed()
    assert_served_normally(server, connect)


@pytest.mark.parametrize("raw, instance", [
    (b"POST /v1/caf%C3%A9 HTTP/1.1\r\n" + H + b"Content-Length: x\r\n\r\n", "/v1/caf\u00e9"),
    (b"GET /v1/items HTTP/1.1\r\n" + H + H + b"\r\n", "/v1/items"),
    (b"POST /v1/items HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", "/v1/items"),
    (b"GET /v1/items HTTP/2.0\r\n" + H + b"\r\n", None),   # refused before the path was read
])
def test_a_refusal_names_the_path_as_its_instance_once_known(server, connect, raw, instance):
    client = connect(server)
    client.send(raw)
    problem = json.loads(client.response()[2])
    assert problem.get("instance") == instance
    members = ["type", "title", "status", "detail", "instance", "request_id"]
    assert list(problem) == [name for name in members if name != "instance" or instance]


@pytest.mark.parametrize("start, piece, status, detail", [
    (b"GET / HTTP/1.1\r\n" + H, b"X-Filler: " + b"v" * 1000 + b"\r\n", 431,
     "the request head is over 65536 bytes"),
    (b"GET /", b"a" * 1000, 414, "the request line is over 8192 bytes"),
])
def test_an_endless_request_head_is_refused_at_once_not_at_the_timeout(connect, start, piece,
                                                                        status, detail):
    # The default header timeout (10 s): a server that only waited for the empty line would
    # answer 408 that late; the client's READ_TIMEOUT (3 s) would fail the test first.
    with running(validator(echo_app)) as server:
        client = connect(server)
        started = time.monotonic()
        client.send(start)
        for _ in range(200):   # at most 200 KB, three times the largest limit
            if wait_until_readable(client, within=0):
                break
            client.send(piece)
        status_sent, _, body = client.response()
        assert time.monotonic() - started < httpserver.HEADER_TIMEOUT_SECONDS / 3
        assert (status_sent, json.loads(body)["detail"]) == (status, detail)
        assert client.is_closed()


def test_smuggled_request_in_body_gets_no_second_response(server, connect):
    client = connect(server)
    client.send(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\nTransfer-Encoding: chunked"
                b"\r\n\r\n0\r\n\r\n" + get("/smuggled"))
    status, _, _ = client.response()
    assert status == 400
    assert client.is_closed()


def test_keep_alive_serves_three_requests_on_one_socket(server, connect):
    client = connect(server)
    for number in range(3):
        client.send(get(f"/n{number}"))
        status, headers, body = client.response()
        assert status == 200 and json.loads(body)["path"] == f"/n{number}"
        assert "connection" not in headers


def test_pipelined_requests_are_answered_in_order(server, connect):
    client = connect(server)
    client.send(get("/first") + get("/second"))
    assert json.loads(client.response()[2])["path"] == "/first"
    assert json.loads(client.response()[2])["path"] == "/second"


def test_chunked_body_is_decoded(server, connect):
    client = connect(server)
    client.send(b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: Chunked\r\n\r\n"
                b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: dropped\r\n\r\n")
    status, _, body = client.response()
    echo = json.loads(body)
    assert status == 200 and echo["body"] == "hello world" and echo["content_length"] == "11"
    assert "HTTP_TRANSFER_ENCODING" not in echo["headers"]
    assert "HTTP_X_TRAILER" not in echo["headers"]


def test_expect_100_continue(server, connect):
    client = connect(server)
    client.send(b"POST / HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    status, headers, _ = client.response()
    assert status == 100 and headers == {}
    client.send(b"hello")
    status, _, body = client.response()
    assert status == 200 and json.loads(body)["body"] == "hello"


def test_expect_100_continue_is_not_sent_when_the_body_came_along(server, connect):
    client = connect(server)
    for version in (b"HTTP/1.1", b"HTTP/1.0"):   # RFC 9110 §10.1.1: never to a 1.0 client
        client.send(b"POST / " + version + b"\r\n" + H + b"Connection: keep-alive\r\n"
                    b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\nhello")
        status, _, body = client.response()
        assert status == 200 and json.loads(body)["body"] == "hello"


def test_body_is_consumed_before_the_next_pipelined_request(server, connect):
    client = connect(server)
    client.send(b"POST /one HTTP/1.1\r\n" + H + b"Content-Length: 6\r\n\r\nGET /x" + get("/two"))
    assert json.loads(client.response()[2])["body"] == "GET /x"
    assert json.loads(client.response()[2])["path"] == "/two"


def test_max_body_bytes_is_configurable(connect):
    with running(validator(echo_app), max_body_bytes=10) as server:
        client = connect(server)
        client.send(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 10\r\n\r\n0123456789")
        assert client.response()[0] == 200
        client.send(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                    b"6\r\n012345\r\n5\r\n6789a\r\n0\r\n\r\n")
        assert client.response()[0] == 413


def test_head_has_headers_and_no_body(server, connect):
    client = connect(server)
    client.send(b"HEAD / HTTP/1.1\r\n" + H + b"\r\n")
    status, headers, _ = client.response(head_request=True)
    assert status == 200 and int(headers["content-length"]) > 0
    client.send(get("/after-head"))  # had a body been sent, this would read it as a status line
    assert json.loads(client.response()[2])["path"] == "/after-head"


def test_http_10_closes_by_default(server, connect):
    client = connect(server)
    client.send(b"GET / HTTP/1.0\r\n\r\n")
    status, headers, _ = client.response()
    assert status == 200 and headers["connection"] == "close"
    assert client.is_closed()


def test_http_10_keep_alive_when_asked(server, connect):
    client = connect(server)
    for _ in range(2):
        client.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, body = client.response()
        assert status == 200 and headers["connection"] == "keep-alive"
        assert json.loads(body)["protocol"] == "HTTP/1.0"


def test_connection_close_from_client(server, connect):
    client = connect(server)
    client.send(get(extra=b"Connection: close\r\n"))
    assert client.response()[1]["connection"] == "close"
    assert client.is_closed()


def test_streamed_body_is_chunked_for_11_and_close_delimited_for_10(server, connect):
    client = connect(server)
    client.send(get("/stream"))
    status, headers, body = client.response()
    assert status == 200 and headers["transfer-encoding"] == "chunked" and body == b"first,second"
    client = connect(server)
    client.send(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, body = client.response()
    assert status == 200 and "transfer-encoding" not in headers and headers["connection"] == "close"
    assert body == b"first,second"


def test_target_forms_reach_the_app(server, connect):
    client = connect(server)
    client.send(get("http://other.test:8080/a%20b/%C3%A9?q=1%202&x"))
    echo = json.loads(client.response()[2])
    assert echo["path"] == "/a b/\u00c3\u00a9"   # PEP 3333: percent-decoded, then latin-1
    assert echo["query"] == "q=1%202&x"          # the query string stays raw
    assert echo["raw_uri"] == "http://other.test:8080/a%20b/%C3%A9?q=1%202&x"
    assert echo["headers"]["HTTP_HOST"] == "other.test:8080"  # RFC 9112 §3.2.2
    client.send(b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n")
    assert json.loads(client.response()[2])["path"] == ""


def test_headers_reach_the_app_joined(server, connect):
    client = connect(server)
    client.send(get(extra=b"Cookie: a=1\r\nCookie: b=2\r\nAccept: x\r\nAccept: y\r\n"
                          b"X_Spoofed: 1\r\nX-Padded: \t v \t\r\n"))
    headers = json.loads(client.response()[2])["headers"]
    assert headers["HTTP_COOKIE"] == "a=1; b=2"
    assert headers["HTTP_ACCEPT"] == "x, y"
    assert headers["HTTP_X_PADDED"] == "v"
    assert "HTTP_X_SPOOFED" not in headers


def test_server_and_date_headers(server, connect):
    client = connect(server)
    client.send(b"\r\n" + get())  # RFC 9112 §2.2: an empty line before a request is ignored
    status, headers, _ = client.response()
    assert status == 200 and headers["server"] == "shop"
    assert headers["date"].endswith(" GMT") and len(headers["date"]) == 29


def test_half_request_line_times_out_with_408(server, connect):
    client = connect(server)
    client.send(b"GET /sl")
    status, _, body = client.response()   # waits for the header timeout
    assert status == 408 and json.loads(body)["status"] == 408
    assert client.is_closed()


def test_header_deadline_is_total_not_per_recv(server, connect):
    client = connect(server)
    started = time.monotonic()
    for byte in get():  # one byte every 0.1 s: each recv() is quick, the whole (3.5 s) is not
        client.send(bytes([byte]))
        if wait_until_readable(client, within=0.1):
            break  # the server answered
    assert client.response()[0] == 408
    # A per-recv timeout would let all 35 bytes in, and the answer would be a 200.
    assert time.monotonic() - started < 3 * (SHORT_TIMEOUT + 0.3)


def test_slow_body_times_out_with_408(server, connect):
    client = connect(server)
    client.send(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 10\r\n\r\nabc")
    assert client.response()[0] == 408
    assert client.is_closed()


def test_idle_connections_close_silently(server, connect):
    silent = connect(server)  # never sends a byte
    client = connect(server)
    client.send(get())
    assert client.response()[0] == 200
    started = time.monotonic()
    assert client.is_closed() and silent.is_closed()   # no 408: nothing was asked
    assert time.monotonic() - started < 3 * SHORT_TIMEOUT + 0.5   # READ_TIMEOUT would be 3 s


def test_slow_client_does_not_block_others(connect):
    # One worker, and the default 10 s header timeout: were the half-sent head holding the
    # worker, the newcomer would wait for that timeout (and READ_TIMEOUT would fail it first).
    with running(validator(echo_app), max_workers=1) as server:
        slow = connect(server)
        slow.send(b"GET / HT")
        started = time.monotonic()
        assert_served_normally(server, connect)
        assert time.monotonic() - started < httpserver.HEADER_TIMEOUT_SECONDS / 3
        assert not wait_until_readable(slow, within=0)   # still waiting for its head


def test_app_exception_is_a_500_problem_and_the_server_goes_on(server, connect, capsys):
    client = connect(server)
    client.send(get("/boom"))
    status, headers, body = client.response()
    assert status == 500 and headers["content-type"] == "application/problem+json"
    assert "the application failed" not in body.decode()   # no internals reach the client
    assert client.is_closed()
    assert_served_normally(server, connect)


def test_write_callable_and_exc_info_replace_the_status(connect):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/write":
            write = start_response("200 OK", [("Content-Type", "text/plain"),
                                              ("Content-Length", "6")])
            write(b"abc")
            return [b"def"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise LookupError("no such thing")
        except LookupError:  # PEP 3333: nothing was sent yet, so the app may change its mind
            start_response("404 Not Found", [("Content-Type", "text/plain"),
                                             ("Content-Length", "7")], sys.exc_info())
        return [b"missing"]

    with running(validator(app)) as server:
        client = connect(server)
        client.send(get("/write") + get("/changed-mind"))
        assert client.response()[::2] == (200, b"abcdef")
        assert client.response()[::2] == (404, b"missing")


def test_error_after_the_head_was_sent_closes_the_connection(connect, caplog):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        raise RuntimeError("failed while streaming")

    with running(validator(app)) as server:
        client = connect(server)
        client.send(get())
        assert client.file.readline() == b"HTTP/1.1 200 OK\r\n"
        rest = client.file.read()          # up to the close: the chunked body never ends
        assert rest.endswith(b"7\r\npartial\r\n") and b"\r\n0\r\n" not in rest
        assert "failed while streaming" in caplog.text


@pytest.mark.parametrize("inline_for", [None, inline_everything], ids=["workers", "inline"])
def test_request_shutdown_from_a_signal_handler(connect, inline_for):
    server = httpserver.HTTPServer(validator(echo_app), port=0, inline_for=inline_for)
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: server.request_shutdown())

    def signal_once_serving():
        # A request answered proves the loop runs: the signal then lands inside it, not
        # before serve_forever() began. Sent even if that fails, so the test cannot hang.
        try:
            assert_served_normally(server, connect)
        finally:
            os.kill(os.getpid(), signal.SIGUSR1)

    signaller = threading.Thread(target=signal_once_serving)
    try:
        signaller.start()
        started = time.monotonic()
        server.serve_forever()   # in the main thread, where Python runs signal handlers
        # Nothing is in flight, so it returns at once, not after the shutdown deadline.
        assert time.monotonic() - started < httpserver.SHUTDOWN_DEADLINE_SECONDS / 3
    finally:
        # Joined before the old handler is back: SIGUSR1's default would end pytest. The
        # client's socket timeouts bound the wait.
        signaller.join()
        signal.signal(signal.SIGUSR1, previous)


def _start_twice(environ, start_response):
    start_response("200 OK", [])
    start_response("200 OK", [])
    return [b""]


def _header_with_crlf(environ, start_response):
    start_response("200 OK", [("X-Injected", "a\r\nSet-Cookie: evil=1")])
    return [b""]


def _no_start_response(environ, start_response):
    return [b"body"]


def _str_body(environ, start_response):
    start_response("200 OK", [])
    return ["not bytes"]


def _bad_status(environ, start_response):
    start_response("OK", [])
    return [b""]


def _hop_by_hop(environ, start_response):
    start_response("200 OK", [("Transfer-Encoding", "chunked")])
    return [b""]


def _bytes_header(environ, start_response):
    start_response("200 OK", [(b"X-A", b"b")])
    return [b""]


@pytest.mark.parametrize("app", [_start_twice, _header_with_crlf, _no_start_response, _str_body,
                                 _bad_status, _hop_by_hop, _bytes_header])
def test_start_response_misuse_is_a_500(app, connect):
    # Not wrapped in the validator: it would catch these first, and here the server must.
    with running(app, header_timeout=SHORT_TIMEOUT) as server:
        for _ in range(2):  # the worker survives and serves the next connection
            client = connect(server)
            client.send(get())
            status, headers, _ = client.response()
            assert status == 500 and "x-injected" not in headers and "set-cookie" not in headers
            assert client.is_closed()


def test_close_is_called_and_bad_content_length_closes():
    closed = []

    class Body:
        def __iter__(self):
            yield b"too long"

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "3")])
        return Body()

    with running(app) as server:
        client = Client(server.server_address)
        client.send(get())
        status, _, body = client.response()
        assert status == 200 and body == b"too"   # never more than the app promised
        assert client.is_closed()                 # the extra bytes must not look like a response
        client.close()
    assert closed == [True]


@pytest.mark.parametrize("body", [[b"four"], iter([b"fo", b"ur"])], ids=["list", "iterator"])
def test_a_body_shorter_than_its_content_length_closes_the_connection(body, caplog):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return body

    with running(app) as server:
        client = Client(server.server_address)
        client.send(get())
        # Kept open, the connection would leave the client waiting for 6 more bytes, and the
        # next response would be read as them; READ_TIMEOUT fails the test instead.
        status, headers, received = client.response()
        assert (status, headers["content-length"], received) == (200, "10", b"four")
        assert client.is_closed()
        client.close()
    assert "less than its Content-Length" in caplog.text


def test_idle_keep_alive_connections_hold_no_worker(connect):
    threads_before = set(threading.enumerate())
    with running(validator(echo_app), max_workers=2, keepalive_timeout=5.0) as server:
        idle = [connect(server) for _ in range(10)]
        for client in idle:
            client.send(get())
            assert client.response()[0] == 200
        # Ten connections wait for their next request, at most two workers exist (one was
        # enough: each request found it idle), and a new client is served at once: waiting
        # costs a selector entry, not a thread.
        newcomer = connect(server)
        newcomer.send(get("/newcomer"))
        status, _, body = newcomer.response()
        assert status == 200 and json.loads(body)["path"] == "/newcomer"
        assert server_threads(threads_before) in (["http-default-0", LOOP_THREAD, SERVE_THREAD],
                                                  ["http-default-0", "http-default-1", LOOP_THREAD, SERVE_THREAD])


def test_a_lanes_threads_start_when_requests_need_them_up_to_its_count(connect):
    blocking, release = threading.Event(), threading.Event()
    threads_before = set(threading.enumerate())
    with running(thread_naming_app(blocking, release), max_workers=3) as server:
        assert server_threads(threads_before) == [LOOP_THREAD, SERVE_THREAD]  # none until a request
        held = []
        for number in range(3):  # each blocks its worker: the next request needs a new one
            blocking.clear()
            client = connect(server)
            client.send(get("/block"))
            assert blocking.wait(READ_TIMEOUT)
            held.append(client)
            assert f"http-default-{number}" in server_threads(threads_before)
        queued = connect(server)
        queued.send(get("/queued"))  # the lane has its three: this one waits for one of them
        assert not wait_until_readable(queued, within=0.3)
        assert [name for name in server_threads(threads_before) if name.startswith("http-default")] == \
            ["http-default-0", "http-default-1", "http-default-2"]
        release.set()
        for client in held:
            assert client.response()[0] == 200
        assert queued.response()[0] == 200


def test_a_worker_that_cannot_start_is_started_again_by_the_sweep(connect, monkeypatch, caplog):
    """No thread to be had (a system limit) when the lane's first request came: the request
    waits, and the loop's next sweep starts the thread, rather than leaving it with none."""
    refusals = []

    class FirstWorkerFails(threading.Thread):
        def start(self):
            if self.name.startswith("http-default") and not refusals:
                refusals.append(self.name)
                raise RuntimeError("can't start new thread")
            super().start()

    monkeypatch.setattr(threading, "Thread", FirstWorkerFails)
    with running(validator(echo_app)) as server:
        client = connect(server)
        client.send(get("/first"))
        status, _, body = client.response()
        assert status == 200 and json.loads(body)["path"] == "/first"
    assert refusals == ["http-default-0"]
    assert "could not start a worker thread for the default lane" in caplog.text


def test_requests_beyond_the_workers_wait_their_turn(connect):
    blocking, release = threading.Event(), threading.Event()

    def blocking_app(environ, start_response):
        if environ["PATH_INFO"] == "/block":
            blocking.set()
            release.wait(READ_TIMEOUT)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    threads_before = set(threading.enumerate())
    with running(blocking_app, max_workers=1) as server:
        blocked, waiting = connect(server), connect(server)
        blocked.send(get("/block"))
        assert blocking.wait(READ_TIMEOUT)   # the only worker is in the app now
        waiting.send(get("/next"))
        assert not wait_until_readable(waiting, within=0.3)   # /next is queued, not answered
        assert server_threads(threads_before) == ["http-default-0", LOOP_THREAD, SERVE_THREAD]   # none added
        release.set()
        waiting.sock.settimeout(READ_TIMEOUT)
        assert blocked.response()[::2] == (200, b"/block")
        assert waiting.response()[::2] == (200, b"/next")


def test_connections_beyond_the_limit_wait_in_the_backlog(connect):
    with running(validator(echo_app), max_connections=2, keepalive_timeout=5.0) as server:
        first, second = connect(server), connect(server)
        for client in (first, second):
            client.send(get())
            assert client.response()[0] == 200
        third = connect(server)  # the kernel completes the handshake; the server does not accept
        third.send(get("/third"))
        third.sock.settimeout(0.3)
        with pytest.raises(socket.timeout):
            third.sock.recv(1, socket.MSG_PEEK)
        first.close()
        third.sock.settimeout(READ_TIMEOUT)
        status, _, body = third.response()
        assert status == 200 and json.loads(body)["path"] == "/third"


def test_graceful_shutdown_finishes_in_flight_requests(connect):
    in_app, release = threading.Event(), threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            in_app.set()
            release.wait(READ_TIMEOUT)
        return echo_app(environ, start_response)

    with running(validator(app)) as server:
        idle = connect(server)
        idle.send(get())
        assert idle.response()[0] == 200
        slow = connect(server)
        slow.send(get("/slow"))
        assert in_app.wait(READ_TIMEOUT)
        started = time.monotonic()
        server.request_shutdown()
        assert idle.is_closed()                        # idle keep-alive: closed at once,
        # not after its keep-alive timeout (5 s), and while /slow is still in the app
        assert time.monotonic() - started < httpserver.KEEPALIVE_TIMEOUT_SECONDS / 3
        assert not release.is_set()
        release.set()
        status, headers, body = slow.response()        # in flight: finished, then closed
        assert status == 200 and json.loads(body)["path"] == "/slow"
        assert headers["connection"] == "close"
        assert slow.is_closed()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(server.server_address, timeout=1)


class _LateHandBack(queue.SimpleQueue):
    """The server's queue of connections that workers give back, with a worker's put() made
    0.3 s late: that widens the moment between the worker's last look at the server's state
    (under the lock) and its put(), which the scheduler may stretch at any time."""

    def put(self, item, block=True, timeout=None):
        if threading.current_thread().name.startswith("http-"):
            time.sleep(0.3)
        super().put(item, block, timeout)


def test_shutdown_closes_a_connection_a_worker_gives_back_late(connect):
    in_app, release = threading.Event(), threading.Event()

    def app(environ, start_response):
        in_app.set()
        release.wait(READ_TIMEOUT)
        return echo_app(environ, start_response)

    server = httpserver.HTTPServer(validator(app), port=0)
    server._returned = _LateHandBack()
    loop = threading.Thread(target=server.serve_forever, name=SERVE_THREAD)
    loop.start()
    client = connect(server)
    client.send(get("/in-flight"))
    assert in_app.wait(READ_TIMEOUT)
    server.request_shutdown()
    release.set()
    status, headers, _ = client.response()
    assert status == 200 and headers["connection"] == "close"
    loop.join(READ_TIMEOUT)
    assert not loop.is_alive()
    # The worker counted itself done before it gave the connection back, and the loop,
    # seeing nothing busy, returned: the connection is left open in nobody's hands.
    assert wait_until_readable(client, within=1.0), "the connection was never closed"
    assert client.is_closed()


def test_running_out_of_file_descriptors_does_not_spin_the_event_loop(connect, caplog):
    with running(validator(echo_app)) as server:
        assert_served_normally(server, connect)
        waiting = [socket.socket() for _ in range(3)]   # their descriptors exist before the limit
        lowest_free = os.dup(0)                         # every number below this one is taken
        os.close(lowest_free)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))   # accept(): EMFILE
            for sock in waiting:
                sock.connect(server.server_address)   # the listener stays readable
            cpu, wall = time.process_time(), time.monotonic()
            time.sleep(0.5)   # what the loop does meanwhile is what is measured
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        failures = [record for record in caplog.records if record.getMessage() == "accept() failed"]
        assert len(failures) <= 10, f"{len(failures)} failed accept() in 0.5 s: the loop spins"
        assert cpu < wall / 3, f"{cpu:.2f} s of CPU in {wall:.2f} s while out of descriptors"
        for sock in waiting:   # and once descriptors are free again, the clients are served
            sock.settimeout(READ_TIMEOUT)
            sock.sendall(get())
            assert sock.recv(12) == b"HTTP/1.1 200"
            sock.close()


def test_a_refusal_of_a_head_request_has_no_body(server, connect):
    # RFC 9110 §9.3.2: the server MUST NOT send content in response to HEAD; the server's
    # own refusals (here a 413, decided from the head alone) too, not only the app's answers.
    client = connect(server)
    client.send(b"HEAD / HTTP/1.1\r\n" + H + b"Content-Length: 99999999\r\n\r\n")
    status, headers, _ = client.response(head_request=True)
    assert status == 413 and headers["connection"] == "close"
    assert client.is_closed(), "a body followed the head"


def test_an_on_reject_hook_that_raises_does_not_stop_the_server(connect):
    # on_reject runs in the event loop thread: an exception there (a log that cannot be
    # written) ended serve_forever(), and with it every connection and the listener.
    def on_reject(**fields):
        raise OSError("the log cannot be written")

    with running(validator(echo_app), on_reject=on_reject) as server:
        client = connect(server)
        client.send(b"GARBAGE\r\n\r\n")
        assert client.response()[0] == 400
        assert_served_normally(server, connect)


# -- the server's own errors carry the application's security headers ----------------------

@pytest.mark.parametrize("raw, status", [
    (b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
])
def test_a_refusal_by_the_server_carries_every_security_header_and_no_store(server, raw, status):
    client = Client(server.server_address)
    client.send(raw)
    answered, headers, _ = client.response()
    assert answered == status
    for name, value in web.SECURITY_HEADERS:
        assert headers[name.lower()] == value, name
    assert headers["cache-control"] == "no-store"


def thread_naming_app(blocking, release):
    """Answers with the name of the thread that ran it; /block waits for `release` first."""
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/block":
            blocking.set()
            release.wait(READ_TIMEOUT)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [threading.current_thread().name.encode()]
    return app
