"""Requests the shop sends out, to a URL someone else chose: the SSRF guard, and one POST.

A webhook's URL is typed by an admin, and the shop's worker then sends requests to it from
inside the shop's network. Without a guard, that URL can point the worker at things only the
shop's own machines can reach: `http://127.0.0.1:6379/` (Redis), `http://10.0.0.5/admin`,
or the cloud's metadata service `http://169.254.169.254/`, which hands out credentials.
That is server-side request forgery (SSRF, OWASP's SSRF Prevention Cheat Sheet). So:

    1. the URL is http or https, with a host, and no user:password@ part   (check_url)
    2. the host is resolved ONCE, and EVERY address it resolves to must be
       a public unicast address: no loopback, private, link-local, CGNAT,
       multicast, reserved or unspecified address, nor an IPv6 form that
       carries one (::ffff:127.0.0.1, 6to4, Teredo, NAT64)                  (resolve, address_problem)
    3. the connection goes to the address that was checked, never to the
       name: the name is only sent, in Host (and in TLS's SNI, where the
       certificate is still checked against it)                            (post)

Step 3 matters as much as step 2. Checking a name and then letting the HTTP library look
it up again is two lookups, and a name whose DNS answers change between them (DNS
rebinding: a public address for the check, 127.0.0.1 for the connection) passes the check
and reaches the inside. Here there is one lookup, and its checked answer is what we dial.

    >>> address_problem(ipaddress.ip_address("169.254.169.254"))
    'a link-local address (cloud metadata services live here)'
    >>> address_problem(ipaddress.ip_address("::ffff:10.0.0.1"))
    'an IPv6 address that carries 10.0.0.1, a private address'
    >>> address_problem(ipaddress.ip_address("93.184.215.14")) is None
    True

`allow_private=True` (WEBHOOK_ALLOW_PRIVATE, for tests and development only) lets the
loopback, private and link-local addresses through, so that a receiver on 127.0.0.1 works;
the unspecified address (0.0.0.0, ::) and multicast are refused even then.

Redirects are never followed (http.client does not follow them, and we do not add it): a
3xx is the receiver's answer, and following it would send the request to a URL nobody
checked. A receiver that is slow costs at most `timeout` per connect and per read, and the
whole exchange at most EXCHANGE_TIMEOUTS times that (a watchdog shuts the socket down), so
a receiver that trickles its answer one byte at a time cannot hold a worker thread. A DNS
lookup has a deadline of its own too (RESOLVE_TIMEOUT_SECONDS): the system's resolver
may wait half a minute for a name server that does not answer.
"""

import http.client
import ipaddress
import os
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from deadlines import Watchdog

SCHEMES = {"http": 80, "https": 443}
MAX_URL_CHARS = 2000
# A URI as RFC 3986 §3 spells one, with the limits above: http(s)://, a host part without
# / ? # @, then a path and query without # (other characters percent-encoded as %XX). The
# same text is the pattern of the OpenAPI document's `url` (api_webhooks.py): read alike by
# Python and by ECMA-262 regex engines, so the document and this check cannot disagree.
URL_PATTERN = re.compile(
    r"[Hh][Tt][Tt][Pp][Ss]?://(?:[A-Za-z0-9\-._~!$&'()*+,;=:\[\]]|%[0-9A-Fa-f]{2})+"
    r"(?:[/?](?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*)?"
)
# The whole exchange (connect, send, status, headers, body) is at most this many timeouts.
EXCHANGE_TIMEOUTS = 3
USER_AGENT = "shop-webhooks/1.0"
# Networks ipaddress does not count as private but no receiver lives in. 100.64.0.0/10 is the
# carrier-grade NAT range (RFC 6598): inside a provider's network, never a public server.
SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
# The well-known NAT64 prefix (RFC 6052): its last 32 bits are an IPv4 address a router will reach.
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
# The local-use NAT64 prefix (RFC 8215): the operator picks the length of the prefix inside it
# (/48 to /96), and with it where the IPv4 address sits, so no one reading can say which address
# it reaches: refused whole. (Read as /96, 64:ff9b:1:7f00:1:0:808:808 would pass for 8.8.8.8.)
LOCAL_NAT64_PREFIX = ipaddress.ip_network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # ::a.b.c.d, deprecated (RFC 4291 §2.5.5.1)

