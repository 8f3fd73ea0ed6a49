"""Tests for router.py: patterns compiled once; 404, 405 with Allow, and 501 for unknown methods.

The routes are the tiny test application's of test_web.py (`build_router`).
"""

import pytest
from test_web import build_router, conflict, create_item, get_item, list_items, teapot

from router import IMPLEMENTED_METHODS, Router, compile_pattern
from web import MethodNotAllowed, MethodNotImplemented, NotFound

UNKNOWN_METHODS = [("BREW", "/items"), ("BREW", "/nowhere"), ("TRACE", "/items"), ("get", "/items")]


def test_compile_pattern_escapes_static_text_and_collects_converters():
    regex, converters = compile_pattern("/v1/{kind}/items.json/{id:int}")
    assert converters == {"kind": str, "id": int}
    assert regex.match("/v1/tea/items.json/7").groupdict() == {"kind": "tea", "id": "7"}
    assert regex.match("/v1/tea/itemsXjson/7") is None
    assert regex.match("/v1/tea/cup/items.json/7") is None


@pytest.mark.parametrize("method, path, handler, params", [
    ("GET", "/items", list_items, {}),
    ("POST", "/items", create_item, {}),
    ("GET", "/items/7", get_item, {"id": 7}),
    ("GET", "/items/0", get_item, {"id": 0}),
    ("GET", "/items/007", get_item, {"id": 7}),
    ("GET", "/items/" + "9" * 18, get_item, {"id": 10**18 - 1}),
    ("HEAD", "/items/7", get_item, {"id": 7}),
    ("HEAD", "/items", list_items, {}),
])
def test_router_matches_static_and_int_routes(method, path, handler, params):
    route, path_params = build_router().match(method, path)
    assert route.handler is handler
    assert path_params == params
    assert all(type(value) is int for value in path_params.values())


@pytest.mark.parametrize("path", [
    "/nowhere", "/items/", "/items/7/", "/Items", "/items/abc", "/items/-1", "/items/1.5",
    "/items/７", "/items/1e3", "/items/" + "9" * 19, "/items/" + "1" * 400, "/items/7/reviews",
])
def test_router_raises_not_found_for_unknown_paths(path):
    with pytest.raises(NotFound) as refused:
        build_router().match("GET", path)
    assert refused.value.detail == f"no resource at {path}"


def test_router_does_not_match_a_path_with_a_trailing_newline():
    with pytest.raises(NotFound):
        build_router().match("GET", "/items/7\n")


@pytest.mark.parametrize("method, path, allow", [
    ("DELETE", "/items/7", "GET, HEAD, OPTIONS"),
    ("POST", "/items/7", "GET, HEAD, OPTIONS"),
    ("PUT", "/items", "GET, HEAD, OPTIONS, POST"),
    ("HEAD", "/invalid", "OPTIONS, POST"),
    ("GET", "/invalid", "OPTIONS, POST"),
])
def test_router_raises_method_not_allowed_with_allow_header(method, path, allow):
    with pytest.raises(MethodNotAllowed) as refused:
        build_router().match(method, path)
    assert refused.value.status == 405
    assert refused.value.headers == [("Allow", allow)]
    assert refused.value.detail == f"allowed methods: {allow}"


def test_router_allowed_lists_methods_or_none():
    router = build_router()
    assert router.allowed("/items") == ["GET", "HEAD", "OPTIONS", "POST"]
    assert router.allowed("/items/7") == ["GET", "HEAD", "OPTIONS"]
    assert router.allowed("/invalid") == ["OPTIONS", "POST"]
    assert router.allowed("/nowhere") is None


def test_router_keeps_two_methods_of_one_dynamic_pattern_together():
    router = Router()
    router.add("GET", "/items/{id:int}", get_item, name="get_item")
    router.add("DELETE", "/items/{id:int}", conflict, name="delete_item")
    assert router.match("DELETE", "/items/3")[0].handler is conflict
    assert router.allowed("/items/3") == ["DELETE", "GET", "HEAD", "OPTIONS"]


# -- methods the toolkit does not implement ------------------------------------------------------

@pytest.mark.parametrize("method, path", UNKNOWN_METHODS)
def test_a_method_no_resource_implements_is_501_for_any_path(method, path):
    # RFC 9110 §15.6.2: 501 when no resource supports the method; 405 is for a known one.
    with pytest.raises(MethodNotImplemented) as refused:
        build_router().match(method, path)
    assert (refused.value.status, refused.value.detail) == (501, f"{method} is not a method this server implements")


@pytest.mark.parametrize("method", sorted(IMPLEMENTED_METHODS - {"GET", "HEAD", "OPTIONS", "POST"}))
def test_an_implemented_method_a_resource_does_not_allow_stays_405(method):
    with pytest.raises(MethodNotAllowed):
        build_router().match(method, "/items")


def test_a_route_for_a_method_outside_the_implemented_ones_is_refused():
    with pytest.raises(ValueError, match="BREW is not one of IMPLEMENTED_METHODS"):
        Router().add("BREW", "/coffee", teapot, name="brew")
