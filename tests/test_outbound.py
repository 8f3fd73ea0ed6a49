"""Tests for outbound.py: the SSRF guard refuses before any connection, the connection goes
to the address that was checked (one DNS lookup), and a receiver's answer is bounded in
size and time, its redirects never followed."""

import ipaddress
import socket
import threading
import time

import pytest

import outbound

PUBLIC = "93.184.215.14"  # a public address; nothing here ever connects to it
NOT_ASCII = "the URL must be ASCII: percent-encode the path, write the host as xn--... (IDNA)"
NOT_A_URI = 'the URL must be a URI (RFC 3986): percent-encode characters such as space " < > ^ ` { | }'
UNSPECIFIED = "0.0.0.0"  # noqa: S104 - an address to refuse; nothing binds here


@pytest.fixture
def no_connection(monkeypatch):
    """Fail the test if the guard lets anything reach the point of connecting."""

    def connect(self):
        pytest.fail(f"a connection to {self.host}:{self.port} was attempted")

    monkeypatch.setattr(outbound._CheckedAddressConnection, "connect", connect)


def fake_dns(monkeypatch, *answers):
    """Make getaddrinfo answer `answers` (a list of addresses per call, in turn); the calls."""
    calls = []

    def getaddrinfo(host, port, *args, **kwargs):
        addresses = answers[min(len(calls), len(answers) - 1)]
        calls.append(host)
        return [(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (address, port)) for address in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return calls


@pytest.mark.parametrize("url, message", [
    ("ftp://hooks.example/in", "the URL must start with http:// or https://"),
    ("file:///etc/passwd", "the URL must start with http:// or https://"),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "the URL must start with http:// or https://"),
    ("//hooks.example/in", "the URL must start with http:// or https://"),
    ("https://user:secret@hooks.example/", "the URL must not hold a user name or password"),
    ("https://@hooks.example/", "the URL must not hold a user name or password"),
    ("https:///path-only", "the URL must name a host"),
    ("https://hooks.example/in#part", "the URL must not have a #fragment (it is never sent to the server)"),
    ("https://hooks.example:0/", "the URL's port must be 1 to 65535"),
    ("https://hooks.example:99999/", "the URL is not valid (its host or port cannot be read)"),
    ("https://[::1/", "the URL is not valid (its host or port cannot be read)"),
    ("https://hooks.example/a b", "the URL must not contain spaces or control characters"),
    ("https://hooks.example/\r\nX-Injected: 1", "the URL must not contain spaces or control characters"),
    ("https://hooks.example/caf\u00e9", NOT_ASCII),
    ("https://b\u00fccher.example/", NOT_ASCII),
    ("", "the URL must be 1 to 2000 characters"),
    ("https://hooks.example/" + "a" * 2000, "the URL must be 1 to 2000 characters"),
    # Found by schemathesis (tests/test_schemathesis.py): printable ASCII that a URI may not
    # hold as it is (RFC 3986 §2) was accepted, stored, and then shown as a `uri` it is not.
    ("https://hooks.example/uW|A0f{F^dS+u", NOT_A_URI),
    ("https://hooks.example/in?q=<b>", NOT_A_URI),
    ('https://hooks.example/"quoted"', NOT_A_URI),
    ("https://hooks.example/back\\slash", NOT_A_URI),
    ("https://hooks.example/%zz", NOT_A_URI),
    ("https://hooks.example/in?list=[1]", NOT_A_URI),
])
def test_urls_that_are_not_http_to_a_host_are_refused(url, message):
    with pytest.raises(outbound.Refused) as refused:
        outbound.check_url(url)
    assert str(refused.value) == message


@pytest.mark.parametrize("url", ["https://hooks.example/in%7Cout?a=%7B1%7D&b=~!$&'()*+,;=:@/?",
                                 "HTTP://hooks.example", "https://[2001:db8::1]:8443/in"])
def test_urls_written_as_uris_pass_the_shape_check(url):
    assert outbound.check_url(url).host in ("hooks.example", "2001:db8::1")
    assert outbound.URL_PATTERN.fullmatch(url)


def test_a_checked_url_keeps_its_path_and_query_and_the_default_port():
    assert outbound.check_url("https://Hooks.Example/in?a=1&b=2") == outbound.Target(
        "https", "hooks.example", 443, "/in?a=1&b=2")
    assert outbound.check_url("http://[2606:4700::1111]:8080").host_header == "[2606:4700::1111]:8080"
    assert outbound.check_url("http://hooks.example:80/").host_header == "hooks.example"


