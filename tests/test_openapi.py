"""GET /openapi.json: a valid OpenAPI 3.1 document that agrees with the server it describes.

Valid: openapi-spec-validator accepts it. Complete: every route of the table is there with
its method, its operationId and a schema for its success body; a route whose handler was
never described makes the document fail to build. Agreeing: the checks below are generated
from the document itself, not written per route:

    for every request body field        a value its schema refuses (a wrong type, one past a
                                        bound, a string too long, a choice not listed, a NUL,
                                        a field not listed) is refused by the server with a
                                        422 naming that field; the body's example is accepted
                                        and the answer matches the response schema
    for every query parameter           a value its schema refuses is a 400
    for every GET route                 a 2xx answer matches its response schema

Every request is sent in-process (WSGI) and over a real socket (`client`). SQLite only:
neither the document nor validation depends on the engine, and the API tests run both.
"""

import copy
import json
from urllib.parse import urlencode

import pytest
from conftest import TEST_SECRET_KEY, assert_problem, json_headers
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec

import api_events
import api_ops
import config
import openapi
import passwords
import routes
import validation
import web
from router import Route, path_template

ROUTER = routes.build_router()
DOCUMENT = openapi.build_document(ROUTER.routes, version=api_ops.VERSION)
COMPONENTS = DOCUMENT["components"]
OPERATIONS = [
    (path, method.upper(), operation)
    for path, item in DOCUMENT["paths"].items() for method, operation in item.items()
]
# Values for the path parameters: the seeded item 1, the admin (user 1), the first order and
# job (test_every_get_answers_what_its_schema_says places one), a file of the docs page.
PATH_VALUES = {"{id}": "1", "{file}": "script.js"}


@pytest.fixture
def engine():
    return "sqlite"


@pytest.fixture
def settings(database_url, tmp_path):
    """As shipped, without rate limits: a table of requests goes to one route."""
    return config.load_settings({
        "APP_ENV": "test", "DATABASE_URL": database_url, "SECRET_KEY": TEST_SECRET_KEY,
        "PBKDF2_ITERATIONS": "1000", "MAIL_OUTBOX_DIR": str(tmp_path / "outbox"), "RATE_LIMITS": "off",
    })


# -- the document ----------------------------------------------------------------------------

def test_the_served_document_is_valid_openapi_3_1(client):
    response = client.get("/openapi.json")
    assert response.status == 200
    assert response.header("Content-Type") == "application/json"
    document = response.json()
    assert document["openapi"] == "3.1.0"
    validate_spec(document)  # raises, naming the first problem
    assert document == json.loads(json.dumps(DOCUMENT))  # the same as built from the table here


def test_the_document_has_an_etag_and_answers_304_to_it(client):
    first = client.get("/openapi.json")
    etag = first.header("ETag")
    assert etag and etag.startswith('"') and first.header("Cache-Control") == "no-cache"
    again = client.get("/openapi.json", headers={"If-None-Match": etag})
    assert (again.status, again.body, again.header("ETag")) == (304, b"", etag)
    assert client.get("/openapi.json", headers={"If-None-Match": '"other"'}).status == 200


def test_every_route_of_the_table_is_an_operation_and_nothing_else_is():
    from_table = {(path_template(pattern), method, name) for method, pattern, _, name, *_ in routes.ROUTES}
    documented = {(path, method, operation["operationId"]) for path, method, operation in OPERATIONS}
    assert documented == from_table


@pytest.mark.parametrize(("path", "method", "operation"), OPERATIONS, ids=[op["operationId"] for *_, op in OPERATIONS])
def test_every_operation_says_what_it_answers(path, method, operation):
    successes = [status for status in operation["responses"] if status.startswith("2")]
    assert len(successes) == 1
    success = operation["responses"][successes[0]]
    if successes[0] != "204":
        for content in success["content"].values():
            assert content["schema"], f"{method} {path} declares no schema for its {successes[0]}"
    # Errors are problems, and the statuses with headers of their own declare them.
    assert operation["responses"]["default"]["content"]["application/problem+json"]
    assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    if "429" in operation["responses"]:
        assert {"Retry-After", "RateLimit", "RateLimit-Policy"} <= set(operation["responses"]["429"]["headers"])
    route = next(route for route in ROUTER.routes if route.name == operation["operationId"])
    assert ("429" in operation["responses"]) == (route.rate_limit is not None)
    assert (operation["security"] == []) == (route.access == "public")
    assert operation["tags"] and operation["summary"] == route.summary


