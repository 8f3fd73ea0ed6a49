"""The browser session's cookies: their names, their attributes, and reading them back.

A browser logs in with POST /v1/auth/session and receives two cookies (RFC 6265 §4.1):

    Set-Cookie: __Host-session=wykPhD_Snk...; Path=/; Max-Age=604800; SameSite=Lax; HttpOnly; Secure
    Set-Cookie: __Host-csrf_token=GwizjiiY...; Path=/; Max-Age=604800; SameSite=Lax; Secure

- `session` holds the session id. HttpOnly: page scripts cannot read it, so a script
  injected into a page (XSS) cannot steal it.
- `csrf_token` holds the session's CSRF token (signing.csrf_token_for). Our pages read it
  and send it back in the X-CSRF-Token header of every unsafe request; another site can
  make the browser send the cookies, but cannot read them (middleware.py checks).
- SameSite=Lax: the browser does not attach them to another site's POST at all (the
  SameSite attribute of RFC 6265bis), a first line of defence before the CSRF token.
- Secure, and the `__Host-` prefix, when the request came over TLS or SESSION_COOKIE_SECURE
  says so (a TLS-terminating proxy in front). Browsers accept a `__Host-` cookie only with
  Secure, Path=/ and no Domain (RFC 6265bis §4.1.3.2), so no subdomain can set or overwrite
  it. Over plain http (`python server.py` on localhost) the names are plain and there is no
  Secure, or the browser would never send the cookies back.

Logging out sends both again, empty, with Max-Age=0, which deletes them.

    >>> set_cookie("session", "abc", max_age_seconds=60, http_only=True, secure=False)
    'session=abc; Path=/; Max-Age=60; SameSite=Lax; HttpOnly'
"""

SESSION_COOKIE = "session"
CSRF_COOKIE = "csrf_token"
SECURE_PREFIX = "__Host-"


def set_session_cookies(request, session_id, csrf_token, max_age_seconds):
    """The two Set-Cookie headers that start a browser session, as (name, value) pairs."""
    secure = cookies_are_secure(request)
    return [
        ("Set-Cookie", set_cookie(_cookie_name(SESSION_COOKIE, secure), session_id,
                                  max_age_seconds=max_age_seconds, http_only=True, secure=secure)),
        ("Set-Cookie", set_cookie(_cookie_name(CSRF_COOKIE, secure), csrf_token,
                                  max_age_seconds=max_age_seconds, http_only=False, secure=secure)),
    ]


def clear_session_cookies(request):
    """The two Set-Cookie headers that end a browser session: both cookies, empty, expired."""
    return set_session_cookies(request, "", "", 0)


def read_session_cookie(request):
    """The session id the browser sent, or None.

    Only the name this request's policy gives counts: when cookies are `__Host-` prefixed,
    a plain `session` cookie (which a subdomain could have planted) is ignored.
    """
    if request.header("Cookie") is None:  # most API requests carry none: nothing to parse
        return None
    return request.cookies.get(_cookie_name(SESSION_COOKIE, cookies_are_secure(request))) or None


def cookies_are_secure(request):
    """Should session cookies be Secure (and __Host- prefixed) for this request?

    SESSION_COOKIE_SECURE decides when set (1 behind a TLS-terminating proxy, which hands
    us plain http); otherwise, whether this request came over https.
    """
    configured = request.services.settings.cookie_secure
    return configured if configured is not None else request.environ.get("wsgi.url_scheme") == "https"


def set_cookie(name, value, *, max_age_seconds, http_only, secure):
    """A Set-Cookie header value (RFC 6265 §4.1) with the shop's attributes."""
    attributes = [f"{name}={value}", "Path=/", f"Max-Age={max_age_seconds}", "SameSite=Lax"]
    if http_only:
        attributes.append("HttpOnly")
    if secure:
        attributes.append("Secure")
    return "; ".join(attributes)


def _cookie_name(base_name, secure):
    return SECURE_PREFIX + base_name if secure else base_name
