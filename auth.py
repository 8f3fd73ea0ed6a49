"""Tokens: the secrets that say who someone is, once the password was right.

Pure functions on strings and bytes, with no HTTP and no SQL: services and middleware call
them. Keys are `bytes` (settings.secret_keys): the first one signs, every one verifies, so a
key can be rotated without logging everybody out. Secrets are compared with
`hmac.compare_digest`: an ordinary `==` stops at the first differing byte, and its timing
leaks how much was right. Malformed input is "not valid", never an exception that skips a
check. Passwords and their hashes are in passwords.py; signed values and CSRF tokens, and
the HMAC and base64url helpers, in signing.py.

Each kind of token on the wire:

Access token: a JWT (RFC 7519) in JWS compact serialisation (RFC 7515 §7.1), HS256 only
(RFC 7518 §3.2), three base64url segments joined by dots (shown here on three lines):

    eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6IjhoOFlNcjlJakdVTXdxTmkifQ
    .eyJzdWIiOiI0MiIsInJvbGUiOiJ1c2VyIiwiaWF0IjoxNzY3MjI1NjAwLCJleHAiOjE3NjcyMjY1MDAsImp0aSI6IjVmMGM4ZTFkMmI3YTRjNmUifQ
    .3eN5RMG_LmtUmyo2MYtFyTyJscXVtLYKdMku2KZJas8

    header     {"alg":"HS256","typ":"JWT","kid":"8h8YMr9IjGUMwqNi"}     kid = key_id(key)
    claims     {"sub":"42","role":"user","iat":1767225600,"exp":1767226500,"jti":"5f0c8e1d2b7a4c6e"}
    signature  HMAC-SHA256(key, "<header segment>.<claims segment>")
               + "ep":0, the user's token epoch, in the tokens we issue (accounts.py)

Refresh token, session id: 256 random bits as 43 base64url characters, shown to the client
once; the database keeps only hash_token(token), a hex SHA-256.

    wykPhD_SnkNo7s3Z4HvOK01BHMQGq8SmMrm4EF7pTLo

API key: the kind, a public lookup prefix (8 base32 characters, RFC 4648 §6, stored in
clear and indexed), and a 256-bit secret; the database keeps hash_token(key).

    shop_zz7eosor_mNAu76VNu_6JzH2IzCGhw5lRLSM0PHMaSLkg27DqTrc

    >>> keys = (b"k" * 32,)
    >>> claims = {"sub": "42", "role": "user", "iat": 1767225600, "exp": 1767226500,
    ...           "jti": "5f0c8e1d2b7a4c6e"}
    >>> token = encode_token(claims, keys)
    >>> token.endswith(".3eN5RMG_LmtUmyo2MYtFyTyJscXVtLYKdMku2KZJas8")
    True
    >>> decode_token(token, keys, now=1767225700)["sub"]
    '42'
    >>> decode_token(token, keys, now=1767230000)
    Traceback (most recent call last):
    auth.TokenError: token expired
"""

import functools
import hashlib
import hmac
import json
import math
import re
import secrets
import time

import strictjson
from signing import b64url_decode, b64url_encode, hmac_sha256

ACCESS_TOKEN_TTL_SECONDS = 15 * 60
TOKEN_LEEWAY_SECONDS = 60  # clock skew tolerated between the machines that make and check tokens
ROLES = ("user", "admin")
MAX_TOKEN_CHARS = 8 * 1024  # ours are ~300; a longer one is refused before any parsing
VERIFIED_TOKEN_CACHE_SIZE = 4096  # tokens whose signature is known good (see _verified_claims)
KEY_ID_CHARS = 16  # 96 bits of a hash: tells a few keys apart, says nothing usable about them
_TOKEN_ALGORITHM = "HS256"  # noqa: S105 - the one `alg` we make and accept (RFC 7518 §3.2)
_REQUIRED_CLAIMS = ("sub", "role", "iat", "exp", "jti")
_USER_ID = re.compile(r"[1-9][0-9]*")  # `sub` as str(user_id) writes it: one spelling per user

OPAQUE_TOKEN_BYTES = 32  # 256 random bits: out of reach of guessing, and of collisions
API_KEY_PREFIX = "shop"  # names the kind of secret, so people and secret scanners spot a leaked key
API_KEY_LOOKUP_CHARS = 8  # 40 bits of base32: the public, indexed part of a key
_LOOKUP_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # base32 (RFC 4648 §6), lower-case
_API_KEY = re.compile(
    re.escape(API_KEY_PREFIX)
    + rf"_(?P<prefix>[a-z2-7]{{{API_KEY_LOOKUP_CHARS}}})"
    + r"_[A-Za-z0-9_-]{43}"  # token_urlsafe(32): 43 characters
)


class TokenError(Exception):
    """An access token that is not valid.

    str(error) is a short reason that is safe to show a client ("token expired",
    "bad signature", "unsupported alg", "malformed token", ...): it never holds key material.
    """