def test_a_route_whose_handler_is_not_described_cannot_be_documented():
    def undescribed(request):
        return {}

    routes_with_one_more = [*ROUTER.routes, Route("GET", "/v1/widgets", undescribed, name="list_widgets")]
    with pytest.raises(ValueError, match=r"GET /v1/widgets \(list_widgets\): its handler has no @describe"):
        openapi.build_document(routes_with_one_more, version="test")


def test_a_route_added_to_the_table_appears_in_the_document():
    handler = ROUTER.routes[0].handler  # any described handler
    more = [*ROUTER.routes, Route("DELETE", "/v1/widgets/{id:int}", handler, name="delete_widget", access="admin",
                                  rate_limit="write")]
    operation = openapi.build_document(more, version="test")["paths"]["/v1/widgets/{id}"]["delete"]
    assert operation["operationId"] == "delete_widget" and operation["tags"] == ["widgets"]
    assert operation["parameters"][0] == {"name": "id", "in": "path", "required": True,
                                          "schema": {"type": "integer", "minimum": 0,
                                                     "maximum": openapi.MAX_PATH_INTEGER}}
    assert {"bearerAuth": []} in operation["security"] and "403" in operation["responses"]


def test_security_schemes_are_the_ways_to_authenticate():
    schemes = COMPONENTS["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer",
                                     "bearerFormat": "JWT"}
    assert (schemes["apiKeyAuth"]["in"], schemes["apiKeyAuth"]["name"]) == ("header", "X-API-Key")
    assert (schemes["sessionCookie"]["in"], schemes["sessionCookie"]["name"]) == ("cookie", "session")
    create_order = DOCUMENT["paths"]["/v1/orders"]["post"]
    assert {"sessionCookie": [], "csrfToken": []} in create_order["security"]  # unsafe: the CSRF header too
    assert {"sessionCookie": []} in DOCUMENT["paths"]["/v1/orders"]["get"]["security"]


# -- request bodies: generated from the schemas ------------------------------------------------

def bad_values(schema):
    """(what, value) pairs that `schema` refuses, made from its own keywords."""
    if "enum" in schema:
        yield "a choice not listed", "not-a-choice"
    if schema.get("type") == "integer":
        yield "a string", "1"
        yield "a fraction", 1.5
        yield "true", True
        yield "below the minimum", schema["minimum"] - 1
        yield "above the maximum", schema["maximum"] + 1
    elif schema.get("type") == "string":
        yield "a number", 1
        if schema.get("minLength", 0) > 0:
            yield "empty", ""
        if "maxLength" in schema:
            yield "too long", "x" * (schema["maxLength"] + 1)
        if "@" in schema.get("pattern", ""):  # an email's
            yield "not an email", "no-at-sign"
        if schema.get("format") == "date":
            yield "not a date", "yesterday"
        elif "pattern" in schema and "enum" not in schema:
            yield "a NUL character", "a\x00b"
    elif schema.get("type") == "array" and "enum" in schema["items"]:  # a list of choices
        yield "an object", {}
        yield "empty", []
        choice = schema["items"]["enum"][0]
        yield "a choice not listed", ["not-a-choice"]
        yield "a number in it", [1]
        if schema.get("uniqueItems"):
            yield "a choice twice", [choice, choice]
        yield "too many entries", schema["items"]["enum"] + [choice]
    elif schema.get("type") == "array":
        yield "an object", {}
        if schema.get("minItems", 0) > 0:
            yield "empty", []
        example = {name: prop["examples"][0] for name, prop in schema["items"]["properties"].items()}
        yield "too many entries", [example] * (schema["maxItems"] + 1)
        for name, prop in schema["items"]["properties"].items():
            for what, value in bad_values(prop):
                yield f"[0].{name} {what}", [dict(example, **{name: value})]


