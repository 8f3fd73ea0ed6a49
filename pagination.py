"""Pages of a list: limit and offset, or a signed keyset cursor; sorting from an allow-list.

Two ways through a long list, both with `limit` (default 20, at most 100):

    GET /v1/items?limit=20&offset=40         offset: skip 40 rows. Simple, lets a client jump
                                             to any page, but the database still walks the 40
                                             skipped rows, and a row inserted meanwhile shifts
                                             every later page by one.
    GET /v1/items?limit=20&cursor=eyJ...     keyset: "the 20 rows after this one", found with
                                             the sort index, as fast on page 500 as on page 1,
                                             and stable while rows come and go.

A request without `offset` pages by cursor. The cursor is opaque to the client: the sort, a
fingerprint of the filters and the last row's sort values, signed (signing.sign_value) so a
tampered or foreign cursor is a 400 rather than a query we never meant to run.

`sort=-price_cents,name` names columns from an allow-list ("-" for descending); anything
else is a 400, so no client text ever reaches SQL. `id` always ends the order: it is unique,
so ties are broken the same way on every request and every row has one place in the list.

Pages are told complete without COUNT(*): we fetch `limit + 1` rows, and an extra row means
there is a next page. Counting every match on every page costs more than the page itself.

This module is the HTTP side of a list; sql_paging.py turns the checked `Page` into SQL.
"""

import hashlib
import json
from dataclasses import dataclass
from urllib.parse import urlencode

from signing import sign_value, unsign_value
from validation import Query
from web import BadRequest, query_value

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_OFFSET = 100_000  # past this, keyset cursors are the way: an offset walks every skipped row
MAX_SORT_KEYS = 3
CURSOR_PURPOSE = "cursor"
MAX_CURSOR_CHARS = 2000  # documented only: a longer cursor fails its signature check anyway
LIMIT = Query("limit", "integer", minimum=1, maximum=MAX_LIMIT, default=DEFAULT_LIMIT,
              description="rows per page")
OFFSET = Query("offset", "integer", minimum=0, maximum=MAX_OFFSET,
               description="rows to skip (offset paging; leave out to page by cursor)")
CURSOR = Query("cursor", "string", max_length=MAX_CURSOR_CHARS,
               description="`pagination.next_cursor` of the page before (keyset paging), as the server"
                           " made and signed it; never with `offset`")


@dataclass(frozen=True)
class Page:
    """What a list request asked for, checked: how many rows, from where, in which order."""

    limit: int
    offset: int | None         # None when paging by cursor
    sort: tuple                # ((column, descending), ...), always ending with ("id", ...)
    after: tuple | None        # the sort values of the last row already seen (cursor mode)
    cursor: str | None         # the cursor as received, for the `self` link
    sort_text: str             # the sort as the client wrote it, for links
    filters_fingerprint: str   # binds a cursor to the filters it was made for


def parse_page(query, *, sortable, default_sort, filters, keys):
    """Read limit, offset, cursor and sort from a parsed query (see web.parse_query).

    `sortable` is the allow-list of column names; `filters` the already-checked filter
    values, which a cursor must match. Raises BadRequest (400) naming the bad parameter.
    """
    limit = LIMIT.read(query)
    sort_text = query_value(query, "sort")
    if sort_text is None:
        sort_text = default_sort
    sort = parse_sort(sort_text, sortable)
    fingerprint = _fingerprint(filters)
    cursor = query_value(query, "cursor")  # checked by its signature, not by CURSOR's length
    if cursor is not None and "offset" in query:
        raise BadRequest("use either 'offset' or 'cursor', not both")
    if cursor is None:
        offset = OFFSET.read(query)
        return Page(limit, offset, sort, None, None, sort_text, fingerprint)
    state = unsign_value(cursor, keys, purpose=CURSOR_PURPOSE)
    if (
        not isinstance(state, dict)
        or state.get("sort") != sort_text
        or state.get("filters") != fingerprint
        or not isinstance(state.get("after"), list)
        or len(state["after"]) != len(sort)
    ):
        raise BadRequest("the cursor is invalid, or was made for another sort or filter")
    return Page(limit, None, sort, tuple(state["after"]), cursor, sort_text, fingerprint)


def parse_limit(query):
    """`limit` from a parsed query: DEFAULT_LIMIT when absent, 400 outside 1..MAX_LIMIT."""
    return LIMIT.read(query)


def page_parameters(sortable, default_sort):
    """The query parameters of a list sorted by columns from `sortable`, as `Query` specs:
    what parse_page reads, for the OpenAPI document and the allow-list of unknown parameters."""
    sort = Query("sort", "string", pattern=sort_pattern(sortable), default=default_sort,
                 description=f"comma-separated columns, `-` for descending, each once, at most {MAX_SORT_KEYS}"
                             f" up to `id`; choose from {', '.join(sorted(sortable))}")
    return [LIMIT, OFFSET, CURSOR, sort]


