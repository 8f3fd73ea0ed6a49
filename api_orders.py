"""Handlers for orders: place one (with an Idempotency-Key), read them, cancel, change status.

    $ curl -i localhost:8000/v1/orders -H "Authorization: Bearer $TOKEN" \\
        -H 'Idempotency-Key: 5f0c4ae1-6b0e-4a3c-9e55-0d5c1e2b7a10' \\
        -H 'Content-Type: application/json' -d '{"lines": [{"item_id": 1, "quantity": 2}]}'
    HTTP/1.1 201 Created
    Location: /v1/orders/1
    ETag: "order-1-pending"

    {"id": 1, "user_id": 2, "status": "pending", "total_cents": 2998, ...,
     "lines": [{"item_id": 1, "name": "...", "quantity": 2, "unit_price_cents": 1499}]}

Who sees what: a user sees only their own orders, an admin sees every order. Another
user's order is a 404, exactly like an order that does not exist: a 403 would confirm to a
stranger that order 41 exists and belongs to someone else.
"""

import datetime as dt
import re

import db
import idempotency
import orders
import pagination
import sql_orders
from schemas import describe, page_of
from validation import Field, Query, parse_date, parse_date_time, query_names, validate
from web import (
    IF_MATCH_ANY,
    BadRequest,
    Conflict,
    NotFound,
    PreconditionFailed,
    Response,
    UnprocessableContent,
    if_match,
)

LINE_FIELDS = [
    Field("item_id", "integer", minimum=1),
    Field("quantity", "integer", minimum=1, maximum=orders.MAX_QUANTITY),
]
ORDER_FIELDS = [Field("lines", "list", max_length=orders.MAX_LINES, item_fields=LINE_FIELDS)]
STATUS_CHANGE = [Field("status", "string", choices=orders.STATUSES)]
STATUS_FILTER = Query("status", "choice", choices=orders.STATUSES)
# Read by _timestamp: a date (midnight UTC) or an RFC 3339 date-time with an offset.
TIME_FILTERS = [
    Query("created_from", "date or date-time", description="a date (midnight UTC) or an RFC 3339 time with an offset"),
    Query("created_to", "date or date-time", description="a date (midnight UTC) or an RFC 3339 time with an offset"),
]
LIST_QUERY = [*pagination.page_parameters(sql_orders.SORTABLE_COLUMNS, "-created_at"), STATUS_FILTER, *TIME_FILTERS]
LIST_PARAMETERS = query_names(LIST_QUERY)
# This request's key was taken over by a retry; retried again, it meets that one (a 409
# while it runs, then its replay).
LOST_KEY_RETRY_AFTER_SECONDS = 1
ORDER_ETAG = re.compile(r'"order-(?P<id>[1-9][0-9]{0,17})-(?P<status>pending|paid|shipped|cancelled)"')


@describe(response="Order", status=201, body=ORDER_FIELDS, headers=("Idempotency-Key",), errors=(409,),
          response_headers=("Location", "ETag"))
def create_order(request):
    """POST /v1/orders: 201 with the order and its Location, sent after the COMMIT.

    Prices and the total come from the database; the body names only items and quantities
    (any other field is a 422, so a client learns it cannot set `total_cents` or `status`).
    """
    document = request.json()
    lines = _order_lines(document)
    database = request.services.database
    user_id = request.user["id"]
    key = request.header("Idempotency-Key")
    catalogue_cache = request.services.catalogue_cache
    if key is None:
        return created_response(_place(database, user_id, lines, catalogue_cache=catalogue_cache))
    if not idempotency.valid_key(key):
        raise BadRequest(
            f"Idempotency-Key must be 1 to {idempotency.MAX_KEY_CHARS} visible ASCII characters"
        )
    try:
        outcome = idempotency.begin(database, user_id, key, idempotency.fingerprint("POST", request.path, document))
    except idempotency.KeyReused:
        raise UnprocessableContent(
            [{"field": "Idempotency-Key", "message": "was already used with a different request"}],
            "this Idempotency-Key belongs to another request; use a new key for a new request",
        ) from None
    except idempotency.KeyInUse as held:
        raise Conflict(
            "a request with this Idempotency-Key is still being processed; retry shortly",
            headers=[("Retry-After", str(held.retry_after_seconds))],
        ) from None
    if isinstance(outcome, idempotency.StoredResponse):
        return Response(outcome.body, outcome.status, [*outcome.headers, ("Idempotent-Replayed", "true")])
    claim = outcome  # this request holds the key now

    def remember_response(connection, order):
        return idempotency.save(connection, claim, created_response(order))

    try:
        order = _place(database, user_id, lines, before_commit=remember_response, catalogue_cache=catalogue_cache)
    except orders.LostClaim:
        raise Conflict(
            "this request outlived its hold on the Idempotency-Key; retry it",
            headers=[("Retry-After", str(LOST_KEY_RETRY_AFTER_SECONDS))],
        ) from None
    except Exception:
        # A refusal or a failure: the order was rolled back, so the key is free for a retry.
        # (Should a COMMIT have succeeded with its acknowledgement lost, the key holds the
        # saved 201, and `release` leaves a key with a response alone.)
        _release_quietly(request, claim)
        raise
    return created_response(order)


