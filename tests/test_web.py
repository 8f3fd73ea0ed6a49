"""Tests for web.py: strict parsing of bodies and queries, the router and the WSGI application.

The application tests need no database: a tiny Router with handlers written here, an
`Application` wrapped in `wsgiref.validate.validator` (which checks every PEP 3333 rule on
every call), driven with environs from `wsgiref.util.setup_testing_defaults`. The same tiny
application behind the middleware list is tested in test_middleware.py.
"""

import io
import json
import time
import wsgiref.util
import wsgiref.validate

import pytest

import db
from router import Router
from web import (
    MAX_BODY_BYTES,
    Application,
    BadRequest,
    Conflict,
    ContentTooLarge,
    NotFound,
    Request,
    Response,
    UnprocessableContent,
    UnsupportedMediaType,
    etag_matches,
    parse_json,
    parse_query,
)

ITEM_ETAG = '"item-7-v1"'
# Bounds in CPU time (a loaded machine does not change them), each hundreds of times what
# the work takes, well under a millisecond: they catch a parse that runs away on huge input.
HUGE_INPUT_CPU_SECONDS = 0.5
HEADER_CPU_SECONDS = 0.1


# -- helpers -----------------------------------------------------------------------------

def make_environ(method="GET", path="/", query="", body=b"", headers=None):
    """A PEP 3333 environ; `headers` maps HTTP header names to values."""
    environ = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ.update({
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_LENGTH": str(len(body)) if body else "",
        "wsgi.input": io.BytesIO(body),
        "REMOTE_ADDR": "127.0.0.1",
    })
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
    return environ