def body_cases():
    for path, method, operation in OPERATIONS:
        if "requestBody" not in operation:
            continue
        content = operation["requestBody"]["content"]["application/json"]
        schema, example = content["schema"], content["example"]
        name = operation["operationId"]
        yield pytest.param(path, method, operation, {**example, "unexpected": 1}, "unexpected",
                           id=f"{name}-unknown field")
        for field in schema.get("required", []):
            body = {key: value for key, value in example.items() if key != field}
            yield pytest.param(path, method, operation, body, field, id=f"{name}-{field} missing")
        for field, field_schema in schema["properties"].items():
            for what, value in bad_values(field_schema):
                yield pytest.param(path, method, operation, {**example, field: value}, field,
                                   id=f"{name}-{field} {what}")


BODY_CASES = list(body_cases())


def test_there_is_a_generated_case_for_every_body_field():
    fields = {(case.values[2]["operationId"], case.values[4]) for case in BODY_CASES}
    for *_, operation in OPERATIONS:
        if "requestBody" in operation:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            assert {(operation["operationId"], field) for field in schema["properties"]} <= fields


@pytest.mark.parametrize(("path", "method", "operation", "body", "field"), BODY_CASES)
def test_a_body_the_schema_refuses_is_a_422_naming_the_field(client, users, seeded, path, method, operation, body,
                                                            field):
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert not validator(schema).is_valid(body), "the generated body must break the schema"
    response = client.request(method, concrete(path), json=body, headers=request_headers(users, operation))
    assert response.status == 422, (response.status, response.body)
    problem = response.json()
    assert any(error["field"].split("[")[0] == field for error in problem["errors"]), problem
    assert_matches_response_schema(operation, response)


@pytest.mark.parametrize(("path", "method", "operation"), [case for case in OPERATIONS if "requestBody" in case[2]],
                         ids=lambda value: value["operationId"] if isinstance(value, dict) else None)
def test_the_body_example_is_valid_and_accepted(client, users, seeded, path, method, operation):
    content = operation["requestBody"]["content"]["application/json"]
    assert validator(content["schema"]).is_valid(content["example"])
    headers = request_headers(users, operation)
    response = client.request(method, concrete(path), json=content["example"], headers=headers)
    # Accepted by validation: what follows may still refuse it for another reason (the
    # current password is wrong, the last admin keeps the role, no order 1), never as a
    # malformed or invalid body.
    assert response.status not in (400, 413, 415, 422) and response.status < 500, (response.status, response.body)
    assert_matches_response_schema(operation, response)


# -- query parameters and responses ------------------------------------------------------------

def bad_query_values(schema):
    """(what, text) pairs for a query parameter that `schema` refuses: query values are text."""
    if schema.get("type") == "integer":
        yield "not a number", "ten"
        yield "a fraction", "1.5"
        yield "below the minimum", str(schema["minimum"] - 1)
        yield "above the maximum", str(schema["maximum"] + 1)
    if "enum" in schema:
        yield "a choice not listed", "not-a-choice"
    if "maxLength" in schema:
        yield "too long", "x" * (schema["maxLength"] + 1)
    if "pattern" in schema:  # the NUL a free text's refuses, or any other's "!"
        yield "off the pattern", "a\x00b" if schema["pattern"] == validation.NO_NUL_PATTERN else "!"
    if "format" in schema or "anyOf" in schema:
        yield "not a date", "yesterday"


def query_cases():
    for path, _, operation in OPERATIONS:
        parameters = [parameter for parameter in operation.get("parameters", ()) if parameter["in"] == "query"]
        if parameters:
            yield pytest.param(path, operation, "unexpected", "1", None,
                               id=f"{operation['operationId']}-unknown parameter")
        for parameter in parameters:
            for what, text in bad_query_values(parameter["schema"]):
                yield pytest.param(path, operation, parameter["name"], text, parameter["schema"],
                                   id=f"{operation['operationId']}-{parameter['name']} {what}")


