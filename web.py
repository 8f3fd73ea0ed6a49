"""The HTTP toolkit: Request, Response, the HTTPError family, the WSGI Application. Knows nothing of the shop.

A WSGI server (PEP 3333) calls `app(environ, start_response)` once per request. This module
turns the `environ` dict into a `Request`, finds the handler through the router (router.py), and turns
what the handler returns, or the `HTTPError` it raises, into status, headers and body:

    GET /v1/items/7 HTTP/1.1            ->  router.match("GET", "/v1/items/7")
                                        ->  (route for /v1/items/{id:int}, {"id": 7})
    handler returns {"id": 7, ...}      ->  200, Content-Type: application/json
    handler raises NotFound("...")      ->  404, Content-Type: application/problem+json

Every error is an RFC 9457 problem document, rendered in one place (`problem_body`), the
application's and the HTTP server's own alike:

    {"type": "about:blank", "title": "Not Found", "status": 404,
     "detail": "item 7 does not exist", "instance": "/v1/items/7", "request_id": "..."}
"""

import functools
import json
from http import HTTPStatus
from urllib.parse import parse_qs

import strictjson

MAX_BODY_BYTES = 1024 * 1024
MAX_QUERY_STRING_BYTES = 8 * 1024
MAX_QUERY_FIELDS = 100
JSON_TYPE = "application/json"
PROBLEM_TYPE = "application/problem+json"
# The API serves JSON only, so the browser may load nothing from it (CSP), must not sniff
# a JSON body into HTML (nosniff), frame it, or leak URLs in the Referer header. Every
# response carries them: the application's (middleware.security_headers) and the errors
# the HTTP server answers by itself (http11_responses.problem_response).
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
IF_MATCH_ANY = "*"  # If-Match: * asks only that the resource exists (RFC 9110 §13.1.1)

# Reason phrases as RFC 9110 §15 names them; Python before 3.13 still has the older names.
REASON_PHRASES = {status.value: status.phrase for status in HTTPStatus}
REASON_PHRASES.update({413: "Content Too Large", 414: "URI Too Long", 422: "Unprocessable Content"})
STATUS_LINES = {code: f"{code} {phrase}" for code, phrase in REASON_PHRASES.items()}
_compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


# -- errors ----------------------------------------------------------------------------

class HTTPError(Exception):
    """An error the client should see. `status` picks the HTTP status; the rest fill the problem."""

    status = 500

    def __init__(self, detail=None, *, headers=None, errors=None, extra=None):
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or []
        self.errors = errors  # [{"field": ..., "message": ...}] for validation problems
        self.extra = extra or {}  # more members of the problem document

    @property
    def title(self):
        return REASON_PHRASES[self.status]


class BadRequest(HTTPError):
    status = 400


class Unauthorized(HTTPError):
    status = 401


class Forbidden(HTTPError):
    status = 403


class NotFound(HTTPError):
    status = 404


class MethodNotAllowed(HTTPError):
    status = 405

    def __init__(self, allowed):
        super().__init__(f"allowed methods: {', '.join(allowed)}", headers=[("Allow", ", ".join(allowed))])


class Conflict(HTTPError):
    status = 409


class PreconditionFailed(HTTPError):
    status = 412


class PreconditionRequired(HTTPError):
    """428 (RFC 6585 §3): this write must say which version it expects, with If-Match."""

    status = 428


class ContentTooLarge(HTTPError):
    status = 413


class UnsupportedMediaType(HTTPError):
    """415: the body is not in a form this server reads. It says which one it does read
    (Accept in a 415, RFC 9110 §15.5.16), so a client can correct itself."""

    status = 415

    def __init__(self, detail=None, **more):
        super().__init__(detail, **more)
        self.headers = [*self.headers, ("Accept", JSON_TYPE)]


class UnprocessableContent(HTTPError):
    """Valid JSON that breaks the rules: `errors` names every bad field at once."""

    status = 422

    def __init__(self, errors, detail="the request has invalid fields"):
        super().__init__(detail, errors=errors)


class TooManyRequests(HTTPError):
    """429 (RFC 6585 §4): the client has sent more than its quota; Retry-After says when to
    come back (ratelimit.py and the rate-limit middleware fill in the rest)."""

    status = 429


class InternalServerError(HTTPError):
    status = 500


class MethodNotImplemented(HTTPError):
    """RFC 9110 §15.6.2: a method that no resource here implements (405 is for a known one)."""

    status = 501


