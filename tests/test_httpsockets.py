"""Tests for httpsockets.py and HTTPS in httpserver.py: a throw-away certificate, real handshakes.

A certificate for localhost and 127.0.0.1 is made once per module with the `openssl` command
line (skipped without it, except under CI=true). The in-process servers of test_httpserver.py
get a TLS context; clients are Python's ssl (to choose the TLS version, or to stop half-way
through a handshake) and `curl --cacert`, which trusts exactly that certificate. The last
tests run the real `python server.py` with TLS_CERT_FILE and TLS_KEY_FILE.

Timing follows test_httpserver.py: bounds at least 3x what they guard, events and polling
rather than sleeps.
"""
import functools
import hashlib
import json
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest
from conftest import PROJECT_DIR, free_port, server_env, unavailable
from test_http11 import H, get
from test_httpserver import READ_TIMEOUT, SHORT_TIMEOUT, Client, echo_app, inline_everything, running

import httpsockets
import httpworkers

PROMPTLY_SECONDS = 1.0      # a request that waits on no slow client is answered well within this
CLOSE_SLACK_SECONDS = 3.0   # a connection due to close at a deadline is closed within this after it
PROMPT_CLOSE_SECONDS = 2.5  # half the shop's keep-alive timeout: "at once", with slack
NEVER_HELLO_CLIENTS = 50
HANDSHAKE_TIMEOUT_SECONDS = 2.0  # the head timeout of patient_server, which covers the handshake
BIG_BODY_BYTES = 1024 * 1024
SMALL_BUFFER_BYTES = 16 * 1024  # the kernel's buffers (SO_SNDBUF, SO_RCVBUF) around a slow reader
OPENSSL_REQ = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
               "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """(certificate file, key file): a self-signed P-256 certificate for localhost, for a day."""
    if shutil.which("openssl") is None:
        unavailable("the openssl command line is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    subprocess.run([*OPENSSL_REQ, "-keyout", str(key_file), "-out", str(cert_file)], check=True,
                   capture_output=True, timeout=30)
    return cert_file, key_file


def tls_app(environ, start_response):
    """/scheme answers wsgi.url_scheme; /big 1 MiB at once, /stream 2 MiB in pieces; else the echo."""
    path = environ["PATH_INFO"]
    if path == "/scheme":
        body = environ["wsgi.url_scheme"].encode()
    elif path == "/big":
        body = big_body()
    elif path == "/stream":  # more than the outbox holds: the worker waits for the client itself
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return iter([big_body()] * 2)
    else:
        return echo_app(environ, start_response)
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
    return [body]


def big_body():
    return bytes(range(256)) * (BIG_BODY_BYTES // 256)


@pytest.fixture
def tls_server(certificate):
    with running(tls_app, tls_context=httpsockets.server_context(*certificate), header_timeout=SHORT_TIMEOUT,
                 body_timeout=SHORT_TIMEOUT, keepalive_timeout=SHORT_TIMEOUT, max_workers=1) as server:
        yield server


def client_context(certificate, *, version=None):
    """A client's context that trusts the test certificate; version: the only one it offers."""
    context = ssl.create_default_context(cafile=str(certificate[0]))
    context.set_alpn_protocols(["h2", "http/1.1"])  # as curl and browsers do
    if version is not None:
        if version < ssl.TLSVersion.TLSv1_2:
            context.set_ciphers("DEFAULT:@SECLEVEL=0")  # or OpenSSL would not even offer it
        context.minimum_version = context.maximum_version = version
    return context


class TLSClient(Client):
    """test_httpserver's Client over TLS: the same response reader on an SSLSocket."""

    def __init__(self, address, context, receive_buffer=None):
        sock = socket.socket()
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.settimeout(READ_TIMEOUT)
        sock.connect(address)
        self.sock = context.wrap_socket(sock, server_hostname="localhost")
        self.file = self.sock.makefile("rb")


