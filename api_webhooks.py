"""Handlers for webhook subscriptions (admin only): subscribe, list, delete, read the log.

    $ curl -X POST localhost:8000/v1/webhooks -H "Authorization: Bearer $ADMIN_TOKEN" \\
           -H 'Content-Type: application/json' \\
           -d '{"url": "https://erp.example/hooks/shop", "event_types": ["order.paid"]}'
    201 {"id": 1, "url": "https://erp.example/hooks/shop", "event_types": ["order.paid"],
         "created_at": "...", "secret": "whsec_..."}          <- the secret, this once only

    $ curl localhost:8000/v1/webhooks/1/deliveries -H "Authorization: Bearer $ADMIN_TOKEN"
    {"data": [{"id": 7, "message_id": "msg_...", "event_type": "order.paid", "attempt": 2,
               "status_code": 200, "duration_ms": 41, "error": null, ...}, ...], ...}

A URL that the shop may not send to (not http(s), a user:password@ part, a host that
resolves to a loopback, private or link-local address, ...) is a 422 naming `url`, and
nothing is sent to it (webhooks.py, outbound.py).
"""

import outbound
import pagination
import sql_webhooks
import webhooks
from validation import Field, validate
from web import Conflict, NotFound, Response, UnprocessableContent

WEBHOOK = [Field("url", "string", max_length=outbound.MAX_URL_CHARS)]
LIST_PARAMETERS = frozenset({"limit", "offset", "cursor", "sort"})


def create_webhook(request):
    """POST /v1/webhooks: subscribe a URL to order events; 201 with the secret, shown once."""
    url, event_types = _subscription(request.json())
    settings = request.services.settings
    try:
        webhook, secret = webhooks.create_webhook(request.services.database, url, event_types,
                                                  allow_private=settings.webhook_allow_private)
    except outbound.Refused as refused:
        raise UnprocessableContent([{"field": "url", "message": str(refused)}]) from None
    except webhooks.TooManyWebhooks:
        raise Conflict(f"there are {webhooks.MAX_WEBHOOKS} webhooks already, the most there may be;"
                       " delete one first") from None
    return Response.json(dict(webhook, secret=secret), status=201,
                         headers=[("Location", f"/v1/webhooks/{webhook['id']}")])


def list_webhooks(request):
    """GET /v1/webhooks: the live subscriptions, by id, paginated like every list; no secrets."""
    page = _page(request, default_sort="id")
    found = webhooks.list_webhooks(request.services.database, sort=page.sort, limit=page.limit + 1,
                                   offset=page.offset, after=page.after)
    return _envelope(request, found, page)


def get_webhook(request):
    """GET /v1/webhooks/{id}: one subscription, without its secret."""
    return _live_webhook(request)


def delete_webhook(request):
    """DELETE /v1/webhooks/{id}: no more deliveries; events already queued end unsent."""
    webhook_id = request.path_params["id"]
    if not webhooks.delete_webhook(request.services.database, webhook_id):
        raise NotFound(f"webhook {webhook_id} does not exist")
    return Response(status=204)


def list_deliveries(request):
    """GET /v1/webhooks/{id}/deliveries: every attempt, newest first, paginated."""
    webhook = _live_webhook(request)
    page = _page(request, default_sort="-id")
    found = webhooks.list_deliveries(request.services.database, webhook["id"], sort=page.sort,
                                     limit=page.limit + 1, offset=page.offset, after=page.after)
    return _envelope(request, found, page)


def _subscription(document):
    """The URL and event types of a POST body, every problem of both in one 422. The URL's
    form is checked here; where its host resolves to, by the service."""
    errors, event_types_given = [], None
    if isinstance(document, dict):
        event_types_given = document.get("event_types")
        document = {name: value for name, value in document.items() if name != "event_types"}
    try:
        url = validate(document, WEBHOOK)["url"]
    except UnprocessableContent as refused:
        url, errors = None, list(refused.errors)
        if errors and errors[0]["field"] == "":  # not an object: nothing more to say
            raise
    if url is not None:
        try:
            outbound.check_url(url)
        except outbound.Refused as refused:
            errors.append({"field": "url", "message": str(refused)})
    event_types, message = _event_types(event_types_given)
    if message is not None:
        errors.append({"field": "event_types", "message": message})
    if errors:
        raise UnprocessableContent(errors)
    return url, event_types


def _event_types(value):
    """(the event types, None) or (None, what is wrong with them)."""
    choices = ", ".join(webhooks.EVENT_TYPES)
    if value is None:
        return None, "is required"
    if not isinstance(value, list) or not 1 <= len(value) <= len(webhooks.EVENT_TYPES):
        return None, f"must be a list of 1 to {len(webhooks.EVENT_TYPES)} of: {choices}"
    if any(event_type not in webhooks.EVENT_TYPES for event_type in value):
        return None, f"must hold only: {choices}"
    if len(set(value)) != len(value):
        return None, "must name each event type once"
    return value, None


def _live_webhook(request):
    webhook_id = request.path_params["id"]
    webhook = webhooks.get_webhook(request.services.database, webhook_id)
    if webhook is None:
        raise NotFound(f"webhook {webhook_id} does not exist")
    return webhook


def _page(request, *, default_sort):
    pagination.reject_unknown_parameters(request.query, LIST_PARAMETERS)
    return pagination.parse_page(request.query, sortable=sql_webhooks.SORTABLE_COLUMNS, default_sort=default_sort,
                                 filters={}, keys=request.services.settings.secret_keys)


def _envelope(request, rows, page):
    body, link_header = pagination.envelope(rows, page, path=request.path, query_params={},
                                            keys=request.services.settings.secret_keys)
    return Response.json(body, headers=[("Link", link_header)] if link_header else None)
