"""What schemathesis cannot learn from the document: the rules that tie a request to the state
of the shop or to another parameter, which JSON Schema has no words for.

Schemathesis sends two kinds of requests. A *negative* one breaks the document on purpose and
must be refused (a 4xx); a *positive* one obeys it and must be accepted (`positive_data_acceptance`).
The document (openapi.py) says every rule it can: types, bounds, patterns, the fields a body
needs together. What no schema can say is a value that only the server can make, or that
depends on another parameter or on what happened before:

    a cursor              signed by the server (pagination.py): a schema gives its length,
                          not its signature. Positive requests leave it out; the stateful
                          phase follows the `next` links the server makes.
    an Idempotency-Key    may be sent again only with the same body (a 422 otherwise,
                          documented): positive requests get a key not used before.
    bounds in pairs       `from` no later than `to` (and at most a year apart, for reports),
                          `min_price_cents` no more than `max_price_cents`, `created_from`
                          no later than `created_to`: positive requests make the upper bound
                          equal to the lower one. A report's `from` alone reaches to today,
                          which may be more than a year: positive requests send `to` with it.
                          `limit` goes with group_by=item only.
    an order's items      must be in the catalogue, each on one line (else a 422 naming the
                          line): positive requests name distinct items of those the test
                          seeded (FUZZ_ITEMS of them, as many as an order may have lines),
                          and a DELETE of one of those (negative ones too: see below)
                          archives the item as many ids further on instead (one the fuzzer
                          made, or a 404), so that they stay.
    a new password        must not be on the list of common passwords (passwords.py): positive
                          requests add a few words to one that is.
    a webhook's URL       its host must resolve to a public address (outbound.py), which the
                          fuzzer cannot know: positive requests keep its path, on the
                          documented example's address (a literal: no DNS).

Each change applies to positive requests only, and only to the value the rule is about:
negative requests reach the server as generated, so every refusal is still tested. The one
exception moves a DELETE off the seeded items whatever the request, and changes no value
that makes a request negative.
Loaded by schemathesis.toml (`hooks`), in the `st` process, not in pytest's.
"""

import itertools
import os
import sys
from pathlib import Path

import schemathesis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project, for passwords.py
import passwords

MAX_KEY_PREFIX_CHARS = 240  # a fuzzed key, cut to leave room for the counter (keys: at most 255)
WEBHOOK_HOST = "93.184.215.14"  # the document's example address: public, and needs no DNS
SEEDED_ITEMS = int(os.environ.get("FUZZ_ITEMS", "50"))  # items 1..SEEDED_ITEMS are in the catalogue
# (lower bound, upper bound) pairs of query parameters or body fields.
BOUNDS = (("from", "to"), ("min_price_cents", "max_price_cents"), ("created_from", "created_to"))
REPORT_ROUTES = {("GET", "/v1/reports/sales"), ("POST", "/v1/reports/orders-export")}
NEW_PASSWORD_ROUTES = {("POST", "/v1/auth/register"), ("PATCH", "/v1/users/me")}
_fresh_numbers = itertools.count(1)


@schemathesis.hook
def before_call(context, case, kwargs):
    """Make a positive case obey the rules the document cannot state; leave negative ones be."""
    route = (case.method.upper(), case.path)
    # Negative ones too: a request negative only in a part the server ignores (an unknown
    # header) archives the item all the same. The id itself stays as generated when it is
    # not a seeded item's, so what makes the request negative is untouched.
    item_id = str((case.path_parameters or {}).get("id"))  # an int, or its text (coverage phase)
    if route == ("DELETE", "/v1/items/{id}") and item_id.isdigit() and 1 <= int(item_id) <= SEEDED_ITEMS:
        case.path_parameters = {**case.path_parameters, "id": int(item_id) + SEEDED_ITEMS}
    if case.meta is not None and not case.meta.generation.mode.is_positive:
        return
    if case.query and "cursor" in case.query:
        case.query = {name: value for name, value in case.query.items() if name != "cursor"}
    if case.headers and "Idempotency-Key" in case.headers:
        key = str(case.headers["Idempotency-Key"])[:MAX_KEY_PREFIX_CHARS]
        case.headers = {**case.headers, "Idempotency-Key": f"{key}.{next(_fresh_numbers)}"}
    report = route in REPORT_ROUTES
    if case.query:
        case.query = _bounds_in_order(case.query, report=report)
    body = case.body if isinstance(case.body, dict) else None
    if body is not None:
        case.body = body = _bounds_in_order(body, report=report)
    if route == ("GET", "/v1/reports/sales") and case.query and case.query.get("group_by", "day") != "item":
        case.query = {name: value for name, value in case.query.items() if name != "limit"}
    if route == ("POST", "/v1/webhooks") and body is not None and isinstance(body.get("url"), str):
        case.body = {**body, "url": _on_public_host(body["url"])}
    if route == ("POST", "/v1/orders") and body is not None and isinstance(body.get("lines"), list):
        case.body = {**body, "lines": _distinct_items(body["lines"])}
    if (route in NEW_PASSWORD_ROUTES and body is not None and isinstance(body.get("password"), str)
            and "is a commonly used password" in passwords.password_problems(body["password"])):
        case.body = {**body, "password": body["password"] + " and a pot of tea"}


def _bounds_in_order(values, *, report=False):
    """`values` with each upper bound set to its lower bound, where both are there (and a
    report's `to` where its `from` is alone)."""
    for low, high in BOUNDS:
        if low in values and (high in values or (report and low == "from")):
            values = {**values, high: values[low]}
    return values


def _distinct_items(lines):
    """The lines, each naming another of the seeded items (1..SEEDED_ITEMS): its own id when
    that is one and still free, else the next free one."""
    taken, moved = set(), []
    for line in lines:
        item_id = line.get("item_id") if isinstance(line, dict) else None
        # A whole number, written 7 or 7.0 (JSON's one kind of number), and not `true`.
        if isinstance(item_id, (int, float)) and not isinstance(item_id, bool) and item_id == int(item_id) \
                and len(taken) < SEEDED_ITEMS:
            item_id = 1 + (int(item_id) - 1) % SEEDED_ITEMS
            while item_id in taken:
                item_id = item_id % SEEDED_ITEMS + 1
            taken.add(item_id)
            moved.append({**line, "item_id": item_id})
        else:
            moved.append(line)
    return moved


def _on_public_host(url):
    """The URL with its host part (between :// and the first / or ?) replaced by WEBHOOK_HOST,
    cut by hand: urlsplit refuses a host part it cannot read, and that is the part to replace."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    ends = [position for position in (rest.find("/"), rest.find("?")) if position >= 0]
    return f"{scheme}://{WEBHOOK_HOST}{rest[min(ends, default=len(rest)):]}"
