"""Tests for the CORS layer of middleware.py: which origins may read our answers, preflights,
and what a shared cache must be told.

    request_id -> access_log -> security_headers -> cors -> problems -> authenticate -> the handler

Most tests call the tiny application of test_web.py behind the real middleware list with
CORS_ORIGINS set, in process. The ones that need the shop (authentication, validation, the
route table) use the `client` fixture, on both engines, in process and over a socket. A real
browser obeying these headers is tested in test_cors_browser.py.
"""

import pytest
from conftest import TEST_ITERATIONS, TEST_SECRET_KEY, assert_problem
from test_web import ITEM_ETAG, build_router, call

import config
import middleware
from web import Application

ALLOWED_ORIGIN = "https://shop.example"
OTHER_ALLOWED_ORIGIN = "http://localhost:5173"
CORS_ORIGINS = f"{ALLOWED_ORIGIN},{OTHER_ALLOWED_ORIGIN}"
EXPOSED = ("Location, ETag, Link, X-Request-ID, Retry-After, RateLimit, RateLimit-Policy, Idempotent-Replayed,"
           " traceresponse")
ALLOWED_HEADERS = ("Authorization, Content-Type, Idempotency-Key, If-Match, If-None-Match, X-CSRF-Token,"
                   " X-API-Key, X-Request-ID, Last-Event-ID, traceparent, tracestate")
# Origins that must get no CORS headers: each differs from an allowed one in one way.
NOT_ALLOWED_ORIGINS = [
    "https://evil.example",
    "null",                            # sandboxed frames and local files: any page can send it
    "http://shop.example",             # another scheme
    "https://shop.example:8443",       # another port
    "https://shop.example.evil.net",   # a prefix match would let this in
    "https://evil-shop.example",       # a suffix match would let this in
    "https://SHOP.example",            # browsers send lowercase: this is not what one sent
    "https://shop.example/",
    "https://shop.example, https://evil.example",
    "",
]


@pytest.fixture
def tiny(logger):
    """The tiny application behind the real middleware list, with two allowed origins."""
    router = build_router()
    origins = (ALLOWED_ORIGIN, OTHER_ALLOWED_ORIGIN)
    return Application(router, middleware.build_middleware(logger, router, cors_origins=origins))


@pytest.fixture
def settings(database_url):
    """The shop's settings (for `client`) with CORS_ORIGINS set."""
    return config.load_settings({
        "APP_ENV": "test", "DATABASE_URL": database_url, "SECRET_KEY": TEST_SECRET_KEY,
        "PBKDF2_ITERATIONS": str(TEST_ITERATIONS), "CORS_ORIGINS": CORS_ORIGINS,
    })


def cors_headers(response):
    """The response's Access-Control-* headers, as {lowercased name: value}."""
    return {name.lower(): value for name, value in response.headers if name.lower().startswith("access-control-")}


