"""Tests for http11.py: the wire format as functions on bytes, with no socket and no thread.

BAD_REQUESTS is the table of requests the server must refuse, each with the status and the
problem detail it gets. Here every row goes through the parser alone; test_httpserver.py
sends the same rows over a real socket and checks that the answer ends the connection.
"""
import time

import pytest

import http11
from http11 import Limits, ProtocolError

H = b"Host: shop.test\r\n"
MIB = 1024 * 1024


def get(path="/", extra=b"", version=b"HTTP/1.1"):
    return b"GET " + path.encode() + b" " + version + b"\r\n" + H + extra + b"\r\n"


def chunked(body_part):
    return b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + body_part


CL_NOT_A_NUMBER = "Content-Length must be a single decimal number"
NOT_CRLF = "lines must end in CRLF, not a bare LF or CR"
BAD_FIELD = "malformed header field line"
BAD_LINE = "malformed request line"
BAD_TARGET = "the request target must be /path, http://host/path or *"

# (name, raw request, status, the problem's detail)
BAD_REQUESTS = [
    ("CL and TE", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
     "Content-Length and Transfer-Encoding together"),
    ("negative CL", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400,
     CL_NOT_A_NUMBER),
    ("CL with plus sign", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400,
     CL_NOT_A_NUMBER),
    ("CL with inner space", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1 2\r\n\r\n", 400,
     CL_NOT_A_NUMBER),
    ("empty CL", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: \r\n\r\n", 400, CL_NOT_A_NUMBER),
    ("CL as list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello", 400,
     CL_NOT_A_NUMBER),
    ("two different CLs", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
     b"Content-Length: 6\r\n\r\nhello!", 400, "more than one Content-Length header field"),
    ("same CL twice", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
     b"Content-Length: 5\r\n\r\nhello", 400, "more than one Content-Length header field"),
    ("hex CL", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nhello", 400,
     CL_NOT_A_NUMBER),
    ("missing Host in 1.1", b"GET / HTTP/1.1\r\n\r\n", 400,
     "HTTP/1.1 requests need a Host header field (RFC 9112 §3.2)"),
    ("two Hosts", b"GET / HTTP/1.1\r\n" + H + H + b"\r\n", 400, "more than one Host header field"),
    ("Host with a space", b"GET / HTTP/1.1\r\nHost: shop test\r\n\r\n", 400, "invalid Host"),
    ("Host with a path", b"GET / HTTP/1.1\r\nHost: shop.test/x\r\n\r\n", 400, "invalid Host"),
    ("userinfo in absolute form", get("http://user@shop.test/"), 400, "invalid Host"),
    ("space before colon", b"GET / HTTP/1.1\r\nHost : shop.test\r\n\r\n", 400, BAD_FIELD),
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X-Long: a\r\n b\r\n\r\n", 400,
     "obsolete line folding is not allowed (RFC 9112 §5.2)"),
    ("bare LF everywhere", b"GET / HTTP/1.1\nHost: shop.test\n\n", 400, NOT_CRLF),
    ("bare LF in a header", b"GET / HTTP/1.1\r\nHost: shop.test\nX-A: b\r\n\r\n", 400, BAD_FIELD),
    ("bare CR", b"GET / HTTP/1.1\rHost: shop.test\r\n\r\n", 400, BAD_LINE),
    ("bare CR only", b"GET / HTTP/1.1\rHost: shop.test\r\r", 400, NOT_CRLF),
    ("request line over 8 KiB", get("/" + "a" * (8 * 1024)), 414,
     "the request line is over 8192 bytes"),
    ("101 headers", get(extra=b"".join(b"X-H%d: v\r\n" % n for n in range(100))), 431,
     "more than 100 header fields"),
    ("70 KiB of headers", get(extra=b"".join(b"X-H%d: %s\r\n" % (n, b"v" * 7000)
                                             for n in range(10))), 431,
     "the request head is over 65536 bytes"),
    ("unknown TE", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", 501,
     "unsupported Transfer-Encoding: gzip"),
    ("TE chunked, gzip", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n",
     501, "unsupported Transfer-Encoding: chunked, gzip"),
    ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
     "Transfer-Encoding is not allowed in HTTP/1.0"),
    ("HTTP/2.0", get(version=b"HTTP/2.0"), 505, "HTTP/2.0 is not supported; use HTTP/1.1"),
    ("HTTP/1.1x", get(version=b"HTTP/1.1x"), 400, BAD_LINE),
    ("lower-case version", get(version=b"http/1.1"), 400, BAD_LINE),
    ("no version", b"GET /\r\n" + H + b"\r\n", 400, BAD_LINE),
    ("two spaces", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400, BAD_LINE),
    ("bad method", b"GE(T / HTTP/1.1\r\n" + H + b"\r\n", 400, BAD_LINE),
    ("relative target", get("index.html"), 400, BAD_TARGET),
    ("ftp target", get("ftp://shop.test/"), 400, BAD_TARGET),
    ("absolute target without host", get("http:///x"), 400, BAD_TARGET),
    ("fragment in target", get("/a#b"), 400, BAD_LINE),
    ("* with GET", get("*"), 400, BAD_TARGET),
    ("NUL in header value", get(extra=b"X-A: a\x00b\r\n"), 400, BAD_FIELD),
    ("DEL in header value", get(extra=b"X-A: a\x7fb\r\n"), 400, BAD_FIELD),
    ("header name not a token", get(extra=b"X@A: b\r\n"), 400, BAD_FIELD),
    ("empty header name", get(extra=b": b\r\n"), 400, BAD_FIELD),
    ("header without colon", get(extra=b"X-A b\r\n"), 400, BAD_FIELD),
    ("bad chunk size", chunked(b"zz\r\nhello\r\n0\r\n\r\n"), 400, "malformed chunk size"),
    ("chunk size with sign", chunked(b"+5\r\nhello\r\n0\r\n\r\n"), 400, "malformed chunk size"),
    ("chunk without CRLF", chunked(b"5\r\nhelloXX0\r\n\r\n"), 400, "chunk data must end in CRLF"),
    ("chunk size line with bare LF", chunked(b"5\nhello\r\n0\r\n\r\n"), 400,
     "lines must end in CRLF"),
    ("chunk extension too long", chunked(b"5;" + b"x" * 5000 + b"\r\nhello\r\n0\r\n\r\n"), 400,
     "a line in the body is over 4096 bytes"),
    ("chunked over 1 MiB", chunked(b"100001\r\n" + b"x" * 1000), 413,
     "the decoded body is over 1048576 bytes"),
    ("chunked over 1 MiB in pieces", chunked((b"80000\r\n" + b"x" * 0x80000 + b"\r\n") * 3), 413,
     "the decoded body is over 1048576 bytes"),
    ("CL over 1 MiB", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1048577\r\n\r\n", 413,
     "the body is over 1048576 bytes"),
    ("CL of 30 digits", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: " + b"9" * 30 + b"\r\n\r\n",
     413, "the body is over 1048576 bytes"),
    ("100-continue over 1 MiB", b"POST / HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\n"
     b"Content-Length: 2000000\r\n\r\n", 413, "the body is over 1048576 bytes"),
    ("too many trailer fields", chunked(b"0\r\n" + b"X-T: 1\r\n" * 101 + b"\r\n"), 431,
     "the trailer section is over the header limits"),
    ("trailer section over 64 KiB",
     chunked(b"0\r\n" + (b"X-T: " + b"t" * 7000 + b"\r\n") * 10 + b"\r\n"), 431,
     "the trailer section is over the header limits"),
    ("malformed trailer field", chunked(b"0\r\nX-T : 1\r\n\r\n"), 400,
     "malformed trailer field line"),
    ("Expect other than 100-continue", b"POST / HTTP/1.1\r\n" + H + b"Expect: 200-ok\r\n"
     b"Content-Length: 2\r\n\r\nhi", 417, "the only supported expectation is 100-continue"),
]


