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

A handler reads and checks the request, calls the SQL functions inside a connection or a
transaction, and returns the value to send. It builds no SQL and decides what None means.
"""

import pagination
import sql_items
from web import BadRequest, NotFound, Response

LIST_PARAMETERS = frozenset(
    {"limit", "offset", "cursor", "sort", "in_stock", "min_price_cents", "max_price_cents", "q"}
)
MAX_SEARCH_CHARS = 100
MAX_PRICE_CENTS = 10**12


def list_items(request):
    """GET /v1/items: a page of the catalogue, filtered and sorted."""
    services = request.services
    query = request.query
    unknown = sorted(set(query) - LIST_PARAMETERS)
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(unknown)}")
    filters = _item_filters(request)
    page = pagination.parse_page(
        query, sortable=sql_items.SORTABLE_COLUMNS, default_sort="id",
        filters=filters, keys=services.settings.secret_keys,
    )
    with services.database.connection() as connection:
        rows = sql_items.list_items(
            connection, sort=page.sort, limit=page.limit + 1, offset=page.offset, after=page.after,
            **filters,
        )
    body, link_header = pagination.envelope(
        [public_item(row) for row in rows], page, path=request.path,
        query_params=_filters_as_query(filters), keys=services.settings.secret_keys,
    )
    return Response.json(body, headers=[("Link", link_header)] if link_header else None)


def get_item(request):
    """GET /v1/items/{id}: one item, with an ETag for conditional requests."""
    item_id = request.path_params["id"]
    with request.services.database.connection() as connection:
        item = sql_items.get_item(connection, item_id)
    if item is None:
        raise NotFound(f"item {item_id} does not exist")
    # no-cache: a cache may keep the item but must revalidate it (If-None-Match) each time.
    return Response.json(public_item(item), headers=[("ETag", item_etag(item)), ("Cache-Control", "no-cache")])


def public_item(row):
    """The item as the API shows it: every column, plus the derived `in_stock`."""
    item = dict(row)
    item["in_stock"] = row["stock"] > 0
    return item


def item_etag(item):
    """A strong validator that changes with every update (the version column)."""
    return f'"item-{item["id"]}-v{item["version"]}"'


def _item_filters(request):
    filters = {}
    in_stock = request.query_value("in_stock")
    if in_stock is not None:
        if in_stock not in ("true", "false"):
            raise BadRequest("'in_stock' must be true or false")
        filters["in_stock"] = in_stock == "true"
    for name in ("min_price_cents", "max_price_cents"):
        text = request.query_value(name)
        if text is not None:
            if not (text.isascii() and text.isdigit() and len(text) <= 13) or int(text) > MAX_PRICE_CENTS:
                raise BadRequest(f"'{name}' must be a whole number of cents from 0 to {MAX_PRICE_CENTS}")
            filters[name] = int(text)
    if filters.get("min_price_cents", 0) > filters.get("max_price_cents", MAX_PRICE_CENTS):
        raise BadRequest("'min_price_cents' is greater than 'max_price_cents'")
    q = request.query_value("q")
    if q is not None:
        if not 1 <= len(q) <= MAX_SEARCH_CHARS:
            raise BadRequest(f"'q' must be 1 to {MAX_SEARCH_CHARS} characters")
        filters["name_contains"] = q
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
