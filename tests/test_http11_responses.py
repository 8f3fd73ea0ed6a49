"""Tests for http11_responses.py: responses framed as bytes, with no socket and no thread."""
import json

import pytest

import http11_responses
import web


def framed(method="GET", version="HTTP/1.1", status="200 OK", headers=(), pieces=(b"hello",),
           total_length=None, keep_alive=True):
    """(head fields as {name: value}, body bytes on the wire, keep_alive after the body)."""
    framer = http11_responses.ResponseFramer(method, version, keep_alive)
    framer.start(status, list(headers))
    head = framer.head(total_length).decode("latin-1")
    wire = b"".join(framer.frame(piece) for piece in pieces) + framer.end()
    status_line, *lines = head.split("\r\n")[:-2]
    assert status_line == f"HTTP/1.1 {status}" and head.endswith("\r\n\r\n")
    return dict(line.split(": ", 1) for line in lines), wire, framer.keep_alive


def test_a_body_of_unknown_length_is_chunked_in_http_11():
    fields, wire, keep_alive = framed(pieces=(b"hello", b"", b" world"))
    assert fields["Transfer-Encoding"] == "chunked" and "Content-Length" not in fields
    assert wire == b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n" and keep_alive


def test_a_body_of_unknown_length_ends_with_the_connection_in_http_10():
    fields, wire, keep_alive = framed(version="HTTP/1.0", keep_alive=True)
    assert fields["Connection"] == "close" and "Transfer-Encoding" not in fields
    assert wire == b"hello" and not keep_alive


def test_a_known_total_gets_a_content_length_and_http_10_keep_alive_says_so():
    fields, wire, keep_alive = framed(version="HTTP/1.0", total_length=5)
    assert (fields["Content-Length"], fields["Connection"], wire, keep_alive) == (
        "5", "keep-alive", b"hello", True)


@pytest.mark.parametrize("method, status", [("HEAD", "200 OK"), ("GET", "204 No Content"),
                                            ("GET", "304 Not Modified")])
def test_head_204_and_304_have_no_body_on_the_wire(method, status):
    fields, wire, keep_alive = framed(method, status=status, headers=[("Content-Length", "5")])
    assert fields["Content-Length"] == "5" and wire == b"" and keep_alive


def test_more_than_the_apps_content_length_is_cut_and_closes(caplog):
    fields, wire, keep_alive = framed(headers=[("Content-Length", "3")], pieces=(b"too", b" long"))
    assert (fields["Content-Length"], wire, keep_alive) == ("3", b"too", False)
    assert "more than its Content-Length" in caplog.text


def test_less_than_the_apps_content_length_closes(caplog):
    # The client still waits for 6 bytes: only closing the connection tells it they won't come.
    fields, wire, keep_alive = framed(headers=[("Content-Length", "10")], pieces=(b"four",))
    assert (fields["Content-Length"], wire, keep_alive) == ("10", b"four", False)
    assert "less than its Content-Length" in caplog.text


def test_the_server_writes_date_server_and_connection_itself():
    fields, _, keep_alive = framed(headers=[("Date", "yesterday"), ("Server", "Apache/2.4.1"),
                                            ("Connection", "close"), ("X-Kept", "yes")])
    assert fields["Server"] == "shop" and fields["Date"].endswith(" GMT")
    assert (fields["Connection"], fields["X-Kept"], keep_alive) == ("close", "yes", False)


@pytest.mark.parametrize("status, headers, error", [
    ("OK", [], ValueError), (b"200 OK", [], ValueError), ("200 OK\r\nX-A: b", [], ValueError),
    ("200 OK", [("X-Injected", "a\r\nSet-Cookie: evil=1")], ValueError),
    ("200 OK", [("X A", "b")], ValueError), ("200 OK", [(b"X-A", b"b")], TypeError),
    ("200 OK", [("Transfer-Encoding", "chunked")], ValueError),
    ("200 OK", [("Content-Length", "-1")], ValueError),
    ("200 OK", [("Content-Length", "1"), ("Content-Length", "1")], ValueError),
])
def test_a_bad_status_or_field_from_the_app_is_refused(status, headers, error):
    with pytest.raises(error):
        http11_responses.ResponseFramer("GET", "HTTP/1.1", True).start(status, headers)


# _render_fields checks all the lines with one expression and counts them: a line break
# smuggled into a name or a value, alone or as CRLF, anywhere among good fields, is found.
GOOD = [("Content-Type", "application/json"), ("X-Request-ID", "abc")]


