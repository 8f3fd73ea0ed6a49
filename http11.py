"""The HTTP/1.1 wire format (RFC 9112), the request half: heads and bodies in.

Pure functions on bytes: no sockets, no threads. httpserver.py receives bytes and hands them
here; a test hands over a bytes literal. (http11_responses.py is the other half: responses
out.) A request is a *head* of CRLF-terminated text lines, an empty line, then an optional body:

    POST /v1/orders?dry_run=1 HTTP/1.1\\r\\n     request line: method SP target SP version (§3)
    Host: shop.example\\r\\n                      field lines: name ":" OWS value OWS (§5)
    Content-Type: application/json\\r\\n
    Content-Length: 11\\r\\n                      framing: exactly 11 body bytes follow (§6.3)
    \\r\\n                                        the empty line ends the head
    {"qty": 2}\\n                                the body

Bytes arrive a piece at a time, so each reader takes what it needs off the front of a buffer
and returns None while the buffer holds too little:

    >>> buffer = bytearray(b"POST /v1/orders HTTP/1.1\\r\\nHost: shop.example\\r\\nContent-Len")
    >>> take_head(buffer) is None
    True
    >>> buffer += b'gth: 10\\r\\n\\r\\n{"qty": 2}'
    >>> head = take_head(buffer)
    >>> head.method, head.path, head.fields["host"], body_decoder(head).decode(buffer)
    ('POST', '/v1/orders', 'shop.example', b'{"qty": 2}')

Framing is where servers go wrong. If two programs (a proxy and this server) disagree on where
a body ends, the rest of the body is read as a second, hidden request: "request smuggling".
So the parser is strict where Python's ``http.server`` is lax: bare LF line endings, whitespace
before a colon, folded lines, odd Content-Length values, and Content-Length together with
Transfer-Encoding are all a ProtocolError, which the server answers with a problem+json
response (RFC 9457) and a closed connection. Sizes are bounded (Limits), so a huge request
costs a bounded amount of memory.
"""
import re
from dataclasses import dataclass
from typing import NamedTuple

MAX_REQUEST_LINE_BYTES = 8 * 1024      # 414 beyond
MAX_HEADER_COUNT = 100                 # 431 beyond (the trailer section too)
MAX_HEADER_BYTES = 64 * 1024           # 431 beyond (the trailer section too)
MAX_BODY_BYTES = 1024 * 1024           # 413 beyond (the decoded size for chunked)
MAX_CHUNK_LINE_BYTES = 4 * 1024        # chunk size plus extensions (which are ignored)

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # noqa: S105 - RFC 9110 §5.6.2's token, not a secret
_FIELD_VALUE = r"[\t\x20-\x7e\x80-\xff]*"                      # §5.5: no CR, LF, NUL or DEL
# §3: exactly one SP between the parts; the target is visible ASCII without "#" (no fragments).
_REQUEST_LINE = re.compile(rf"({_TOKEN}) ([\x21\x22\x24-\x7e]+) (HTTP/[0-9]\.[0-9])")
# A LF without its CR, or a CR without its LF (lookbehind sees bytes before search()'s start).
_BARE_CR_OR_LF = re.compile(rb"(?<!\r)\n|\r(?!\n)")
# The start of a request line still arriving: a method's token characters, then a space.
_METHOD_SO_FAR = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]*(?: |\Z)")
_FIELD_LINE = re.compile(rf"({_TOKEN}):({_FIELD_VALUE})")     # §5.1: no space before the colon
_ABSOLUTE_FORM = re.compile(r"http://([^/?]+)(/[^?]*)?(?:\?(.*))?", re.IGNORECASE)  # §3.2.2
# RFC 3986 §3.2.2 host [":" port]: a reg-name or an IP literal; no userinfo, spaces or slashes.
_HOST = re.compile(r"(?:[-A-Za-z0-9._~!$&'()*+,;=%]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?")
_DIGITS = re.compile(r"[0-9]+")
_HEX_DIGITS = re.compile(rb"[0-9A-Fa-f]{1,16}")
_SINGLE_VALUED = {"host", "content-length"}  # a second copy is an attack (§3.2, §6.3)


@dataclass(frozen=True)
class Limits:
    """How large each part of a request may be; the defaults are the constants above."""

    request_line_bytes: int = MAX_REQUEST_LINE_BYTES
    header_count: int = MAX_HEADER_COUNT
    header_bytes: int = MAX_HEADER_BYTES
    body_bytes: int = MAX_BODY_BYTES
    chunk_line_bytes: int = MAX_CHUNK_LINE_BYTES


