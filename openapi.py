"""The OpenAPI 3.1 document of the API, generated from the route table: nothing written twice.

    $ curl -s localhost:8000/openapi.json | python -m json.tool | head
    {
        "openapi": "3.1.0",
        "info": {"title": "Shop API", "version": "1.0.0", ...},
        "paths": {"/v1/items/{id}": {"get": {"operationId": "get_item", "tags": ["items"], ...

Every part of the document comes from something the server itself runs:

    the route table (routes.py)      paths, methods, operationId (the route's name), summary,
                                     tags (the path's first segment), who may call (security),
                                     which routes are rate limited (429 and RateLimit fields)
    {id:int} in a path               a path parameter, an integer (router.py's converter)
    the handler's docstring          the operation's description
    @describe on the handler         its body (the `Field` list it validates with), its query
    (schemas.py)                     (the `Query` specs it reads), headers, success body, errors
    validation.py                    each field and parameter as JSON Schema: types, bounds,
                                     lengths, enums, required, additionalProperties: false

So a route added to the table appears in the document, and a handler that changes what it
validates changes its schema with it. A route whose handler was never described cannot be
documented: `build_document` raises, naming it (tests/test_openapi.py fails on it).

Errors are RFC 9457 problems (`application/problem+json`) everywhere: the statuses a route
can answer (401 with WWW-Authenticate, 429 with Retry-After and the RateLimit fields, 422
with `errors`, ...) are declared, and `default` covers the rest (500, 503), so a client or
a fuzzer such as schemathesis knows every answer it may get.

The document is built once, on its first request (`Document`), and served with an ETag:
it changes only with a new release.
"""

import hashlib
import inspect
import json
import re
import threading

import cookies
from router import path_parameters, path_template
from schemas import COMPONENTS, REQUEST_HEADERS, RESPONSE_HEADERS
from validation import example_object, object_schema
from web import JSON_TYPE, PROBLEM_TYPE, REASON_PHRASES, Response, etag_matches

OPENAPI_VERSION = "3.1.0"
TITLE = "Shop API"
# {id:int} matches 1 to 18 digits (router.py): the largest such number.
MAX_PATH_INTEGER = 10**18 - 1
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# The ways to authenticate (middleware.authenticate), by the names the operations use.
SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "description": "an access token from POST /v1/auth/login (15 minutes)"},
    "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                   "description": "an API key from POST /v1/api-keys"},
    "sessionCookie": {"type": "apiKey", "in": "cookie", "name": cookies.SESSION_COOKIE,
                      "description": "the browser session from POST /v1/auth/session (named"
                                     f" `{cookies.SECURE_PREFIX}{cookies.SESSION_COOKIE}` over HTTPS)"},
    "csrfToken": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token",
                  "description": "the session's CSRF token: required with the session cookie on unsafe methods"},
    "metricsToken": {"type": "http", "scheme": "bearer",
                     "description": "METRICS_TOKEN, for GET /metrics; without it set, loopback clients need none"},
}
PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599}, "detail": {"type": "string"},
        "instance": {"type": "string"}, "request_id": {"type": ["string", "null"]},
        "errors": {"type": "array", "items": {
            "type": "object", "required": ["field", "message"],
            "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}},
    },
    "examples": [{"type": "about:blank", "title": "Unprocessable Content", "status": 422,
                  "detail": "the request has invalid fields", "instance": "/v1/items", "request_id": "1f0c9a",
                  "errors": [{"field": "price_cents", "message": "must be a whole number of at least 0"}]}],
}
# What each error status means here, for its description in the document.
ERROR_MEANINGS = {
    400: "a malformed request: bad JSON, or a query parameter out of its range",
    401: "no valid credentials (sent on any route when the credentials sent are bad)",
    403: "authenticated, but not allowed (the role, or a failed CSRF check)",
    404: "no such resource (or not yours)",
    409: "the resource's state does not allow it",
    412: "If-Match names a version that is no longer current",
    413: "the body is larger than the server accepts",
    415: "the body is not application/json",
    422: "valid JSON that breaks the rules: `errors` names every bad field",
    428: "this change needs If-Match",
    429: "over the rate limit: Retry-After says when to try again",
    503: "not ready, or too busy for now: try again later",
}
# Sent with every answer of a rate-limited route, errors included: declared once, referred to.
HEADERS = {
    "RateLimit-Policy": {"description": "the route's budget (IETF httpapi draft)", "schema": {"type": "string"}},
    "RateLimit": {"description": "what is left of it, and when it is whole again", "schema": {"type": "string"}},
}
RATE_LIMIT_HEADERS = {name: {"$ref": f"#/components/headers/{name}"} for name in HEADERS}


