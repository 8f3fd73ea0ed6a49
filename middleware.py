"""Cross-cutting concerns, in one ordered list: what every request passes through.

A middleware is a function `(request, call_next) -> Response`. It may look at the request,
call the next layer, and look at or change the response on the way back:

    client_address -> trace_context -> count_requests -> request_id -> access_log -> security_headers
                   -> cors -> problems -> guard_credentials -> authenticate -> rate_limit -> the handler

`build_middleware()` returns that list, outermost first; `web.Application` chains it once.
The order matters: the client's address is found first (behind TRUSTED_PROXIES, the
address the last trusted proxy saw; without them `client_address` is left out, and the
socket's peer is the client), the trace context and the request id must exist before
anything logs (every log line of the request carries the trace id: tracing.py),
`count_requests` times all that follows for /metrics and sees the status sent, the access
log must see the final status (so it sits outside the layer that turns errors into
problems), the security headers go on every response, error responses included, and
authentication sits inside `problems`, so its 401 and 403 are rendered like every other
error. CORS sits outside `problems` too, so that a page on an allowed origin can read a 401, 404, 429 or 503
as well as a 200, and it answers a preflight itself, before authentication: browsers send
preflights without credentials. With no CORS_ORIGINS the `cors` layer is left out.

Rate limits come right after authentication, so that they know the caller (a user or an
API key has a budget of its own), and before the handler does any work. The routes that
check a password are public, and authenticating a request without credentials reads
nothing, so a login refused with a 429 has cost neither a database read nor a hash. A
request with credentials pays for their check first (an HMAC for a token, an indexed read
for an API key or a session). A request whose token or API key is refused gets its 401
there, and `guard_credentials`, just outside, counts it against its address (the
bad_credentials policy): made-up API keys, each a database read, cannot be sent without
limit. With RATE_LIMITS=off both layers are left out.
"""

import re
import time
import traceback

import accounts
import auth
import cookies
import db
import metrics
import passwords
import ratelimit
import signing
import tracing
from challenge import CredentialsRefused, unauthorized
from web import (
    SECURITY_HEADERS,
    Forbidden,
    HTTPError,
    InternalServerError,
    Response,
    ServiceUnavailable,
    TooManyRequests,
    problem_response,
)

# A client-sent X-Request-ID is kept only if it is short and plain: it goes into logs,
# and a value with newlines or quotes could forge log lines.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # used with fullmatch: no trailing newline
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# CORS: what a page on an allowed origin may send, and which response headers its script may
# read beyond the always-readable ones (Content-Type, Cache-Control, ...: the Fetch standard's
# CORS-safelisted response-header names).
CORS_ALLOWED_HEADERS = ("Authorization, Content-Type, Idempotency-Key, If-Match, If-None-Match, X-CSRF-Token,"
                        " X-API-Key, X-Request-ID, Last-Event-ID,"  # Last-Event-ID: an EventSource resuming
                        " traceparent, tracestate")  # what a traced front end (OpenTelemetry web) sends
CORS_EXPOSED_HEADERS = ("Location, ETag, Link, X-Request-ID, Retry-After, RateLimit, RateLimit-Policy,"
                        " Idempotent-Replayed, traceresponse")
# How long a browser may reuse a preflight's answer before asking again. Two hours is the
# most Chromium honours (Firefox would keep it 24 h): a page then pays the extra round trip
# once per URL every two hours, and a route or header list changed by a deploy reaches
# browsers within two hours. Removing an origin from CORS_ORIGINS takes effect at once for
# reading answers: every actual response is checked anew.
CORS_MAX_AGE_SECONDS = 2 * 3600
VARY_ORIGIN = ("Vary", "Origin")
# HSTS (RFC 6797): a browser that saw this over HTTPS uses only https:// for this host for the
# next two years, so nobody on the way can turn its next visit into plain HTTP. Two years, as
# Mozilla and hstspreload.org advise. No includeSubDomains and no preload: those bind every
# subdomain of the shop's name to HTTPS, for years, which is the owner's choice to make, not
# this code's (its cookies need no such help: the __Host- prefix already keeps subdomains out).
STRICT_TRANSPORT_SECURITY = ("Strict-Transport-Security", "max-age=63072000")


