"""The HTTP/1.1 wire format (RFC 9112), the response half: an application's status, fields
and body out as framed bytes, and the server's own refusals.

Pure functions on bytes, like http11.py (the request half). The answer to a request has the
same shape as the request: a status line, field lines, an empty line, then the body:

    HTTP/1.1 201 Created\\r\\n
    Content-Type: application/json\\r\\n
    Content-Length: 12\\r\\n
    Date: Sat, 28 Nov 2026 04:20:00 GMT\\r\\n
    Server: shop\\r\\n
    \\r\\n
    {"id": 4711}

The framing of the body (§6.3: a Content-Length, chunks, or the end of the connection) is the
server's job, never the application's (PEP 3333), and so are Date, Server and Connection.
The refusals the server sends by itself take their format and security headers from web.py,
so that they look exactly like the application's own errors.
"""
import email.utils
import logging
import re
import time
from urllib.parse import unquote

import web

SERVER_FIELD = "Server: shop\r\n"      # no version: it only helps an attacker pick an exploit
CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"   # RFC 9110 §15.2.1

_log = logging.getLogger("http11")

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # noqa: S105 - RFC 9110 §5.6.2's token, not a secret
_FIELD_VALUE = r"[\t\x20-\x7e\x80-\xff]*"                      # §5.5: no CR, LF, NUL or DEL
_STATUS = re.compile(rf"([2-9][0-9][0-9]) {_FIELD_VALUE}")
_NAME = re.compile(_TOKEN)
_VALUE = re.compile(_FIELD_VALUE)
# Framing and connection management are the server's job, never the app's (PEP 3333).
_HOP_BY_HOP = {"keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "proxy-connection"}
_SERVER_OWNED = {"date", "server"}
_SPECIAL_FIELDS = _HOP_BY_HOP | _SERVER_OWNED | {"connection"}
_FIELD_LINES = re.compile(rf"(?:{_TOKEN}: {_FIELD_VALUE}\r\n)*")  # whole field lines, none or more


class ResponseFramer:
    """One response on the wire. Its body is framed (§6.3) by the app's Content-Length, else
    by one counted here when the whole body is known, else by chunked transfer-coding (§7.1),
    else (HTTP/1.0) by closing the connection, so `keep_alive` turns False; as it does when
    the body breaks its own Content-Length. start() keeps the status and fields, head()
    renders them, frame(data) wraps each piece of body, and end() returns what ends it.

    >>> framer = ResponseFramer("GET", "HTTP/1.1", keep_alive=True)
    >>> framer.start("200 OK", [("Content-Type", "text/plain")])
    >>> framer.head().split(b"\\r\\n")[:3]
    [b'HTTP/1.1 200 OK', b'Content-Type: text/plain', b'Transfer-Encoding: chunked']
    >>> framer.frame(b"hello") + framer.end()
    b'5\\r\\nhello\\r\\n0\\r\\n\\r\\n'
    """

    def __init__(self, method, version, keep_alive):
        self.method, self.http_10, self.keep_alive = method, version == "HTTP/1.0", keep_alive
        self.status = None       # "200 OK", once start() has kept it with the fields below
        self.status_code = self.field_lines = self.content_length = self.content_type = None
        self.head_sent = False
        self.framing = None      # "none", "length", "chunked" or "close"
        self.length_left = 0     # body bytes still owed under "length"

    def start(self, status, headers) -> None:
        """Keep the status ("201 Created") and [(name, value)] fields. ValueError, TypeError."""
        if type(status) is not str or _STATUS.fullmatch(status) is None:  # §4
            raise ValueError(f"status must be a str like '200 OK', not {status!r}")
        self.status_code = int(status[:3])
        self.field_lines, self.content_length, self.content_type, close = _render_fields(headers)
        self.keep_alive = self.keep_alive and not close
        self.status = status

    def head(self, total_length=None) -> bytes:
        """The status line and fields. total_length: the whole body's, when it is known."""
        extra = ""
        if self.method == "HEAD" or self.status_code in (204, 304):
            self.framing = "none"   # §6.3: these end at the empty line, whatever the fields say
        elif self.content_length is not None:
            self.framing, self.length_left = "length", self.content_length
        elif total_length is not None:
            self.framing, self.length_left = "length", total_length
            extra = f"Content-Length: {total_length}\r\n"
        elif not self.http_10:
            self.framing, extra = "chunked", "Transfer-Encoding: chunked\r\n"   # §7.1
        else:
            self.framing, self.keep_alive = "close", False  # 1.0 has no chunked: close ends it
        if not self.keep_alive:
            extra += "Connection: close\r\n"
        elif self.http_10:
            extra += "Connection: keep-alive\r\n"
        self.head_sent = True
        return (f"HTTP/1.1 {self.status}\r\n{self.field_lines}{extra}{_date_field()}"
                f"{SERVER_FIELD}\r\n").encode("latin-1")

    def frame(self, data) -> bytes:
        """The bytes that carry this piece of body."""
        if self.framing == "length":
            if len(data) > self.length_left:  # more would be read as the next response
                _log.error("application sent more than its Content-Length; truncated")
                data, self.keep_alive = data[:self.length_left], False
            self.length_left -= len(data)
            return data
        if self.framing == "chunked":  # §7.1: hex size CRLF data CRLF; size 0 would end the body
            return b"%x\r\n%b\r\n" % (len(data), data) if data else b""
        return data if self.framing == "close" else b""

    def end(self) -> bytes:
        """The bytes that end the body: the last chunk, or nothing."""
        if self.framing == "chunked":
            return b"0\r\n\r\n"
        if self.framing == "length" and self.length_left:
            _log.error("application sent less than its Content-Length; closing")
            self.keep_alive = False  # the client is still waiting for bytes: only close ends it
        return b""


def problem_response(status, detail, *, request_id, path=None, with_body=True, retry_after=None) -> bytes:
    """A whole problem+json response (RFC 9457) that closes the connection.

    For the requests the server refuses itself, in the format of all the application's
    errors (web.problem_body). path: the request's, once known; the problem's `instance`
    shows it percent-decoded, as web.Request.path does. retry_after: whole seconds, for a 503.
    """
    instance = None if path is None else unquote(path) or "/"
    body = web.problem_body(status, detail, instance=instance, request_id=request_id)
    # The same security headers as the application's responses, and never cached.
    fields = "".join(f"{name}: {value}\r\n" for name, value in web.SECURITY_HEADERS)
    if retry_after is not None:
        fields += f"Retry-After: {retry_after}\r\n"
    head = (f"HTTP/1.1 {web.STATUS_LINES[status]}\r\nContent-Type: {web.PROBLEM_TYPE}\r\n"
            f"Content-Length: {len(body)}\r\n{fields}Cache-Control: no-store\r\n"
            f"X-Request-ID: {request_id}\r\n{_date_field()}{SERVER_FIELD}Connection: close\r\n\r\n")
    return head.encode("latin-1") + (body if with_body else b"")


# ---- helpers ----------------------------------------------------------------------------------

def _render_fields(headers) -> tuple[str, int | None, str | None, bool]:
    """[(name, value)] as field lines: (lines, Content-Length, Content-Type, close). ValueError, TypeError.
    Connection is read (does the app ask to close?) and left, with Date and Server, for the
    server to write; other hop-by-hop fields are refused."""
    lines, content_length, content_type, close = [], None, None, False
    for name, value in headers:
        if type(name) is not str or type(value) is not str:
            raise TypeError(f"header names and values must be str: {name!r}: {value!r}")
        lowered = name.lower()
        if lowered == "content-type":
            content_type = value
        elif lowered == "content-length":  # its line is checked with the others, below
            if content_length is not None or not (value.isascii() and value.isdigit()):
                raise ValueError(f"invalid Content-Length from the application: {value!r}")
            content_length = int(value)
        elif lowered in _SPECIAL_FIELDS:  # rare: most responses have none of them
            _check_field(name, value)
            if lowered == "connection":
                close = close or "close" in value.lower()
                continue
            elif lowered in _HOP_BY_HOP:
                raise ValueError(f"hop-by-hop header {name!r} is the server's job (PEP 3333)")
            else:  # Date and Server: the server writes its own
                continue
        lines.append(f"{name}: {value}\r\n")
    block = "".join(lines)
    # A CR or LF in a value would let the app's input forge headers: response splitting.
    # One regular expression checks every line at once (two per field cost more than the
    # rest of this function); a line break smuggled inside a name or value would still
    # make a well-formed line of its own, so the lines are counted too: one per field.
    if _FIELD_LINES.fullmatch(block) is None or block.count("\n") != len(lines):
        for name, value in headers:  # the error path: find the field to name it
            _check_field(name, value)
    return block, content_length, content_type, close


def _check_field(name, value) -> None:
    if _NAME.fullmatch(name) is None or _VALUE.fullmatch(value) is None:
        raise ValueError(f"invalid header field {name!r}: {value!r}")


_date_cache = (0, "")


def _date_field() -> str:
    """The Date field (RFC 9110 §6.6.1), formatted once per second rather than per response."""
    global _date_cache
    now = int(time.time())
    second, line = _date_cache
    if second != now:
        line = f"Date: {email.utils.formatdate(now, usegmt=True)}\r\n"
        _date_cache = (now, line)  # one tuple assignment: atomic, so no lock is needed
    return line