def key_id(key: bytes) -> str:
    """The public `kid` of a key: 16 base64url characters of SHA-256(b"kid:" + key).

    Keys are at least 32 random bytes, so their hash reveals nothing usable about them. The
    "kid:" prefix keeps the kid from being the plain SHA-256 of the key, which some other
    system might also publish.
    """
    return b64url_encode(hashlib.sha256(b"kid:" + key).digest())[:KEY_ID_CHARS]


def encode_token(claims: dict, keys: tuple) -> str:
    """A compact JWS (RFC 7515 §7.1) of the claims, signed with HS256 under keys[0].

    The header names the signing key by its kid. Claims are written as compact JSON; one
    that JSON cannot express (NaN, a set) raises ValueError or TypeError.
    """
    header = {"alg": _TOKEN_ALGORITHM, "typ": "JWT", "kid": key_id(keys[0])}
    signing_input = b64url_encode(_compact_json(header)) + "." + b64url_encode(_compact_json(claims))
    return signing_input + "." + b64url_encode(_jws_signature(keys[0], signing_input))


def decode_token(token: str, keys: tuple, *, now: float | None = None) -> dict:
    """The claims of a valid access token; raises TokenError with the reason otherwise.

    Checked in this order, cheapest and least trusting first: the shape (three strict
    base64url segments, at most MAX_TOKEN_CHARS), the header (alg HS256, no crit, typ JWT,
    a kid naming a configured key), the signature over the segments exactly as received,
    and only then the claims (sub, role, iat, exp, jti; nbf, ep if present) against `now`, with
    TOKEN_LEEWAY_SECONDS of tolerance for clock skew. Never raises anything but TokenError.
    """
    if not isinstance(token, str):
        raise TokenError("malformed token")
    claims = _verified_claims(token, keys)
    _check_times(claims, time.time() if now is None else now)
    return dict(claims)  # a copy: the cached claims must not change


def issue_access_token(user_id: int, role: str, keys: tuple, *, epoch: int = 0, now: float | None = None) -> str:
    """A signed access token for a user, valid for ACCESS_TOKEN_TTL_SECONDS from `now`.

    Claims: sub (the user id as a string: RFC 7519 §4.1.2 makes it a StringOrURI, and JWT
    libraries refuse a number), role, iat and exp (whole seconds, which every library
    reads), jti (128 random bits in hex, so a token can be named on a deny list), ep (the
    user's token epoch). Raises ValueError for a bad user id, role or epoch.
    """
    if isinstance(user_id, bool) or not isinstance(user_id, int) or user_id < 1:
        raise ValueError("user_id must be a positive int")
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    if not _is_epoch(epoch):
        raise ValueError("epoch must be an int >= 0")
    issued_at = int(time.time() if now is None else now)
    claims = {
        "sub": str(user_id),
        "role": role,
        "iat": issued_at,
        "exp": issued_at + ACCESS_TOKEN_TTL_SECONDS,
        "jti": secrets.token_hex(16),
        "ep": epoch,
    }
    return encode_token(claims, keys)


def new_refresh_token() -> str:
    """A refresh token: 256 random bits as 43 base64url characters. Shown once, stored hashed."""
    return secrets.token_urlsafe(OPAQUE_TOKEN_BYTES)


