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
from schemas import describe, page_of
from validation import Field, query_names, validate
from web import Conflict, NotFound, Response, UnprocessableContent

# The shape outbound.check_url accepts, for the document (where the host leads, public
# addresses only, is for check_url to find out).
URL_SHAPE = {"pattern": f"^{outbound.URL_PATTERN.pattern}$"}
WEBHOOK = [
    # The example is an address, not a name: it needs no DNS, so the document's example is
    # accepted wherever tests/test_openapi.py runs (and subscribing sends nothing).
    Field("url", "string", max_length=outbound.MAX_URL_CHARS, example="https://93.184.215.14/hooks/shop",
          checked_elsewhere=URL_SHAPE,
          description="http(s), no user:password@, a host that resolves to public addresses only"),
    Field("event_types", "choices", choices=webhooks.EVENT_TYPES),
]
LIST_QUERY = pagination.page_parameters(sql_webhooks.SORTABLE_COLUMNS, "id")
DELIVERIES_QUERY = pagination.page_parameters(sql_webhooks.SORTABLE_COLUMNS, "-id")
LIST_PARAMETERS = query_names(LIST_QUERY)


@describe(body=WEBHOOK, status=201, response="NewWebhook", response_headers=("Location",), errors=(409,))
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


@describe(response=page_of("Webhook"), query=LIST_QUERY, response_headers=("Link",))
def list_webhooks(request):
    """GET /v1/webhooks: the live subscriptions, by id, paginated like every list; no secrets."""
    page = _page(request, default_sort="id")
    found = webhooks.list_webhooks(request.services.database, sort=page.sort, limit=page.limit + 1,
                                   offset=page.offset, after=page.after)
    return _envelope(request, found, page)


@describe(response="Webhook", errors=(404,))
def get_webhook(request):
    """GET /v1/webhooks/{id}: one subscription, without its secret."""
    return _live_webhook(request)


@describe(status=204, errors=(404,))
def delete_webhook(request):
    """DELETE /v1/webhooks/{id}: no more deliveries; events already queued end unsent."""
    webhook_id = request.path_params["id"]
    if not webhooks.delete_webhook(request.services.database, webhook_id):
        raise NotFound(f"webhook {webhook_id} does not exist")
    return Response(status=204)


@describe(response=page_of("WebhookDelivery"), query=DELIVERIES_QUERY, response_headers=("Link",), errors=(404,))
def list_deliveries(request):
    """GET /v1/webhooks/{id}/deliveries: every attempt, newest first, paginated."""
    page = _page(request, default_sort="-id")  # a bad query is a 400 whether or not the webhook exists
    webhook = _live_webhook(request)
    found = webhooks.list_deliveries(request.services.database, webhook["id"], sort=page.sort,
                                     limit=page.limit + 1, offset=page.offset, after=page.after)
    return _envelope(request, found, page)


def _subscription(document):
    """The URL and event types of a POST body, every problem of both in one 422. The URL's
    form is checked here; where its host resolves to, by the service."""
    try:
        body, errors = validate(document, WEBHOOK), []
    except UnprocessableContent as refused:
        body, errors = None, list(refused.errors)
        if errors and errors[0]["field"] == "":  # not an object: nothing more to say
            raise
    url = body["url"] if body is not None else document.get("url")
    if isinstance(url, str) and not any(error["field"] == "url" for error in errors):
        try:
            outbound.check_url(url)
        except outbound.Refused as refused:
            errors.insert(0, {"field": "url", "message": str(refused)})
    if errors:
        raise UnprocessableContent(errors)
    return body["url"], body["event_types"]


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
