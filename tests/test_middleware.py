"""Tests for middleware.py: what every request passes through, seen from the client.

    request_id -> access_log -> security_headers -> problems -> authenticate -> the handler

The tiny application of test_web.py (its `build_router`, called with its `call`) behind
`middleware.build_middleware(logger, router)` shows what a client really receives: problem
documents (RFC 9457), request ids, security headers, Cache-Control, and one access-log
line per request. Authentication, which needs accounts, is tested in test_api_auth.py;
the CORS layer, there only with CORS_ORIGINS, in test_middleware_cors.py.
"""

import http.client
import json
import re
import socket
import warnings
import wsgiref.validate
from urllib.parse import urlsplit

import pytest
from conftest import TEST_ITERATIONS, TEST_SECRET_KEY, LiveClient, WSGIClient, running_server, start_session
from test_web import ITEM_ETAG, Result, build_router, call, make_environ

import config
import middleware
import server
from web import Application, Forbidden

GENERATED_REQUEST_ID = re.compile(r"[0-9a-f]{32}")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@pytest.fixture
def app(logger):
    """The Application behind the real middleware list, logging into a StringIO."""
    router = build_router()
    return Application(router, middleware.build_middleware(logger, router))


def read_log(logger, log_stream):
    """Every line the logger wrote so far, parsed."""
    logger.flush()
    return [json.loads(line) for line in log_stream.getvalue().splitlines()]


# -- Application behind the middleware: problems ------------------------------------------------

def test_an_http_error_becomes_a_problem_document(app):
    response = call(app, "GET", "/conflict", headers={"X-Request-ID": "abc-123"})
    assert response.status == 409
    assert response.header("Content-Type") == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "item 7 was changed by someone else",
        "instance": "/conflict",
        "request_id": "abc-123",
    }


@pytest.mark.parametrize("method, path, query, status, detail", [
    ("GET", "/nowhere", "", 404, "no resource at /nowhere"),
    ("OPTIONS", "/nowhere", "", 404, "no resource at /nowhere"),
    ("GET", "/items/" + "9" * 19, "", 404, "no resource at /items/" + "9" * 19),
    ("GET", "/items/caf\xe9", "", 404, "no resource at /items/caf\xe9"),
    ("DELETE", "/items/7", "", 405, "allowed methods: GET, HEAD, OPTIONS"),
    ("GET", "/items", "q=tea&q=mug", 400, "query parameter 'q' is given more than once"),
    ("GET", "/items", "q=%FF", 400, "the query string is not valid UTF-8"),
])
def test_routing_and_query_errors_are_problems(app, method, path, query, status, detail):
    response = call(app, method, path, query=query)
    assert response.status == status
    assert response.header("Content-Type") == "application/problem+json"
    assert response.json()["detail"] == detail
    assert response.json()["instance"] == path


def test_method_not_allowed_problem_carries_allow(app):
    response = call(app, "DELETE", "/items/7")
    assert response.status == 405
    assert response.header("Allow") == "GET, HEAD, OPTIONS"


@pytest.mark.parametrize("content_type, body, status, detail", [
    ("text/plain", b'{"name": "Tea"}', 415, "the body must be sent as Content-Type: application/json"),
    ("application/json", b'{"a": NaN}', 400, "malformed JSON: NaN and Infinity are not JSON"),
    ("application/json", b'{"a": 1, "a": 2}', 400, "malformed JSON: duplicate key in an object"),
])
def test_body_errors_are_problems(app, content_type, body, status, detail):
    response = call(app, "POST", "/items", body=body, headers={"Content-Type": content_type})
    assert response.status == status
    assert response.json()["detail"] == detail


def test_a_validation_problem_lists_its_errors(app):
    problem = call(app, "POST", "/invalid").json()
    assert problem["status"] == 422
    assert problem["title"] == "Unprocessable Content"  # RFC 9110 §15.5.21 (Python < 3.13 says "Entity")
    assert problem["errors"] == [{"field": "price_cents", "message": "must be at least 0"}]