@describe(response=page_of("Order"), query=LIST_QUERY, response_headers=("Link",))
def list_orders(request):
    """GET /v1/orders: the caller's orders (an admin: everyone's), newest first, with lines."""
    query = request.query
    pagination.reject_unknown_parameters(query, LIST_PARAMETERS)
    filters = _order_filters(request)
    if request.user["role"] != "admin":
        filters["user_id"] = request.user["id"]
    keys = request.services.settings.secret_keys
    page = pagination.parse_page(
        query, sortable=sql_orders.SORTABLE_COLUMNS, default_sort="-created_at", filters=filters, keys=keys
    )
    found = orders.list_orders(
        request.services.database, sort=page.sort, limit=page.limit + 1, offset=page.offset, after=page.after,
        **filters,
    )
    query_params = {name: value for name, value in filters.items() if name != "user_id"}
    body, link_header = pagination.envelope(
        [public_order(order) for order in found], page, path=request.path, query_params=query_params, keys=keys
    )
    return Response.json(body, headers=[("Link", link_header)] if link_header else None)


@describe(response="Order", errors=(404,), response_headers=("ETag",))
def get_order(request):
    """GET /v1/orders/{id}: one order with its lines; 404 when it is not the caller's."""
    order_id = request.path_params["id"]
    order = orders.get_order(request.services.database, order_id, user_id=_owner_filter(request))
    if order is None:
        raise NotFound(f"order {order_id} does not exist")
    # private: the order is the caller's own, never for a shared cache; no-cache: revalidate each time.
    headers = [("ETag", order_etag(order)), ("Cache-Control", "private, no-cache")]
    return Response.json(public_order(order), headers=headers)


@describe(response="Order", errors=(404, 409), response_headers=("ETag",))
def cancel_order(request):
    """POST /v1/orders/{id}/cancel: the owner cancels a pending order; its stock comes back.

    Only a pending order: once paid, cancelling means a refund, which is an admin's PATCH.
    """
    order_id = request.path_params["id"]
    return _change_status(request, order_id, "cancelled", user_id=_owner_filter(request), only_from="pending")


@describe(response="Order", body=STATUS_CHANGE, headers=("If-Match",), errors=(404, 409, 412),
          response_headers=("ETag",))
def update_order(request):
    """PATCH /v1/orders/{id} (admin): {"status": "paid" | "shipped" | "cancelled"}, along the
    state machine in orders.py; any other move is a 409.

    If-Match is optional here (the state machine already refuses a move from a status that
    changed); when sent, it must name the order's current ETag, else 412.
    """
    change = validate(request.json(), STATUS_CHANGE)
    order_id = request.path_params["id"]
    expected_status = _if_match_status(request, order_id)
    return _change_status(request, order_id, change["status"], user_id=None, expected_status=expected_status)


def public_order(order):
    """The order as the API shows it (its lines included)."""
    return dict(order)


def order_etag(order):
    """A strong validator: lines never change after placing, and an order passes through each
    status at most once, so its id and status name exactly one representation."""
    return f'"order-{order["id"]}-{order["status"]}"'


def created_response(order):
    """The 201 for a new order. Also what an Idempotency-Key replays, so it depends on the
    order alone (no request id, no clock)."""
    headers = [("Location", f"/v1/orders/{order['id']}"), ("ETag", order_etag(order))]
    return Response.json(public_order(order), status=201, headers=headers)