@pytest.fixture
def connect_tls(certificate):
    clients = []

    def connect(server, *, version=None, receive_buffer=None):
        client = TLSClient(server.server_address, client_context(certificate, version=version), receive_buffer)
        clients.append(client)
        return client
    yield connect
    for client in clients:
        client.close()


def raw_connection(server):
    return socket.create_connection(server.server_address, timeout=READ_TIMEOUT)


def closed_within(sock, seconds):
    """True when the server closes sock (end of file, or a reset) within seconds; what it
    sends before (a TLS alert) is dropped."""
    deadline = time.monotonic() + seconds
    while select.select([sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
        try:
            if sock.recv(4096) == b"":
                return True
        except ConnectionResetError:
            return True
    return False


def served_over_tls_within(server, connect_tls, seconds, path="/quick"):
    started = time.monotonic()
    client = connect_tls(server)
    client.send(get(path))
    status, _, body = client.response()
    assert status == 200 and json.loads(body)["path"] == path
    assert time.monotonic() - started < seconds


@functools.cache
def client_hello(cert_file):
    """A real ClientHello, made by an SSLObject that never touches a socket."""
    outgoing = ssl.MemoryBIO()
    tls = ssl.create_default_context(cafile=cert_file).wrap_bio(ssl.MemoryBIO(), outgoing,
                                                                server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):  # it wrote its hello, and now waits for ours
        tls.do_handshake()
    return outgoing.read()


def half_a_client_hello(certificate):
    hello = client_hello(str(certificate[0]))
    assert hello[:1] == httpsockets.TLS_HANDSHAKE_RECORD and len(hello) > 100
    return hello[:len(hello) // 2]


# -- versions, ciphers and the context ---------------------------------------------------------

@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["1.2", "1.3"])
def test_tls_1_2_and_1_3_are_served_with_the_https_scheme(tls_server, connect_tls, version):
    client = connect_tls(tls_server, version=version)
    assert client.sock.version() == version.name.replace("_", ".")  # "TLSv1.2", "TLSv1.3"
    client.send(get("/scheme"))
    assert client.response()[::2] == (200, b"https")
    if version == ssl.TLSVersion.TLSv1_2:  # forward secret and AEAD: ECDHE with AES-GCM or ChaCha20
        name = client.sock.cipher()[0]
        assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name), name
    assert client.sock.selected_alpn_protocol() == "http/1.1"  # it offered h2 first


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["1.0", "1.1"])
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_1_1_and_older_are_refused_by_the_server(tls_server, connect_tls, certificate, version):
    context = client_context(certificate, version=version)
    with raw_connection(tls_server) as sock, pytest.raises(ssl.SSLError) as refused:
        context.wrap_socket(sock, server_hostname="localhost")
    # The server's alert, not the client declining to offer the version.
    assert "PROTOCOL_VERSION" in str(refused.value).upper().replace(" ", "_"), refused.value
    served_over_tls_within(tls_server, connect_tls, PROMPTLY_SECONDS)


def test_the_context_says_what_it_allows(certificate):
    context = httpsockets.server_context(*certificate)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_RENEGOTIATION and context.options & ssl.OP_NO_COMPRESSION
    assert context.verify_mode == ssl.CERT_NONE  # no client certificates asked for
    tls12 = [cipher["name"] for cipher in context.get_ciphers() if cipher["protocol"] == "TLSv1.2"]
    assert tls12 and all(name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name) for name in tls12)


def test_a_key_that_is_not_the_certificates_is_refused(certificate, tmp_path):
    other_key = tmp_path / "other.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
                    str(other_key)], check=True, capture_output=True, timeout=30)
    with pytest.raises(ssl.SSLError):
        httpsockets.server_context(certificate[0], other_key)


# -- reading and writing through TLS ---------------------------------------------------------