def new_session_id() -> str:
    """A session id for the session cookie: 256 random bits, like a refresh token."""
    return secrets.token_urlsafe(OPAQUE_TOKEN_BYTES)


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token: all the database keeps of refresh tokens, sessions, API keys.

    Why a fast hash here and PBKDF2 for passwords: slowness only helps against guessing,
    and a thief with the table guesses passwords because people choose likely ones. These
    tokens are 256 random bits; nobody can try 2**255 of them, however fast SHA-256 is. A
    fast, unsalted hash also keeps the lookup an indexed `WHERE token_hash = ?`, and costs
    microseconds on requests that present a session or key every time.

    >>> hash_token("abc")
    'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
    """
    # A lone surrogate cannot be UTF-8; such a token was never issued, and hashing it anyway
    # keeps "look it up and find nothing" the only path.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_api_key() -> tuple[str, str]:
    """A new API key and its prefix: ("shop_<prefix>_<secret>", "<prefix>").

    The prefix (8 base32 characters) is public: it is stored in clear and indexed, so a key
    is found without scanning, and shown in lists so a user can tell keys apart. The secret
    (256 random bits) is shown once; the database keeps hash_token(key) of the whole key.
    """
    prefix = "".join(secrets.choice(_LOOKUP_ALPHABET) for _ in range(API_KEY_LOOKUP_CHARS))
    return f"{API_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(OPAQUE_TOKEN_BYTES)}", prefix


def api_key_prefix(key: str) -> str | None:
    """The prefix of a well-formed API key, or None for anything else (fail closed).

    >>> api_key_prefix("shop_k3x7m2qa_" + "A" * 43)
    'k3x7m2qa'
    >>> api_key_prefix("shop_k3x7m2qa_" + "A" * 42) is None
    True
    """
    if not isinstance(key, str):
        return None
    match = _API_KEY.fullmatch(key)
    return match["prefix"] if match else None


@functools.lru_cache(maxsize=VERIFIED_TOKEN_CACHE_SIZE)
def _verified_claims(token, keys):
    """Everything decode_token checks that does not depend on the time, remembered per token.

    A client sends the same token with every request for its 15 minutes, and nothing about
    its signature changes meanwhile: verifying it once is enough, and spares every later
    request an HMAC and two JSON parses. Only tokens that pass are remembered, since an
    exception is never cached; the expiry is checked on every use, by decode_token.
    """
    segments, (raw_header, raw_payload, signature) = _token_segments(token)
    key = _verification_key(_json_object(raw_header, "malformed header"), keys)
    # The MAC covers the segments as received, not a re-encoding of what we parsed:
    # RFC 7515 §5.2 verifies the JWS Signing Input, the bytes the signer signed.
    expected = _jws_signature(key, segments[0] + "." + segments[1])
    if len(signature) != len(expected) or not hmac.compare_digest(expected, signature):
        raise TokenError("bad signature")
    # The payload is parsed only once the signature says we wrote it.
    claims = _json_object(raw_payload, "malformed payload")
    _check_claims(claims)
    return claims


def _compact_json(value):
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode("ascii")


def _jws_signature(key, signing_input):
    # RFC 7518 §3.2: HS256 is the plain HMAC-SHA256 of the signing input, with no purpose
    # prefix (signing.mac), or no other JWT library could verify our tokens.
    return hmac_sha256(key, signing_input.encode("ascii"))


def _token_segments(token):
    """The three segments of a compact JWS, and their decoded bytes; TokenError otherwise."""
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError("token too long")
    segments = token.split(".")
    if not token.isascii() or len(segments) != 3:
        raise TokenError("malformed token")
    try:
        return segments, [b64url_decode(segment) for segment in segments]
    except ValueError:
        raise TokenError("malformed token") from None


def _verification_key(header, keys):
    """The configured key the header names, after checking everything else it says."""
    # The token does not choose its algorithm; we do (RFC 8725 §2.1, §3.1). Accepting what
    # `alg` says is how "none" tokens and HS256-signed-with-the-RSA-public-key tokens pass.
    if header.get("alg") != _TOKEN_ALGORITHM:
        raise TokenError("unsupported alg")
    # RFC 7515 §4.1.11: extensions listed in `crit` must be understood; we understand none.
    if "crit" in header:
        raise TokenError("unsupported crit header")
    if "typ" in header and header["typ"] != "JWT":
        raise TokenError("unsupported typ")
    if "kid" not in header:
        raise TokenError("missing kid")
    for key in keys:
        if key_id(key) == header["kid"]:
            return key
    raise TokenError("unknown kid")


def _check_claims(claims):
    for name in _REQUIRED_CLAIMS:
        if name not in claims:
            raise TokenError(f"missing claim: {name}")
    if not isinstance(claims["sub"], str) or not _USER_ID.fullmatch(claims["sub"]):
        raise TokenError("invalid claim: sub")
    if claims["role"] not in ROLES:
        raise TokenError("invalid claim: role")
    for name in ("iat", "exp", "nbf"):
        if name in claims and not _is_number(claims[name]):
            raise TokenError(f"invalid claim: {name}")
    if not isinstance(claims["jti"], str) or not claims["jti"]:
        raise TokenError("invalid claim: jti")
    # Optional: a token made before epochs existed has none (accounts.token_user reads it as 0).
    if "ep" in claims and not _is_epoch(claims["ep"]):
        raise TokenError("invalid claim: ep")


def _check_times(claims, now):
    # RFC 7519 §4.1.4 and §4.1.5, each with the leeway those sections allow for clock skew.
    if now > claims["exp"] + TOKEN_LEEWAY_SECONDS:
        raise TokenError("token expired")
    if "nbf" in claims and now < claims["nbf"] - TOKEN_LEEWAY_SECONDS:
        raise TokenError("token not yet valid")
    if claims["iat"] > now + TOKEN_LEEWAY_SECONDS:
        raise TokenError("token issued in the future")


def _is_epoch(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value):
    """A JSON number: int or finite float, and not a bool (True is an int in Python)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def _json_object(raw, reason):
    """Strictly parsed JSON object from UTF-8 bytes (strictjson.py); TokenError(reason) otherwise."""
    try:
        value = strictjson.loads(raw)
    except strictjson.JSONRefused:
        raise TokenError(reason) from None
    if not isinstance(value, dict):
        raise TokenError(reason)
    return value
