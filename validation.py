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

The same `Field` lists are the request bodies of the OpenAPI document (openapi.py): each
field describes itself as JSON Schema, so the document and the check cannot disagree:

    >>> object_schema(ITEM)["properties"]["price_cents"]
    {'type': 'integer', 'minimum': 0, 'maximum': 9007199254740991, 'examples': [1]}

Query parameters are declared the same way, as `Query` specs that read a request's value
and describe themselves to the document:

    >>> Query("in_stock", "boolean").json_schema()
    {'type': 'string', 'enum': ['true', 'false']}

Dates and times in query strings are read here too, by RFC 3339 (§5.6) and nothing looser:

    >>> parse_date("2026-11-28"), parse_date("2026-W48-6")
    (datetime.date(2026, 11, 28), None)
    >>> parse_date_time("2026-11-28T09:00:00+01:00")
    datetime.datetime(2026, 11, 28, 9, 0, tzinfo=datetime.timezone(datetime.timedelta(seconds=3600)))
"""

import datetime as dt
import re

from web import BadRequest, UnprocessableContent, query_value, query_whole_number

# Deliberately simple (RFC 5321 is far larger): one @, a dot in the domain, and no space or
# control character anywhere (a BEL or an ESC in an address would reach mail headers and logs).
# The real check of an address is a message that arrives. The classes are spelled out, not
# written \s, because the OpenAPI document gives the same pattern to ECMA-262 regex engines,
# whose \s is not Python's: spelled out, both read the same characters.
# What str.strip() removes: the whitespace an address may arrive wrapped in.
EMAIL_SPACE = "\\t\\n\\x0b\\x0c\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
# Never inside an address: that whitespace, every control character (C0, DEL, C1) and the BOM.
_EMAIL_CHAR = "[^@\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
EMAIL_PATTERN = re.compile(f"{_EMAIL_CHAR}]{{1,64}}@{_EMAIL_CHAR}.]+(\\.{_EMAIL_CHAR}.]+)+")
MAX_EMAIL_CHARS = 254  # RFC 5321 §4.5.3.1.3: the longest path a mail server accepts
MAX_INTEGER = 2**53 - 1  # the largest integer every JSON client (JavaScript too) reads exactly
# JSON Schema (ECMA-262 regex) for "no U+0000": the `check` below refuses it, so the schema does too.
NO_NUL_PATTERN = r"^[^\u0000]*$"
# RFC 3339 §5.6: full-date, and date-time with a time offset (fractions up to microseconds).
RFC3339_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
RFC3339_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


class Field:
    """One field of a JSON object: its name, kind ("string", "integer", "email", "date", "list",
    "choices") and limits.

    A "date" is an RFC 3339 full-date (YYYY-MM-DD), cleaned into a datetime.date.
    A "choices" is a list of one or more of `choices`, each at most once: ["order.paid"].

    A "list" holds `min_length` to `max_length` objects, each checked against `item_fields`.
    `description` and `example` only go into the OpenAPI document; an `example` must pass
    `check` (tests/test_openapi.py sends every route's examples to the server). So does
    `checked_elsewhere`: JSON Schema keywords for a rule the handler checks itself after
    `validate`, with messages of its own (a new password's length: passwords.py), so that
    the document does not promise to accept what the handler then refuses.
    """

    def __init__(self, name, kind, *, required=True, min_length=1, max_length=None,
                 minimum=None, maximum=MAX_INTEGER, choices=None, default=None, item_fields=None,
                 description=None, example=None, checked_elsewhere=None):
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
        self.description = description
        self.example = example
        self.checked_elsewhere = checked_elsewhere or {}
        if kind == "list" and (max_length is None or item_fields is None):
            # Every count a client controls has a limit: a list without one is a bug here.
            raise ValueError(f"list field {name!r} needs max_length and item_fields")

    def check(self, value):
        """Return (clean value, None) or (None, message). A "list" goes through `check_list`."""
        if self.kind == "integer":
            # JSON has one kind of number: 10.0 is the integer 10 (JSON Schema's "integer" says
            # so too, and a client's language may write it so). 10.5 is not.
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            # bool is an int in Python, but `true` is not a number in JSON.
            if not isinstance(value, int) or isinstance(value, bool):
                return None, "must be a whole number"
            low = self.minimum if self.minimum is not None else -MAX_INTEGER
            if not low <= value <= self.maximum:
                if self.maximum == MAX_INTEGER and value < low:
                    return None, f"must be a whole number of at least {low}"
                return None, f"must be a whole number from {low} to {self.maximum}"
            return value, None
        if self.kind == "choices":
            return self._check_choices(value)
        if not isinstance(value, str):
            return None, "must be a string"
        # PostgreSQL cannot store U+0000 in TEXT (the driver raises), and SQLite's length()
        # stops at it, so a CHECK on the length judges another string. JSON allows it.
        if "\x00" in value:
            return None, "must not contain the NUL character"
        if self.kind == "date":
            day = parse_date(value)
            return (day, None) if day is not None else (None, "must be a day written YYYY-MM-DD")
        if self.kind == "email":
            # The length is the sent text's, as the schema's maxLength counts it.
            email = value.strip().lower()
            if len(value) > MAX_EMAIL_CHARS or len(email) > MAX_EMAIL_CHARS or not EMAIL_PATTERN.fullmatch(email):
                return None, "must be an email address"
            return email, None
        if self.choices is not None and value not in self.choices:
            return None, f"must be one of: {', '.join(self.choices)}"
        if self.max_length is not None and not self.min_length <= len(value) <= self.max_length:
            return None, f"must be {self.min_length} to {self.max_length} characters"
        return value, None

    def _check_choices(self, value):
        listed = ", ".join(self.choices)
        if not isinstance(value, list) or not 1 <= len(value) <= len(self.choices):
            return None, f"must be a list of 1 to {len(self.choices)} of: {listed}"
        if any(not isinstance(entry, str) or entry not in self.choices for entry in value):
            return None, f"must hold only: {listed}"
        if len(set(value)) != len(value):
            return None, "must name each one once"
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


    def json_schema(self):
        """This field as JSON Schema (2020-12, the dialect of OpenAPI 3.1): what `check` accepts.

        The schema is as strict as `check` where JSON Schema can say it; what it cannot say
        (an email is stripped and lower-cased first) is at most looser, never stricter.
        """
        if self.kind == "integer":
            low = self.minimum if self.minimum is not None else -MAX_INTEGER
            schema = {"type": "integer", "minimum": low, "maximum": self.maximum}
        elif self.kind == "list":
            schema = {"type": "array", "minItems": self.min_length, "maxItems": self.max_length,
                      "items": object_schema(self.item_fields)}
        elif self.kind == "choices":
            schema = {"type": "array", "items": {"enum": list(self.choices)}, "minItems": 1,
                      "maxItems": len(self.choices), "uniqueItems": True}
        elif self.kind == "date":
            schema = {"type": "string", "format": "date"}
        elif self.kind == "email":
            # No "format": "email": that is RFC 5321's grammar, which the pattern is not (it
            # lets through addresses the format refuses); the pattern is the check itself.
            schema = {"type": "string", "maxLength": MAX_EMAIL_CHARS,
                      "pattern": f"^[{EMAIL_SPACE}]*{EMAIL_PATTERN.pattern}[{EMAIL_SPACE}]*$"}
        elif self.choices is not None:
            schema = {"type": "string", "enum": list(self.choices)}
        else:
            schema = {"type": "string", "minLength": self.min_length}
            if self.max_length is not None:
                schema["maxLength"] = self.max_length
            schema["pattern"] = NO_NUL_PATTERN
        schema.update(self.checked_elsewhere)
        if self.default is not None:
            schema["default"] = self.default
        if self.description:
            schema["description"] = self.description
        schema["examples"] = [self.example_value()]
        return schema

    def example_value(self):
        """A value `check` accepts: the declared `example`, else one made from the limits."""
        if self.example is not None:
            return self.example
        if self.kind == "integer":
            return max(self.minimum or 0, 1)  # 1 suits ids and quantities, and any range from 0
        if self.kind == "list":
            return [example_object(self.item_fields)] * self.min_length
        if self.kind == "choices":
            return [self.choices[0]]
        if self.kind == "email":
            return "ada@example.com"
        if self.kind == "date":
            return "2026-11-28"
        if self.choices is not None:
            return self.choices[0]
        return "x" * max(self.min_length, min(3, self.max_length or 3))


def object_schema(fields, *, partial=False):
    """The JSON Schema of a body that `validate(document, fields, partial=partial)` accepts:
    every field typed and bounded, the required ones listed, and no other property
    (validate refuses unknown fields). A partial body (PATCH) needs at least one field."""
    schema = {
        "type": "object",
        "properties": {field.name: field.json_schema() for field in fields},
        "additionalProperties": False,
    }
    required = [field.name for field in fields if field.required]
    if partial:
        schema["minProperties"] = 1
    elif required:
        schema["required"] = required
    return schema


def example_object(fields):
    """A body `validate(document, fields)` accepts: every field's example."""
    return {field.name: field.example_value() for field in fields}


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


class Query:
    """One query parameter a handler reads: its name, kind and limits, and how it is documented.

    Kinds: "integer" (a whole number from `minimum` to `maximum`), "choice" (one of
    `choices`), "boolean" (true or false), "string" (`min_length` to `max_length`
    characters, and matching `pattern` when given), "date", "date-time" and "date or
    date-time" (read as text here; the handler parses them, and the document gives their
    RFC 3339 formats).
    `read` gives the value (None or `default` when absent) or raises a 400 naming the
    parameter; `json_schema` describes the same rule to the OpenAPI document.
    """

    def __init__(self, name, kind, *, minimum=None, maximum=None, choices=None, min_length=1, max_length=None,
                 pattern=None, default=None, unit=None, message=None, description=None, example=None,
                 checked_elsewhere=None):
        self.name = name
        self.kind = kind
        self.minimum = minimum
        self.maximum = maximum
        self.choices = choices
        self.min_length = min_length
        self.max_length = max_length
        self.pattern = re.compile(pattern) if pattern else None
        self.default = default
        self.unit = unit
        self.message = message  # the 400's detail when a "string" fails its pattern
        self.description = description
        self.example = example
        self.checked_elsewhere = checked_elsewhere or {}  # as Field's: a rule the handler checks

    def read(self, query):
        """The parameter's value from a parsed query (request.query); 400 when it breaks the rule."""
        if self.kind == "integer":
            return query_whole_number(query, self.name, low=self.minimum, high=self.maximum,
                                      default=self.default, unit=self.unit)
        text = query_value(query, self.name)
        if text is None:
            return self.default
        if self.kind == "choice" and text not in self.choices:
            raise BadRequest(f"'{self.name}' must be one of: {', '.join(self.choices)}")
        if self.kind == "boolean":
            if text not in ("true", "false"):
                raise BadRequest(f"'{self.name}' must be true or false")
            return text == "true"
        if self.kind == "string":
            if self.max_length is not None and not self.min_length <= len(text) <= self.max_length:
                raise BadRequest(f"'{self.name}' must be {self.min_length} to {self.max_length} characters")
            if self.pattern is not None and not self.pattern.fullmatch(text):
                raise BadRequest(self.message or f"'{self.name}' is not valid")
        return text

    def json_schema(self):
        """The parameter's value as JSON Schema: what `read` accepts (dates: their shape)."""
        if self.kind == "integer":
            schema = {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}
        elif self.kind == "choice":
            schema = {"type": "string", "enum": list(self.choices)}
        elif self.kind == "boolean":
            schema = {"type": "string", "enum": ["true", "false"]}
        elif self.kind in ("date", "date-time"):
            schema = {"type": "string", "format": self.kind}
        elif self.kind == "date or date-time":
            schema = {"type": "string", "anyOf": [{"format": "date"}, {"format": "date-time"}]}
        else:
            schema = {"type": "string", "minLength": self.min_length}
            if self.max_length is not None:
                schema["maxLength"] = self.max_length
            # Without a pattern of its own, still no NUL: web.parse_query refuses a query
            # string that holds one (%00), whatever the parameter.
            schema["pattern"] = "^(?:" + self.pattern.pattern + ")$" if self.pattern is not None else NO_NUL_PATTERN
        schema.update(self.checked_elsewhere)
        if self.default is not None:
            schema["default"] = self.default
        return schema


def query_names(specs):
    """The names of `specs`: the allow-list a handler gives pagination.reject_unknown_parameters."""
    return frozenset(spec.name for spec in specs)


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
