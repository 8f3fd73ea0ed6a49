"""Signed values and CSRF tokens: data the server hands out, and later takes back unchanged.

A list's cursor, a browser session's CSRF token (and, later, an OAuth `state`) leave the
server and come back in a later request. Rather than store them, the server signs them: the
data travels in the clear (it is not secret, only tamper-proof) next to an HMAC-SHA256
(RFC 2104) of it under the server's secret key, which nobody without the key can compute.
Keys are `bytes` (settings.secret_keys): the first one signs and every one verifies, so a key
can be rotated without voiding every cursor and session at once.

On the wire, base64url without padding (RFC 4648 §5), the alphabet URLs and headers accept:

    signed value   eyJ2IjpbMjBdfQ.y9j1eu9exj4SeG5WYjOKM8r9j2sMDKwk0YWMl_rcqhk
                   base64url(JSON)  "."  base64url(HMAC-SHA256(key, "cursor:" + the JSON part))

    CSRF token     GwizjiiYYEuyjz2WkwdZ0FqCsvDx7VMPMzxUDf6Zv8I
                   base64url(HMAC-SHA256(key, "csrf:" + the session id)), 43 characters

Every MAC made here starts its input with a purpose and a colon ("cursor:", "csrf:"), so a
MAC made for one use is never valid for another: a cursor cannot be replayed as a CSRF token
or as any other kind of signed value (the idea of a salt in Django's `signing`). JWTs
(auth.py) sign their segments as RFC 7515 says, which start with "eyJ" (base64url of '{"'):
no purpose may start so, nor may a signed value use the purpose "csrf".

Checks fail closed: malformed input is "not valid" (None or False), never an exception that
skips a check. A MAC is compared with `hmac.compare_digest`, whose time does not depend on
how many leading bytes were right (`==` stops at the first difference, and that leaks), and
it is our own MAC, re-encoded, that is compared with the text received: one value, one
valid spelling.

    >>> keys = (b"k" * 32,)
    >>> token = sign_value({"v": [20]}, keys, purpose="cursor")
    >>> token
    'eyJ2IjpbMjBdfQ.y9j1eu9exj4SeG5WYjOKM8r9j2sMDKwk0YWMl_rcqhk'
    >>> unsign_value(token, keys, purpose="cursor")
    {'v': [20]}
    >>> unsign_value(token, keys, purpose="session") is None
    True
    >>> csrf_token_for("wykPhD_SnkNo7s3Z4HvOK01BHMQGq8SmMrm4EF7pTLo", keys)
    'GwizjiiYYEuyjz2WkwdZ0FqCsvDx7VMPMzxUDf6Zv8I'
    >>> verify_csrf_token(csrf_token_for("Nq3vQ0", keys), "Nq3vQ0", keys)
    True
"""

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets

# -- signed values -------------------------------------------------------------------------

MAX_SIGNED_VALUE_CHARS = 2048  # a cursor is 100 to 200 characters; a longer token is refused unread
CSRF_PURPOSE = "csrf"  # the purpose of CSRF tokens' MACs, which a signed value may never take
JWS_PREFIX = "eyJ"  # how every JWT segment starts (base64url of '{"'): no purpose may


def sign_value(value, keys, *, purpose):
    """A JSON-able value as a signed token, made with the first (current) key.

    Raises ValueError or TypeError for a value JSON cannot express (NaN, a set), and
    ValueError for a purpose that belongs to another kind of MAC (see the module's docstring).
    """
    _check_purpose(purpose)
    document = json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    payload = b64url_encode(document.encode("utf-8"))
    return payload + "." + b64url_encode(mac(keys[0], purpose, payload.encode("ascii")))


