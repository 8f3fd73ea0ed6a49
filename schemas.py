"""What each handler answers, declared once beside it: the shapes of success bodies, and `describe`.

A handler is described where it is written, by a decorator that says what the route table
cannot: its body's fields (the same `Field` list the handler validates with), its query
parameters (the same `Query` specs it reads), the headers it reads, the body it answers with
and the errors of its own (beyond those every route may answer):

    @describe(body=ITEM_FIELDS, status=201, response="Item", headers=(), errors=(409,))
    def create_item(request): ...

openapi.py reads the route table and each handler's `operation`; a route whose handler was
never described makes the document fail to build, and tests/test_openapi.py with it. The
bodies are JSON Schema (2020-12, the dialect of OpenAPI 3.1) in COMPONENTS, named once and
referred to by name: "Item" is `{"$ref": "#/components/schemas/Item"}` in the document.
"""

from dataclasses import dataclass

import auth
import idempotency
import jobs
import orders
import webhooks

TIME = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC"}
ID = {"type": "integer", "minimum": 1}
COUNT = {"type": "integer", "minimum": 0}

COMPONENTS = {
    "Health": {"type": "object", "required": ["status", "version"],
               "properties": {"status": {"const": "healthy"}, "version": {"type": "string"}}},
    "Ready": {"type": "object", "required": ["status", "checks"],
              "properties": {"status": {"const": "ready"},
                             "checks": {"type": "object", "additionalProperties": {"type": "string"}}}},
    "User": {"type": "object", "required": ["id", "email", "role", "created_at", "updated_at"],
             "properties": {"id": ID, "email": {"type": "string"}, "role": {"enum": list(auth.ROLES)},
                            "created_at": TIME, "updated_at": TIME}},
    "Tokens": {"type": "object", "required": ["access_token", "token_type", "expires_in", "refresh_token"],
               "properties": {"access_token": {"type": "string", "description": "a JWT (HS256)"},
                              "token_type": {"const": "bearer"},
                              "expires_in": {"type": "integer", "description": "seconds"},
                              "refresh_token": {"type": "string"}}},
    "Session": {"type": "object", "required": ["user_id", "role", "csrf_token"],
                "properties": {"user_id": ID, "role": {"enum": list(auth.ROLES)},
                               "csrf_token": {"type": "string", "description": "send it in X-CSRF-Token"}}},
    "ApiKey": {"type": "object", "required": ["id", "name", "prefix", "created_at", "last_used_at"],
               "properties": {"id": ID, "name": {"type": "string"}, "prefix": {"type": "string"},
                              "created_at": TIME, "last_used_at": {"anyOf": [TIME, {"type": "null"}]}}},
    "NewApiKey": {"allOf": [{"$ref": "#/components/schemas/ApiKey"},
                            {"type": "object", "required": ["key"],
                             "properties": {"key": {"type": "string", "description": "the secret, shown once"}}}]},
    "Item": {"type": "object",
             "required": ["id", "name", "description", "price_cents", "stock", "version", "in_stock",
                          "created_at", "updated_at"],
             "properties": {"id": ID, "name": {"type": "string"}, "description": {"type": "string"},
                            "price_cents": COUNT, "stock": COUNT, "version": ID, "in_stock": {"type": "boolean"},
                            "created_at": TIME, "updated_at": TIME}},
    "OrderLine": {"type": "object", "required": ["item_id", "name", "quantity", "unit_price_cents"],
                  "properties": {"order_id": ID, "item_id": ID, "name": {"type": "string"}, "quantity": ID,
                                 "unit_price_cents": COUNT}},
    "Order": {"type": "object", "required": ["id", "user_id", "status", "total_cents", "created_at", "lines"],
              "properties": {"id": ID, "user_id": ID, "status": {"enum": list(orders.STATUSES)},
                             "total_cents": COUNT, "created_at": TIME, "updated_at": TIME,
                             "lines": {"type": "array", "items": {"$ref": "#/components/schemas/OrderLine"}}}},
    "Job": {"type": "object", "required": ["id", "kind", "payload", "status", "attempts", "max_attempts"],
            "properties": {"id": ID, "kind": {"type": "string"}, "payload": {},
                           "status": {"enum": list(jobs.STATUSES)}, "attempts": COUNT, "max_attempts": COUNT,
                           "last_error": {"type": ["string", "null"]},
                           "traceparent": {"type": ["string", "null"],
                                           "description": "W3C Trace Context of the request that enqueued the job"},
                           "tracestate": {"type": ["string", "null"]}}},
    "SalesReport": {"type": "object", "required": ["from", "to", "group_by", "data"],
                    "properties": {"from": {"type": "string", "format": "date"},
                                   "to": {"type": "string", "format": "date"},
                                   "group_by": {"enum": ["day", "item"]},
                                   "data": {"type": "array", "items": {"type": "object"}}}},
    "Webhook": {"type": "object", "required": ["id", "url", "event_types", "created_at"],
                "properties": {"id": ID, "url": {"type": "string", "format": "uri"},
                               "event_types": {"type": "array", "items": {"enum": list(webhooks.EVENT_TYPES)}},
                               "created_at": TIME}},
    "NewWebhook": {"allOf": [{"$ref": "#/components/schemas/Webhook"},
                             {"type": "object", "required": ["secret"],
                              "properties": {"secret": {"type": "string", "pattern": "^whsec_",
                                                        "description": "the signing secret, shown once"}}}]},
    "WebhookDelivery": {"type": "object",
                        "required": ["id", "webhook_id", "message_id", "event_type", "attempt", "status_code",
                                     "duration_ms", "error", "started_at", "finished_at"],
                        "properties": {"id": ID, "webhook_id": ID,
                                       "message_id": {"type": "string", "description": "the webhook-id header"},
                                       "event_type": {"enum": list(webhooks.EVENT_TYPES)}, "attempt": ID,
                                       "status_code": {"type": ["integer", "null"]}, "duration_ms": COUNT,
                                       "error": {"type": ["string", "null"]}, "started_at": TIME,
                                       "finished_at": TIME}},
    "Pagination": {"type": "object", "required": ["limit", "has_more"],
                   "properties": {"limit": ID, "has_more": {"type": "boolean"}, "offset": COUNT,
                                  "next_cursor": {"type": ["string", "null"]}}},
    "Links": {"type": "object", "required": ["self", "first"],
              "properties": {rel: {"type": "string", "format": "uri-reference"}
                             for rel in ("self", "first", "prev", "next")}},
}


