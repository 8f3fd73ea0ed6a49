"""Field rules for JSON bodies: check every field, then answer once with every problem.

A handler lists the fields a body may have; `validate` returns the clean values or raises
one 422 that names each bad field, so a client fixes all of them in one round trip:

    >>> ITEM = [Field("name", "string", max_length=200), Field("price_cents", "integer", minimum=0)]
    >>> validate({"name": "Tea", "price_cents": 450}, ITEM)
    {'name': 'Tea', 'price_cents': 450}
    >>> try:
    ...     validate({"name": "", "price_cents": -1, "role": "admin"}, ITEM)
    ... except UnprocessableContent as error:
    ...     for problem in error.errors:
    ...         print(problem)
    {'field': 'role', 'message': 'is not a known field'}
    {'field': 'name', 'message': 'must be 1 to 200 characters'}
    {'field': 'price_cents', 'message': 'must be a whole number of at least 0'}

Unknown fields are errors, not silently dropped: a client sending `role` or `id` learns at
once that it cannot set them (mass assignment), instead of believing it did.

Dates and times in query strings are read here too, by RFC 3339 (§5.6) and nothing looser:

    >>> parse_date("2026-11-28"), parse_date("2026-W48-6")
    (datetime.date(2026, 11, 28), None)
    >>> parse_date_time("2026-11-28T09:00:00+01:00")
    datetime.datetime(2026, 11, 28, 9, 0, tzinfo=datetime.timezone(datetime.timedelta(seconds=3600)))
"""

import datetime as dt
import re

from web import BadRequest, UnprocessableContent

# Deliberately simple (RFC 5321 is far larger): one @, no spaces, a dot in the domain.
# The real check of an address is a message that arrives.
EMAIL_PATTERN = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")
MAX_EMAIL_CHARS = 254  # RFC 5321 §4.5.3.1.3: the longest path a mail server accepts
MAX_INTEGER = 2**53 - 1  # the largest integer every JSON client (JavaScript too) reads exactly
# RFC 3339 §5.6: full-date, and date-time with a time offset (fractions up to microseconds).
RFC3339_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
RFC3339_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


class Field:
    """One field of a JSON object: its name, kind ("string", "integer", "email", "list") and limits.

    A "list" holds `min_length` to `max_length` objects, each checked against `item_fields`.
    """

    def __init__(self, name, kind, *, required=True, min_length=1, max_length=None,
                 minimum=None, maximum=MAX_INTEGER, choices=None, default=None, item_fields=None):
        self.name = name
        self.kind = kind
        self.required = required
        self.min_length = min_length
        self.max_length = max_length
        self.minimum = minimum
        self.maximum = maximum
        self.choices = choices
        self.default = default
        self.item_fields = item_fields
        if kind == "list" and (max_length is None or item_fields is None):
            # Every count a client controls has a limit: a list without one is a bug here.
            raise ValueError(f"list field {name!r} needs max_length and item_fields")

    def check(self, value):
        """Return (clean value, None) or (None, message). A "list" goes through `check_list`."""
        if self.kind == "integer":
            # bool is an int in Python, but `true` is not a number in JSON.
            if not isinstance(value, int) or isinstance(value, bool):
                return None, "must be a whole number"
            low = self.minimum if self.minimum is not None else -MAX_INTEGER
            if not low <= value <= self.maximum:
                if self.maximum == MAX_INTEGER and value < low:
                    return None, f"must be a whole number of at least {low}"
                return None, f"must be a whole number from {low} to {self.maximum}"
            return value, None
        if not isinstance(value, str):
            return None, "must be a string"
        # PostgreSQL cannot store U+0000 in TEXT (the driver raises), and SQLite's length()
        # stops at it, so a CHECK on the length judges another string. JSON allows it.
        if "\x00" in value:
            return None, "must not contain the NUL character"
        if self.kind == "email":
            email = value.strip().lower()
            if len(email) > MAX_EMAIL_CHARS or not EMAIL_PATTERN.fullmatch(email):
                return None, "must be an email address"
            return email, None
        if self.choices is not None and value not in self.choices:
            return None, f"must be one of: {', '.join(self.choices)}"
        if self.max_length is not None and not self.min_length <= len(value) <= self.max_length:
            return None, f"must be {self.min_length} to {self.max_length} characters"
        return value, None

    def check_list(self, value):
        """Return (clean list, []) or (None, errors), each error naming its entry: `lines[2].quantity`."""
        if not isinstance(value, list):
            return None, [{"field": self.name, "message": "must be a list"}]
        if not self.min_length <= len(value) <= self.max_length:
            return None, [{"field": self.name, "message": f"must hold {self.min_length} to {self.max_length} entries"}]
        clean, errors = [], []
        for position, entry in enumerate(value):
            if not isinstance(entry, dict):
                errors.append({"field": f"{self.name}[{position}]", "message": "must be a JSON object"})
                continue
            try:
                clean.append(validate(entry, self.item_fields))
            except UnprocessableContent as refused:
                for error in refused.errors:
                    path = f"{self.name}[{position}]" + (f".{error['field']}" if error["field"] else "")
                    errors.append({"field": path, "message": error["message"]})
        return (None, errors) if errors else (clean, [])


