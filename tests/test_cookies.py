"""Tests for cookies.py: the session cookies' names and attributes, and reading them back.

Each test builds a web.Request from a WSGI environ, with only the setting cookies.py reads
(SESSION_COOKIE_SECURE: True, False or None for "auto"). The same policy seen over HTTP,
with real logins, is in tests/test_api_auth.py.
"""

import wsgiref.util
from types import SimpleNamespace

import pytest

import cookies
from web import Request

SESSION_ID = "wykPhD_SnkNo7s3Z4HvOK01BHMQGq8SmMrm4EF7pTLo"
CSRF_TOKEN = "GwizjiiYYEuyjz2WkwdZ0FqCsvDx7VMPMzxUDf6Zv8I"
WEEK_SECONDS = 7 * 24 * 3600


def request_with(*, scheme="http", cookie_secure=None, cookie_header=None):
    environ = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ["wsgi.url_scheme"] = scheme
    if cookie_header is not None:
        environ["HTTP_COOKIE"] = cookie_header
    request = Request(environ)
    request.services = SimpleNamespace(settings=SimpleNamespace(cookie_secure=cookie_secure))
    return request


# -- Secure or not --------------------------------------------------------------------------

@pytest.mark.parametrize("scheme, cookie_secure, secure", [
    ("http", None, False),
    ("https", None, True),
    ("http", True, True),  # behind a TLS-terminating proxy
    ("https", False, False),  # the setting wins, either way
], ids=["auto over http", "auto over https", "set over http", "unset over https"])
def test_cookies_are_secure_when_tls_or_the_setting_says_so(scheme, cookie_secure, secure):
    assert cookies.cookies_are_secure(request_with(scheme=scheme, cookie_secure=cookie_secure)) is secure


# -- Set-Cookie ------------------------------------------------------------------------------

def test_plain_session_cookies_over_http():
    headers = cookies.set_session_cookies(request_with(), SESSION_ID, CSRF_TOKEN, WEEK_SECONDS)
    assert headers == [
        ("Set-Cookie", f"session={SESSION_ID}; Path=/; Max-Age=604800; SameSite=Lax; HttpOnly"),
        ("Set-Cookie", f"csrf_token={CSRF_TOKEN}; Path=/; Max-Age=604800; SameSite=Lax"),
    ]


def test_host_prefixed_secure_session_cookies_over_https():
    headers = cookies.set_session_cookies(request_with(scheme="https"), SESSION_ID, CSRF_TOKEN, WEEK_SECONDS)
    assert headers == [
        ("Set-Cookie", f"__Host-session={SESSION_ID}; Path=/; Max-Age=604800; SameSite=Lax; HttpOnly; Secure"),
        ("Set-Cookie", f"__Host-csrf_token={CSRF_TOKEN}; Path=/; Max-Age=604800; SameSite=Lax; Secure"),
    ]


@pytest.mark.parametrize("scheme, prefix, secure", [("http", "", ""), ("https", "__Host-", "; Secure")])
def test_clearing_sends_both_cookies_empty_and_expired(scheme, prefix, secure):
    assert cookies.clear_session_cookies(request_with(scheme=scheme)) == [
        ("Set-Cookie", f"{prefix}session=; Path=/; Max-Age=0; SameSite=Lax; HttpOnly{secure}"),
        ("Set-Cookie", f"{prefix}csrf_token=; Path=/; Max-Age=0; SameSite=Lax{secure}"),
    ]


def test_every_host_prefixed_cookie_meets_the_prefix_rules():
    # A browser drops a __Host- cookie unless it is Secure, has Path=/ and no Domain.
    for _, value in cookies.set_session_cookies(request_with(scheme="https"), SESSION_ID, CSRF_TOKEN, 60):
        attributes = value.split("; ")
        assert attributes[0].startswith("__Host-")
        assert "Secure" in attributes and "Path=/" in attributes
        assert not any(attribute.lower().startswith("domain=") for attribute in attributes)


# -- reading the session cookie --------------------------------------------------------------

@pytest.mark.parametrize("scheme, cookie_header, expected", [
    ("http", f"session={SESSION_ID}", SESSION_ID),
    ("http", f"theme=dark; session={SESSION_ID}; csrf_token={CSRF_TOKEN}", SESSION_ID),
    ("https", f"__Host-session={SESSION_ID}", SESSION_ID),
    # Under the __Host- policy a plain "session" cookie could come from a subdomain: ignored.
    ("https", f"session={SESSION_ID}", None),
    ("http", f"__Host-session={SESSION_ID}", None),
    ("http", None, None),
    ("http", "", None),
    ("http", "session=", None),
    ("http", "csrf_token=x", None),
], ids=["plain", "among others", "prefixed over https", "plain over https", "prefixed over http",
        "no Cookie header", "empty Cookie header", "empty value", "only the CSRF cookie"])
def test_read_session_cookie(scheme, cookie_header, expected):
    assert cookies.read_session_cookie(request_with(scheme=scheme, cookie_header=cookie_header)) == expected