class ServiceUnavailable(HTTPError):
    """503: a dependency is down or the process is not ready. It says when to come back
    (Retry-After, RFC 9110 §10.2.3), so clients and load balancers do not retry in a loop."""

    status = 503
    retry_after_seconds = 5

    def __init__(self, detail=None, **more):
        super().__init__(detail, **more)
        if not any(name.lower() == "retry-after" for name, _ in self.headers):
            self.headers = [*self.headers, ("Retry-After", str(self.retry_after_seconds))]


# -- request ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=128)  # worked out once per name: the code asks for about fifteen
def environ_key(name):
    """Where PEP 3333 puts a request header: "If-None-Match" -> "HTTP_IF_NONE_MATCH"."""
    key = name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


class Request:
    """One HTTP request, read from a WSGI environ. Parsing happens only when asked for."""

    __slots__ = ("environ", "method", "path", "path_params", "route", "route_error", "request_id",
                 "client", "user", "services", "_query")

    def __init__(self, environ):
        self.environ = environ
        self.method = environ["REQUEST_METHOD"]
        # PEP 3333 hands the path over as latin-1 text; the bytes were UTF-8.
        raw_path = environ.get("PATH_INFO", "/") or "/"
        try:
            self.path = raw_path.encode("latin-1").decode("utf-8")
        except UnicodeError:
            self.path = raw_path  # not UTF-8: it will match no route and get a 404
        self.path_params = {}
        self.route = None
        self.route_error = None  # the 404, 405 or 501 to raise when no route matched
        self.request_id = None
        self.client = environ.get("REMOTE_ADDR", "")  # the peer; behind trusted proxies, see middleware
        self.user = None
        self.services = None  # what handlers need (database, settings), set by Application
        self._query = None

    def header(self, name, default=None):
        """A request header by its name, e.g. request.header("If-None-Match")."""
        return self.environ.get(environ_key(name), default)

    @property
    def query(self):
        """The query string as {name: [values]}, percent-decoded, repeated keys kept in order.

        Raises BadRequest for a query that is too long, has too many fields or is not UTF-8.
        """
        if self._query is None:
            self._query = parse_query(self.environ.get("QUERY_STRING", ""))
        return self._query

    def query_value(self, name):
        """The one value of a query parameter, or None when absent; given twice is a 400."""
        return query_value(self.query, name)

    @property
    def cookies(self):
        """Cookies as {name: value} (RFC 6265 §5.4: `name=value` pairs separated by `; `)."""
        cookies = {}
        for pair in self.environ.get("HTTP_COOKIE", "").split(";"):
            name, equals, value = pair.strip().partition("=")
            if equals and name and name not in cookies:
                cookies[name] = value.strip().strip('"')
        return cookies

    def json(self):
        """The body parsed as JSON, strictly; see `parse_json` for what is refused.

        Raises UnsupportedMediaType (415), ContentTooLarge (413) or BadRequest (400).
        """
        media_type, _, parameters = self.environ.get("CONTENT_TYPE", "").partition(";")
        if media_type.strip().lower() != JSON_TYPE:
            raise UnsupportedMediaType("the body must be sent as Content-Type: application/json")
        # JSON between systems is UTF-8 (RFC 8259 §8.1); a body said to be in another charset
        # would be misread as UTF-8, so it is refused rather than guessed at.
        charset = _media_type_parameter(parameters, "charset")
        if charset is not None and charset.lower() != "utf-8":
            raise UnsupportedMediaType(f"the body must be UTF-8, not charset={charset}")
        return parse_json(self.body())

    def body(self):
        """The raw body bytes, at most MAX_BODY_BYTES (else 413)."""
        length_text = self.environ.get("CONTENT_LENGTH") or "0"
        # ASCII digits only: superscripts and other scripts' digits pass str.isdigit(), not HTTP.
        if not (length_text.isascii() and length_text.isdigit()):
            raise BadRequest("Content-Length must be a number of bytes")
        # The length check first, so int() never reads thousands of digits.
        if len(length_text) > len(str(MAX_BODY_BYTES)) or int(length_text) > MAX_BODY_BYTES:
            raise ContentTooLarge(f"the body may be at most {MAX_BODY_BYTES} bytes")
        length = int(length_text)
        body = self.environ["wsgi.input"].read(length) if length else b""
        if len(body) != length:
            raise BadRequest("the body is shorter than its Content-Length")
        return body