def read_request(raw, limits=http11.DEFAULT_LIMITS):
    """Parse raw bytes, all already received, the way the server does: (head, body, rest)."""
    buffer = bytearray(raw)
    head = http11.take_head(buffer, limits)
    assert head is not None, "the head is incomplete"
    body = http11.body_decoder(head, limits).decode(buffer)
    return head, body, bytes(buffer)


def refusal(raw, limits=http11.DEFAULT_LIMITS):
    """The ProtocolError that parsing raw raises."""
    with pytest.raises(ProtocolError) as refused:
        read_request(raw, limits)
    return refused.value


# -- requests the parser refuses ----------------------------------------------------------

@pytest.mark.parametrize("raw, status, detail", [row[1:] for row in BAD_REQUESTS],
                         ids=[row[0] for row in BAD_REQUESTS])
def test_a_bad_request_is_refused_with_its_status_and_detail(raw, status, detail):
    error = refusal(raw)
    assert (error.status, error.detail) == (status, detail)


@pytest.mark.parametrize("raw, path", [
    (b"GE(T /a HTTP/1.1\r\n" + H + b"\r\n", None),             # the request line is the error
    (b"GET /a%20b HTTP/1.1\r\n" + H + H + b"\r\n", "/a%20b"),   # a field after it is
])
def test_a_refused_head_names_its_path_once_the_request_line_was_read(raw, path):
    with pytest.raises(ProtocolError) as refused:
        http11.take_head(bytearray(raw))
    assert refused.value.path == path   # for the problem's instance