def validate(document, fields, *, partial=False):
    """Check a parsed JSON body against `fields`; return {name: clean value}.

    `partial=True` (PATCH) makes every field optional, but at least one must be present.
    Raises UnprocessableContent (422) listing every problem.
    """
    if not isinstance(document, dict):
        raise UnprocessableContent([{"field": "", "message": "the body must be a JSON object"}])
    known = {field.name: field for field in fields}
    errors = [{"field": name, "message": "is not a known field"} for name in document if name not in known]
    clean = {}
    for field in fields:
        if field.name not in document:
            if field.required and not partial:
                errors.append({"field": field.name, "message": "is required"})
            elif field.default is not None and not partial:
                clean[field.name] = field.default
            continue
        if field.kind == "list":
            value, list_errors = field.check_list(document[field.name])
            errors.extend(list_errors)
            if not list_errors:
                clean[field.name] = value
            continue
        value, message = field.check(document[field.name])
        if message:
            errors.append({"field": field.name, "message": message})
        else:
            clean[field.name] = value
    if partial and not errors and not clean:
        errors.append({"field": "", "message": f"send at least one of: {', '.join(known)}"})
    if errors:
        raise UnprocessableContent(errors)
    return clean


def query_choice(request, name, allowed):
    """The value of query parameter `name` when it is one of `allowed`; None when absent.
    Anything else is a 400 that lists the choices (a filter, like a sort key, is allow-listed)."""
    value = request.query_value(name)
    if value is not None and value not in allowed:
        raise BadRequest(f"'{name}' must be one of: {', '.join(allowed)}")
    return value


def parse_date(text):
    """An RFC 3339 full-date (YYYY-MM-DD) as a date; None when `text` is not one.

    The pattern comes first: Python's fromisoformat also reads ISO 8601 forms that RFC 3339
    leaves out (week dates such as 2026-W48-6, 20261128), which must be refused, not guessed.
    """
    if not RFC3339_DATE.fullmatch(text):
        return None
    return _parsed(dt.date.fromisoformat, text)


def parse_date_time(text):
    """An RFC 3339 date-time with its offset (Z or +hh:mm) as an aware datetime; None when
    `text` is not one (no offset, a week date, hours alone, a 61st minute)."""
    if not RFC3339_DATE_TIME.fullmatch(text):
        return None
    return _parsed(dt.datetime.fromisoformat, text.upper().replace("Z", "+00:00"))


def _parsed(parse, text):
    try:
        return parse(text)
    except ValueError:  # the right shape, but no such day or time (2026-02-30)
        return None