DEFAULT_LIMITS = Limits()


class ProtocolError(Exception):
    """A request the server refuses itself: answer `status` with `detail`, then close.
    `path`: the request's, once its request line has been read (the problem's `instance`)."""

    def __init__(self, status, detail, path=None):
        super().__init__(detail)
        self.status, self.detail, self.path = status, detail, path


class RequestHead(NamedTuple):
    """A parsed request head."""

    method: str     # "GET"
    target: str     # as sent: "/v1/items?limit=3", "http://shop.example/v1/items" or "*"
    version: str    # "HTTP/1.1" or "HTTP/1.0"
    path: str       # the target's path, still percent-encoded; "" for "OPTIONS *"
    query: str      # the target's query, raw; "" when there is none
    fields: dict    # lower-case name -> value; repeated fields joined (RFC 9110 §5.3)

    @property
    def keep_alive(self) -> bool:
        """§9.3: HTTP/1.1 persists unless the client says close; HTTP/1.0 only if it asks."""
        connection = self.fields.get("connection")
        if connection is None:
            return self.version == "HTTP/1.1"
        tokens = [token.strip() for token in connection.lower().split(",")]
        return "keep-alive" in tokens if self.version == "HTTP/1.0" else "close" not in tokens


# ---- requests ---------------------------------------------------------------------------------

def take_head(buffer, limits=DEFAULT_LIMITS, checked=0) -> RequestHead | None:
    """Remove the request head from the front of buffer and parse it; None while incomplete.
    Raises ProtocolError for a head that breaks the rules or the limits, as soon as it shows.

    checked: how many bytes at the front of buffer an earlier call found incomplete but
    valid so far (len(buffer) after it returned None). They are not scanned again, so a head
    that arrives a few bytes at a time costs time in proportion to its length, not its square.
    """
    end = _find_head_end(buffer, limits, checked)
    if end is None:
        return None
    head = bytes(buffer[:end])
    del buffer[:end + 4]
    if len(head) > limits.header_bytes:
        raise ProtocolError(431, f"the request head is over {limits.header_bytes} bytes")
    request_line, *field_lines = head.decode("latin-1").split("\r\n")
    if len(request_line) > limits.request_line_bytes:
        raise ProtocolError(414, f"the request line is over {limits.request_line_bytes} bytes")
    if len(field_lines) > limits.header_count:
        raise ProtocolError(431, f"more than {limits.header_count} header fields")
    method, target, version, path, query, authority = _parse_request_line(request_line)
    try:
        fields = _parse_fields(field_lines, version, authority)
    except ProtocolError as error:
        error.path = path
        raise
    return RequestHead(method, target, version, path, query, fields)


def body_decoder(head, limits=DEFAULT_LIMITS):
    """The decoder for the body after head (§6.3): a LengthDecoder or a ChunkedDecoder. Its
    decode(buffer) takes the body off the buffer, or returns None until all of it is there.

    Raises ProtocolError for framing that two programs could read differently (smuggling),
    a declared body over limits.body_bytes, or an Expect other than 100-continue.
    """
    transfer_encoding = head.fields.get("transfer-encoding")
    content_length = head.fields.get("content-length")
    if transfer_encoding is not None:
        if head.version == "HTTP/1.0":  # §6.1: 1.0 has no chunked, so the framing is unknowable
            raise ProtocolError(400, "Transfer-Encoding is not allowed in HTTP/1.0")
        if content_length is not None:  # §6.1: the classic request-smuggling setup
            raise ProtocolError(400, "Content-Length and Transfer-Encoding together")
        if transfer_encoding.lower() != "chunked":
            raise ProtocolError(501, f"unsupported Transfer-Encoding: {transfer_encoding}")
        length = None
    elif content_length is not None:
        if _DIGITS.fullmatch(content_length) is None:  # §8.6: 1*DIGIT, no sign, no list
            raise ProtocolError(400, "Content-Length must be a single decimal number")
        if len(content_length.lstrip("0")) > 18:  # over any limit; spare int() the work
            raise ProtocolError(413, f"the body is over {limits.body_bytes} bytes")
        length = int(content_length)
    else:
        length = 0  # §6.3: no framing fields in a request means no body
    expect = head.fields.get("expect")
    if expect is not None and expect.lower() != "100-continue":  # RFC 9110 §10.1.1
        raise ProtocolError(417, "the only supported expectation is 100-continue")
    if length is None:
        return ChunkedDecoder(limits)
    if length > limits.body_bytes:
        raise ProtocolError(413, f"the body is over {limits.body_bytes} bytes")
    return LengthDecoder(length)