def build_document(routes, *, version):
    """The OpenAPI document (a dict) of `routes` (router.Route objects, as routes.py builds).

    Raises ValueError naming every route the document cannot describe: a handler with no
    `operation` (schemas.describe), or a response that names no schema of COMPONENTS.
    """
    paths, missing = {}, []
    for route in routes:
        operation = getattr(route.handler, "operation", None)
        if operation is None:
            missing.append(f"{route.method} {route.pattern} ({route.name}): its handler has no @describe")
            continue
        if isinstance(operation.response, str) and operation.response not in COMPONENTS:
            missing.append(f"{route.method} {route.pattern} ({route.name}): no schema {operation.response!r}")
            continue
        path = path_template(route.pattern)
        paths.setdefault(path, {})[route.method.lower()] = _operation(route, operation)
    if missing:
        raise ValueError("routes the OpenAPI document cannot describe:\n" + "\n".join(missing))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": TITLE, "version": version,
                 "description": "An online shop's API. Errors are RFC 9457 problems; lists page with"
                                " `limit` and `offset` or `cursor`; money is in integer cents."},
        "tags": [{"name": tag} for tag in sorted({_tag(route.pattern) for route in routes})],
        "paths": paths,
        "components": {
            "schemas": {**COMPONENTS, "Problem": PROBLEM},
            "headers": HEADERS,
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


class Document:
    """The document of `routes`, built on first use (once, whatever the threads) and kept as
    the bytes to send, with their ETag: `response(request)` answers GET /openapi.json."""

    def __init__(self, routes, *, version):
        self._routes = routes
        self._version = version
        self._lock = threading.Lock()
        self._body = None
        self._etag = None

    def response(self, request):
        """200 with the document, or 304 when If-None-Match names its ETag."""
        body, etag = self._built()
        headers = [("ETag", etag), ("Cache-Control", "no-cache")]
        if_none_match = request.header("If-None-Match")
        if if_none_match is not None and etag_matches(if_none_match, etag):
            return Response(b"", 304, headers)
        return Response(body, 200, [("Content-Type", JSON_TYPE), *headers])

    def _built(self):
        with self._lock:
            if self._body is None:
                document = build_document(self._routes, version=self._version)
                self._body = json.dumps(document, indent=1, ensure_ascii=False).encode()
                self._etag = '"' + hashlib.sha256(self._body).hexdigest()[:32] + '"'
            return self._body, self._etag


def _operation(route, operation):
    described = {
        "operationId": route.name,
        "summary": route.summary,
        "description": _description(route),
        "tags": [_tag(route.pattern)],
        "security": _security(route),
        "parameters": _parameters(route, operation),
        "responses": _responses(route, operation),
    }
    if route.rate_limit is not None:
        described["x-rate-limit-class"] = route.rate_limit
    if operation.body:
        schema = {**object_schema(operation.body, partial=operation.partial), **dict(operation.body_rules)}
        described["requestBody"] = {"required": operation.body_required, "content": {
            JSON_TYPE: {"schema": schema, "example": example_object(operation.body)}}}
    if not described["parameters"]:
        del described["parameters"]
    return described


def _tag(pattern):
    """The group of a path: its first segment after /v1/ ("items", "auth"), else "operations"."""
    segments = pattern.strip("/").split("/")
    return segments[1] if segments[0] == "v1" and len(segments) > 1 else "operations"


def _description(route):
    doc = inspect.getdoc(route.handler) or route.summary
    who = {"public": "Anyone may call it.", "user": "Needs a logged-in user.",
           "admin": "Needs an admin.",
           "metrics": "Needs METRICS_TOKEN as a bearer token; when it is not set, loopback clients only."}[route.access]
    return f"{doc}\n\n{who}"


def _security(route):
    """[] for a public route; else any one of the schemes (the session with its CSRF header
    on unsafe methods). The role an admin route needs is the server's check (403)."""
    if route.access == "public":
        return []
    if route.access == "metrics":
        return [{"metricsToken": []}, {}]  # {}: none needed from loopback when METRICS_TOKEN is unset
    session = {"sessionCookie": []}
    if route.method in UNSAFE_METHODS:
        session["csrfToken"] = []
    return [{"bearerAuth": []}, {"apiKeyAuth": []}, session]


def _parameters(route, operation):
    parameters = []
    for name, kind in path_parameters(route.pattern):
        schema = ({"type": "integer", "minimum": 0, "maximum": MAX_PATH_INTEGER} if kind == "int"
                  else {"type": "string", "pattern": "^[^/]+$"})
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    for spec in operation.query:
        parameter = {"name": spec.name, "in": "query", "required": False, "schema": spec.json_schema()}
        if spec.description:
            parameter["description"] = spec.description
        if spec.example is not None:
            parameter["example"] = spec.example
        parameters.append(parameter)
    for name in operation.headers:
        required, schema, description = REQUEST_HEADERS[name]
        header = re.sub(r" \(.*\)$", "", name)  # "If-Match (required)" is the header If-Match
        parameters.append({"name": header, "in": "header", "required": required, "schema": schema,
                           "description": description})
    return parameters


def _responses(route, operation):
    success = {"description": REASON_PHRASES[operation.status]}
    if operation.response is not None:
        media_types = operation.media_type if isinstance(operation.media_type, tuple) else (operation.media_type,)
        schema = _response_schema(operation.response)
        success["content"] = {media_type: {"schema": schema} for media_type in media_types}
    headers = {name: {"description": RESPONSE_HEADERS[name][1], "schema": RESPONSE_HEADERS[name][0]}
               for name in operation.response_headers}
    if route.rate_limit is not None:
        headers.update(RATE_LIMIT_HEADERS)
    if headers:
        success["headers"] = headers
    responses = {str(operation.status): success}
    for status in sorted(_error_statuses(route, operation)):
        responses[str(status)] = _problem(status, route)
    responses["default"] = {"description": "any other error (500, 503): a problem document",
                            "content": {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    return responses


def _error_statuses(route, operation):
    """The client errors a route can answer, from what it reads; `default` covers 5xx."""
    statuses = {401, *operation.errors}  # bad credentials are a 401 on every route
    if route.access != "public":
        statuses.add(403)
    if operation.query or operation.body or operation.headers:
        statuses.add(400)
    if operation.body:
        statuses.update((413, 415, 422))
    if route.rate_limit is not None:
        statuses.add(429)
    if "Idempotency-Key" in operation.headers:
        statuses.add(422)  # the key was used with another body
    return statuses


def _problem(status, route):
    response = {"description": f"{REASON_PHRASES[status]}: {ERROR_MEANINGS.get(status, 'see detail')}",
                "content": {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = {"description": 'Bearer realm="shop", with error="..." when credentials'
                                                      " were refused (RFC 6750)", "schema": {"type": "string"}}
    if status == 429:
        headers["Retry-After"] = {"description": "seconds", "schema": {"type": "integer", "minimum": 0}}
    if route.rate_limit is not None:
        headers.update(RATE_LIMIT_HEADERS)
    if headers:
        response["headers"] = headers
    return response


def _response_schema(response):
    if isinstance(response, dict) and "page_of" in response:
        return {"type": "object", "required": ["data", "pagination", "links"], "properties": {
            "data": {"type": "array", "items": {"$ref": f"#/components/schemas/{response['page_of']}"}},
            "pagination": {"$ref": "#/components/schemas/Pagination"},
            "links": {"$ref": "#/components/schemas/Links"}}}
    if isinstance(response, str):
        return {"$ref": f"#/components/schemas/{response}"}
    return response  # a schema written out (the page and script of /docs: a string)