def unsign_value(token, keys, *, purpose):
    """The value inside a signed token, or None if it is malformed, tampered with, made for
    another purpose or under a key that is no longer configured. Never raises for a bad
    token; a purpose that belongs to another kind of MAC is a ValueError (a bug in the caller).
    """
    _check_purpose(purpose)
    if (
        not isinstance(token, str)
        or not token.isascii()  # ours are base64url
        or len(token) > MAX_SIGNED_VALUE_CHARS
        or token.count(".") != 1
    ):
        return None
    payload, signature = token.split(".")
    if not mac_matches(signature, keys, purpose, payload.encode("ascii")):
        return None
    # Parsed only once the MAC says we wrote it.
    try:
        return json.loads(b64url_decode(payload))
    except ValueError:
        return None


def _check_purpose(purpose):
    # Fail closed: a cursor signed as "csrf" would be a valid CSRF token for some session id.
    if purpose == CSRF_PURPOSE or purpose.startswith(JWS_PREFIX):
        raise ValueError(f"the purpose {purpose!r} belongs to another kind of MAC")


# -- CSRF tokens ---------------------------------------------------------------------------

CSRF_TOKEN_CHARS = 43  # base64url of a 32-byte HMAC-SHA256, without padding


def csrf_token_for(session_id: str, keys: tuple) -> str:
    """The CSRF token of a session: base64url(HMAC-SHA256(keys[0], "csrf:" + session id)).

    The signed double-submit pattern: the page reads it (it is not in the HttpOnly session
    cookie) and sends it back in X-CSRF-Token. Another site can make the browser send the
    cookies, but can neither read the token nor compute one without the key.
    """
    return b64url_encode(mac(keys[0], CSRF_PURPOSE, session_id.encode("utf-8")))


def verify_csrf_token(token: str, session_id: str, keys: tuple) -> bool:
    """True if the token is the CSRF token of this session under any configured key.

    Malformed input, an empty session id or one that is not Unicode text is False, never
    an exception.
    """
    if not isinstance(token, str) or len(token) != CSRF_TOKEN_CHARS:
        return False
    if not isinstance(session_id, str) or not session_id:
        return False
    try:
        session_bytes = session_id.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no session id of ours
        return False
    return mac_matches(token, keys, CSRF_PURPOSE, session_bytes)


# -- webhook signatures (Standard Webhooks) ------------------------------------------------
#
# A webhook is signed for its receiver, who checks it with the secret the subscription
# showed once (https://www.standardwebhooks.com, the scheme Svix and others use):
#
#     secret             whsec_a2tra2tra2tra2tra2tra2tra2tra2tr   "whsec_" + base64(24 random bytes)
#     webhook-id         msg_2KWPBgLlAfxdpx2AI54pPJ85f4W           the event's id, the same on every retry
#     webhook-timestamp  1674087231                                this attempt's time, Unix seconds
#     webhook-signature  v1,G1svM15xfmpUwkmKPsWYcU3isXZ9WyjEj3IgwhYqsfY=
#                        "v1," + base64(HMAC-SHA256(the secret's bytes, id + "." + timestamp + "." + body))
#
# The HMAC's input is fixed by the specification, so no purpose prefix here (see mac()). The
# timestamp is signed too, so a receiver that refuses old ones (5 minutes, as the
# specification's libraries do) cannot be sent a recorded delivery again later.

WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
WEBHOOK_SECRET_BYTES = 24  # 192 bits: more than enough for an HMAC key, and what Svix gives
WEBHOOK_SIGNATURE_VERSION = "v1"


def new_webhook_secret() -> str:
    """A new random webhook secret: "whsec_" + standard base64 of WEBHOOK_SECRET_BYTES bytes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(WEBHOOK_SECRET_BYTES)).decode("ascii")


def sign_webhook(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header for one delivery: "v1," + base64 of the HMAC-SHA256.
    Raises ValueError when `secret` is not "whsec_" + base64. (The vector below was made
    with the `standardwebhooks` package, an independent implementation.)

    >>> secret = "whsec_a2tra2tra2tra2tra2tra2tra2tra2tr"
    >>> sign_webhook(secret, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", 1674087231, b'{"type":"order.paid"}')
    'v1,G1svM15xfmpUwkmKPsWYcU3isXZ9WyjEj3IgwhYqsfY='
    >>> verify_webhook(secret, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", 1674087231, b'{"type":"order.paid"}',
    ...                "v1,G1svM15xfmpUwkmKPsWYcU3isXZ9WyjEj3IgwhYqsfY=")
    True
    """
    signed = f"{message_id}.{timestamp}.".encode() + body
    signature = hmac_sha256(_webhook_key(secret), signed)
    return f"{WEBHOOK_SIGNATURE_VERSION}," + base64.b64encode(signature).decode("ascii")