def build_middleware(logger, router, *, cors_origins=(), rate_limiter=None, trusted_proxies=()):
    """The middleware list for the app of `router`, outermost first.

    `trusted_proxies` (ipaddress networks) adds the `client_address` layer. `cors_origins`
    (settings.cors_origins) adds the `cors` layer, which answers preflights with the
    methods `router` has for the path. Without origins there is no CORS layer at all, so a
    request pays nothing for it. `rate_limiter` (a ratelimit.RateLimiter) adds the
    `guard_credentials` and `rate_limit` layers.
    """
    layers = [client_address(trusted_proxies)] if trusted_proxies else []
    layers.append(trace_context)
    layers.append(count_requests(metrics.RECORDER))
    layers += [request_id, access_log(logger), security_headers]
    if cors_origins:
        layers.append(cors(cors_origins, router))
    layers.append(problems(logger))
    if rate_limiter is not None:
        layers.append(guard_credentials(rate_limiter))
    layers.append(authenticate)
    if rate_limiter is not None:
        layers.append(rate_limit(rate_limiter))
    return layers


def client_address(trusted_proxies):
    """Behind reverse proxies, the socket's peer is the proxy: the client is the address the
    last trusted proxy saw, from X-Forwarded-For (ratelimit.client_address tells how it is
    read, so that a client cannot pick its own address). The access log and the rate
    limits read `request.client`."""

    def find_client(request, call_next):
        environ = request.environ
        request.client = ratelimit.client_address(request.client, environ.get("HTTP_X_FORWARDED_FOR"),
                                                  trusted_proxies)
        return call_next(request)

    return find_client


def trace_context(request, call_next):
    """Continue the caller's trace (a valid `traceparent`) or start one, for the time of the
    request; answer with `traceresponse`, this request's span (tracing.py tells the rules).

        traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01     (the request)
        traceresponse: 00-4bf92f3577b34da6a3ce929d0e0e4736-5f3c9a0d1e2b4c67-01   (the answer)

    `traceresponse` is the Level 2 draft's response header; `traceparent`, a request header
    naming the caller's span, is not echoed (docs/choices.md tells why).
    """
    environ = request.environ
    context = tracing.continue_trace(environ.get("HTTP_TRACEPARENT"), environ.get("HTTP_TRACESTATE"))
    token = tracing.attach(context)
    try:
        response = call_next(request)
    finally:
        tracing.detach(token)  # the thread serves other requests next: none may inherit this trace
    response.headers.append(("traceresponse", context.traceparent))
    return response


def count_requests(recorder):
    """Count and time every request for GET /metrics (metrics.Recorder), by method, route
    pattern (never the raw path) and the status sent: outside `problems`, like the access log."""

    def count(request, call_next):
        started = recorder.request_started()
        status = 500  # what the server sends when an exception gets past every layer
        try:
            response = call_next(request)
            status = response.status
            return response
        finally:
            route = request.route
            recorder.request_finished(request.method, route.pattern if route is not None else None, status, started)

    return count


def request_id(request, call_next):
    """Accept a sane X-Request-ID from the client or make one; echo it on the response."""
    sent = request.header("X-Request-ID")
    # A made-up id needs to be unique, not secret: 128 random bits from `random`, without the
    # system call os.urandom costs (as tracing.py's ids).
    request.request_id = sent if sent and SANE_REQUEST_ID.fullmatch(sent) else tracing.new_trace_id()
    response = call_next(request)
    response.headers.append(("X-Request-ID", request.request_id))
    return response


def access_log(logger):
    """One JSON line per request: what happened, to whom, how long it took. Never secrets."""

    def log_request(request, call_next):
        started = time.perf_counter()
        response = call_next(request)
        user = request.user
        logger.request(
            request_id=request.request_id,
            method=request.method,
            route=request.route.pattern if request.route else None,
            status=response.status,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            user_id=user["id"] if user else None,
            client=request.client,
        )
        return response

    return log_request