def test_keep_alive_and_pipelining_over_tls(tls_server, connect_tls):
    client = connect_tls(tls_server)
    for number in range(2):
        client.send(get(f"/one/{number}"))
        assert json.loads(client.response()[2])["path"] == f"/one/{number}"
    client.send(get("/two/a") + get("/two/b"))  # two requests in one TLS record
    assert [json.loads(client.response()[2])["path"] for _ in range(2)] == ["/two/a", "/two/b"]


@pytest.mark.parametrize("recv_bytes", [httpworkers.RECV_BYTES, 1000], ids=["as-shipped", "smaller-than-a-record"])
def test_a_body_of_many_tls_records_arrives_whole(certificate, connect_tls, monkeypatch, recv_bytes):
    # With recv() smaller than a 16 KiB record, the rest of each record waits inside OpenSSL,
    # where select() cannot see it: only reading until pending() is 0 gets it (httpsockets.py).
    monkeypatch.setattr(httpworkers, "RECV_BYTES", recv_bytes)
    body = b"y" * (200 * 1024)
    with running(tls_app, tls_context=httpsockets.server_context(*certificate), body_timeout=SHORT_TIMEOUT) as server:
        client = connect_tls(server)
        client.send(b"POST /upload HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        status, _, echoed = client.response()
    assert status == 200 and json.loads(echoed)["body"] == body.decode()


def test_plain_http_on_the_tls_port_is_told_so_and_closed(tls_server):
    client = Client(tls_server.server_address)
    try:
        client.send(get("/health"))
        status, headers, body = client.response()
        assert status == 400 and headers["connection"] == "close"
        assert json.loads(body)["detail"] == httpsockets.PLAIN_HTTP_DETAIL
        assert client.is_closed()
    finally:
        client.close()


@pytest.mark.parametrize("path", ["/big", "/stream"])
def test_a_large_response_to_a_slow_tls_reader_completes_and_holds_no_worker(certificate, connect_tls, path):
    # Small kernel buffers on both sides, so that the response cannot hide in them: sends
    # over TLS would block (SSLWantWriteError) and go on from the outbox or in the worker.
    with running(tls_app, tls_context=httpsockets.server_context(*certificate), max_workers=1,
                 send_buffer_bytes=SMALL_BUFFER_BYTES) as server:
        reader = connect_tls(server, receive_buffer=SMALL_BUFFER_BYTES)
        reader.send(get(path))
        if path == "/big":  # 1 MiB fits the outbox: the only worker is free while nobody reads
            served_over_tls_within(server, connect_tls, PROMPTLY_SECONDS * 3)
        else:  # 2 MiB in pieces: the worker waits for the client (httpworkers.send_outbox_blocking)
            assert 2 * BIG_BODY_BYTES > httpworkers.OUTBOX_BYTES
        status, _, body = reader.response()
        expected = big_body() * (2 if path == "/stream" else 1)
        assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(expected).digest()
        reader.send(get("/after"))  # and the connection is still in step
        assert json.loads(reader.response()[2])["path"] == "/after"


def test_answers_the_event_loop_held_go_out_whole_and_in_order_over_tls(certificate, connect_tls):
    """Requests the loop runs itself have their answers held for the end of its turn
    (httpthreads.py): over TLS too, one bigger than the slow client's window is sent a
    record at a time as the client reads, and pipelined answers keep their order."""
    body = bytes(range(256)) * 200  # 51,200 bytes: held (under HOLD_BYTES), more than the window
    assert len(body) < httpworkers.HOLD_BYTES

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body))),
                                  ("X-Path", environ["PATH_INFO"])])
        return [body]

    with running(app, tls_context=httpsockets.server_context(*certificate), inline_for=inline_everything,
                 send_buffer_bytes=SMALL_BUFFER_BYTES) as server:
        slow, other = connect_tls(server, receive_buffer=SMALL_BUFFER_BYTES), connect_tls(server)
        for turn in range(2):
            slow.send(get(f"/slow/{turn}"))
            other.send(get(f"/other/{turn}/a") + get(f"/other/{turn}/b"))
            for client, paths in ((other, [f"/other/{turn}/a", f"/other/{turn}/b"]), (slow, [f"/slow/{turn}"])):
                for path in paths:
                    status, headers, answer = client.response()
                    assert (status, headers["x-path"], answer) == (200, path, body)


