"""Secrets at work: signed values (cursors today; tokens, sessions and keys as they arrive).

A signed value is data the server hands out and later takes back, trusting that the client
did not change it, without storing it. The data travels in the clear (it is not secret, only
tamper-proof) next to an HMAC-SHA256 of it under the server's secret key:

    eyJzIjoiaWQiLCJ2IjpbMjBdfQ.4Lr0i8Sx...       (base64url(JSON) "." base64url(HMAC))

The HMAC also covers a `purpose`, so a value signed as a "cursor" can never be replayed as
some other kind of signed value (the idea of a salt in Django's `signing`). Verification
tries every configured key, the current one first, so keys can be rotated without breaking
values already handed out, and compares MACs in constant time (`hmac.compare_digest`): an
ordinary `==` stops at the first differing byte, and its timing leaks how much was right.

    >>> keys = (b"k" * 32,)
    >>> token = sign_value({"v": [20]}, keys, purpose="cursor")
    >>> unsign_value(token, keys, purpose="cursor")
    {'v': [20]}
    >>> unsign_value(token, keys, purpose="session") is None
    True
"""

import base64
import binascii
import hashlib
import hmac
import json
import re

MAX_SIGNED_VALUE_CHARS = 2048
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def sign_value(value, keys, *, purpose):
    """Serialise a JSON-able value and sign it with the first (current) key."""
    payload = _b64encode(json.dumps(value, separators=(",", ":"), sort_keys=True).encode())
    return payload + "." + _b64encode(_mac(keys[0], purpose, payload))


def unsign_value(token, keys, *, purpose):
    """The value inside a signed token, or None if it is malformed, tampered with or foreign.

    Fails closed: any malformed input is simply "not valid", never an exception.
    """
    if (
        not isinstance(token, str)
        or not token.isascii()  # our tokens are base64url; compare_digest takes ASCII text only
        or len(token) > MAX_SIGNED_VALUE_CHARS
        or token.count(".") != 1
    ):
        return None
    payload, signature = token.split(".")
    # Compared as text, re-encoded from our own MAC: one token has one valid spelling.
    if not any(hmac.compare_digest(_b64encode(_mac(key, purpose, payload)), signature) for key in keys):
        return None
    try:
        return json.loads(_b64decode(payload))
    except ValueError:
        return None


def _mac(key, purpose, payload):
    return hmac.new(key, purpose.encode() + b":" + payload.encode(), hashlib.sha256).digest()


def _b64encode(raw):
    """base64url without padding (RFC 4648 §5), the form JWTs use too."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text):
    # Strict: the decoder would silently skip characters outside the alphabet, and then
    # "SIG" and "SIG<anything>" would both verify. One token, one spelling.
    if not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