def security_headers(request, call_next):
    """SECURITY_HEADERS on every response, HSTS on those sent over TLS, and no-store."""
    response = call_next(request)
    # RFC 6797 §7.2: over plain HTTP the header must not be sent (a browser ignores it there,
    # §8.1). Behind a TLS proxy the app hears plain HTTP: the proxy sends it (README, HTTPS).
    if request.environ.get("wsgi.url_scheme") == "https":
        response.headers.append(STRICT_TRANSPORT_SECURITY)
    if response.header("Content-Security-Policy") is None:
        response.headers.extend(SECURITY_HEADERS)
    else:
        # A page of ours (/docs: api_docs.py) brings a policy of its own, as strict as it can
        # be while its script and style load from this origin. Two policies would both apply,
        # and the API's `default-src 'none'` would block the page's own script.
        response.headers.extend(header for header in SECURITY_HEADERS if header[0] != "Content-Security-Policy")
    if response.header("Cache-Control") is None:
        # Responses may carry private data: no cache keeps them unless a handler says so.
        response.headers.append(("Cache-Control", "no-store"))
    return response


def cors(origins, router):
    """Let scripts on `origins`, and only those, call the API and read its answers, cookies
    and Authorization included: the CORS protocol of the Fetch standard.

    A browser sends `Origin: https://shop.example` with a script's cross-origin request, and
    hands the answer to the script only when it names that origin:

        Access-Control-Allow-Origin: https://shop.example    (the origin itself: never `*`,
        Access-Control-Allow-Credentials: true                which browsers refuse with credentials)
        Access-Control-Expose-Headers: Location, ETag, ...

    Before a request a plain HTML form could not send (a JSON body, an Authorization
    header, a PATCH), the browser asks first, with a preflight:

        OPTIONS /v1/orders                        204 No Content
        Origin: https://shop.example         ->   Access-Control-Allow-Methods: GET, HEAD, OPTIONS, POST
        Access-Control-Request-Method: POST       Access-Control-Allow-Headers: Authorization, ...
                                                  Access-Control-Max-Age: 7200

    A preflight is answered here, before authentication and the handler. One for a path
    that does not exist goes on inwards and gets its 404 problem, which fails the preflight
    as any answer but a 2xx does. An origin not on the list, `Origin: null` included, gets
    no CORS headers, preflight or not: its browser then keeps the answer from the script.

    Every response says `Vary: Origin`, with or without an Origin in the request (the Fetch
    standard, "CORS protocol and HTTP caches"): answers differ by origin, so a shared cache
    must not hand the answer made for one origin, or for none, to another.
    """
    allowed_origins = frozenset(origins)

    def apply_cors(request, call_next):
        origin = request.header("Origin")
        if origin not in allowed_origins:
            response = call_next(request)
            response.headers.append(VARY_ORIGIN)
            return response
        if request.method == "OPTIONS" and request.header("Access-Control-Request-Method") is not None:
            allowed_methods = router.allowed(request.path)
            if allowed_methods is not None:
                return _preflight_answer(origin, allowed_methods)
        response = call_next(request)
        response.headers.extend(_allow_origin(origin))
        response.headers.append(("Access-Control-Expose-Headers", CORS_EXPOSED_HEADERS))
        return response

    return apply_cors


def problems(logger):
    """Turn every exception into a problem response; an unexpected one becomes a logged 500."""

    def render_problems(request, call_next):
        try:
            return call_next(request)
        except HTTPError as error:
            return problem_response(error, request)
        except db.DatabaseUnavailable as error:
            logger.error("database unavailable", request_id=request.request_id, error=str(error))
            return problem_response(ServiceUnavailable("the database is not answering; try again shortly"), request)
        except passwords.HashingBusy:
            # Too many passwords are being hashed at once (passwords.HashingGate); the runs
            # ahead of this one are over within the Retry-After.
            logger.warning("password hashing busy", request_id=request.request_id)
            retry_after = str(passwords.HASH_RETRY_AFTER_SECONDS)
            busy = ServiceUnavailable("too many passwords are being checked right now; try again shortly",
                                      headers=[("Retry-After", retry_after)])
            return problem_response(busy, request)
        except Exception:
            # The client learns only that it failed and the request id to quote; the trace
            # goes to the log, where an operator finds it by that id.
            logger.error("unhandled exception", request_id=request.request_id, traceback=traceback.format_exc())
            return problem_response(InternalServerError("an unexpected error occurred"), request)

    return render_problems