# -- a head that can never become valid is refused before it is complete ---------------------

@pytest.mark.parametrize("partial, status, detail", [
    (b"GET /" + b"a" * (8 * 1024), 414, "the request line is over 8192 bytes"),
    (b"GET / HTTP/1.1\r\n" + b"X-Filler: " + b"v" * (64 * 1024) + b"\r\n", 431,
     "the request head is over 65536 bytes"),
    (b"GET / HTTP/1.1\r\n" + b"X-Filler: v\r\n" * 6000, 431,
     "the request head is over 65536 bytes"),
    (b"GET / HTTP/1.1\nHost: shop.test\n", 400, NOT_CRLF),
    (b"GET / HTTP/1.1\rHost", 400, NOT_CRLF),
    # HTTP/0.9: a request line with no version, and no blank line will ever follow.
    (b"GET /\r\n", 400, "malformed request line"),
    (b"GET / HTTP/2.0\r\nHost: shop.test\r\n", 505, "HTTP/2.0 is not supported; use HTTP/1.1"),
    # The first bytes of a TLS 1.2/1.3 ClientHello: a handshake record (0x16), version 3.1.
    (bytes.fromhex("16030100f8010000f40303"), 400, "malformed request line"),
    (b"G\x00", 400, "malformed request line"),
])
def test_an_unfinished_head_that_can_never_be_valid_is_refused_at_once(partial, status, detail):
    assert b"\r\n\r\n" not in partial   # no end of head: without the checks, take_head would wait
    with pytest.raises(ProtocolError) as refused:
        http11.take_head(bytearray(partial))
    assert (refused.value.status, refused.value.detail) == (status, detail)


@pytest.mark.parametrize("partial", [
    b"", b"GET", b"GET / HTTP/1.1\r", b"GET / HTTP/1.1\r\n" + H, b"GET / HTTP/1.1\r\n" + H + b"\r",
    b"GET /" + b"a" * (8 * 1024 - 5), b"\r\nGE", b"M-SEARCH", b"GET ",
])
def test_an_unfinished_head_that_may_still_be_valid_waits_for_more(partial):
    assert http11.take_head(bytearray(partial)) is None


def outcome_fed_in_pieces(raw, piece_bytes, skip_checked=True):
    """take_head as the server calls it: again after each piece, skipping what it checked
    (or, with skip_checked=False, looking at the whole buffer every time)."""
    buffer, checked = bytearray(), 0
    for start in range(0, len(raw), piece_bytes):
        buffer += raw[start:start + piece_bytes]
        try:
            head = http11.take_head(buffer, http11.DEFAULT_LIMITS, checked)
        except ProtocolError as error:
            return ("refused", error.status, error.detail, start)
        if head is not None:
            return ("head", head, bytes(buffer))
        checked = len(buffer) if skip_checked else 0
    return ("waiting",)


# The bad requests and a few more, up to 4 KiB: the full rescan they are compared with is
# quadratic, and the rows at the 64 KiB limits would take a minute in 1-byte pieces.
PIECEWISE_REQUESTS = [raw for raw in [row[1] for row in BAD_REQUESTS] + [
    get(), b"\r\n\r\n" + get("/after-empty-lines"), get("/x", b"X-A: 1\r\n" * 50),
    b"GET /\r\n", b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", b"GET / HTTP/1.1\r\rHost: a\r\n\r\n",
] if len(raw) <= 4096]