def test_an_unexpected_exception_is_a_500_that_leaks_nothing(app, logger, log_stream):
    response = call(app, "GET", "/crash")
    assert response.status == 500
    assert response.header("Content-Type") == "application/problem+json"
    assert b"secret-value" not in response.body
    assert b"Traceback" not in response.body
    problem = response.json()
    assert problem["detail"] == "an unexpected error occurred"
    assert problem["request_id"] == response.header("X-Request-ID")
    assert GENERATED_REQUEST_ID.fullmatch(problem["request_id"])
    errors = [line for line in read_log(logger, log_stream) if line["level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["event"] == "unhandled exception"
    assert errors[0]["request_id"] == problem["request_id"]
    assert "Traceback (most recent call last)" in errors[0]["traceback"]
    assert "RuntimeError: secret-value" in errors[0]["traceback"]


def test_an_unavailable_database_is_a_503_with_retry_after(app, logger, log_stream):
    response = call(app, "GET", "/database-down")
    assert response.status == 503
    assert response.header("Retry-After") == "5"
    assert response.json()["detail"] == "the database is not answering; try again shortly"
    error = next(line for line in read_log(logger, log_stream) if line["level"] == "error")
    assert (error["event"], error["request_id"]) == ("database unavailable", response.header("X-Request-ID"))


# -- request id, security headers, caching ---------------------------------------------------------

def test_a_sane_request_id_is_echoed(app):
    response = call(app, "GET", "/conflict", headers={"X-Request-ID": "abc-123"})
    assert response.header("X-Request-ID") == "abc-123"
    assert response.json()["request_id"] == "abc-123"


@pytest.mark.parametrize("sent", [
    "",
    "abc\ndef",
    "abc\r\nX-Injected: yes",
    "x" * 200,
    'abc"def',
    "abc def",
    "abc;def",
    "été",
    "abc-123\n",
])
def test_an_insane_request_id_is_replaced(app, sent):
    # Not through the validator: it would itself refuse a forged header, hiding what the app sends.
    response = call(app, "GET", "/conflict", validate=False, headers={"X-Request-ID": sent})
    assert GENERATED_REQUEST_ID.fullmatch(response.header("X-Request-ID"))
    assert response.json()["request_id"] == response.header("X-Request-ID")


def test_each_request_gets_its_own_generated_id(app):
    first, second = call(app, "GET", "/items"), call(app, "GET", "/items")
    assert first.header("X-Request-ID") != second.header("X-Request-ID")


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/items/7", 200),
    ("HEAD", "/items/7", 200),
    ("OPTIONS", "/items", 204),
    ("GET", "/nowhere", 404),
    ("GET", "/conflict", 409),
    ("GET", "/crash", 500),
    ("GET", "/database-down", 503),
])
def test_security_headers_are_on_every_response(app, method, path, status):
    response = call(app, method, path)
    assert response.status == status
    for name, value in SECURITY_HEADERS.items():
        assert response.header(name) == value


@pytest.mark.parametrize("path", ["/items", "/nowhere", "/crash"])
def test_hsts_is_sent_over_https_only_and_on_errors_too(app, path):
    assert call(app, "GET", path).header("Strict-Transport-Security") is None  # RFC 6797 §7.2
    response = call_over_https(app, "GET", path, headers={})
    assert dict(response.headers)["Strict-Transport-Security"] == "max-age=63072000"
    assert [name for name, _ in response.headers].count("Strict-Transport-Security") == 1


@pytest.mark.parametrize("path, cache_control", [
    ("/items", "no-store"),
    ("/conflict", "no-store"),
    ("/crash", "no-store"),
    ("/cached", "public, max-age=60"),
    ("/items/7", "no-cache"),
])
def test_cache_control_defaults_to_no_store_unless_the_handler_sets_one(app, path, cache_control):
    assert call(app, "GET", path).header("Cache-Control") == cache_control


def test_a_304_behind_the_middleware_keeps_etag_and_the_handlers_cache_control(app):
    response = call(app, "GET", "/items/7", headers={"If-None-Match": ITEM_ETAG})
    assert response.status == 304
    assert response.body == b""
    assert response.header("ETag") == ITEM_ETAG
    assert response.header("Cache-Control") == "no-cache"


# -- the access log ------------------------------------------------------------------------------

