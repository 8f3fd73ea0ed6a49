"""Strict JSON: what `json.loads` lets through and a server must not.

Python's parser is liberal. Each of these parses, and each is refused here:

    {"a": NaN}                 NaN and Infinity are not JSON (RFC 8259 §6)
    {"price": 1e999}           a number too large for a float becomes inf
    [1111...(101 digits)]      int() of a million digits costs seconds: at most 100 digits
    {"a": 1, "a": 2}           duplicate names (RFC 8259 §4): which one wins depends on the parser
    "\\ud800"                   a lone surrogate is not Unicode text; encoding it later fails
    [[[[ ... 10,000 deep       nesting deeper than MAX_DEPTH

    >>> loads(b'{"name": "Tea", "price_cents": 450}')
    {'name': 'Tea', 'price_cents': 450}
    >>> loads(b'{"a": 1, "a": 2}')
    Traceback (most recent call last):
    strictjson.JSONRefused: duplicate key in an object

Request bodies (web.parse_json) and token headers and claims (auth.decode_token) both go
through `loads`, each turning `JSONRefused` into its own error.
"""

import json
import math
from typing import Any, NoReturn

MAX_DEPTH = 32
# Longer than any number a client means (a BIGINT has 19 digits), short enough to convert in
# no time. An integer within it is parsed exactly, so that a value out of a field's range is
# the validator's 422 naming the field, not a 400 for well-formed JSON.
MAX_INTEGER_DIGITS = 100


class JSONRefused(ValueError):
    """The text is not JSON, or is JSON this parser refuses; str(error) says which."""


class NotUTF8(JSONRefused):
    """The bytes are not UTF-8 (RFC 8259 §8.1: JSON exchanged between systems is UTF-8)."""


def loads(data: bytes) -> Any:
    """Parse JSON bytes strictly; raise JSONRefused (NotUTF8 for bad bytes)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NotUTF8("not valid UTF-8") from None
    try:
        document = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_int=_bounded_int,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except JSONRefused:
        raise
    except RecursionError:
        raise JSONRefused(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as error:  # json.JSONDecodeError is a ValueError
        raise JSONRefused(str(error)) from None
    _check_depth_and_text(document)
    return document


def _refuse_constant(name: str) -> NoReturn:
    raise JSONRefused("NaN and Infinity are not JSON")


def _bounded_int(digits: str) -> int:
    # Checked on the digits before int(): a 100,000-digit number costs time to convert.
    if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise JSONRefused(f"an integer of more than {MAX_INTEGER_DIGITS} digits")
    return int(digits)


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise JSONRefused("number out of range")
    return number


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise JSONRefused("duplicate key in an object")
    return document


def _check_depth_and_text(document: Any) -> None:
    """Walk the document once: containers nested at most MAX_DEPTH deep, text all Unicode."""
    stack: list[tuple[Any, int]] = [(document, 1)]  # (value, how many containers hold it, itself included)
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)) and depth > MAX_DEPTH:
            raise JSONRefused(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, member in value.items():
                _check_text(key)
                stack.append((member, depth + 1))
        elif isinstance(value, list):
            stack.extend((member, depth + 1) for member in value)
        elif isinstance(value, str):
            _check_text(value)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise JSONRefused("a string holds a lone surrogate") from None