@pytest.mark.parametrize("raw", PIECEWISE_REQUESTS)
@pytest.mark.parametrize("piece_bytes", [1, 2, 3, 7])
def test_skipping_the_checked_bytes_changes_no_answer(raw, piece_bytes):
    # The same head and leftovers, or the same refusal at the same piece, as a full rescan.
    assert outcome_fed_in_pieces(raw, piece_bytes) == outcome_fed_in_pieces(raw, piece_bytes, skip_checked=False)


@pytest.mark.parametrize("raw", [row[1] for row in BAD_REQUESTS if len(row[1]) > 4096])
def test_skipping_the_checked_bytes_changes_no_answer_at_the_limits(raw):
    assert outcome_fed_in_pieces(raw, 1000) == outcome_fed_in_pieces(raw, 1000, skip_checked=False)


def test_a_head_fed_in_pieces_is_scanned_once():
    """Each piece is looked at once: 64 KiB in 16-byte pieces, not the square of that."""
    raw = b"GET / HTTP/1.1\r\n" + b"X-Filler: " + b"v" * 60_000 + b"\r\n"
    started = time.process_time()
    assert outcome_fed_in_pieces(raw, 16) == ("waiting",)
    assert time.process_time() - started < 0.1   # a rescan of the whole buffer each time: 40x that


@pytest.mark.parametrize("raw, limits, status, detail", [
    (get("/" + "a" * 20), Limits(request_line_bytes=16), 414, "the request line is over 16 bytes"),
    (get(extra=b"X-A: 1\r\n"), Limits(header_count=1), 431, "more than 1 header fields"),
    (get(extra=b"X: " + b"v" * 60 + b"\r\n"), Limits(header_bytes=64), 431,
     "the request head is over 64 bytes"),
    (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello", Limits(body_bytes=4), 413,
     "the body is over 4 bytes"),
    (chunked(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), Limits(body_bytes=4), 413,
     "the decoded body is over 4 bytes"),
    (chunked(b"3;abcdef\r\nabc\r\n0\r\n\r\n"), Limits(chunk_line_bytes=4), 400,
     "a line in the body is over 4 bytes"),
])
def test_the_limits_are_arguments(raw, limits, status, detail):
    error = refusal(raw, limits)
    assert (error.status, error.detail) == (status, detail)
    assert read_request(raw.replace(b"5\r\n\r\nhello", b"4\r\n\r\nhell"))  # the defaults are wider


# -- what a valid head holds ---------------------------------------------------------------

@pytest.mark.parametrize("target, path, query, host", [
    ("/v1/items?limit=3&q=a%20b", "/v1/items", "limit=3&q=a%20b", "shop.test"),
    ("/a%2Fb/%C3%A9", "/a%2Fb/%C3%A9", "", "shop.test"),   # left percent-encoded, for the server
    ("http://other.test:8080/x?y", "/x", "y", "other.test:8080"),   # §3.2.2: authority wins
    ("HTTP://other.test", "/", "", "other.test"),
    ("http://[::1]:80/", "/", "", "[::1]:80"),
])
def test_target_forms(target, path, query, host):
    head, body, rest = read_request(get(target))
    assert (head.method, head.target, head.version) == ("GET", target, "HTTP/1.1")
    assert (head.path, head.query, head.fields["host"]) == (path, query, host)
    assert (body, rest) == (b"", b"")