def test_the_access_log_is_one_json_line_without_query_or_raw_path(app, logger, log_stream):
    response = call(app, "GET", "/items/7", query="token=supersecret", headers={"X-Request-ID": "abc-123"})
    assert response.status == 200
    [line] = read_log(logger, log_stream)
    assert "supersecret" not in log_stream.getvalue()
    assert line["level"] == "info"
    assert line["event"] == "request"
    assert line["request_id"] == "abc-123"
    assert line["method"] == "GET"
    assert line["route"] == "/items/{id:int}"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], (int, float)) and line["duration_ms"] >= 0
    assert line["client"] == "127.0.0.1"
    assert "/items/7" not in json.dumps(line)


@pytest.mark.parametrize("path, route, status", [
    ("/crash", "/crash", 500),
    ("/conflict", "/conflict", 409),
    ("/nowhere", None, 404),
])
def test_the_access_log_records_the_final_status(app, logger, log_stream, path, route, status):
    response = call(app, "GET", path, query="password=hunter2")
    request_line = next(line for line in read_log(logger, log_stream) if line["event"] == "request")
    assert (request_line["route"], request_line["status"]) == (route, status)
    assert request_line["request_id"] == response.header("X-Request-ID")
    assert "hunter2" not in log_stream.getvalue()


# -- methods the toolkit does not implement, and the server's problems in the app's format ------

UNKNOWN_METHODS = [("BREW", "/items"), ("BREW", "/nowhere"), ("TRACE", "/items"), ("get", "/items")]
PROBLEM_MEMBERS = ["type", "title", "status", "detail", "instance", "request_id"]


def raw_exchange(base_url, request):
    """Send raw request bytes on a new connection; (status, headers, body) of the answer."""
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.headers, response.read()


@pytest.mark.parametrize("method, path", UNKNOWN_METHODS)
def test_an_unknown_method_is_a_501_problem_in_process(app, method, path):
    with warnings.catch_warnings():
        # wsgiref's validator warns about methods it does not know: here that is the point.
        warnings.simplefilter("ignore", wsgiref.validate.WSGIWarning)
        response = call(app, method, path, headers={"X-Request-ID": "brew-1"})
    assert response.status == 501
    assert response.header("Content-Type") == "application/problem+json"
    assert response.header("Allow") is None
    assert response.json() == {
        "type": "about:blank", "title": "Not Implemented", "status": 501,
        "detail": f"{method} is not a method this server implements", "instance": path,
        "request_id": "brew-1",
    }


def test_an_unknown_method_is_a_501_problem_over_a_live_socket(app):
    with running_server(app) as base_url:
        client = LiveClient(base_url)
        response = client.request("BREW", "/items", headers={"X-Request-ID": "brew-2"})
        assert response.status == 501
        assert response.json()["detail"] == "BREW is not a method this server implements"
        assert response.json()["request_id"] == response.header("X-Request-ID") == "brew-2"
        assert client.request("DELETE", "/items").status == 405   # known method, not allowed here