def preflight(method="POST", **headers):
    """The headers of a browser's preflight from ALLOWED_ORIGIN for `method`."""
    return {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": method, **headers}


# -- actual requests ---------------------------------------------------------------------------

@pytest.mark.parametrize("origin", [ALLOWED_ORIGIN, OTHER_ALLOWED_ORIGIN])
def test_an_allowed_origin_may_read_the_answer_with_credentials(tiny, origin):
    response = call(tiny, "GET", "/items", headers={"Origin": origin})
    assert response.status == 200
    assert cors_headers(response) == {
        "access-control-allow-origin": origin,     # the origin itself: never * with credentials
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": EXPOSED,
    }
    assert response.header("Vary") == "Origin"


@pytest.mark.parametrize("origin", NOT_ALLOWED_ORIGINS)
def test_any_other_origin_gets_no_cors_headers_but_vary(tiny, origin):
    response = call(tiny, "GET", "/items", headers={"Origin": origin})
    assert response.status == 200  # served: it is the browser that keeps it from the script
    assert cors_headers(response) == {}
    assert response.header("Vary") == "Origin"


def test_a_request_without_origin_still_says_vary_origin(tiny):
    # A shared cache could otherwise keep this answer (no CORS headers) and hand it to a page
    # of an allowed origin, whose browser would then refuse it.
    response = call(tiny, "GET", "/items")
    assert cors_headers(response) == {}
    assert response.header("Vary") == "Origin"


@pytest.mark.parametrize("path, status", [
    ("/nowhere", 404),
    ("/conflict", 409),
    ("/invalid", 405),
    ("/crash", 500),
    ("/database-down", 503),
])
def test_errors_carry_the_cors_headers_so_a_page_can_read_them(tiny, path, status):
    response = call(tiny, "GET", path, headers={"Origin": ALLOWED_ORIGIN})
    assert response.status == status
    assert response.header("Content-Type") == "application/problem+json"
    assert response.header("Access-Control-Allow-Origin") == ALLOWED_ORIGIN
    assert response.header("Access-Control-Allow-Credentials") == "true"
    assert response.header("Vary") == "Origin"


def test_a_304_carries_the_cors_headers_and_vary(tiny):
    response = call(tiny, "GET", "/items/7", headers={"Origin": ALLOWED_ORIGIN, "If-None-Match": ITEM_ETAG})
    assert response.status == 304
    assert response.header("Access-Control-Allow-Origin") == ALLOWED_ORIGIN
    assert response.header("Vary") == "Origin"   # RFC 9110 §15.4.5: as the 200 would have


# -- preflights --------------------------------------------------------------------------------

@pytest.mark.parametrize("path, methods", [
    ("/items", "GET, HEAD, OPTIONS, POST"),
    ("/items/7", "GET, HEAD, OPTIONS"),
])
def test_a_preflight_from_an_allowed_origin_gets_the_paths_real_methods(tiny, path, methods):
    response = call(tiny, "OPTIONS", path, headers=preflight(
        "POST", **{"Access-Control-Request-Headers": "content-type,x-request-id"}))
    assert response.status == 204
    assert response.body == b""
    assert cors_headers(response) == {
        "access-control-allow-origin": ALLOWED_ORIGIN,
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": methods,
        "access-control-allow-headers": ALLOWED_HEADERS,
        "access-control-max-age": "7200",
    }
    assert response.header("Allow") == methods
    assert response.header("Vary") == "Origin"
    assert response.header("X-Content-Type-Options") == "nosniff"   # the outer layers still run
    assert response.header("X-Request-ID")


@pytest.mark.parametrize("origin", NOT_ALLOWED_ORIGINS)
def test_a_preflight_from_another_origin_gets_a_plain_options_answer(tiny, origin):
    response = call(tiny, "OPTIONS", "/items", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert response.status == 204
    assert cors_headers(response) == {}
    assert response.header("Allow") == "GET, HEAD, OPTIONS, POST"
    assert response.header("Vary") == "Origin"


def test_a_preflight_for_an_unknown_path_is_the_404_problem(tiny):
    # Any answer but a 2xx fails a preflight, so the browser stops there either way; the 404
    # tells a developer with curl what is wrong. Like every error, it names the origin.
    response = call(tiny, "OPTIONS", "/nowhere", headers=preflight("GET"))
    assert response.status == 404
    assert response.json()["detail"] == "no resource at /nowhere"
    assert cors_headers(response) == {
        "access-control-allow-origin": ALLOWED_ORIGIN,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": EXPOSED,
    }


def test_an_options_request_that_is_not_a_preflight_gets_the_plain_answer_and_cors_headers(tiny):
    response = call(tiny, "OPTIONS", "/items", headers={"Origin": ALLOWED_ORIGIN})
    assert response.status == 204
    assert response.header("Allow") == "GET, HEAD, OPTIONS, POST"
    assert response.header("Access-Control-Allow-Methods") is None
    assert response.header("Access-Control-Allow-Origin") == ALLOWED_ORIGIN


# -- without CORS_ORIGINS ----------------------------------------------------------------------

def test_without_origins_there_is_no_cors_layer_and_no_cors_header(logger):
    layers = middleware.build_middleware(logger, build_router())
    assert not any(layer.__name__ == "apply_cors" for layer in layers)
    without_cors = Application(build_router(), layers)
    for method, headers in [("GET", {"Origin": ALLOWED_ORIGIN}), ("OPTIONS", preflight("POST"))]:
        response = call(without_cors, method, "/items", headers=headers)
        assert response.status in (200, 204)
        assert cors_headers(response) == {}
        assert response.header("Vary") is None  # nothing varies by origin


# -- the shop, on both engines, in process and over a socket ---------------------------------

def test_the_shops_preflight_is_answered_before_authentication(client):
    # Browsers send a preflight without credentials; even a broken Authorization header (which
    # authentication would refuse with a 401) does not reach that layer.
    response = client.request("OPTIONS", "/v1/users/me", headers=preflight(
        "PATCH", Authorization="Bearer not-a-token"))
    assert response.status == 204
    assert response.header("Access-Control-Allow-Methods") == "GET, HEAD, OPTIONS, PATCH"
    assert response.header("Access-Control-Allow-Headers") == ALLOWED_HEADERS
    assert response.header("Access-Control-Allow-Origin") == ALLOWED_ORIGIN


def test_the_shops_preflight_for_a_path_with_an_id(client):
    response = client.request("OPTIONS", "/v1/items/7", headers=preflight("DELETE"))
    assert response.status == 204
    assert response.header("Access-Control-Allow-Methods") == "DELETE, GET, HEAD, OPTIONS, PATCH"


def test_the_shops_answers_and_errors_carry_cors_headers(client, users):
    origin = {"Origin": ALLOWED_ORIGIN, "X-Request-ID": "cors-1"}
    user = users.create()
    answers = [
        client.get("/v1/users/me", headers=origin),                                     # 401
        client.get("/v1/items/999", headers=origin),                                    # 404
        client.post("/v1/auth/register", json={"email": "x"}, headers=origin),         # 422
        client.get("/v1/users/me", headers={**origin, **users.headers(user)}),          # 200
    ]
    assert [answer.status for answer in answers] == [401, 404, 422, 200]
    assert_problem(answers[0], 401)
    assert answers[0].header("WWW-Authenticate").startswith("Bearer")
    for answer in answers:
        assert answer.header("Access-Control-Allow-Origin") == ALLOWED_ORIGIN
        assert answer.header("Access-Control-Allow-Credentials") == "true"
        assert answer.header("Access-Control-Expose-Headers") == EXPOSED
        assert answer.header("Vary") == "Origin"
        assert answer.header("X-Request-ID") == "cors-1"


def test_the_shop_sends_no_cors_headers_to_another_origin(client):
    response = client.get("/v1/items", headers={"Origin": "https://evil.example"})
    assert response.status == 200
    assert cors_headers(response) == {}
    assert response.header("Vary") == "Origin"