class LengthDecoder:
    """A body framed by Content-Length (§6.2): the next `length` bytes, as they are."""

    def __init__(self, length):
        self.length = length

    def decode(self, buffer) -> bytes | None:
        if len(buffer) < self.length:
            return None
        body = bytes(buffer[:self.length])
        del buffer[:self.length]
        return body


class ChunkedDecoder:
    """Decode a chunked request body (§7.1) from a buffer that fills a piece at a time.

        5;ext=1\\r\\nhello\\r\\n  6\\r\\n world\\r\\n  0\\r\\n  X-Trailer: dropped\\r\\n  \\r\\n

    is b"hello world": chunks (a hex size line, then that many bytes), a last chunk of size 0,
    and a trailer section that ends in an empty line.

    >>> buffer, decoder = bytearray(b"5\\r\\nhel"), ChunkedDecoder()
    >>> decoder.decode(buffer) is None
    True
    >>> buffer += b"lo\\r\\n0\\r\\n\\r\\nGET /next"
    >>> decoder.decode(buffer), buffer
    (b'hello', bytearray(b'GET /next'))
    """

    def __init__(self, limits=DEFAULT_LIMITS):
        self.limits = limits
        self._body = bytearray()
        self._chunk_size = None   # of the chunk being read; None: its size line comes next
        self._trailer_count = 0
        self._trailer_bytes = 0

    def decode(self, buffer) -> bytes | None:
        """Consume what buffer holds; the decoded body once complete, else None. ProtocolError."""
        limits = self.limits
        while self._chunk_size != 0:
            if self._chunk_size is None:
                size_line = _take_line(buffer, limits.chunk_line_bytes)
                if size_line is None:
                    return None
                size_text = size_line.split(b";", 1)[0].rstrip(b" \t")  # §7.1.1: ignore extensions
                if _HEX_DIGITS.fullmatch(size_text) is None:
                    raise ProtocolError(400, "malformed chunk size")
                self._chunk_size = int(size_text, 16)
                if len(self._body) + self._chunk_size > limits.body_bytes:
                    raise ProtocolError(413, f"the decoded body is over {limits.body_bytes} bytes")
            else:
                if len(buffer) < self._chunk_size + 2:
                    return None
                if buffer[self._chunk_size:self._chunk_size + 2] != b"\r\n":
                    raise ProtocolError(400, "chunk data must end in CRLF")
                self._body += buffer[:self._chunk_size]
                del buffer[:self._chunk_size + 2]
                self._chunk_size = None
        # §7.1.2: trailer fields are read, held to the header limits, and dropped.
        while (line := _take_line(buffer, limits.header_bytes)) is not None:
            if not line:
                return bytes(self._body)
            self._trailer_count += 1
            self._trailer_bytes += len(line) + 2
            if self._trailer_bytes > limits.header_bytes:
                raise ProtocolError(431, "the trailer section is over the header limits")
            if _FIELD_LINE.fullmatch(line.decode("latin-1")) is None:
                raise ProtocolError(400, "malformed trailer field line")
            if self._trailer_count > limits.header_count:
                raise ProtocolError(431, "the trailer section is over the header limits")
        return None


# ---- helpers ----------------------------------------------------------------------------------

def _find_head_end(buffer, limits, checked) -> int | None:
    """Where the CRLF CRLF ending the head is; None while it has not arrived (or ProtocolError)."""
    while buffer.startswith(b"\r\n"):  # §2.2: ignore empty lines before a request
        del buffer[:2]
        checked = 0  # the bytes moved: look at all of them
    end = buffer.find(b"\r\n\r\n", max(0, checked - 3))  # it may begin in the checked bytes
    if end < 0:
        _check_incomplete_head(buffer, limits, checked)
        return None
    return end