def test_the_servers_400_and_the_apps_404_are_problems_of_one_format(app):
    with running_server(app) as base_url:
        server_status, server_headers, server_body = raw_exchange(
            base_url, b"POST /items HTTP/1.1\r\nHost: shop.test\r\nContent-Length: abc\r\n\r\n")
        app_status, app_headers, app_body = raw_exchange(
            base_url, b"GET /nowhere HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    assert (server_status, app_status) == (400, 404)
    for headers, body in ((server_headers, server_body), (app_headers, app_body)):
        problem = json.loads(body)
        assert headers["Content-Type"] == "application/problem+json"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert problem["request_id"] == headers["X-Request-ID"]
        assert list(problem) == PROBLEM_MEMBERS
        assert body == json.dumps(problem, separators=(",", ":"), ensure_ascii=False).encode()
    assert json.loads(server_body)["instance"] == "/items"
    assert json.loads(server_body)["detail"] == "Content-Length must be a single decimal number"
    assert json.loads(app_body)["instance"] == "/nowhere"


# -- found by mutation testing (tools/mutate.py, docs/testing.md) ---------------------------
# Authentication is otherwise tested in test_api_auth.py; these look at the middleware's own
# decisions, with the shop's app where they need accounts.

@pytest.fixture
def shop(settings, database, logger):
    """The shop's own app, in process (this file's `app` is the tiny one of test_web.py)."""
    return server.create_app(settings, database=database, logger=logger)


def test_the_access_log_names_the_authenticated_user_and_no_one_else(shop, users, logger, log_stream):
    user = users.create()
    client = WSGIClient(shop)
    assert client.get("/v1/users/me", headers=users.headers(user)).status == 200
    assert client.get("/v1/items").status == 200
    requests = [line for line in read_log(logger, log_stream) if line["event"] == "request"]
    assert [line["user_id"] for line in requests] == [user["id"], None]


class FakeClock:
    """Stands in for the `time` module in middleware.py: perf_counter() reads these values."""

    def __init__(self, *readings):
        self.perf_counter = iter(readings).__next__


def test_the_access_log_times_the_request_in_milliseconds_to_the_microsecond(app, logger, log_stream, monkeypatch):
    monkeypatch.setattr(middleware, "time", FakeClock(1.0, 1.0123456))
    call(app, "GET", "/items")
    [line] = read_log(logger, log_stream)
    assert line["duration_ms"] == 12.346


def test_an_unavailable_database_is_logged_with_its_cause(app, logger, log_stream):
    call(app, "GET", "/database-down")
    [error] = [line for line in read_log(logger, log_stream) if line["level"] == "error"]
    assert error["error"] == "connection refused"


class Stub:
    """A stand-in with just the attributes given."""

    def __init__(self, **attributes):
        self.__dict__.update(attributes)


@pytest.mark.parametrize("access, csrf_problem, outcome", [
    ("public", None, "the session's user"),
    ("public", "a missing or wrong X-CSRF-Token header", None),   # ignored, like a stale cookie
    ("user", None, "the session's user"),
    ("user", "a missing or wrong X-CSRF-Token header", Forbidden),
])
def test_a_session_write_that_fails_the_csrf_check_runs_as_no_one(monkeypatch, access, csrf_problem, outcome):
    session_user = {"id": 7, "role": "user", "via": "session", "session_id": "s"}
    monkeypatch.setattr(middleware, "_identify", lambda request: dict(session_user))
    monkeypatch.setattr(middleware, "_csrf_problem", lambda request: csrf_problem)
    request = Stub(route=Stub(access=access), method="POST", user=None)
    if outcome is Forbidden:
        with pytest.raises(Forbidden) as refused:
            middleware.authenticate(request, lambda request: "handled")
        assert refused.value.detail == csrf_problem
        return
    assert middleware.authenticate(request, lambda request: "handled") == "handled"
    assert request.user == (session_user if outcome else None)


def test_a_bearer_token_may_follow_more_than_one_space(shop, users):
    # RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token
    user = users.create()
    response = WSGIClient(shop).get("/v1/users/me", headers={"Authorization": f"Bearer   {users.token(user)}"})
    assert (response.status, response.json()["id"]) == (200, user["id"])


def test_a_session_over_https_without_secure_cookies_knows_its_origin_is_https(settings, database, users, logger):
    # SESSION_COOKIE_SECURE=0 on a server that speaks TLS itself: the page is still https://.
    insecure_cookies = config.load_settings({
        "APP_ENV": "test", "DATABASE_URL": settings.database_url, "SECRET_KEY": TEST_SECRET_KEY,
        "PBKDF2_ITERATIONS": str(TEST_ITERATIONS), "SESSION_COOKIE_SECURE": "0",
    })
    shop = server.create_app(insecure_cookies, database=database, logger=logger)
    users.create("ada@example.com")
    cookie, csrf_token = start_session(WSGIClient(shop), "ada@example.com")
    response = call_over_https(shop, "DELETE", "/v1/auth/session",
                               headers=dict(cookie, Origin="https://127.0.0.1", **{"X-CSRF-Token": csrf_token}))
    assert response.status == 204, response.body


def call_over_https(app, method, path, *, headers):
    """Call the app once as a server that speaks TLS itself would (wsgi.url_scheme https)."""
    captured = {}

    def start_response(status, response_headers, exc_info=None):
        captured["status"], captured["headers"] = int(status.split()[0]), response_headers

    environ = dict(make_environ(method, path, headers=headers), **{"wsgi.url_scheme": "https"})
    chunks = wsgiref.validate.validator(app)(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        chunks.close()
    return Result(captured["status"], captured["headers"], body)