def test_options_asterisk_and_http_10_without_host():
    head = read_request(b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n")[0]
    assert (head.method, head.path, head.query) == ("OPTIONS", "", "")
    head = read_request(b"GET /old HTTP/1.0\r\n\r\n")[0]
    assert (head.version, head.fields) == ("HTTP/1.0", {})


def test_fields_are_lower_case_trimmed_and_repeats_joined():
    head = read_request(get(extra=b"Cookie: a=1\r\nCOOKIE: b=2\r\nAccept: x\r\naccept: y\r\n"
                                  b"X_Spoofed: 1\r\nX-Padded: \t v \t\r\nX-Empty:\r\n"))[0]
    assert head.fields == {"host": "shop.test", "cookie": "a=1; b=2", "accept": "x, y",
                           "x_spoofed": "1", "x-padded": "v", "x-empty": ""}


def test_empty_lines_before_a_request_are_skipped_and_pipelined_bytes_stay():
    buffer = bytearray(b"\r\n\r\n" + get("/first") + get("/second"))
    assert http11.take_head(buffer).path == "/first"
    assert bytes(buffer) == get("/second")
    assert http11.take_head(buffer).path == "/second" and buffer == b""


@pytest.mark.parametrize("version, connection, keep_alive", [
    ("HTTP/1.1", None, True), ("HTTP/1.1", "close", False), ("HTTP/1.1", "Upgrade, Close", False),
    ("HTTP/1.1", "keep-alive", True), ("HTTP/1.0", None, False), ("HTTP/1.0", "Keep-Alive", True),
    ("HTTP/1.0", "close", False),
])
def test_keep_alive_follows_version_and_connection(version, connection, keep_alive):
    fields = {} if connection is None else {"connection": connection}
    assert http11.RequestHead("GET", "/", version, "/", "", fields).keep_alive is keep_alive


# -- bodies --------------------------------------------------------------------------------

def test_a_content_length_body_is_taken_and_the_next_request_stays():
    _, body, rest = read_request(b"POST /one HTTP/1.1\r\n" + H + b"Content-Length: 6\r\n\r\n"
                                 b"GET /x" + get("/two"))
    assert (body, rest) == (b"GET /x", get("/two"))


def test_no_framing_fields_mean_no_body():
    assert read_request(get() + b"GET /next")[1:] == (b"", b"GET /next")


def test_a_content_length_body_waits_for_all_its_bytes():
    buffer = bytearray(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhel")
    decoder = http11.body_decoder(http11.take_head(buffer))
    assert decoder.decode(buffer) is None and buffer == b"hel"
    buffer += b"lo!"
    assert decoder.decode(buffer) == b"hello" and buffer == b"!"


CHUNKED_WIRE = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: dropped\r\n\r\n"


def test_a_chunked_body_is_decoded_one_byte_at_a_time():
    buffer, decoder = bytearray(), http11.ChunkedDecoder()
    for position, byte in enumerate(CHUNKED_WIRE):
        buffer.append(byte)
        body = decoder.decode(buffer)
        assert (body is None) == (position < len(CHUNKED_WIRE) - 1)   # done at the last byte
    assert body == b"hello world" and buffer == b""


def test_a_chunked_body_leaves_the_next_request_in_the_buffer():
    assert read_request(chunked(CHUNKED_WIRE) + get("/next"))[1:] == (b"hello world", get("/next"))


def test_expect_100_continue_is_the_only_expectation():
    head = read_request(b"POST / HTTP/1.1\r\n" + H + b"Expect: 100-Continue\r\n"
                        b"Content-Length: 2\r\n\r\nhi")[0]
    assert head.fields["expect"] == "100-Continue"


# -- the server's own problems ---------------------------------------------------------------

# -- found by mutation testing (tools/mutate.py, docs/testing.md) ---------------------------

def test_each_limit_admits_exactly_its_size_and_refuses_one_more():
    raw = get("/aa", extra=b"X-A: " + b"v" * 20 + b"\r\n")
    head_bytes, line_bytes = len(raw) - 4, len("GET /aa HTTP/1.1")   # the head ends before CRLF CRLF
    for limits in (Limits(header_bytes=head_bytes), Limits(request_line_bytes=line_bytes), Limits(header_count=2)):
        assert read_request(raw, limits)[0].path == "/aa"
    assert refusal(raw, Limits(header_bytes=head_bytes - 1)).status == 431
    assert refusal(raw, Limits(request_line_bytes=line_bytes - 1)).status == 414
    assert refusal(raw, Limits(header_count=1)).status == 431


def test_an_unfinished_head_at_exactly_a_limit_still_waits():
    line = b"GET /aa HTTP/1.1\r\n"   # the request line is whole, the head is not
    assert http11.take_head(bytearray(line), Limits(request_line_bytes=len(line) - 2)) is None
    with pytest.raises(ProtocolError) as refused:
        http11.take_head(bytearray(line), Limits(request_line_bytes=len(line) - 3))
    assert refused.value.status == 414
    partial = line + H + b"X-A: vvvv"
    assert http11.take_head(bytearray(partial), Limits(header_bytes=len(partial))) is None
    with pytest.raises(ProtocolError) as refused:
        http11.take_head(bytearray(partial), Limits(header_bytes=len(partial) - 1))
    assert refused.value.status == 431


def test_a_chunked_body_and_its_trailers_may_reach_the_limits_exactly():
    assert read_request(chunked(b"3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n"), Limits(body_bytes=4))[1] == b"abcd"
    three_trailers = chunked(b"0\r\n" + b"X-T: 1\r\n" * 3 + b"\r\n")
    assert read_request(three_trailers, Limits(header_count=3))[1] == b""
    assert refusal(three_trailers, Limits(header_count=2)).status == 431
    # 64 bytes of trailer section, each line counted with its CRLF; the head is 60 bytes.
    exactly = chunked(b"0\r\nX-T: " + b"t" * 57 + b"\r\n\r\n")
    assert read_request(exactly, Limits(header_bytes=64))[1] == b""
    assert refusal(exactly.replace(b"t\r\n", b"tt\r\n"), Limits(header_bytes=64)).status == 431


@pytest.mark.parametrize("size_line", [b"5 \t", b"5\t;name=value", b"5;a=1;b=2", b"0005"])
def test_chunk_size_lines_the_rfc_allows(size_line):
    # §7.1.1: chunk-size [ BWS ";" chunk-ext ], where BWS is spaces and tabs only.
    buffer = bytearray(size_line + b"\r\nhello\r\n0\r\n\r\n")
    assert http11.ChunkedDecoder().decode(buffer) == b"hello" and buffer == b""


@pytest.mark.parametrize("size_line", [b" 5", b"5X", b"5\x0b", b"5\x0c", b"0x5", b"+5", b""])
def test_chunk_size_lines_the_rfc_does_not_allow(size_line):
    with pytest.raises(ProtocolError) as refused:
        http11.ChunkedDecoder().decode(bytearray(size_line + b"\r\nhello\r\n0\r\n\r\n"))
    assert (refused.value.status, refused.value.detail) == (400, "malformed chunk size")


@pytest.mark.parametrize("wire", [
    b"5\r\nhelloXY",    # the two bytes after the data are there, and they are not CRLF
    b"\n",              # a bare LF where a size line starts
    b"5\r;x\r\nhello\r\n0\r\n\r\n",   # a CR inside the size line
    b"\r5\r\nhello\r\n0\r\n\r\n",     # a CR at its very start
])
def test_broken_chunk_lines_are_refused_as_soon_as_they_show(wire):
    with pytest.raises(ProtocolError) as refused:
        http11.ChunkedDecoder().decode(bytearray(wire))
    expected = "chunk data must end in CRLF" if wire.startswith(b"5\r\nhello") else "lines must end in CRLF"
    assert (refused.value.status, refused.value.detail) == (400, expected)


def test_a_chunk_size_line_may_fill_its_limit_exactly():
    eight = Limits(chunk_line_bytes=8)   # a line of 7 bytes and its CR
    assert http11.ChunkedDecoder(eight).decode(bytearray(b"5;abcde\r\nhello\r\n0\r\n\r\n")) == b"hello"
    assert http11.ChunkedDecoder(eight).decode(bytearray(b"5;abcdef")) is None   # 8 bytes, no end yet
    with pytest.raises(ProtocolError) as refused:
        http11.ChunkedDecoder(eight).decode(bytearray(b"5;abcdefg"))
    assert (refused.value.status, refused.value.detail) == (400, "a line in the body is over 8 bytes")


def test_field_values_lose_spaces_and_tabs_around_them_and_nothing_else():
    head = read_request(get(extra=b"X-A: \tX marks X \r\nX-B: caf\xe9\xa0\r\nX-C: \x85v\x85\r\n"))[0]
    assert (head.fields["x-a"], head.fields["x-b"], head.fields["x-c"]) == ("X marks X", "caf\xe9\xa0", "\x85v\x85")


def test_a_field_folded_with_a_tab_is_refused_as_folding():
    error = refusal(get(extra=b"X-A: 1\r\n\t2\r\n"))
    assert (error.status, error.detail) == (400, "obsolete line folding is not allowed (RFC 9112 §5.2)")


def test_a_protocol_error_says_its_detail():
    assert str(ProtocolError(431, "more than 100 header fields")) == "more than 100 header fields"