@pytest.mark.parametrize("name, value", [
    ("X-Injected", "a\r\nSet-Cookie: evil=1"), ("X-Injected", "a\nSet-Cookie: evil=1"), ("X-A", "a\r"),
    ("X-A", "\r\n"), ("X-A", "a\x00b"), ("X-A", "a\x7fb"), ("X-A\r\nSet-Cookie", "evil=1"), ("X-A:", "b"),
    ("X-A: b\r\nX-B", "c"), ("", "b"), ("X A", "b"), ("Date\r\nX-B", "c"),
])
@pytest.mark.parametrize("position", [0, 1, 2])
def test_a_line_break_or_a_bad_character_anywhere_in_the_fields_is_refused_and_named(name, value, position):
    headers = [*GOOD[:position], (name, value), *GOOD[position:]]
    with pytest.raises(ValueError) as refused:
        http11_responses.ResponseFramer("GET", "HTTP/1.1", True).start("200 OK", headers)
    assert str(refused.value) == f"invalid header field {name!r}: {value!r}"


def test_a_problem_response_is_the_applications_format_and_closes():
    raw = http11_responses.problem_response(400, "Content-Length must be a single decimal number",
                                  request_id="abc", path="/v1/caf%C3%A9")
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines)
    assert status_line == "HTTP/1.1 400 Bad Request"
    assert (fields["Content-Type"], fields["Connection"]) == ("application/problem+json", "close")
    assert (fields["X-Request-ID"], fields["X-Content-Type-Options"]) == ("abc", "nosniff")
    assert int(fields["Content-Length"]) == len(body)
    assert body == web.problem_body(400, "Content-Length must be a single decimal number",
                                    instance="/v1/café", request_id="abc")
    assert list(json.loads(body)) == ["type", "title", "status", "detail", "instance", "request_id"]


def test_a_problem_before_the_path_is_known_has_no_instance_and_head_has_no_body():
    raw = http11_responses.problem_response(414, "the request line is over 8192 bytes", request_id="abc")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 414 URI Too Long\r\n")
    assert json.loads(body) == {"type": "about:blank", "title": "URI Too Long", "status": 414,
                                "detail": "the request line is over 8192 bytes",
                                "request_id": "abc"}
    headless = http11_responses.problem_response(500, "failed", request_id="abc", path="/", with_body=False)
    assert headless.endswith(b"\r\n\r\n") and b"Content-Length: " in headless


def test_a_closing_response_keeps_its_framing_fields():
    fields, wire, _ = framed(total_length=5, keep_alive=False)
    assert (fields["Content-Length"], fields["Connection"], wire) == ("5", "close", b"hello")
    fields, wire, _ = framed(keep_alive=False)
    assert (fields["Transfer-Encoding"], fields["Connection"], wire) == ("chunked", "close", b"5\r\nhello\r\n0\r\n\r\n")


def test_a_broken_content_length_is_logged_in_so_many_words(caplog):
    framed(headers=[("Content-Length", "3")], pieces=(b"too", b" long"))
    framed(headers=[("Content-Length", "10")], pieces=(b"four",))
    assert caplog.messages == ["application sent more than its Content-Length; truncated",
                               "application sent less than its Content-Length; closing"]


@pytest.mark.parametrize("status, headers, error, message", [
    ("OK", [], ValueError, "status must be a str like '200 OK', not 'OK'"),
    ("200 OK", [("X-A", 5)], TypeError, "header names and values must be str: 'X-A': 5"),
    ("200 OK", [("X A", "b")], ValueError, "invalid header field 'X A': 'b'"),
    ("200 OK", [("Content-Length", "-1")], ValueError, "invalid Content-Length from the application: '-1'"),
    ("200 OK", [("Upgrade", "h2c")], ValueError, "hop-by-hop header 'Upgrade' is the server's job (PEP 3333)"),
])
def test_a_bad_status_or_field_from_the_app_is_refused_with_a_message(status, headers, error, message):
    with pytest.raises(error) as refused:
        http11_responses.ResponseFramer("GET", "HTTP/1.1", True).start(status, headers)
    assert str(refused.value) == message


def test_a_problem_for_options_asterisk_names_the_root_as_its_instance():
    raw = http11_responses.problem_response(400, "malformed header field line", request_id="abc", path="")
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["instance"] == "/"


def test_the_date_field_is_the_current_second_formatted_once_per_second(monkeypatch):
    clock, formatted = [1_795_000_000.25], []
    real_formatdate = http11_responses.email.utils.formatdate

    def formatdate(timeval, **options):
        formatted.append(timeval)
        return real_formatdate(timeval, **options)

    monkeypatch.setattr(http11_responses.time, "time", lambda: clock[0])
    monkeypatch.setattr(http11_responses.email.utils, "formatdate", formatdate)
    monkeypatch.setattr(http11_responses, "_date_cache", (0, ""))
    assert framed()[0]["Date"] == "Wed, 18 Nov 2026 11:06:40 GMT"
    clock[0] += 0.5
    assert framed()[0]["Date"] == "Wed, 18 Nov 2026 11:06:40 GMT"
    clock[0] += 0.5
    assert framed()[0]["Date"] == "Wed, 18 Nov 2026 11:06:41 GMT"
    assert formatted == [1_795_000_000, 1_795_000_001]