@pytest.mark.parametrize(("path", "operation", "name", "text", "schema"), list(query_cases()))
def test_a_query_value_the_schema_refuses_is_a_400(client, users, path, operation, name, text, schema):
    if schema is not None:
        value = int(text) if schema.get("type") == "integer" and text.lstrip("-").isdigit() else text
        assert not validator(schema).is_valid(value), "the generated value must break the schema"
    response = client.get(f"{concrete(path)}?{urlencode({name: text})}", headers=request_headers(users, operation))
    assert response.status == 400, (response.status, response.body)
    assert response.header("Content-Type") == "application/problem+json"


# A value each kind of schema accepts, for the check that the server accepts it too.
GOOD_FORMATS = {"date": "2026-11-28", "date-time": "2026-11-28T09:00:00Z"}
# Rules between parameters, which a parameter's schema cannot say: `limit` ranks items,
# so the report takes it with group_by=item only (api_reports.py answers 400 otherwise).
COMPANIONS = {("sales_report", "limit"): {"group_by": "item"}}


def good_query_value(schema):
    if "default" in schema:
        return str(schema["default"])
    if "enum" in schema:
        return schema["enum"][0]
    if schema.get("type") == "integer":
        return str(schema["maximum"])
    if "format" in schema or "anyOf" in schema:
        return GOOD_FORMATS[schema.get("format", "date")]
    return None  # a free string: `cursor` (signed by the server) and `q`, `kind` (their examples)


def good_query_cases():
    for path, _, operation in OPERATIONS:
        for parameter in operation.get("parameters", ()):
            value = parameter.get("example", good_query_value(parameter["schema"]))
            if parameter["in"] == "query" and value is not None:
                yield pytest.param(path, operation, parameter["name"], str(value),
                                   id=f"{operation['operationId']}-{parameter['name']}={value}")


NEEDS_A_WEBHOOK = ("/v1/webhooks/{id}/deliveries",)


@pytest.mark.parametrize(("path", "operation", "name", "text"), list(good_query_cases()))
def test_a_query_value_the_schema_accepts_is_accepted(client, users, path, operation, name, text):
    parameter = next(p for p in operation["parameters"] if p["name"] == name)
    value = int(text) if parameter["schema"].get("type") == "integer" else text
    assert validator(parameter["schema"]).is_valid(value)
    query = {name: text, **COMPANIONS.get((operation["operationId"], name), {})}
    headers = request_headers(users, operation)
    if path in NEEDS_A_WEBHOOK:  # webhook 1, whose (empty) delivery log is listed
        subscription = {"url": "https://93.184.215.14/hooks", "event_types": ["order.paid"]}
        subscribed = client.post("/v1/webhooks", json=subscription, headers=headers)
        assert subscribed.status == 201, subscribed.body
    response = client.get(f"{concrete(path)}?{urlencode(query)}", headers=headers)
    assert response.status == 200, (response.status, response.body)
    assert_matches_response_schema(operation, response)


def answers_json(operation):
    """Does the operation answer JSON? (Not a page, a file or a stream: those have tests of their own.)"""
    success = next(response for status, response in operation["responses"].items() if status.startswith("2"))
    return web.JSON_TYPE in success.get("content", {})


# The resources test_every_get_answers_what_its_schema_says makes sure exist as {id} = 1.
MADE_FOR_THE_TEST = ("/v1/items/{id}", "/v1/users/{id}", "/v1/orders/{id}", "/v1/jobs/{id}")


@pytest.mark.parametrize(("path", "method", "operation"),
                         [case for case in OPERATIONS if case[1] == "GET" and answers_json(case[2])],
                         ids=lambda value: value["operationId"] if isinstance(value, dict) else None)
def test_every_get_answers_what_its_schema_says(client, users, seeded, path, method, operation):
    headers = request_headers(users, operation)  # the admin: user 1
    placed = client.post("/v1/orders", json={"lines": [{"item_id": 1, "quantity": 1}]}, headers=headers)
    assert placed.status == 201  # order 1, and with it job 1 (its email)
    response = client.get(concrete(path), headers=headers)
    if "{id}" in path and path not in MADE_FOR_THE_TEST:
        # A resource this test did not make: its 404 is a problem, as declared.
        assert response.status in (200, 404), (response.status, response.body)
    else:
        assert 200 <= response.status < 300, (response.status, response.body)
    assert_matches_response_schema(operation, response)