def authenticate(request, call_next):
    """Find who is calling, then enforce the route's `access` ("public", "user", "admin").

    Credentials, in this order: `Authorization: Bearer <JWT>`, `X-API-Key: <key>`, or the
    session cookie. Bad bearer or API-key credentials are a 401 even on public routes (the
    client meant to be someone); a stale session cookie is simply ignored, since browsers
    send cookies unasked. A session-authenticated unsafe request must also pass the CSRF
    check; on a public route (login, register) a session that fails it is ignored like a
    stale one, so a browser still logged in can log in again, and nothing runs as its user.
    API keys are read from the header only: a query string ends up in logs.

    Whatever the credential, the role is the one the users row has now (for a token, as this
    process read it less than accounts.USER_STATE_TTL_SECONDS ago), never the token's claim.
    """
    route = request.route
    if route is not None and route.access == "metrics":
        return call_next(request)  # the bearer token of /metrics is METRICS_TOKEN, no user's: api_ops checks it
    request.user = _identify(request)
    needs_user = route is not None and route.access != "public"
    csrf_problem = None
    if request.user is not None and request.user["via"] == "session" and request.method not in SAFE_METHODS:
        csrf_problem = _csrf_problem(request)
        if csrf_problem is not None and not needs_user:
            request.user = None
    if needs_user:
        if request.user is None:
            raise unauthorized("this endpoint needs credentials")
        if route.access == "admin" and request.user["role"] != "admin":
            raise Forbidden("this endpoint is for admins")
        if csrf_problem is not None:
            raise Forbidden(csrf_problem)
    return call_next(request)


def guard_credentials(limiter):
    """Count refused tokens and API keys against their address; refuse an address that has
    spent its budget for them before its credentials are checked (ratelimit.py tells why).

        X-API-Key: made-up        401 ... 401 (30 of them in a minute, as shipped)
                                  429 Retry-After: 2, and no database read until then

    Only requests that carry an Authorization or X-API-Key header are concerned: a stale
    session cookie is ignored, not refused, and its request is counted as anonymous.
    """

    def guard(request, call_next):
        environ = request.environ
        if "HTTP_AUTHORIZATION" not in environ and "HTTP_X_API_KEY" not in environ:
            return call_next(request)
        caller = ratelimit.address_caller(request.client)
        standing = limiter.shut_out(caller)
        if standing is not None:
            raise _quota_exceeded(standing)
        try:
            return call_next(request)
        except CredentialsRefused:
            decision = limiter.credentials_failed(caller)
            if decision is not None and not decision.allowed:
                raise _quota_exceeded(decision) from None
            raise

    return guard


def rate_limit(limiter):
    """Count the request against its caller's budget for its route's class; 429 when spent.

    The class comes from the route table ("auth", "write", "default", or None for the
    probes, which are never limited); a path without a route counts as "write" for an
    unsafe method and "default" for the others. The "auth" class always counts per client
    address, the others per user or API key when the request is authenticated. Every answer
    of a counted request carries RateLimit-Policy and RateLimit, its errors included:

        RateLimit-Policy: "default";q=300;w=60
        RateLimit: "default";r=299;t=1

    The login handler takes a try from the account's failed-login budget as well
    (RateLimiter.login_try); when that is spent it raises ratelimit.QuotaExceeded, which
    becomes a 429 here, like a spent budget of the route's class.
    """

    def limit(request, call_next):
        route = request.route
        if route is not None:
            rate_class = route.rate_limit
            if rate_class is None:
                return call_next(request)
        else:
            rate_class = "default" if request.method in SAFE_METHODS else "write"
        decision = limiter.take(rate_class, _caller(request, rate_class))
        if not decision.allowed:
            raise _quota_exceeded(decision)
        fields = ratelimit.headers(decision)
        try:
            response = call_next(request)
        except ratelimit.QuotaExceeded as exceeded:
            raise _quota_exceeded(exceeded.decision) from None
        except HTTPError as error:
            error.headers = [*error.headers, *fields]
            raise
        response.headers.extend(fields)
        return response

    return limit