def _check_incomplete_head(buffer, limits, checked) -> None:
    """Fail at once on a head that can never become valid, rather than wait for the timeout.
    Only the bytes after `checked` are new; the rest passed these checks before."""
    line_end = buffer.find(b"\r\n")
    if line_end > limits.request_line_bytes or (
            line_end < 0 and len(buffer) > limits.request_line_bytes):
        raise ProtocolError(414, f"the request line is over {limits.request_line_bytes} bytes")
    if len(buffer) > limits.header_bytes:
        raise ProtocolError(431, f"the request head is over {limits.header_bytes} bytes")
    # §2.2: a bare LF or CR is an error. Without this check an LF-only client would wait for
    # a CRLF CRLF that never comes. A CR at the very end may be half of a CRLF still in transit.
    bare = _BARE_CR_OR_LF.search(buffer, max(0, checked - 1))  # a CR may have ended the checked part
    if bare is not None and bare.start() != len(buffer) - 1:
        raise ProtocolError(400, "lines must end in CRLF, not a bare LF or CR")
    # The request line can be judged as soon as it is whole: an HTTP/0.9 "GET /" has no
    # version and would otherwise wait for a blank line that never comes. Before that, the
    # method must be a token: a TLS ClientHello (first byte 0x16) sent to this plain port
    # is refused at its first byte, not after the head timeout.
    if line_end >= 0 and line_end + 2 > checked:  # the request line is whole, and was not before
        _parse_request_line(buffer[:line_end].decode("latin-1"))
    if line_end < 0 and _METHOD_SO_FAR.match(buffer) is None:
        raise ProtocolError(400, "malformed request line")


def _parse_request_line(line):
    """(method, target, version, path, query, authority) of a request line (§3)."""
    match = _REQUEST_LINE.fullmatch(line)
    if match is None:
        raise ProtocolError(400, "malformed request line")
    method, target, version = match.groups()
    if version != "HTTP/1.1" and version != "HTTP/1.0":
        raise ProtocolError(505, f"{version} is not supported; use HTTP/1.1")
    authority = None
    if target[0] == "/":                              # §3.2.1 origin-form
        path, _, query = target.partition("?")
    elif target == "*" and method == "OPTIONS":       # §3.2.4 asterisk-form
        path, query = "", ""
    else:                                             # §3.2.2 absolute-form
        absolute = _ABSOLUTE_FORM.fullmatch(target)
        if absolute is None:
            raise ProtocolError(400, "the request target must be /path, http://host/path or *")
        authority, path, query = absolute.groups()
        path, query = path or "/", query or ""
    return method, target, version, path, query, authority


def _parse_fields(lines, version, authority) -> dict:
    """The field lines as {lower-case name: value}, with the Host rules of §3.2 applied."""
    fields: dict[str, str] = {}
    for line in lines:
        field = _FIELD_LINE.fullmatch(line)
        if field is None:
            if line[:1] in (" ", "\t"):
                raise ProtocolError(400, "obsolete line folding is not allowed (RFC 9112 §5.2)")
            raise ProtocolError(400, "malformed header field line")
        name, value = field.groups()
        key, value = name.lower(), value.strip(" \t")   # §5.1: OWS around the value is not in it
        if key in fields:
            if key in _SINGLE_VALUED:
                raise ProtocolError(400, f"more than one {name} header field")
            # RFC 9110 §5.3: a repeated field is one comma-separated list; Cookie is joined
            # with "; " instead (RFC 6265 §5.4), its own separator.
            value = fields[key] + ("; " if key == "cookie" else ", ") + value
        fields[key] = value
    if "host" not in fields and version == "HTTP/1.1":
        raise ProtocolError(400, "HTTP/1.1 requests need a Host header field (RFC 9112 §3.2)")
    if authority is not None:
        fields["host"] = authority  # §3.2.2: the target's authority wins over Host
    if _HOST.fullmatch(fields.get("host", "")) is None:
        raise ProtocolError(400, "invalid Host")
    return fields


def _take_line(buffer, limit) -> bytes | None:
    """Remove the CRLF-terminated line at the front of buffer and return it without CRLF;
    None while no line end has arrived. ProtocolError: a bare LF or CR, or over limit bytes."""
    end = buffer.find(b"\n")
    if end < 0:
        if len(buffer) > limit:
            raise ProtocolError(400, f"a line in the body is over {limit} bytes")
        return None
    if end == 0 or buffer[end - 1] != 0x0D or buffer.find(b"\r", 0, end - 1) >= 0:
        raise ProtocolError(400, "lines must end in CRLF")
    if end > limit:
        raise ProtocolError(400, f"a line in the body is over {limit} bytes")
    line = bytes(buffer[:end - 1])
    del buffer[:end + 1]
    return line