@pytest.mark.parametrize("address, problem", [
    ("127.0.0.1", "a loopback address"),
    ("127.255.0.9", "a loopback address"),
    ("::1", "a loopback address"),
    ("10.0.0.1", "a private address"),
    ("172.16.5.4", "a private address"),
    ("192.168.1.1", "a private address"),
    ("fc00::1", "a private address"),
    ("169.254.169.254", "a link-local address (cloud metadata services live here)"),
    ("fe80::1", "a link-local address (cloud metadata services live here)"),
    ("100.64.0.1", "a carrier-grade NAT address"),
    ("224.0.0.1", "a multicast address"),
    ("ff02::1", "a multicast address"),
    (UNSPECIFIED, "the unspecified address"),
    ("::", "the unspecified address"),
    ("240.0.0.1", "a reserved address"),
    ("255.255.255.255", "a reserved address"),
    ("fec0::1", "a site-local address"),
    ("::ffff:127.0.0.1", "an IPv6 address that carries 127.0.0.1, a loopback address"),
    ("::ffff:169.254.169.254", "an IPv6 address that carries 169.254.169.254, a link-local address"
                               " (cloud metadata services live here)"),
    ("::127.0.0.1", "an IPv6 address that carries 127.0.0.1, a loopback address"),
    ("2002:7f00:1::", "an IPv6 address that carries 127.0.0.1, a loopback address"),  # 6to4
    ("2002:a00:1::", "an IPv6 address that carries 10.0.0.1, a private address"),  # 6to4
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "an IPv6 address that carries 10.0.0.1, a private address"),  # Teredo
    ("64:ff9b::a9fe:a9fe", "an IPv6 address that carries 169.254.169.254, a link-local address"
                           " (cloud metadata services live here)"),  # NAT64
    ("64:ff9b:1:7f00:1:0:808:808", "a local-use NAT64 address (the IPv4 address it reaches depends on the local"
                                   " translator)"),  # 127.0.0.1 behind a /48 translator, 8.8.8.8 read as /96
    ("64:ff9b:1::808:808", "a local-use NAT64 address (the IPv4 address it reaches depends on the local"
                           " translator)"),
    ("192.0.2.1", "a private address"),  # documentation
    ("198.18.0.1", "a private address"),  # benchmarking
])
def test_every_address_that_is_not_public_unicast_is_refused(address, problem):
    assert outbound.address_problem(ipaddress.ip_address(address)) == problem


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700::1111", "2002:808:808::1"])
def test_public_addresses_pass(address):
    assert outbound.address_problem(ipaddress.ip_address(address)) is None


def test_allowing_private_addresses_still_refuses_the_unspecified_and_multicast_ones():
    for address in ("127.0.0.1", "10.0.0.1", "::1", "169.254.169.254"):
        assert outbound.address_problem(ipaddress.ip_address(address), allow_private=True) is None
    for address in (UNSPECIFIED, "::", "224.0.0.1"):
        assert outbound.address_problem(ipaddress.ip_address(address), allow_private=True) is not None