def _quota_exceeded(decision):
    """The 429 for a refused decision: Retry-After, the draft's fields, and its problem type."""
    policy = decision.policy
    metrics.RECORDER.count("rate_limit_refusals_total", policy.name)  # every 429 of a budget passes here
    if policy.name == ratelimit.LOGIN_FAILURES:
        detail = (f"too many failed logins for this account (at most {policy.quota} in {policy.window_seconds} s);"
                  " Retry-After says when to try again")
    elif policy.name == ratelimit.BAD_CREDENTIALS:
        detail = (f"too many refused tokens or API keys from this address (at most {policy.quota} in"
                  f" {policy.window_seconds} s); Retry-After says when to try again")
    else:
        detail = (f"the {policy.name} quota of {policy.quota} requests in {policy.window_seconds} s is spent;"
                  " Retry-After says when to try again")
    return TooManyRequests(detail, headers=[("Retry-After", str(decision.reset_seconds)), *ratelimit.headers(decision)],
                           extra={"type": ratelimit.QUOTA_EXCEEDED_TYPE, "title": ratelimit.QUOTA_EXCEEDED_TITLE,
                                  "violated-policies": [policy.name]})


def _caller(request, rate_class):
    """Whose budget a request spends: its API key's or its user's, else its address's."""
    user = request.user
    if user is not None and rate_class != "auth":
        return f"key:{user['api_key_id']}" if user["via"] == "api_key" else f"user:{user['id']}"
    return ratelimit.address_caller(request.client)


def _allow_origin(origin):
    """The headers that let a script on `origin` read the answer, credentials included."""
    return [("Access-Control-Allow-Origin", origin), ("Access-Control-Allow-Credentials", "true"), VARY_ORIGIN]


def _preflight_answer(origin, allowed_methods):
    """204 to a preflight: this path's real methods, the request headers we read, and how long
    the browser may remember it. The browser checks its request against these lists."""
    methods = ", ".join(allowed_methods)
    return Response(b"", 204, [
        *_allow_origin(origin),
        ("Access-Control-Allow-Methods", methods),
        ("Access-Control-Allow-Headers", CORS_ALLOWED_HEADERS),
        ("Access-Control-Max-Age", str(CORS_MAX_AGE_SECONDS)),
        ("Allow", methods),  # what any OPTIONS answer says (RFC 9110 §9.3.7)
    ])


def _identify(request):
    services = request.services
    authorization = request.header("Authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        # Stripped before the emptiness check: "Bearer   " is no token at all, whether or not
        # a server in front already trimmed the trailing spaces (RFC 9110 §5.5).
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("use Authorization: Bearer <access token>", "invalid_request")
        try:
            user = accounts.token_user(services.database, services.user_states, services.settings.secret_keys, token)
        except auth.TokenError as error:
            raise unauthorized(f"the access token is not valid: {error}", "invalid_token") from None
        except accounts.InvalidCredentials as error:  # a deleted account, a passed token epoch
            raise unauthorized(str(error), "invalid_token") from None
        return dict(user, via="token")
    api_key = request.header("X-API-Key")
    if api_key is not None:
        user = accounts.api_key_user(services.database, api_key)
        if user is None:
            raise unauthorized("the API key is not valid", "invalid_token")
        return dict(user, via="api_key")
    session_id = cookies.read_session_cookie(request)
    if session_id is not None:
        user = accounts.session_user(services.database, services.settings, session_id, services.session_cache)
        if user is not None:
            return dict(user, via="session", session_id=session_id)
    return None


def _csrf_problem(request):
    """Why a cookie-authenticated unsafe request may have been forged by another site, or None.

    Browsers attach cookies to cross-site requests, so the cookie alone proves nothing. Three
    checks: the browser's own word on where the request came from (Sec-Fetch-Site), the
    Origin header against our own, and a token only our pages can read (signed with the
    server's key and bound to this session: the double-submit pattern, signed). The first
    two can only refuse, never excuse the third: a request that says it is same-origin
    still needs its token, since not every browser sends those headers on every request.
    """
    fetch_site = request.header("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return "cross-site requests cannot use the session cookie"
    origin = request.header("Origin")
    # Secure cookies travel over HTTPS only, so with them the browser's page is https:// even
    # when a TLS-terminating proxy hands us plain http (SESSION_COOKIE_SECURE=1 is for that).
    scheme = request.environ.get("wsgi.url_scheme", "http")
    own_origin = f"{'https' if cookies.cookies_are_secure(request) else scheme}://{request.header('Host', '')}"
    if origin is not None and origin != own_origin:
        return "cross-origin requests cannot use the session cookie"
    token = request.header("X-CSRF-Token") or ""
    keys = request.services.settings.secret_keys
    if not signing.verify_csrf_token(token, request.user["session_id"], keys):
        return "a missing or wrong X-CSRF-Token header"
    return None