def sort_pattern(sortable):
    """A regular expression (Python's and ECMA-262's alike) for the sort texts parse_sort
    accepts, for the OpenAPI document: columns of `sortable`, each once, and at most
    MAX_SORT_KEYS of them up to `id` (keys after `id` are dropped, so they do not count).

    >>> import re
    >>> [bool(re.fullmatch(sort_pattern({"id", "name"}), text)) for text in ("-name,id", "name,name", "id,name")]
    [True, False, True]
    """
    key = "-?(?:" + "|".join(sorted(sortable)) + ")"
    # No column twice: a negative lookahead that finds one column again with a backreference.
    once = f"(?!(?:.*,)?-?({'|'.join(sorted(sortable))})(?:,.*)?,-?\\1(?:,|$))"
    few = f"{key}(?:,{key}){{0,{MAX_SORT_KEYS - 1}}}"
    if "id" not in sortable:
        return once + few
    return f"{once}(?:{few}|(?:{key},){{0,{MAX_SORT_KEYS - 1}}}-?id(?:,{key})*)"


def reject_unknown_parameters(query, allowed):
    """A 400 naming every query parameter outside `allowed`: a typo must not pass silently."""
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(unknown)}")


def parse_sort(sort_text, sortable):
    """Turn "-price_cents,name" into (("price_cents", True), ("name", False), ("id", False)).

    >>> parse_sort("-price_cents,name", {"id", "name", "price_cents"})
    (('price_cents', True), ('name', False), ('id', False))
    >>> parse_sort("-price_cents", {"id", "price_cents"})
    (('price_cents', True), ('id', True))
    """
    keys, seen = [], set()
    for part in sort_text.split(","):
        descending = part.startswith("-")
        column = part[1:] if descending else part
        if column not in sortable:  # every key is checked, also those after a unique `id`
            raise BadRequest(f"cannot sort by '{column}'; choose from {', '.join(sorted(sortable))}")
        if column in seen:
            raise BadRequest(f"'{column}' appears twice in sort")
        seen.add(column)
        keys.append((column, descending))
    columns = [column for column, _ in keys]
    if "id" in columns:
        # id is unique, so keys after it cannot change the order: they are dropped.
        keys = keys[: columns.index("id") + 1]
    if len(keys) > MAX_SORT_KEYS:
        raise BadRequest(f"sort by at most {MAX_SORT_KEYS} fields")
    if "id" not in seen:
        # The tie-breaker runs in the direction of the last key, so `-price_cents` becomes
        # `price_cents DESC, id DESC`: one backward walk of the (price_cents, id) index.
        # With `id ASC` the database would have to sort every run of equal prices itself.
        keys.append(("id", keys[-1][1]))
    return tuple(keys)


def envelope(rows, page, *, path, query_params, keys):
    """The list body {data, pagination, links} and the RFC 8288 Link header for it.

    `rows` holds up to limit + 1 rows; the extra one only says that a next page exists.
    `query_params` are the filters to repeat in every link.
    """
    has_more = len(rows) > page.limit
    rows = rows[: page.limit]
    # Relative references (RFC 3986 §4.2) are valid in Link (RFC 8288 §3.1), and they never
    # repeat a Host header that an attacker could have chosen. The shared part of every
    # link is encoded once; what is added to it (numbers, base64url cursors) needs no escaping.
    base = path + "?" + urlencode(dict(query_params, limit=page.limit, sort=page.sort_text))
    pagination = {"limit": page.limit, "has_more": has_more}
    if page.offset is not None:
        pagination["offset"] = page.offset
        links = {"self": f"{base}&offset={page.offset}", "first": f"{base}&offset=0"}
        if page.offset > 0:
            links["prev"] = f"{base}&offset={max(0, page.offset - page.limit)}"
        if has_more:
            links["next"] = f"{base}&offset={page.offset + page.limit}"
    else:
        links = {"self": f"{base}&cursor={page.cursor}" if page.cursor else base, "first": base}
        next_cursor = None
        if has_more:
            last = rows[-1]
            state = {
                "sort": page.sort_text,
                "filters": page.filters_fingerprint,
                "after": [last[column] for column, _ in page.sort],
            }
            next_cursor = sign_value(state, keys, purpose=CURSOR_PURPOSE)
            links["next"] = f"{base}&cursor={next_cursor}"
        pagination["next_cursor"] = next_cursor
    link_header = ", ".join(f'<{url}>; rel="{rel}"' for rel, url in links.items() if rel != "self")
    return {"data": rows, "pagination": pagination, "links": links}, link_header


def _fingerprint(filters):
    canonical = json.dumps(filters, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