# -- what schemathesis found (tests/test_schemathesis.py): the document now says it ------------
# Each was a request the document allowed and the server refused, or the other way round.

def body_schema(operation_id):
    operation = next(operation for *_, operation in OPERATIONS if operation["operationId"] == operation_id)
    return operation["requestBody"]["content"]["application/json"]["schema"]


def parameter_schema(operation_id, name):
    operation = next(operation for *_, operation in OPERATIONS if operation["operationId"] == operation_id)
    return next(parameter["schema"] for parameter in operation["parameters"] if parameter["name"] == name)


def accepts(schema, value):
    return validator(schema).is_valid(value)


EMAILS = ["ada@example.com", "  Ada.Lovelace@Example.COM\t", "ada\x07@example.com", "ada\x88@example.com",
          "\u00fe\u00a2@w.p.70", "ada@example.com\ufeff", "ada lovelace@example.com", "ada@example", "@example.com",
          "ada@@example.com", "ada@.example.com", "\u3000ada@example.com\u2029", "ada\u2028x@example.com"]


@pytest.mark.parametrize("email", EMAILS)
def test_the_documented_email_is_the_email_the_server_takes(email):
    """Was `format: email` (RFC 5321's grammar, not the server's), and control characters passed."""
    schema = body_schema("register")["properties"]["email"]
    assert "format" not in schema
    assert accepts(schema, email) == (validation.Field("email", "email").check(email)[1] is None)


@pytest.mark.parametrize("operation_id", ["register", "update_me"])
def test_a_new_password_is_documented_with_its_minimum_length(checker, operation_id):
    """Was minLength 1: a 14-character password obeyed the document and got a 422."""
    schema = body_schema(operation_id)["properties"]["password"]
    assert schema["minLength"] == passwords.MIN_PASSWORD_CHARS
    assert not accepts(schema, "fourteen chars") and accepts(schema, "fifteen letters")
    assert body_schema("login")["properties"]["password"]["minLength"] == 1  # any password may be tried
    response = checker.client.post("/v1/auth/register", json={"email": "short@example.com", "password": "x" * 14})
    assert_problem(response, 422, errors=[{"field": "password", "message": "is too short: at least 15 characters"}])


@pytest.mark.parametrize("body", [{"current_password": "x"}, {"email": "ada@example.com"},
                                  {"password": "a kettle sings at dawn"}])
def test_a_profile_change_documents_the_fields_it_needs_together(checker, body):
    """Was: any one field. The server needs email or password, and the current password."""
    assert not accepts(body_schema("update_me"), body)
    response = checker.client.request("PATCH", "/v1/users/me", json=body, headers=checker.customer)
    assert response.status == 422, response
    assert accepts(body_schema("update_me"), {"email": "ada@example.com", "current_password": "x"})


@pytest.mark.parametrize("key, valid", [("5f0c4ae1-6b0e", True), ("x" * 255, True), ("a b", False),
                                        ("caf\u00e9", False), ("", False), ("x" * 256, False)])
def test_the_documented_idempotency_key_is_the_one_the_server_takes(checker, key, valid):
    """Was any string of 1 to 255 characters: a space or a non-ASCII letter obeyed it and got a 400."""
    assert accepts(parameter_schema("create_order", "Idempotency-Key"), key) == valid
    if not valid and key.isascii() and key:
        response = checker.client.post("/v1/orders", json={"lines": [{"item_id": 1, "quantity": 1}]},
                                       headers=json_headers(checker.customer, idempotency_key=key))
        assert_problem(response, 400, "Idempotency-Key must be 1 to 255 visible ASCII characters")


def test_the_event_stream_documents_each_event():
    """Was `{"type": "string"}`; OpenAPI 3.1 gives a text/event-stream's schema per event."""
    operation = next(operation for *_, operation in OPERATIONS if operation["operationId"] == "order_events")
    schema = operation["responses"]["200"]["content"]["text/event-stream"]["schema"]
    wire = (f"retry: {api_events.RETRY_MILLISECONDS}\n\n".encode()
            + api_events.format_event({"id": 4, "type": "order.paid", "data": '{"order_id":2}'}))
    blocks = [block for block in wire.decode().split("\n\n") if block]
    events = [dict(line.split(": ", 1) for line in block.splitlines()) for block in blocks]
    assert events == [{"retry": "3000"}, {"id": "4", "event": "order.paid", "data": '{"order_id":2}'}]
    assert accepts(schema, {"retry": 3000}) and accepts(schema, events[1])
    assert not accepts(schema, {**events[1], "id": "04"}) and not accepts(schema, {**events[1], "event": "paid"})


