"""Handlers for the public catalogue: HTTP in, plain values out.

    $ curl -i 'http://127.0.0.1:8000/v1/items?limit=2&sort=-price_cents&in_stock=true'
    HTTP/1.1 200 OK
    Link: </v1/items?in_stock=true&limit=2&sort=-price_cents>; rel="first", </v1/items?...&cursor=eyJ...>; rel="next"

    {"data": [{"id": 17, "name": "...", "price_cents": 9900, ...}, ...],
     "pagination": {"limit": 2, "has_more": true, "next_cursor": "eyJ..."},
     "links": {"self": "...", "first": "...", "next": "..."}}

    $ curl -i http://127.0.0.1:8000/v1/items/17
    HTTP/1.1 200 OK
    ETag: "item-17-v1"
    X-Cache: MISS

A handler reads and checks the request, calls the SQL functions inside a connection or a
transaction, and returns the value to send. It builds no SQL and decides what None means.

The two reads go through the catalogue's cache (cache.py, cache-aside): the answer as
sent is kept, and `X-Cache` says whether this one came from there (HIT) or from the
database (MISS). Every caller gets the same answer, an admin included (archived items are
hidden from everyone), so one shared entry per item and per page is right; nothing that
depends on who asks may ever go through it. Each write below, and each order that moves
stock (orders.py), calls `invalidate()` after its COMMIT, so no one reads old data after it.
"""

import re

import cache
import db
import metrics
import pagination
import sql_items
from schemas import describe, page_of
from validation import Field, Query, query_names, validate
from web import (
    IF_MATCH_ANY,
    JSON_TYPE,
    BadRequest,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
    Response,
    if_match,
    json_body,
)

MAX_SEARCH_CHARS = 100
MAX_PRICE_CENTS = 10**12
MAX_STOCK = 1_000_000_000
ITEM_FIELDS = [
    Field("name", "string", max_length=200, example="Green tea"),
    Field("description", "string", required=False, min_length=0, max_length=5000, default=""),
    Field("price_cents", "integer", minimum=0, maximum=MAX_PRICE_CENTS, example=450),
    Field("stock", "integer", minimum=0, maximum=MAX_STOCK, example=20),
]
FILTERS = [
    Query("in_stock", "boolean", description="only items in stock (true) or sold out (false)"),
    Query("min_price_cents", "integer", minimum=0, maximum=MAX_PRICE_CENTS, unit="cents"),
    Query("max_price_cents", "integer", minimum=0, maximum=MAX_PRICE_CENTS, unit="cents"),
    Query("q", "string", max_length=MAX_SEARCH_CHARS, description="a part of the name", example="tea"),
]
LIST_QUERY = pagination.page_parameters(sql_items.SORTABLE_COLUMNS, "id") + FILTERS
LIST_PARAMETERS = query_names(LIST_QUERY)
# If-Match uses the strong comparison (RFC 9110 §13.1.1): a weak W/"..." tag never matches,
# and neither does "item-08-v1", which is not the same string as the "item-8-v1" we sent.
ITEM_ETAG = re.compile(r'"item-(?P<id>[1-9][0-9]{0,17})-v(?P<version>[1-9][0-9]{0,8})"')


@describe(response=page_of("Item"), query=LIST_QUERY, response_headers=("Link", "X-Cache"))
def list_items(request):
    """GET /v1/items: a page of the catalogue, filtered and sorted."""
    services = request.services
    query = request.query
    pagination.reject_unknown_parameters(query, LIST_PARAMETERS)
    filters = _item_filters(request)
    page = pagination.parse_page(
        query, sortable=sql_items.SORTABLE_COLUMNS, default_sort="id",
        filters=filters, keys=services.settings.secret_keys,
    )

    def read_page():
        with services.database.connection() as connection:
            rows = sql_items.list_items(
                connection, sort=page.sort, limit=page.limit + 1, offset=page.offset, after=page.after,
                **filters,
            )
        body, link_header = pagination.envelope(
            [public_item(row) for row in rows], page, path=request.path,
            query_params=_filters_as_query(filters), keys=services.settings.secret_keys,
        )
        return cache.CachedResponse(json_body(body), (("Link", link_header),) if link_header else ())

    # The key is the query as sent: the page depends on nothing else (the query string is
    # checked and bounded above). `?limit=2&sort=id` and `?sort=id&limit=2` get an entry each.
    return _through_cache(request, "page:" + request.environ.get("QUERY_STRING", ""), read_page)


@describe(response="Item", errors=(404,), response_headers=("ETag", "X-Cache"))
def get_item(request):
    """GET /v1/items/{id}: one item, with an ETag for conditional requests."""
    item_id = request.path_params["id"]

    def read_item():
        with request.services.database.connection() as connection:
            item = sql_items.get_item(connection, item_id)
        if item is None:
            return None  # answered with a 404, never stored: the item may be added next
        return cache.CachedResponse(json_body(public_item(item)), (("ETag", item_etag(item)),))

    response = _through_cache(request, f"item:{item_id}", read_item)
    if response is None:
        raise NotFound(f"item {item_id} does not exist")
    # no-cache: a cache may keep the item but must revalidate it (If-None-Match) each time.
    response.headers.append(("Cache-Control", "no-cache"))
    return response