# -- handshakes run in the event loop ---------------------------------------------------------

@pytest.fixture
def patient_server(certificate):
    """One worker, and a head timeout longer than PROMPTLY_SECONDS: a handshake that held the
    worker would make the next client wait at least that long."""
    with running(tls_app, tls_context=httpsockets.server_context(*certificate), max_workers=1,
                 header_timeout=HANDSHAKE_TIMEOUT_SECONDS) as server:
        yield server


@pytest.mark.parametrize("sends", ["nothing", "half a ClientHello"])
def test_slow_handshakes_hold_no_worker_and_are_closed_at_the_head_timeout(patient_server, connect_tls,
                                                                           certificate, sends):
    opened = time.monotonic()
    slow = [raw_connection(patient_server) for _ in range(NEVER_HELLO_CLIENTS)]
    try:
        if sends != "nothing":
            for sock in slow:
                sock.sendall(half_a_client_hello(certificate))
        served_over_tls_within(patient_server, connect_tls, PROMPTLY_SECONDS)
        assert not any(closed_within(sock, 0) for sock in slow)  # still waiting for their deadline
        for sock in slow:
            assert closed_within(sock, HANDSHAKE_TIMEOUT_SECONDS + CLOSE_SLACK_SECONDS)
        assert time.monotonic() - opened < HANDSHAKE_TIMEOUT_SECONDS + CLOSE_SLACK_SECONDS
    finally:
        for sock in slow:
            sock.close()


def test_a_client_that_handshakes_and_sends_nothing_is_closed_at_the_same_deadline(tls_server, connect_tls):
    client = connect_tls(tls_server)  # the handshake is done
    started = time.monotonic()
    assert client.is_closed()  # no 408: no request had begun
    assert time.monotonic() - started < SHORT_TIMEOUT + CLOSE_SLACK_SECONDS


def test_a_failed_handshake_is_closed_and_the_server_goes_on(tls_server, connect_tls):
    untrusting = ssl.create_default_context()  # the system's CAs: our certificate is unknown
    with raw_connection(tls_server) as sock, pytest.raises(ssl.SSLCertVerificationError):
        untrusting.wrap_socket(sock, server_hostname="localhost")
    with raw_connection(tls_server) as sock:
        sock.sendall(httpsockets.TLS_HANDSHAKE_RECORD + b"\x03\x03\x00\x05garbage")  # not a ClientHello
        assert closed_within(sock, READ_TIMEOUT)
    served_over_tls_within(tls_server, connect_tls, PROMPTLY_SECONDS)


# -- python server.py with TLS_CERT_FILE and TLS_KEY_FILE -------------------------------------

def tls_env(tmp_path, certificate, **overrides):
    return server_env(f"sqlite:///{tmp_path}/shop.db", TLS_CERT_FILE=str(certificate[0]),
                      TLS_KEY_FILE=str(certificate[1]), **overrides)