def verify_webhook(secret: str, message_id: str, timestamp: int, body: bytes, signature_header: str) -> bool:
    """True when one of the space-separated signatures of `signature_header` is ours for
    this delivery. What a receiver runs (with its own check of the timestamp's age)."""
    expected = sign_webhook(secret, message_id, timestamp, body)
    if not isinstance(signature_header, str) or not signature_header.isascii():
        return False
    return any(hmac.compare_digest(expected, signature) for signature in signature_header.split(" "))


def _webhook_key(secret: str) -> bytes:
    if not isinstance(secret, str) or not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        key = base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ and base64") from None
    if not key:
        raise ValueError("a webhook secret cannot be empty")
    return key


# -- the building blocks: HMAC and base64url -----------------------------------------------

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104, FIPS 198-1) of a message: 32 bytes.

    For a format another party defines and verifies (a JWT, a webhook signature), where
    the signed input is fixed by that format. Values the server checks itself use mac().
    """
    return hmac.new(key, message, hashlib.sha256).digest()


def mac(key: bytes, purpose: str, message: bytes) -> bytes:
    """HMAC-SHA256 of purpose + ":" + message: a MAC valid for this purpose only."""
    return hmac_sha256(key, purpose.encode("utf-8") + b":" + message)


def mac_matches(signature: str, keys: tuple, purpose: str, message: bytes) -> bool:
    """True if `signature` is b64url_encode(mac(key, purpose, message)) for any of `keys`.

    Every key is tried, each in constant time. Not a str or not ASCII is False at once:
    compare_digest accepts ASCII text only, and no MAC of ours is anything else.
    """
    if not isinstance(signature, str) or not signature.isascii():
        return False
    return any(hmac.compare_digest(b64url_encode(mac(key, purpose, message)), signature) for key in keys)


def b64url_encode(raw: bytes) -> str:
    """base64url without padding (RFC 4648 §5, as JWTs write it, RFC 7515 §2).

    >>> b64url_encode(b'{"v":[20]}')
    'eyJ2IjpbMjBdfQ'
    """
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """The bytes of a base64url text exactly as b64url_encode writes it; ValueError otherwise.

    Strict: padding, characters outside the alphabet (which the standard decoder would
    skip, so that "SIG" and "SIG<junk>" decoded alike), and the other spellings whose last
    character differs only in bits that carry no data, are all refused.

    >>> b64url_decode("eyJ2IjpbMjBdfQ")
    b'{"v":[20]}'
    >>> b64url_decode("eyJ2IjpbMjBdfR")
    Traceback (most recent call last):
    ValueError: not canonical base64url
    """
    if not isinstance(text, str) or not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if b64url_encode(raw) != text:
        raise ValueError("not canonical base64url")
    return raw


def development_secret(path):
    """A random key made once into `path` (var/secret_key), so that restarts of a development
    server keep its cursors and sessions valid; the key written there before, if any.

    Written to a private temporary file, then linked into place: link() fails if the file
    exists, so two processes starting at once agree on one key and never read half of one.
    """
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(exist_ok=True)
    key = secrets.token_urlsafe(48)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}")  # one per caller
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as secret_file:
        secret_file.write(key)
    try:
        os.link(temporary, path)
    except FileExistsError:
        key = path.read_text().strip()
    finally:
        temporary.unlink()
    return key