@dataclass(frozen=True)
class Operation:
    """What the document needs to know about a handler beyond its row in the route table."""

    response: object = None  # a COMPONENTS name, page_of(name), or None (no body)
    status: int = 200
    body: tuple = ()          # validation.Field list of a JSON body; () when it takes none
    partial: bool = False     # a PATCH body: every field optional, at least one
    query: tuple = ()         # validation.Query specs
    headers: tuple = ()       # request header names, from REQUEST_HEADERS
    errors: tuple = ()        # statuses of its own: 404, 409, 412, 428, ...
    response_headers: tuple = ()  # names from RESPONSE_HEADERS sent with the success
    media_type: object = "application/json"  # of the success body; a tuple when it varies
    body_required: bool = True  # False: the body may be left out altogether
    body_rules: tuple = ()    # JSON Schema keywords for rules across fields, as (keyword, value) pairs


def describe(*, response=None, status=200, body=(), partial=False, query=(), headers=(), errors=(),
             response_headers=(), media_type="application/json", body_required=True, body_rules=None):
    """Attach an `Operation` to a handler, as its attribute `operation`; return the handler.

    `body_rules` are JSON Schema keywords for the body as a whole, for the rules across its
    fields that the handler checks after `validate` ("current_password is required with
    email or password"): without them the document would promise to accept what the handler
    refuses.
    """
    operation = Operation(response, status, tuple(body), partial, tuple(query), tuple(headers),
                          tuple(errors), tuple(response_headers), media_type, body_required,
                          tuple((body_rules or {}).items()))

    def attach(handler):
        handler.operation = operation
        return handler
    return attach


def page_of(name):
    """The list envelope {data, pagination, links} with rows of component `name`."""
    return {"page_of": name}


# Request headers a handler may read, by name: (required, JSON Schema, description).
REQUEST_HEADERS = {
    "If-Match": (False, {"type": "string"}, "the ETag you read: the change applies only to that version"),
    "If-Match (required)": (True, {"type": "string"}, "the ETag you read (or `*`): 428 without it"),
    "Idempotency-Key": (False, {"type": "string", "pattern": "^" + idempotency.KEY_PATTERN.pattern + "$"},
                        "a key of your choice (visible ASCII): the same key and body replay the first answer;"
                        " the same key with another body is a 422"),
    "Last-Event-ID": (False, {"type": "string", "pattern": "^(0|[1-9][0-9]{0,17})$"},
                      "the id of the last event you received: the stream resumes after it (0: all kept)"),
}
# Response headers, by name: (JSON Schema, description).
RESPONSE_HEADERS = {
    "ETag": ({"type": "string"}, "the version of the resource, for If-None-Match and If-Match"),
    "Location": ({"type": "string"}, "the new resource"),
    "Link": ({"type": "string"}, "RFC 8288 links to the first, previous and next pages"),
    "Set-Cookie": ({"type": "string"}, "the session cookie (HttpOnly) and the CSRF cookie"),
    "Content-Disposition": ({"type": "string"}, "attachment, with the file's name"),
    "X-Cache": ({"enum": ["HIT", "MISS"]}, "whether the answer came from the catalogue's cache"),
}