def curl(certificate, *arguments):
    if shutil.which("curl") is None:
        unavailable("curl is needed to talk to the TLS server")
    done = subprocess.run(["curl", "--silent", "--show-error", "--cacert", str(certificate[0]), *arguments],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_python_server_py_serves_https_to_curl(tmp_path, certificate, start_program):
    program = start_program([sys.executable, "server.py", "--port", str(free_port())],
                            tls_env(tmp_path, certificate)).wait_for_url()
    assert program.url.startswith("https://127.0.0.1:")
    url = f"https://localhost:{program.port}/health"
    answer = curl(certificate, "--include", url)
    head, _, body = answer.partition("\n\n")  # text=True: CRLF read as LF
    assert head.startswith("HTTP/1.1 200 ") and body == '{"status":"healthy","version":"1.0.0"}'
    assert "\nStrict-Transport-Security: max-age=63072000\n" in head
    # Two requests, one connection: curl connected once, then reused it.
    assert curl(certificate, "--output", "/dev/null", "--output", "/dev/null", "--write-out", "%{num_connects}\n",
                url, url).split() == ["1", "0"]
    # Plain HTTP to the same port: a 400 saying so, not a TLS alert.
    plain = subprocess.run(["curl", "--silent", "--include", f"http://127.0.0.1:{program.port}/health"],
                           capture_output=True, text=True, timeout=30, check=False)
    assert plain.stdout.startswith("HTTP/1.1 400 ") and httpsockets.PLAIN_HTTP_DETAIL in plain.stdout


def test_hsts_is_sent_over_tls_only(tmp_path, certificate, start_program):
    plain = start_program([sys.executable, "server.py", "--port", str(free_port())],
                          server_env(f"sqlite:///{tmp_path}/plain.db")).wait_for_url()
    secure = start_program([sys.executable, "server.py", "--port", str(free_port())],
                           tls_env(tmp_path, certificate)).wait_for_url()
    with socket.create_connection(("127.0.0.1", plain.port), timeout=READ_TIMEOUT) as sock:
        sock.sendall(get("/health"))
        plain_head = sock.recv(4096).partition(b"\r\n\r\n")[0]
    with socket.create_connection(("127.0.0.1", secure.port), timeout=READ_TIMEOUT) as raw, \
            client_context(certificate).wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(get("/health"))
        secure_head = sock.recv(4096).partition(b"\r\n\r\n")[0]
    assert plain_head.startswith(b"HTTP/1.1 200 ") and secure_head.startswith(b"HTTP/1.1 200 ")
    assert b"strict-transport-security" not in plain_head.lower()
    assert b"\r\nStrict-Transport-Security: max-age=63072000" in secure_head


def test_sigterm_drains_tls_connections_like_plain_ones(tmp_path, certificate, start_program):
    program = start_program([sys.executable, "server.py", "--port", str(free_port())],
                            tls_env(tmp_path, certificate)).wait_for_url()
    address = ("127.0.0.1", program.port)
    context = client_context(certificate)
    idle, in_flight = TLSClient(address, context), TLSClient(address, context)
    silent = socket.create_connection(address, timeout=READ_TIMEOUT)  # no ClientHello yet
    try:
        idle.send(get("/health"))
        assert idle.response()[0] == 200
        in_flight.send(b"POST /health HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\nContent-Length: 10\r\n\r\n")
        assert in_flight.file.readline() == b"HTTP/1.1 100 Continue\r\n" and in_flight.file.readline() == b"\r\n"
        in_flight.send(b"01234")

        program.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        # At once, not after the keep-alive (5 s) or head (10 s) timeouts.
        assert idle.is_closed() and closed_within(silent, PROMPT_CLOSE_SECONDS)
        assert time.monotonic() - signalled < PROMPT_CLOSE_SECONDS
        in_flight.send(b"56789")
        status, headers, _ = in_flight.response()
        assert status == 405 and headers["connection"] == "close"
        assert in_flight.is_closed()
        assert program.wait(30) == 0
    finally:
        idle.close()
        in_flight.close()
        silent.close()
    assert "Traceback" not in program.stderr()


def test_a_file_that_is_not_a_certificate_stops_the_start_with_one_clear_line(tmp_path, certificate):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    env = server_env(f"sqlite:///{tmp_path}/shop.db", TLS_CERT_FILE=str(junk), TLS_KEY_FILE=str(certificate[1]))
    done = subprocess.run([sys.executable, "server.py", "--port", str(free_port())], cwd=PROJECT_DIR,
                          env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("configuration error: TLS_CERT_FILE and TLS_KEY_FILE must be a PEM certificate")
    assert "Traceback" not in done.stderr