def parse_query(query_string):
    """Parse a query string strictly.

    >>> parse_query("sort=-price_cents%2Cname&q=tea+cup&q=mug")
    {'sort': ['-price_cents,name'], 'q': ['tea cup', 'mug']}
    >>> parse_query("limit=")
    {'limit': ['']}
    """
    if len(query_string) > MAX_QUERY_STRING_BYTES:
        raise BadRequest(f"the query string may be at most {MAX_QUERY_STRING_BYTES} bytes")
    if not query_string:
        return {}
    try:
        query = parse_qs(
            query_string, keep_blank_values=True, strict_parsing=False,
            encoding="utf-8", errors="strict", max_num_fields=MAX_QUERY_FIELDS,
        )
    except UnicodeDecodeError:
        raise BadRequest("the query string is not valid UTF-8") from None
    except ValueError:
        raise BadRequest(f"the query string may have at most {MAX_QUERY_FIELDS} fields") from None
    # The same rule as for JSON strings (validation.py): PostgreSQL cannot hold U+0000 in
    # text and SQLite's string functions stop at it, so "%00" would mean different things.
    if any("\x00" in name or any("\x00" in value for value in values) for name, values in query.items()):
        raise BadRequest("the query string must not contain the NUL character (%00)")
    return query


def query_value(query, name):
    """The one value of parameter `name` in a parsed query, or None when it is absent.

    Raises BadRequest when it is given twice: `?limit=5&limit=500` has no single meaning,
    and two parts of a system that picked different ones would disagree.
    """
    values = query.get(name)
    if values is None:
        return None
    if len(values) > 1:
        raise BadRequest(f"query parameter '{name}' is given more than once")
    return values[0]


def query_whole_number(query, name, *, low, high, default=None, unit=None):
    """Parameter `name` as a whole number from `low` to `high`; `default` when absent.

    Raises BadRequest naming the range ("'limit' must be a whole number from 1 to 100";
    with unit="cents", "a whole number of cents from ...") for anything else: signs, spaces,
    fractions, and digits other than ASCII (a superscript two passes str.isdigit()).
    """
    text = query_value(query, name)
    if text is None:
        return default
    # The length check comes first: int() of a 5,000-digit string is slow, or an error.
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(high))) or not low <= int(text) <= high:
        of_unit = f" of {unit}" if unit else ""
        raise BadRequest(f"'{name}' must be a whole number{of_unit} from {low} to {high}")
    return int(text)


def parse_json(body):
    """Parse JSON bytes strictly (see strictjson.py for what is refused); 400 if refused.

    >>> parse_json(b'{"name": "Tea", "price_cents": 450}')
    {'name': 'Tea', 'price_cents': 450}
    >>> parse_json(b'{"a": NaN}')
    Traceback (most recent call last):
    web.BadRequest: malformed JSON: NaN and Infinity are not JSON
    """
    try:
        return strictjson.loads(body)
    except strictjson.NotUTF8:
        raise BadRequest("the body is not valid UTF-8") from None
    except strictjson.JSONRefused as refused:
        raise BadRequest(f"malformed JSON: {refused}") from None


# -- response --------------------------------------------------------------------------