class Result:
    """What the server would send: status code, header list and body bytes."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None

    def json(self):
        return json.loads(self.body)


def call(app, method="GET", path="/", *, validate=True, **request):
    """Call a WSGI app once, through the PEP 3333 validator unless told otherwise."""
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"], captured["headers"] = int(status.split()[0]), headers

    wsgi_app = wsgiref.validate.validator(app) if validate else app
    chunks = wsgi_app(make_environ(method, path, **request), start_response)
    try:
        body = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    return Result(captured["status"], captured["headers"], body)


# -- a tiny application ------------------------------------------------------------------

def list_items(request):
    return {"data": [{"id": 7}], "q": request.query_value("q")}


def get_item(request):
    item_id = request.path_params["id"]
    return Response.json({"id": item_id}, headers=[("ETag", ITEM_ETAG), ("Cache-Control", "no-cache")])


def create_item(request):
    return Response.json(request.json(), status=201)


def teapot(request):
    return Response(b"short and stout", 418, [("Content-Type", "text/plain")])


def cached(request):
    return Response.json({"cached": True}, headers=[("Cache-Control", "public, max-age=60")])


def conflict(request):
    raise Conflict("item 7 was changed by someone else")


def invalid(request):
    raise UnprocessableContent([{"field": "price_cents", "message": "must be at least 0"}])


def crash(request):
    raise RuntimeError("secret-value")


def database_down(request):
    raise db.DatabaseUnavailable("connection refused")


def build_router():
    router = Router()
    for method, pattern, handler in [
        ("GET", "/items", list_items),
        ("POST", "/items", create_item),
        ("GET", "/items/{id:int}", get_item),
        ("GET", "/teapot", teapot),
        ("GET", "/cached", cached),
        ("GET", "/conflict", conflict),
        ("POST", "/invalid", invalid),
        ("GET", "/crash", crash),
        ("GET", "/database-down", database_down),
    ]:
        router.add(method, pattern, handler, name=handler.__name__)
    return router


@pytest.fixture
def bare_app():
    """The Application alone: routing, HEAD, OPTIONS, conditional GET; exceptions propagate."""
    return Application(build_router())


# -- parse_json --------------------------------------------------------------------------

def nested_arrays(levels, innermost=""):
    return ("[" * levels + innermost + "]" * levels).encode()


def nested_objects(levels):
    return ('{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)).encode()


@pytest.mark.parametrize("body, expected", [
    (b'{"name": "Tea", "price_cents": 450}', {"name": "Tea", "price_cents": 450}),
    ('{"name": "Thé ☕ 茶"}'.encode(), {"name": "Thé ☕ 茶"}),
    (b'{"name": "\\u00e9\\ud83d\\ude00"}', {"name": "é😀"}),  # an escaped surrogate *pair* is fine
    (b'{"delta": -12, "ratio": -0.5}', {"delta": -12, "ratio": -0.5}),
    (b"[1.5, 2e3, -0.25, 0]", [1.5, 2000.0, -0.25, 0]),
    (b"9223372036854775807", 2**63 - 1),
    (b"-9223372036854775807", -(2**63 - 1)),
    # Well-formed JSON, parsed exactly: whether a value fits is the validator's 422, per field.
    (b'{"a": 9223372036854775808}', {"a": 2**63}),
    (b'{"a": -9223372036854775809}', {"a": -(2**63) - 1}),
    (b'{"a": 123456789012345678901}', {"a": 123456789012345678901}),
    (b"[" + b"9" * 100 + b"]", [10**100 - 1]),
    (b"[]", []),
    (b'"text"', "text"),
    (b"null", None),
    (b' {"in_stock": true} ', {"in_stock": True}),
    (nested_arrays(32), json.loads(nested_arrays(32))),
    (nested_objects(32), json.loads(nested_objects(32))),
])
def test_parse_json_accepts_ordinary_documents(body, expected):
    assert parse_json(body) == expected


@pytest.mark.parametrize("body, message", [
    (b'{"a": NaN}', "malformed JSON: NaN and Infinity are not JSON"),
    (b'{"a": Infinity}', "malformed JSON: NaN and Infinity are not JSON"),
    (b'{"a": -Infinity}', "malformed JSON: NaN and Infinity are not JSON"),
    (b'{"a": 1e400}', "malformed JSON: number out of range"),
    (b'{"a": -1e400}', "malformed JSON: number out of range"),
    (b'{"a": ' + b"9" * 101 + b"}", "malformed JSON: an integer of more than 100 digits"),
    (b'{"a": -' + b"9" * 5000 + b"}", "malformed JSON: an integer of more than 100 digits"),
    (b'{"price_cents": 1, "price_cents": 1000}', "malformed JSON: duplicate key in an object"),
    (b'{"item": {"a": 1, "a": 2}}', "malformed JSON: duplicate key in an object"),
    (b'[{"a": 1}, {"b": 1, "b": 1}]', "malformed JSON: duplicate key in an object"),
    (b'{"name": "\\ud800"}', "malformed JSON: a string holds a lone surrogate"),
    (b'{"name": "tea \\udc00"}', "malformed JSON: a string holds a lone surrogate"),
    (b'{"\\ud800": 1}', "malformed JSON: a string holds a lone surrogate"),
    (b'{"items": [{"tags": ["\\ud800"]}]}', "malformed JSON: a string holds a lone surrogate"),
    (b'{"name": "\xff"}', "the body is not valid UTF-8"),
    (b'"\xc3\x28"', "the body is not valid UTF-8"),
    (b'"\xed\xa0\x80"', "the body is not valid UTF-8"),  # a surrogate encoded as UTF-8
    (b'"\xc0\xaf"', "the body is not valid UTF-8"),  # an overlong encoding of "/"
    (nested_arrays(33), "malformed JSON: nested deeper than 32 levels"),
    (nested_objects(33), "malformed JSON: nested deeper than 32 levels"),
    (nested_arrays(100_000), "malformed JSON: nested deeper than 32 levels"),
    (b'{"name": "Tea"', "malformed JSON: Expecting"),
    (b"[1, 2", "malformed JSON: Expecting"),
    (b'{"a":', "malformed JSON: Expecting value"),
    (b"", "malformed JSON: Expecting value"),
    (b"   ", "malformed JSON: Expecting value"),
    (b"{} {}", "malformed JSON: Extra data"),
    (b"{'a': 1}", "malformed JSON: Expecting property name"),
], ids=lambda value: value[:40] if isinstance(value, bytes) else None)
def test_parse_json_refuses_with_bad_request(body, message):
    with pytest.raises(BadRequest) as refused:
        parse_json(body)
    assert refused.value.status == 400
    assert refused.value.detail.startswith(message)


def test_parse_json_refuses_a_huge_integer_quickly():
    started = time.thread_time()
    with pytest.raises(BadRequest, match="an integer of more than 100 digits"):
        parse_json(b"[" + b"7" * 100_000 + b"]")
    assert time.thread_time() - started < HUGE_INPUT_CPU_SECONDS


@pytest.mark.parametrize("body", [nested_arrays(32, "1"), ('{"a":' * 32 + "1" + "}" * 32).encode()],
                         ids=["arrays", "objects"])
def test_parse_json_accepts_32_levels_around_a_scalar(body):
    assert parse_json(body) == json.loads(body)


# -- Request: body and JSON -----------------------------------------------------------------

def json_request(body, content_type="application/json", content_length=None):
    headers = {} if content_type is None else {"Content-Type": content_type}
    environ = make_environ("POST", "/items", body=body, headers=headers)
    if content_length is not None:
        environ["CONTENT_LENGTH"] = content_length
    return Request(environ)


@pytest.mark.parametrize("content_type", [
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON",
    " application/json ;charset=UTF-8",
])
def test_json_accepts_the_json_media_type(content_type):
    assert json_request(b'{"name": "Tea"}', content_type).json() == {"name": "Tea"}


@pytest.mark.parametrize("content_type", [
    None, "", "text/plain", "application/jsonx", "application/json-patch+json",
    "application/problem+json", "application/x-www-form-urlencoded", "json",
])
def test_json_refuses_other_media_types_with_415(content_type):
    with pytest.raises(UnsupportedMediaType) as refused:
        json_request(b'{"name": "Tea"}', content_type).json()
    assert refused.value.status == 415
    assert refused.value.detail == "the body must be sent as Content-Type: application/json"


@pytest.mark.parametrize("content_length, body, error, message", [
    (str(MAX_BODY_BYTES + 1), b"{}", ContentTooLarge, "the body may be at most 1048576 bytes"),
    ("99999999999999999999", b"{}", ContentTooLarge, "the body may be at most 1048576 bytes"),
    ("abc", b"{}", BadRequest, "Content-Length must be a number of bytes"),
    ("-1", b"{}", BadRequest, "Content-Length must be a number of bytes"),
    ("1.5", b"{}", BadRequest, "Content-Length must be a number of bytes"),
    (" 2", b"{}", BadRequest, "Content-Length must be a number of bytes"),
    ("10", b"{}", BadRequest, "the body is shorter than its Content-Length"),
    ("", b"", BadRequest, "malformed JSON: Expecting value"),
])
def test_json_refuses_bad_content_length(content_length, body, error, message):
    with pytest.raises(error) as refused:
        json_request(body, content_length=content_length).json()
    assert refused.value.detail.startswith(message)


def test_a_body_over_the_limit_is_refused_before_it_is_read():
    request = json_request(b"{}", content_length=str(MAX_BODY_BYTES + 1))
    with pytest.raises(ContentTooLarge):
        request.body()
    assert request.environ["wsgi.input"].tell() == 0


@pytest.mark.parametrize("content_length", ["²", "١"], ids=["superscript-two", "arabic-one"])
def test_json_refuses_a_content_length_that_int_cannot_read_as_http_digits(content_length):
    with pytest.raises(BadRequest, match="Content-Length must be a number of bytes"):
        json_request(b"1", content_length=content_length).json()


def test_a_5000_digit_content_length_is_too_large_and_fast():
    started = time.thread_time()
    with pytest.raises(ContentTooLarge):
        json_request(b"1", content_length="9" * 5000).json()
    assert time.thread_time() - started < HEADER_CPU_SECONDS


def test_a_body_of_exactly_the_maximum_size_is_read():
    body = b'"' + b"a" * (MAX_BODY_BYTES - 2) + b'"'
    assert len(json_request(body).json()) == MAX_BODY_BYTES - 2


# -- Request: query, cookies, headers, path --------------------------------------------------

@pytest.mark.parametrize("query_string, expected", [
    ("", {}),
    ("q=tea&q=mug&q=cup", {"q": ["tea", "mug", "cup"]}),
    ("name=caf%C3%A9", {"name": ["café"]}),
    ("q=tea+cup", {"q": ["tea cup"]}),
    ("q=a%2Bb%26c%3Dd", {"q": ["a+b&c=d"]}),
    ("limit=", {"limit": [""]}),
    ("flag", {"flag": [""]}),
    ("a=1&&b=2", {"a": ["1"], "b": ["2"]}),
    ("sort=-price_cents%2Cname", {"sort": ["-price_cents,name"]}),
    ("&".join(f"f{number}=1" for number in range(100)), {f"f{number}": ["1"] for number in range(100)}),
    ("q=" + "a" * (8 * 1024 - 2), {"q": ["a" * (8 * 1024 - 2)]}),
], ids=lambda value: value[:30] if isinstance(value, str) else None)
def test_parse_query_decodes_and_keeps_repeated_keys_in_order(query_string, expected):
    assert parse_query(query_string) == expected


@pytest.mark.parametrize("query_string, message", [
    ("name=%FF", "the query string is not valid UTF-8"),
    ("name=caf%C3", "the query string is not valid UTF-8"),
    ("name=%ED%A0%80", "the query string is not valid UTF-8"),
    ("%C0%AF=1", "the query string is not valid UTF-8"),
    ("&".join(f"f{number}=1" for number in range(101)), "the query string may have at most 100 fields"),
    ("q=" + "a" * (8 * 1024 - 1), "the query string may be at most 8192 bytes"),
    ("q=%00", "the query string must not contain the NUL character (%00)"),
    ("q=%00zzzz", "the query string must not contain the NUL character (%00)"),
    ("q=tea&sort=name%00", "the query string must not contain the NUL character (%00)"),
    ("na%00me=1", "the query string must not contain the NUL character (%00)"),
], ids=lambda value: value[:30] if isinstance(value, str) else None)
def test_parse_query_refuses_with_bad_request(query_string, message):
    with pytest.raises(BadRequest) as refused:
        parse_query(query_string)
    assert refused.value.detail == message


@pytest.mark.parametrize("query_string, expected", [
    ("", None),
    ("limit=5", "5"),
    ("limit=", ""),
    ("limit=5&sort=name", "5"),
])
def test_query_value_returns_the_single_value_or_none(query_string, expected):
    assert Request(make_environ(query=query_string)).query_value("limit") == expected


def test_query_value_refuses_a_repeated_parameter():
    request = Request(make_environ(query="limit=5&limit=100"))
    with pytest.raises(BadRequest) as refused:
        request.query_value("limit")
    assert refused.value.detail == "query parameter 'limit' is given more than once"


@pytest.mark.parametrize("cookie_header, expected", [
    (None, {}),
    ("", {}),
    ("session=abc", {"session": "abc"}),
    ("session=abc; theme=dark", {"session": "abc", "theme": "dark"}),
    ("session=abc;theme=dark", {"session": "abc", "theme": "dark"}),
    ('session="quoted value"', {"session": "quoted value"}),
    ("token=a=b==", {"token": "a=b=="}),
    ("session=first; session=second", {"session": "first"}),
    ("empty=; session=abc", {"empty": "", "session": "abc"}),
    ("novalue; =nameless; session=abc", {"session": "abc"}),
])
def test_cookies_are_parsed_into_a_dict(cookie_header, expected):
    headers = {} if cookie_header is None else {"Cookie": cookie_header}
    assert Request(make_environ(headers=headers)).cookies == expected


def test_header_reads_content_headers_and_http_headers():
    request = Request(make_environ("POST", body=b"{}", headers={
        "Content-Type": "application/json", "If-None-Match": ITEM_ETAG, "X-Request-ID": "abc-123",
    }))
    assert request.header("Content-Type") == "application/json"
    assert request.header("content-length") == "2"
    assert request.header("If-None-Match") == ITEM_ETAG
    assert request.header("x-request-id") == "abc-123"
    assert request.header("Authorization") is None
    assert request.header("Authorization", "none") == "none"


@pytest.mark.parametrize("path_info, expected_path", [
    ("/items/caf\xc3\xa9", "/items/café"),  # UTF-8 bytes, as PEP 3333's latin-1 text
    ("/items/caf\xe9", "/items/caf\xe9"),  # a latin-1 byte that is not UTF-8: kept as is
    ("", "/"),
])
def test_request_path_decodes_utf8_and_survives_other_bytes(path_info, expected_path):
    assert Request(make_environ(path=path_info)).path == expected_path


# -- etag_matches ------------------------------------------------------------------------------

@pytest.mark.parametrize("if_none_match, matches", [
    (ITEM_ETAG, True),
    (f"W/{ITEM_ETAG}", True),
    (f'"other", {ITEM_ETAG}', True),
    (f'W/"other",W/{ITEM_ETAG}', True),
    ("*", True),
    (" * ", True),
    ('"item-7-v2"', False),
    ('"other", W/"item-7-v2"', False),
    ("item-7-v1", False),
])
def test_etag_matches_by_weak_comparison(if_none_match, matches):
    assert etag_matches(if_none_match, ITEM_ETAG) is matches


# -- Application without middleware ------------------------------------------------------------

def test_a_dict_becomes_200_json_with_content_length(bare_app):
    response = call(bare_app, "GET", "/items", query="q=tea")
    assert response.status == 200
    assert response.header("Content-Type") == "application/json"
    assert response.header("Content-Length") == str(len(response.body))
    assert response.json() == {"data": [{"id": 7}], "q": "tea"}


def test_a_response_from_the_handler_passes_through(bare_app):
    response = call(bare_app, "GET", "/teapot")
    assert (response.status, response.body) == (418, b"short and stout")
    assert response.header("Content-Type") == "text/plain"
    assert response.header("Content-Length") == "15"


def test_post_reads_the_json_body(bare_app):
    response = call(bare_app, "POST", "/items", body=b'{"name": "Tea"}', headers={"Content-Type": "application/json"})
    assert response.status == 201
    assert response.json() == {"name": "Tea"}


def test_head_sends_the_get_headers_and_no_body(bare_app):
    get = call(bare_app, "GET", "/items/7")
    head = call(bare_app, "HEAD", "/items/7")
    assert head.status == 200
    assert head.body == b""
    assert head.headers == get.headers
    assert head.header("Content-Length") == str(len(get.body)) != "0"


def test_options_answers_204_with_allow(bare_app):
    response = call(bare_app, "OPTIONS", "/items")
    assert response.status == 204
    assert response.header("Allow") == "GET, HEAD, OPTIONS, POST"
    assert response.header("Content-Length") is None
    assert response.body == b""


def test_options_for_an_unknown_path_is_not_found(bare_app):
    with pytest.raises(NotFound, match="no resource at /nowhere"):
        call(bare_app, "OPTIONS", "/nowhere")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("if_none_match", [ITEM_ETAG, f"W/{ITEM_ETAG}", f'"other", {ITEM_ETAG}', "*"])
def test_a_matching_if_none_match_is_304_without_body(bare_app, method, if_none_match):
    response = call(bare_app, method, "/items/7", headers={"If-None-Match": if_none_match})
    assert response.status == 304
    assert response.body == b""
    assert response.headers == [("ETag", ITEM_ETAG), ("Cache-Control", "no-cache")]


@pytest.mark.parametrize("if_none_match", ['"item-7-v2"', 'W/"other", "item-8-v1"', ""])
def test_a_different_if_none_match_is_200_with_body(bare_app, if_none_match):
    response = call(bare_app, "GET", "/items/7", headers={"If-None-Match": if_none_match})
    assert response.status == 200
    assert response.header("ETag") == ITEM_ETAG
    assert response.json() == {"id": 7}


# -- a body in another charset -------------------------------------------------------------

@pytest.mark.parametrize("content_type", [
    'application/json; charset="utf-8"', "application/json; CHARSET=Utf-8", "application/json; version=2",
])
def test_json_accepts_utf8_spelled_any_way_and_other_parameters(content_type):
    assert json_request('{"name": "Thé"}'.encode(), content_type).json() == {"name": "Thé"}


@pytest.mark.parametrize("content_type, charset", [
    ("application/json; charset=utf-16", "utf-16"),
    ('application/json; charset="latin-1"', "latin-1"),
    ("application/json;charset=UTF-32", "UTF-32"),
    ("application/json; q=1; charset=ascii", "ascii"),
])
def test_json_in_another_charset_is_a_415_not_a_misreading(content_type, charset):
    # RFC 8259 §8.1: JSON between systems is UTF-8; decoding UTF-16 bytes as UTF-8 would
    # hand the handler something the client never sent.
    with pytest.raises(UnsupportedMediaType) as refused:
        json_request('{"name": "Tea"}'.encode("utf-16"), content_type).json()
    assert refused.value.detail == f"the body must be UTF-8, not charset={charset}"
    assert ("Accept", "application/json") in refused.value.headers


def test_every_415_says_which_media_type_it_accepts():
    with pytest.raises(UnsupportedMediaType) as refused:
        json_request(b"name=Tea", "application/x-www-form-urlencoded").json()
    assert refused.value.headers == [("Accept", "application/json")]