def _place(database, user_id, lines, before_commit=None, catalogue_cache=None):
    try:
        return orders.place_order(database, user_id, lines, before_commit=before_commit,
                                  catalogue_cache=catalogue_cache)
    except orders.UnknownItems as refused:
        unknown = set(refused.item_ids)
        raise UnprocessableContent(
            [{"field": f"lines[{position}].item_id", "message": f"item {line['item_id']} does not exist"}
             for position, line in enumerate(lines) if line["item_id"] in unknown],
        ) from None
    except orders.TotalTooLarge:
        raise UnprocessableContent(
            [{"field": "lines", "message": f"the order's total may be at most {orders.MAX_TOTAL_CENTS} cents"}],
        ) from None
    except orders.OutOfStock as short:
        raise Conflict(
            f"not enough stock for item {short.item_id} ({short.name}):"
            f" {short.requested} requested, {short.available} available",
            extra={"item_id": short.item_id, "requested": short.requested, "available": short.available},
        ) from None


def _change_status(request, order_id, to_status, *, user_id, only_from=None, expected_status=None):
    try:
        order = orders.change_status(
            request.services.database, order_id, to_status,
            user_id=user_id, only_from=only_from, expected_status=expected_status,
            catalogue_cache=request.services.catalogue_cache,
        )
    except orders.StatusChanged as changed:
        raise PreconditionFailed(
            f"order {order_id} is {changed.status} now; GET it again", extra={"current_status": changed.status}
        ) from None
    except orders.InvalidTransition as refused:
        raise Conflict(
            f"order {order_id} is {refused.from_status}; it cannot become {refused.to_status}",
            extra={"current_status": refused.from_status},
        ) from None
    if order is None:
        raise NotFound(f"order {order_id} does not exist")
    return Response.json(public_order(order), headers=[("ETag", order_etag(order))])


def _if_match_status(request, order_id):
    """The status an If-Match header names for this order; None without one, or for `*`."""
    tag = if_match(request, ORDER_ETAG, order_id, what="order")
    return None if tag is None or tag == IF_MATCH_ANY else tag["status"]


def _order_lines(document):
    """The checked lines; every problem (each bad entry, each repeated item) in one 422."""
    try:
        lines, errors = validate(document, ORDER_FIELDS)["lines"], []
    except UnprocessableContent as refused:
        lines, errors = None, list(refused.errors)
    errors += _repeated_items(document)
    if errors:
        raise UnprocessableContent(errors)
    return lines


def _repeated_items(document):
    """An error for each line that names an item an earlier line already named."""
    entries = document.get("lines") if isinstance(document, dict) else None
    if not isinstance(entries, list) or len(entries) > orders.MAX_LINES:
        return []  # the list itself is refused; one error says so
    first_position, errors = {}, []
    for position, entry in enumerate(entries):
        item_id = entry.get("item_id") if isinstance(entry, dict) else None
        if not isinstance(item_id, int) or isinstance(item_id, bool):
            continue  # validation names this entry's own problem
        if item_id in first_position:
            errors.append({
                "field": f"lines[{position}].item_id",
                "message": f"item {item_id} is already in lines[{first_position[item_id]}]; one line per item",
            })
        first_position.setdefault(item_id, position)
    return errors


def _owner_filter(request):
    """None for an admin (every order), else the caller's id (their orders only)."""
    return None if request.user["role"] == "admin" else request.user["id"]


def _order_filters(request):
    filters = {}
    status = STATUS_FILTER.read(request.query)
    if status is not None:
        filters["status"] = status
    for spec in TIME_FILTERS:
        text = spec.read(request.query)
        if text is not None:
            filters[spec.name] = _timestamp(spec.name, text)
    if "created_from" in filters and "created_to" in filters and filters["created_from"] > filters["created_to"]:
        raise BadRequest("'created_from' is after 'created_to'")
    return filters


def _timestamp(name, text):
    """An RFC 3339 date-time with an offset, or a full date (midnight UTC), as stored text."""
    day = parse_date(text)
    moment = parse_date_time(text) if day is None else dt.datetime.combine(day, dt.time(), dt.UTC)
    if moment is not None:
        try:
            return db.utc_text(moment)
        except OverflowError:  # 9999-12-31T23:59:59-01:00 is in the year 10000 in UTC
            pass
    raise BadRequest(f"'{name}' must be a date (2026-11-28) or an RFC 3339 time with an offset (2026-11-28T09:00:00Z)")


def _release_quietly(request, claim):
    """Give the key back without hiding the error being answered: if even that fails, the
    key stays "running" and is free again after idempotency.LEASE_SECONDS."""
    try:
        idempotency.release(request.services.database, claim)
    except Exception as error:
        request.services.logger.warning(
            "idempotency key not released", request_id=request.request_id, error=type(error).__name__
        )