# getaddrinfo() cannot be given a timeout, so each lookup runs on a thread of its own (a
# daemon: it never holds up the process's exit), and its caller waits RESOLVE_TIMEOUT_SECONDS
# at most. A lookup that hangs keeps its thread until the resolver gives up (half a minute):
# at most MAX_LOOKUPS at once, so a dead name server cannot pile up threads without bound.
RESOLVE_TIMEOUT_SECONDS = 5.0
MAX_LOOKUPS = 32

_watchdog = Watchdog()  # one thread for the whole process, started at the first exchange
_lookups = threading.BoundedSemaphore(MAX_LOOKUPS)


def _renew_lookups():
    global _lookups
    _lookups = threading.BoundedSemaphore(MAX_LOOKUPS)  # the parent's lookup threads are not the child's


os.register_at_fork(after_in_child=_renew_lookups)


class Refused(Exception):
    """The URL, or an address its host resolves to, may not be sent a request. The message
    says why, in words an admin can act on (it never holds anything secret)."""


@dataclass(frozen=True)
class Target:
    """A checked URL, in the parts a request needs."""

    scheme: str
    host: str  # the name (or address literal) as written, without brackets
    port: int
    path: str  # the path and query: what goes on the request line

    @property
    def host_header(self):
        """Host as RFC 9110 §7.2 writes it: brackets around an IPv6 literal, the port unless default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == SCHEMES[self.scheme] else f"{host}:{self.port}"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes  # at most max_response_bytes of it


def check_url(url):
    """The `Target` of an absolute http(s) URL; raises Refused when it is not one we send to.

    >>> check_url("https://hooks.example:8443/in?shop=1")
    Target(scheme='https', host='hooks.example', port=8443, path='/in?shop=1')
    >>> check_url("https://user:pw@hooks.example/")
    Traceback (most recent call last):
    outbound.Refused: the URL must not hold a user name or password
    """
    if not isinstance(url, str) or not 1 <= len(url) <= MAX_URL_CHARS:
        raise Refused(f"the URL must be 1 to {MAX_URL_CHARS} characters")
    if any(character.isspace() or ord(character) < 32 or ord(character) == 127 for character in url):
        raise Refused("the URL must not contain spaces or control characters")
    if not url.isascii():  # it goes on a request line, which is ASCII (RFC 9112 §3)
        raise Refused("the URL must be ASCII: percent-encode the path, write the host as xn--... (IDNA)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Refused("the URL is not valid (its host or port cannot be read)") from None
    if parts.scheme not in SCHEMES:
        raise Refused("the URL must start with http:// or https://")
    if "@" in parts.netloc:
        raise Refused("the URL must not hold a user name or password")
    if not parts.hostname:
        raise Refused("the URL must name a host")
    if parts.fragment or url.endswith("#"):
        raise Refused("the URL must not have a #fragment (it is never sent to the server)")
    if port == 0:
        raise Refused("the URL's port must be 1 to 65535")
    if not URL_PATTERN.fullmatch(url):  # what is left: a character a URI may not hold as it is
        raise Refused('the URL must be a URI (RFC 3986): percent-encode characters such as space " < > ^ ` { | }')
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port or SCHEMES[parts.scheme], path)


def resolve(target, *, allow_private=False):
    """The addresses of `target`'s host, looked up once and every one checked; raises Refused
    when the host does not resolve, or when any address it resolves to is refused (one bad
    address among good ones is enough: a connection could be made to it)."""
    try:
        infos = _lookup(target.host, target.port)
    except TimeoutError:
        raise Refused(f"the host {target.host!r} did not resolve within {RESOLVE_TIMEOUT_SECONDS:g} s") from None
    except (OSError, UnicodeError, ValueError):
        raise Refused(f"the host {target.host!r} does not resolve") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    if not addresses:
        raise Refused(f"the host {target.host!r} does not resolve")
    for address in addresses:
        problem = address_problem(address, allow_private=allow_private)
        if problem is not None:
            raise Refused(f"the host {target.host!r} resolves to {address}, {problem}")
    return addresses


def _lookup(host, port):
    """socket.getaddrinfo(host, port) for TCP, on a thread of its own; TimeoutError when it has
    not answered within RESOLVE_TIMEOUT_SECONDS (or MAX_LOOKUPS are hanging already)."""
    lookups = _lookups
    if not lookups.acquire(timeout=RESOLVE_TIMEOUT_SECONDS):
        raise TimeoutError
    answer, done = {}, threading.Event()

    def look_up():
        try:
            answer["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except Exception as error:  # handed to the caller, who may be gone
            answer["error"] = error
        finally:
            lookups.release()
            done.set()

    try:
        threading.Thread(target=look_up, name="dns-lookup", daemon=True).start()
    except RuntimeError as error:  # no thread to be had: as a lookup that failed
        lookups.release()
        raise OSError(f"no thread for a DNS lookup: {error}") from error
    if not done.wait(RESOLVE_TIMEOUT_SECONDS):
        raise TimeoutError
    if "error" in answer:
        raise answer["error"]
    return answer["infos"]


def address_problem(address, *, allow_private=False):
    """Why no request may go to `address` (an ipaddress address), or None when it may."""
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if allow_private:
        return None
    if address.is_loopback:
        return "a loopback address"
    if address.version == 6:
        if address in LOCAL_NAT64_PREFIX:
            return "a local-use NAT64 address (the IPv4 address it reaches depends on the local translator)"
        carried = _carried_ipv4(address)
        if carried is not None:
            problem = address_problem(carried)
            return None if problem is None else f"an IPv6 address that carries {carried}, {problem}"
        if address.is_site_local:
            return "a site-local address"
    if address.is_link_local:
        return "a link-local address (cloud metadata services live here)"
    if address.version == 4 and address in SHARED_ADDRESS_SPACE:
        return "a carrier-grade NAT address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private or not address.is_global:
        return "a private address"
    return None


def post(url, body, headers, *, timeout, allow_private=False, max_response_bytes=4096):
    """POST `body` (bytes) with `headers` ({name: value}) to `url`; the `Answer`.

    Checks the URL and every address of its host first (raises Refused, and nothing has
    been sent), then connects to those addresses in turn until one answers, sending the
    host name in Host and, over https, in SNI, where the certificate is checked against it.
    Raises OSError (refused, timed out, shut down at the exchange's deadline), ssl.SSLError
    or http.client.HTTPException when no answer came.
    """
    target = check_url(url)
    addresses = resolve(target, allow_private=allow_private)
    tls_context = ssl.create_default_context() if target.scheme == "https" else None
    last_error: Exception = OSError("no address to connect to")
    for address in addresses:
        connection = _CheckedAddressConnection(address, target, tls_context, timeout)
        try:
            return _exchange(connection, target, body, headers, timeout, max_response_bytes)
        except ConnectionRefusedError as error:  # the next address may answer
            last_error = error
        finally:
            connection.close()
    raise last_error


def _exchange(connection, target, body, headers, timeout, max_response_bytes):
    deadline = time.monotonic() + EXCHANGE_TIMEOUTS * timeout
    connection.connect()
    alarm = _watchdog.arm(connection.sock.fileno(), deadline)
    try:
        connection.putrequest("POST", target.path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", target.host_header)
        connection.putheader("User-Agent", USER_AGENT)
        connection.putheader("Content-Length", str(len(body)))
        connection.putheader("Connection", "close")
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        answer = Answer(response.status, response.read(max_response_bytes))
    finally:
        if _watchdog.disarm(alarm):
            raise TimeoutError(f"no complete answer within {EXCHANGE_TIMEOUTS * timeout:g} s")
    return answer


class _CheckedAddressConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to one checked address, never to a name looked up again.

    http.client would call socket.create_connection with the host name, which resolves it a
    second time; here the host is the address itself, and TLS is told the name separately
    (server_hostname), so SNI and the certificate's check still use the name.
    """

    def __init__(self, address, target, tls_context, timeout):
        super().__init__(str(address), target.port, timeout=timeout)
        self.server_name, self.tls_context = target.host, tls_context

    def connect(self):
        sock = socket.create_connection((self.host, self.port), self.timeout)
        if self.tls_context is not None:
            sock = self.tls_context.wrap_socket(sock, server_hostname=self.server_name)
        self.sock = sock


def _carried_ipv4(address):
    """The IPv4 address an IPv6 address stands for (mapped, compatible, 6to4, Teredo, NAT64),
    or None. Sent to, each of these reaches that IPv4 address, so it is judged instead."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # (server, client): the client is the host it reaches
    if address in IPV4_COMPATIBLE or address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None
