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
from conftest import TEST_SECRET_KEY
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec

import api_ops
import config
import openapi
import routes
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
        if schema.get("format") == "email":
            yield "not an email", "no-at-sign"
        elif schema.get("format") == "date":
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
    if "pattern" in schema:
        yield "off the pattern", "!"
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