@pytest.mark.parametrize("day, valid", [("1000-01-01", True), ("9998-12-31", True), ("0999-12-31", False),
                                        ("9999-01-01", False)])
def test_the_documented_report_days_are_the_days_the_server_takes(checker, day, valid):
    """Was any date: year 0296 obeyed the document and got a 422 (a 400 in the query)."""
    assert accepts(parameter_schema("sales_report", "from"), day) == valid
    assert accepts(body_schema("orders_export")["properties"]["to"], day) == valid
    response = checker.client.get(f"/v1/reports/sales?from={day}&to={day}", headers=checker.admin)
    assert response.status == (200 if valid else 400), response


@pytest.mark.parametrize(("operation_id", "name"), [("list_items", "q"), ("list_items", "cursor"),
                                                  ("list_jobs", "kind")])
def test_a_text_query_parameter_is_documented_without_nul(checker, operation_id, name):
    """Was: `q` and `cursor` documented as any text, and a %00 in one is a 400 for the whole
    query string (web.parse_query), whatever the parameter."""
    assert not accepts(parameter_schema(operation_id, name), "tea\x00")
    path = next(path for path, _, operation in OPERATIONS if operation["operationId"] == operation_id)
    response = checker.client.get(f"{path}?{name}=tea%00", headers=checker.admin)
    assert_problem(response, 400, "the query string must not contain the NUL character (%00)")


@pytest.mark.parametrize("url", ["https://93.184.215.14/uW|A0f{F^dS+u", "https://93.184.215.14/%zz",
                                 "ftp://93.184.215.14/", "https://93.184.215.14/in#part"])
def test_a_webhook_url_the_document_refuses_the_server_refuses(checker, url):
    """Was any string: characters a URI may not hold were accepted, stored, and shown as a `uri`."""
    assert not accepts(body_schema("create_webhook")["properties"]["url"], url)
    response = checker.client.post("/v1/webhooks", json={"url": url, "event_types": ["order.paid"]},
                                   headers=checker.admin)
    assert response.status == 422 and response.json()["errors"][0]["field"] == "url", response


# -- helpers ---------------------------------------------------------------------------------

def validator(schema):
    """A JSON Schema validator of `schema`, its $refs into the document's components resolved."""
    root = copy.deepcopy(schema)
    root["components"] = COMPONENTS
    return OAS31Validator(root, format_checker=OAS31Validator.FORMAT_CHECKER)


def concrete(path):
    for parameter, value in PATH_VALUES.items():
        path = path.replace(parameter, value)
    return path


def request_headers(users, operation):
    """An admin's credentials (any route), and `*` for a required If-Match."""
    headers = users.headers(users.admin())
    for parameter in operation.get("parameters", ()):
        if parameter["in"] == "header" and parameter["required"]:
            headers[parameter["name"]] = "*"
    return headers


def assert_matches_response_schema(operation, response):
    declared = operation["responses"].get(str(response.status), operation["responses"]["default"])
    if response.status >= 400:
        # A client error the operation can answer is declared by its status (not left to `default`).
        assert response.status >= 500 or str(response.status) in operation["responses"], response.status
        assert response.header("Content-Type") == "application/problem+json"
        errors = [error.message for error in validator({"$ref": "#/components/schemas/Problem"})
                  .iter_errors(response.json())]
        assert not errors, errors
        return
    if "content" not in declared:
        assert response.body == b""
        return
    media_type = response.header("Content-Type").split(";")[0]
    assert media_type in declared["content"]
    content = declared["content"][media_type]
    if media_type == web.JSON_TYPE:
        errors = [error.message for error in validator(content["schema"]).iter_errors(response.json())]
        assert not errors, errors