class Response:
    """Status, headers ((name, value) pairs) and body: bytes, a file (api_exports.FileBody) or a stream."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, body=b"", status=200, headers=None):
        self.status, self.headers, self.body = status, headers if headers is not None else [], body

    @classmethod
    def json(cls, payload, status=200, headers=None):
        body = json_body(payload)
        response_headers = [("Content-Type", JSON_TYPE)]
        if headers:
            response_headers.extend(headers)
        return cls(body, status, response_headers)

    def header(self, name):
        lowered = name.lower()
        for header_name, value in self.headers:
            if header_name.lower() == lowered:
                return value
        return None


def json_body(payload):
    """`payload` as the compact UTF-8 JSON every response body is.

    >>> json_body({"name": "Thé", "price_cents": 450})
    b'{"name":"Th\\xc3\\xa9","price_cents":450}'
    """
    return _compact_json(payload).encode()


def problem_body(status, detail, *, instance=None, request_id=None, errors=None, extra=None):
    """An RFC 9457 problem document as compact JSON: the one format of every error, whether
    the application's (`problem_response`) or the HTTP server's own (http11_responses.problem_response,
    which leaves `instance` out when it refuses a request before its path is known).

    >>> problem_body(404, "no item 7", instance="/v1/items/7", request_id="abc")
    b'{"type":"about:blank","title":"Not Found","status":404,"detail":"no item 7",\
"instance":"/v1/items/7","request_id":"abc"}'
    """
    problem = {"type": "about:blank", "title": REASON_PHRASES[status], "status": status, "detail": detail}
    if instance is not None:
        problem["instance"] = instance
    problem["request_id"] = request_id
    if errors is not None:
        problem["errors"] = errors
    problem.update(extra or {})
    return _compact_json(problem).encode()


def problem_response(error, request):
    """Render an HTTPError as an RFC 9457 problem document."""
    body = problem_body(error.status, error.detail or error.title, instance=request.path,
                        request_id=request.request_id, errors=error.errors, extra=error.extra)
    return Response(body, error.status, [("Content-Type", PROBLEM_TYPE), *error.headers])


def etag_matches(if_none_match, etag):
    """RFC 9110 §13.1.2: does If-None-Match name this ETag (weak comparison)?

    >>> etag_matches('W/"v3", "v4"', '"v4"')
    True
    >>> etag_matches('*', '"v1"')
    True
    """
    if if_none_match.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in if_none_match.split(","))


def if_match(request, etag_pattern, resource_id, *, what):
    """The one strong ETag an If-Match header names for this resource (RFC 9110 §13.1.1).

    Returns None when there is no If-Match, IF_MATCH_ANY for `*` (whatever version exists),
    else the `etag_pattern` match, whose `id` group is this resource's id and whose other
    groups say which version the client read:

        If-Match: "item-17-v3"   ->  the match, with id "17" and version "3"

    Raises PreconditionFailed (412) for anything else: a tag of another resource, a list of
    tags, a weak W/"..." tag (strong comparison), or a tag that is not ours at all.
    """
    header = request.header("If-Match")
    if header is None:
        return None
    if header.strip() == IF_MATCH_ANY:
        return IF_MATCH_ANY
    tag = etag_pattern.fullmatch(header.strip())
    if tag is None or int(tag["id"]) != resource_id:
        raise PreconditionFailed(f"If-Match does not name a version of this {what}")
    return tag


# -- the WSGI application --------------------------------------------------------------

class Application:
    """The WSGI callable: environ in, status + headers + body out, through the middleware.

    `middleware` is a list of functions `(request, call_next) -> Response`, outermost first;
    they are chained once, here, not on every request. `services` is handed to every
    handler as `request.services` (the database, the settings, the logger).
    """

    def __init__(self, router, middleware=(), services=None):
        self.router = router
        self.services = services
        handler = self.dispatch
        for layer in reversed(middleware):
            handler = _chain(layer, handler)
        self._handle = handler

    def __call__(self, environ, start_response):
        request = Request(environ)
        request.services = self.services
        # Routing comes first, so every middleware knows which route this is (the access log
        # names its pattern; authentication reads who may call it). A path without a route
        # gets its 404, 405 or 501 from dispatch, inside the middleware that renders problems.
        if request.method != "OPTIONS":
            try:
                request.route, request.path_params = self.router.match(request.method, request.path)
            except HTTPError as error:
                request.route_error = error
        response = self._handle(request)
        body, headers = response.body, response.headers
        if response.status in (204, 304):
            body = b""
        elif hasattr(body, "__len__"):  # not a stream, whose end nobody knows: the server frames it
            headers.append(("Content-Length", str(len(body))))
        start_response(STATUS_LINES[response.status], headers)
        # HEAD: the same headers as GET, Content-Length included, and no body (RFC 9110 §9.3.2).
        if request.method == "HEAD" or not body:
            getattr(body, "close", lambda: None)()  # a file not sent (api_exports.FileBody) is closed now
            return []
        return [body] if isinstance(body, bytes) else body  # a file or stream: sent in pieces, then closed

    def dispatch(self, request):
        """Route the request, call its handler, and apply conditional GET."""
        if request.method == "OPTIONS":
            allowed = self.router.allowed(request.path)
            if allowed is None:
                raise NotFound(f"no resource at {request.path}")
            return Response(b"", 204, [("Allow", ", ".join(allowed))])
        if request.route is None:
            raise request.route_error
        result = request.route.handler(request)
        response = result if isinstance(result, Response) else Response.json(result)
        if response.status == 200 and request.method in ("GET", "HEAD"):
            if_none_match = request.header("If-None-Match")
            etag = response.header("ETag") if if_none_match else None  # most requests send none
            if etag and etag_matches(if_none_match, etag):
                # 304 repeats the validators and caching headers, without the body (RFC 9110 §15.4.5).
                kept = [(name, value) for name, value in response.headers if name in ("ETag", "Cache-Control")]
                return Response(b"", 304, kept)
        return response


def _media_type_parameter(parameters, name):
    """The value of parameter `name` in the `; a=b; c="d"` part of a media type (RFC 9110
    §8.3.1: names are case-insensitive, values may be quoted), or None when it is absent."""
    for parameter in parameters.split(";"):
        key, equals, value = parameter.strip().partition("=")
        if equals and key.strip().lower() == name:
            return value.strip().strip('"')
    return None


def _chain(layer, call_next):
    def handle(request):
        return layer(request, call_next)
    return handle