@describe(response="Item", status=201, body=ITEM_FIELDS, response_headers=("Location", "ETag"))
def create_item(request):
    """POST /v1/items (admin): 201, the item, its Location and ETag."""
    fields = validate(request.json(), ITEM_FIELDS)
    with request.services.database.transaction() as connection:
        item = sql_items.insert_item(connection, fields, db.utc_now())
    _catalogue_changed(request)
    headers = [("Location", f"/v1/items/{item['id']}"), ("ETag", item_etag(item))]
    return Response.json(public_item(item), status=201, headers=headers)


@describe(response="Item", body=ITEM_FIELDS, partial=True, headers=("If-Match (required)",),
          errors=(404, 412, 428), response_headers=("ETag",))
def update_item(request):
    """PATCH /v1/items/{id} (admin): change fields of the version named by If-Match.

    Optimistic concurrency: the client sends back the ETag it read; if someone changed the
    item since, the versions differ and the answer is 412, so no update is lost unseen.
    """
    item_id = request.path_params["id"]
    expected_version = _if_match_version(request, item_id, required=True)
    changes = validate(request.json(), ITEM_FIELDS, partial=True)
    with request.services.database.transaction() as connection:
        # The UPDATE checks the version itself: a read first and a compare in Python would
        # let a writer slip in between (on PostgreSQL, whose transactions run side by side).
        item = sql_items.update_item(connection, item_id, expected_version, changes, db.utc_now())
        if item is None:
            _raise_missing_or_changed(connection, item_id)
    _catalogue_changed(request)
    return Response.json(public_item(item), headers=[("ETag", item_etag(item))])


@describe(status=204, headers=("If-Match",), errors=(404, 412))
def delete_item(request):
    """DELETE /v1/items/{id} (admin): archive the item (204). If-Match, when sent, must match.

    Archived, not deleted: orders keep pointing at the row, and its id is never reused.
    """
    item_id = request.path_params["id"]
    expected_version = _if_match_version(request, item_id, required=False)
    with request.services.database.transaction() as connection:
        if not sql_items.archive_item(connection, item_id, db.utc_now(), expected_version):
            _raise_missing_or_changed(connection, item_id)
    _catalogue_changed(request)
    return Response(status=204)


def public_item(row):
    """The item as the API shows it: every column, plus the derived `in_stock`."""
    item = dict(row)
    item["in_stock"] = row["stock"] > 0
    return item


def item_etag(item):
    """A strong validator that changes with every update (the version column)."""
    return f'"item-{item["id"]}-v{item["version"]}"'


def _through_cache(request, key, read):
    """The answer for `key`: from the catalogue's cache, or from read() (the database) on a
    miss, then kept for the next reader. None when read() found nothing (never kept).

    With CACHE=off there is no cache: read() every time, and no X-Cache header.
    """
    catalogue = request.services.catalogue_cache
    if catalogue is None:
        answer, x_cache = read(), None
    else:
        answer, hit = catalogue.fetch(key, read)
        x_cache = "HIT" if hit else "MISS"
        metrics.RECORDER.count("cache_requests_total", "catalogue", "hit" if hit else "miss")
    if answer is None:
        return None
    headers = [("Content-Type", JSON_TYPE), *answer.headers]
    if x_cache is not None:
        headers.append(("X-Cache", x_cache))
    return Response(answer.body, 200, headers)


def _catalogue_changed(request):
    """After a COMMIT that changed items: no cached answer from before it is served again."""
    catalogue = request.services.catalogue_cache
    if catalogue is not None:
        catalogue.invalidate()


def _raise_missing_or_changed(connection, item_id):
    """A conditional write matched nothing: 404 if the item is gone, else 412."""
    if sql_items.get_item(connection, item_id) is None:
        raise NotFound(f"item {item_id} does not exist")
    raise PreconditionFailed("the item changed since you read it; GET it again")


def _if_match_version(request, item_id, *, required):
    """The version an If-Match header names for this item; None for `*` (whatever version
    exists) or, when not `required`, for no If-Match at all (428 when it is required)."""
    tag = if_match(request, ITEM_ETAG, item_id, what="item")
    if tag is None and required:
        raise PreconditionRequired("send If-Match with the item's ETag")
    if tag is None or tag == IF_MATCH_ANY:
        return None
    return int(tag["version"])


def _item_filters(request):
    """The FILTERS the request sets, each read by its spec; `q` becomes `name_contains`."""
    filters = {}
    for spec in FILTERS:
        value = spec.read(request.query)
        if value is not None:
            filters["name_contains" if spec.name == "q" else spec.name] = value
    if filters.get("min_price_cents", 0) > filters.get("max_price_cents", MAX_PRICE_CENTS):
        raise BadRequest("'min_price_cents' is greater than 'max_price_cents'")
    return filters


def _filters_as_query(filters):
    """The filters as query parameters again, for the links to other pages."""
    query = {}
    if "in_stock" in filters:
        query["in_stock"] = "true" if filters["in_stock"] else "false"
    for name in ("min_price_cents", "max_price_cents"):
        if name in filters:
            query[name] = filters[name]
    if "name_contains" in filters:
        query["q"] = filters["name_contains"]
    return query