@pytest.mark.parametrize("host", ["localhost", "127.1", "2130706433", "0x7f.1", "0177.0.0.1", "017700000001",
                                  "0x7f000001", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", UNSPECIFIED, "0"])
def test_every_spelling_of_this_machine_is_refused_without_a_connection(host, silent_listener, no_connection):
    """Names and the decimal, octal and hex forms that urlsplit lets through and the
    resolver turns into 127.0.0.1 (or ::1, or 0.0.0.0, which reaches this machine too)."""
    port, assert_untouched = silent_listener
    with pytest.raises(outbound.Refused, match="resolves to"):
        outbound.post(f"http://{host}:{port}/hook", b"{}", {}, timeout=1)
    assert_untouched()


def test_one_private_address_among_public_ones_is_enough_to_refuse(monkeypatch, no_connection):
    fake_dns(monkeypatch, [PUBLIC, "10.1.2.3"])
    with pytest.raises(outbound.Refused) as refused:
        outbound.post("https://mixed.example/hook", b"{}", {}, timeout=1)
    assert str(refused.value) == "the host 'mixed.example' resolves to 10.1.2.3, a private address"


def test_a_host_that_does_not_resolve_is_refused(no_connection):
    with pytest.raises(outbound.Refused, match="does not resolve"):
        outbound.post("https://no-such-host.invalid/hook", b"{}", {}, timeout=1)


def test_a_lookup_that_hangs_is_refused_at_its_deadline(monkeypatch, no_connection):
    """A name server that never answers: the system resolver would wait half a minute; the
    guard gives up at RESOLVE_TIMEOUT_SECONDS, and the hung lookup keeps one resolver thread."""
    answer = threading.Event()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: answer.wait(10) and [])
    monkeypatch.setattr(outbound, "RESOLVE_TIMEOUT_SECONDS", 0.2)
    started = time.monotonic()
    try:
        with pytest.raises(outbound.Refused) as refused:
            outbound.post("https://silent-dns.example/hook", b"{}", {}, timeout=1)
    finally:
        answer.set()  # the lookup's thread goes back to the pool
    assert str(refused.value) == "the host 'silent-dns.example' did not resolve within 0.2 s"
    assert time.monotonic() - started < 1.0


def test_the_connection_goes_to_the_checked_address_after_one_lookup(monkeypatch):
    """DNS rebinding: a name that answers a public address first and 127.0.0.1 after. The
    guard looks it up once; the connection is made to that checked address, never to the
    name, so the second answer is never asked for."""
    calls = fake_dns(monkeypatch, [PUBLIC], ["127.0.0.1"])
    dialled = []

    def create_connection(address, timeout=None, *args, **kwargs):
        dialled.append(address)
        raise ConnectionRefusedError("refused by the test")

    monkeypatch.setattr(socket, "create_connection", create_connection)
    with pytest.raises(ConnectionRefusedError):
        outbound.post("http://rebind.example:8080/hook", b"{}", {}, timeout=1)
    assert calls == ["rebind.example"]
    assert dialled == [(PUBLIC, 8080)]


def test_the_name_is_sent_as_host_and_the_body_as_given(monkeypatch, webhook_receiver):
    fake_dns(monkeypatch, ["127.0.0.1"])
    answer = outbound.post(f"http://receiver.test:{webhook_receiver.port}/in?x=1", b'{"a":1}',
                           {"Content-Type": "application/json", "webhook-id": "msg_1"},
                           timeout=2, allow_private=True)
    assert answer.status == 204
    [(path, headers, body)] = webhook_receiver.wait_for(1)
    assert (path, body) == ("/in?x=1", b'{"a":1}')
    assert headers["host"] == f"receiver.test:{webhook_receiver.port}"
    assert (headers["webhook-id"], headers["content-length"]) == ("msg_1", "7")
    assert headers["user-agent"] == "shop-webhooks/1.0"


def test_https_checks_the_certificate_against_the_name(monkeypatch):
    """Over TLS the handshake is told the name (SNI), and the certificate is checked against
    it: a server on the checked address without a valid certificate for the name fails."""
    import ssl

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen = {}

    def serve():
        connection, _ = listener.accept()
        with connection:
            seen["hello"] = connection.recv(4096)  # the ClientHello; we cannot answer it properly

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    fake_dns(monkeypatch, ["127.0.0.1"])
    with pytest.raises((ssl.SSLError, OSError)):
        outbound.post(f"https://tls-name.test:{port}/hook", b"{}", {}, timeout=2, allow_private=True)
    thread.join(5)
    listener.close()
    assert b"tls-name.test" in seen["hello"]  # SNI carried the name, not the address


def test_a_redirect_is_an_answer_and_is_not_followed(webhook_receiver):
    webhook_receiver.statuses = [302]
    answer = outbound.post(webhook_receiver.url + "/hook", b"{}", {}, timeout=2, allow_private=True)
    assert answer.status == 302
    time.sleep(0.2)  # a follow-up request, were there one, would be on its way by now
    assert [path for path, _, _ in webhook_receiver.requests] == ["/hook"]


def serve_once(respond):
    """A raw TCP server that runs respond(connection) for one connection; its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        connection, _ = listener.accept()
        with connection, listener:
            connection.recv(65536)
            try:
                respond(connection)
            except OSError:
                pass

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


def test_at_most_max_response_bytes_of_the_answer_are_read():
    body = b"x" * 1_000_000
    port = serve_once(lambda connection: connection.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body))
    answer = outbound.post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout=2, allow_private=True,
                           max_response_bytes=4096)
    assert (answer.status, len(answer.body)) == (200, 4096)


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_exchange_deadline():
    def trickle(connection):
        connection.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(100):  # one header byte every 50 ms: each read is quick, the whole is not
            connection.sendall(b"X")
            time.sleep(0.05)

    port = serve_once(trickle)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"no complete answer within 0\.6 s"):
        outbound.post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout=0.2, allow_private=True)
    assert time.monotonic() - started < 2


def test_a_silent_receiver_times_out():
    port = serve_once(lambda connection: time.sleep(2))
    with pytest.raises(TimeoutError):
        outbound.post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout=0.2, allow_private=True)
