"""Tests for auth.py: access tokens (JWT), opaque tokens and API keys.

Each wire format is pinned by known vectors and checked against an independent
implementation: PyJWT for access tokens, FIPS 180-2's "abc" for SHA-256. Everything
malformed must be refused the documented way (None or TokenError), never with another
exception. Password hashes are tested in test_passwords.py, signed values and CSRF tokens
in test_signing.py.
"""

import base64
import hashlib
import hmac
import json
import re
import time

import jwt
import pytest
from conftest import b64url, flip

import auth
from auth import (
    TokenError,
    api_key_prefix,
    decode_token,
    encode_token,
    hash_token,
    issue_access_token,
    key_id,
    new_api_key,
    new_refresh_token,
    new_session_id,
)
from signing import csrf_token_for, sign_value

KEY = b"k" * 32
OLD_KEY = b"an-older-key-still-verifying-32b"
NEW_KEY = b"the-new-key-that-signs-from-now!"


@pytest.fixture(autouse=True)
def no_remembered_tokens():
    """Each test verifies tokens from scratch: decode_token remembers verified ones."""
    auth._verified_claims.cache_clear()


# == access tokens (JWT) ======================================================================

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z: tokens are checked against a fixed clock
LEEWAY = auth.TOKEN_LEEWAY_SECONDS
OTHER_KEY = b"o" * 32
KID = key_id(KEY)
HEADER = {"alg": "HS256", "typ": "JWT", "kid": KID}
CLAIMS = {"sub": "42", "role": "user", "iat": NOW, "exp": NOW + 900, "jti": "5f0c8e1d2b7a4c6e"}
DROP = object()  # in header_with / claims_with: leave this member out


def forge(header, claims, key=KEY, *, signature=None):
    """A compact JWS written here from the RFC, not by auth.py; correctly signed with `key`
    unless a signature is given, so that only the defect under test is wrong. Header and
    claims are dicts, or raw bytes for what json.dumps will not write."""
    def segment(part):
        raw_json = part if isinstance(part, bytes) else json.dumps(part, separators=(",", ":")).encode()
        return b64url(raw_json)

    signing_input = segment(header) + "." + segment(claims)
    if signature is None:
        signature = b64url(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())
    return f"{signing_input}.{signature}"


def header_with(**changes):
    return {name: value for name, value in {**HEADER, **changes}.items() if value is not DROP}


def claims_with(**changes):
    return {name: value for name, value in {**CLAIMS, **changes}.items() if value is not DROP}


VALID_TOKEN = forge(HEADER, CLAIMS)
HEADER_SEGMENT, PAYLOAD_SEGMENT, SIGNATURE_SEGMENT = VALID_TOKEN.split(".")
BASE64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def segment_of(part):
    return forge(HEADER, part).split(".")[1]


def segment_of_header(header):
    return forge(header, CLAIMS).split(".")[0]


# -- the wire format, the round trip and the claims --

def test_encode_token_writes_what_the_rfc_says():
    assert encode_token(CLAIMS, (KEY,)) == VALID_TOKEN
    assert json.loads(base64.urlsafe_b64decode(HEADER_SEGMENT + "==")) == HEADER


def test_round_trip():
    assert decode_token(encode_token(CLAIMS, (KEY,)), (KEY,), now=NOW) == CLAIMS


def test_key_id_is_16_base64url_characters_of_a_prefixed_sha256():
    expected = b64url(hashlib.sha256(b"kid:" + KEY).digest())[:16]
    assert key_id(KEY) == expected and len(expected) == 16
    assert key_id(OTHER_KEY) != key_id(KEY)
    assert b64url(hashlib.sha256(KEY).digest())[:16] != key_id(KEY)


def test_issued_access_tokens_carry_the_documented_claims():
    token = issue_access_token(7, "admin", (KEY,), now=NOW + 0.9)
    claims = decode_token(token, (KEY,), now=NOW)
    assert set(claims) == {"sub", "role", "iat", "exp", "jti", "ep"}
    assert claims["sub"] == "7" and claims["role"] == "admin"
    assert type(claims["ep"]) is int and claims["ep"] == 0  # the token epoch of a new account
    assert type(claims["iat"]) is int and claims["iat"] == NOW
    assert type(claims["exp"]) is int and claims["exp"] == NOW + auth.ACCESS_TOKEN_TTL_SECONDS
    assert auth.ACCESS_TOKEN_TTL_SECONDS == 15 * 60
    assert re.fullmatch(r"[0-9a-f]{32}", claims["jti"])


def test_every_access_token_has_its_own_jti():
    tokens = [issue_access_token(7, "user", (KEY,), now=NOW) for _ in range(200)]
    jtis = {decode_token(token, (KEY,), now=NOW)["jti"] for token in tokens}
    assert len(jtis) == 200


def test_an_access_token_expires_after_its_ttl_and_the_leeway():
    token = issue_access_token(7, "user", (KEY,), now=NOW)
    assert decode_token(token, (KEY,), now=NOW + 900 + LEEWAY)["sub"] == "7"
    with pytest.raises(TokenError, match=r"^token expired$"):
        decode_token(token, (KEY,), now=NOW + 900 + LEEWAY + 1)


def test_decode_token_uses_the_clock_by_default():
    assert decode_token(issue_access_token(7, "user", (KEY,)), (KEY,))["sub"] == "7"
    an_hour_ago = issue_access_token(7, "user", (KEY,), now=time.time() - 3600)
    with pytest.raises(TokenError, match=r"^token expired$"):
        decode_token(an_hour_ago, (KEY,))


@pytest.mark.parametrize("user_id, role", [
    (0, "user"), (-1, "user"), (True, "user"), ("7", "user"), (7.0, "user"),
    (7, "superuser"), (7, "Admin"), (7, None),
])
def test_issue_access_token_refuses_a_bad_user_or_role(user_id, role):
    with pytest.raises(ValueError):
        issue_access_token(user_id, role, (KEY,))


# -- an independent implementation: PyJWT --

def test_pyjwt_verifies_our_tokens_and_reads_the_same_claims_and_kid():
    token = issue_access_token(7, "admin", (KEY,))
    assert jwt.decode(token, KEY, algorithms=["HS256"]) == decode_token(token, (KEY,))
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT", "kid": key_id(KEY)}


def test_pyjwt_refuses_our_token_under_another_key():
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(issue_access_token(7, "user", (KEY,)), OTHER_KEY, algorithms=["HS256"])


def test_we_verify_tokens_made_by_pyjwt():
    now = int(time.time())
    claims = {"sub": "7", "role": "user", "iat": now, "exp": now + 900, "jti": "a1b2c3"}
    token = jwt.encode(claims, KEY, algorithm="HS256", headers={"kid": key_id(KEY)})
    assert decode_token(token, (KEY,)) == claims


@pytest.mark.parametrize("signing_key, algorithm, headers, reason", [
    (KEY, "HS256", None, "missing kid"),
    (OTHER_KEY, "HS256", {"kid": KID}, "bad signature"),
    (KEY * 2, "HS512", {"kid": KID}, "unsupported alg"),  # 64 bytes, the least PyJWT wants for HS512
    (None, "none", {"kid": KID}, "unsupported alg"),
], ids=["no kid", "another key", "HS512", "alg none"])
def test_we_refuse_bad_tokens_made_by_pyjwt(signing_key, algorithm, headers, reason):
    token = jwt.encode(CLAIMS, signing_key, algorithm=algorithm, headers=headers)
    with pytest.raises(TokenError, match=f"^{reason}$"):
        decode_token(token, (KEY,), now=NOW)


# -- keys and rotation --

def test_the_first_key_signs_and_names_itself_in_kid():
    token = encode_token(CLAIMS, (NEW_KEY, OLD_KEY))
    assert jwt.get_unverified_header(token)["kid"] == key_id(NEW_KEY)
    assert token == forge(header_with(kid=key_id(NEW_KEY)), CLAIMS, NEW_KEY)


def test_a_token_signed_by_the_old_key_verifies_while_it_is_configured():
    token = encode_token(CLAIMS, (OLD_KEY,))
    assert decode_token(token, (NEW_KEY, OLD_KEY), now=NOW) == CLAIMS
    with pytest.raises(TokenError, match=r"^unknown kid$"):
        decode_token(token, (NEW_KEY,), now=NOW)


def test_no_keys_configured_verifies_nothing():
    with pytest.raises(TokenError, match=r"^unknown kid$"):
        decode_token(VALID_TOKEN, (), now=NOW)


# -- everything that is not a valid access token --

def _non_canonical(segment):
    """The same bytes with the unused low bit of the last character set differently."""
    last = BASE64URL_ALPHABET.index(segment[-1])
    return segment[:-1] + BASE64URL_ALPHABET[last ^ 1]


def _nested_payload(depth):
    return b'{"x":' + b"[" * depth + b"]" * depth + b"}"


def with_header(**changes):
    return forge(header_with(**changes), CLAIMS)


def with_claims(**changes):
    return forge(HEADER, claims_with(**changes))


def spliced(header=HEADER_SEGMENT, payload=PAYLOAD_SEGMENT, signature=SIGNATURE_SEGMENT):
    return f"{header}.{payload}.{signature}"


def raw(text):
    """JSON text as bytes, for what json.dumps will not write; KID and NOW filled in."""
    return text.replace("KID", KID).replace("NOW", str(NOW)).encode()


REJECTED_TOKENS = {
    # alg: chosen by us, never by the token (RFC 8725 §3.1)
    **{f"alg {alg}, empty signature": (forge(header_with(alg=alg), CLAIMS, signature=""), "unsupported alg")
       for alg in ("none", "None", "NONE", "nOnE")},
    **{f"alg {alg}, valid HS256 signature": (with_header(alg=alg), "unsupported alg")
       for alg in ("none", "None", "NONE", "nOnE")},
    "alg HS512": (with_header(alg="HS512"), "unsupported alg"),
    "alg HS384": (with_header(alg="HS384"), "unsupported alg"),
    "alg RS256": (with_header(alg="RS256"), "unsupported alg"),
    "alg ES256": (with_header(alg="ES256"), "unsupported alg"),
    "alg hs256": (with_header(alg="hs256"), "unsupported alg"),
    "alg with a space": (with_header(alg="HS256 "), "unsupported alg"),
    "alg missing": (with_header(alg=DROP), "unsupported alg"),
    "alg null": (with_header(alg=None), "unsupported alg"),
    "alg a number": (with_header(alg=256), "unsupported alg"),
    "alg a list": (with_header(alg=["HS256"]), "unsupported alg"),
    # other header members
    "crit": (with_header(crit=["exp"]), "unsupported crit header"),
    "crit empty": (with_header(crit=[]), "unsupported crit header"),
    "typ JWS": (with_header(typ="JWS"), "unsupported typ"),
    "typ at+jwt": (with_header(typ="at+jwt"), "unsupported typ"),
    "typ null": (with_header(typ=None), "unsupported typ"),
    "no kid": (with_header(kid=DROP), "missing kid"),
    "kid of an unconfigured key, signed by it":
        (forge(header_with(kid=key_id(OTHER_KEY)), CLAIMS, OTHER_KEY), "unknown kid"),
    "kid empty": (with_header(kid=""), "unknown kid"),
    "kid null": (with_header(kid=None), "unknown kid"),
    "kid a number": (with_header(kid=1), "unknown kid"),
    "kid the key itself": (with_header(kid=KEY.decode()), "unknown kid"),
    "duplicate alg": (forge(raw('{"alg":"none","alg":"HS256","kid":"KID"}'), CLAIMS), "malformed header"),
    "duplicate kid": (forge(raw('{"alg":"HS256","kid":"x","kid":"KID"}'), CLAIMS), "malformed header"),
    "header a list": (forge(raw('["HS256"]'), CLAIMS), "malformed header"),
    "header not JSON": (forge(raw("alg=HS256"), CLAIMS), "malformed header"),
    "header not UTF-8": (forge(b'\xff{"alg":"HS256"}', CLAIMS), "malformed header"),
    "header with NaN": (forge(raw('{"alg":"HS256","kid":"KID","x":NaN}'), CLAIMS), "malformed header"),
    "header empty": (forge(b"", CLAIMS), "malformed header"),
    # the signature
    "our kid, another key's signature": (forge(HEADER, CLAIMS, OTHER_KEY), "bad signature"),
    "empty signature": (spliced(signature=""), "bad signature"),
    "signature of 16 bytes": (spliced(signature=b64url(bytes(16))), "bad signature"),
    "signature of 64 bytes": (spliced(signature=b64url(bytes(64))), "bad signature"),
    "HMAC-SHA512 signature": (spliced(signature=b64url(hmac.new(
        KEY, f"{HEADER_SEGMENT}.{PAYLOAD_SEGMENT}".encode(), hashlib.sha512).digest())), "bad signature"),
    # Character 20 turns the `"` before typ into \x02: the header is no longer JSON.
    "a flipped character in the header": (spliced(header=flip(HEADER_SEGMENT, 20)), "malformed header"),
    "a header member added, signature kept":
        (spliced(header=segment_of_header(header_with(cty="JWT"))), "bad signature"),
    "a flipped character in the payload": (spliced(payload=flip(PAYLOAD_SEGMENT, 20)), "bad signature"),
    "a flipped character in the signature": (spliced(signature=flip(SIGNATURE_SEGMENT, 20)), "bad signature"),
    "payload changed, signature kept": (spliced(payload=segment_of(claims_with(role="admin"))), "bad signature"),
    "signature respelled in its unused bits":
        (spliced(signature=_non_canonical(SIGNATURE_SEGMENT)), "malformed token"),
    # the shape
    "an extra segment": (VALID_TOKEN + ".e30", "malformed token"),
    "an empty extra segment": (VALID_TOKEN + ".", "malformed token"),
    "two segments": (f"{HEADER_SEGMENT}.{PAYLOAD_SEGMENT}", "malformed token"),
    "one segment": (HEADER_SEGMENT, "malformed token"),
    "empty": ("", "malformed token"),
    "padding on the header": (spliced(header=HEADER_SEGMENT + "="), "malformed token"),
    "padding on the signature": (VALID_TOKEN + "=", "malformed token"),
    "standard alphabet +": (VALID_TOKEN[:-5] + "+" + VALID_TOKEN[-4:], "malformed token"),
    "standard alphabet /": (VALID_TOKEN[:-5] + "/" + VALID_TOKEN[-4:], "malformed token"),
    "leading space": (" " + VALID_TOKEN, "malformed token"),
    "trailing newline": (VALID_TOKEN + "\n", "malformed token"),
    "a space inside": (VALID_TOKEN[:30] + " " + VALID_TOKEN[30:], "malformed token"),
    "non-ASCII": (VALID_TOKEN[:-1] + "é", "malformed token"),
    "a full-width letter": ("ｅ" + VALID_TOKEN[1:], "malformed token"),
    "9 KiB": (with_header(padding="x" * 9 * 1024), "token too long"),
    "one character over 8 KiB": ("A" * (8 * 1024 + 1), "token too long"),
    # the claims, in a correctly signed token
    "expired beyond the leeway": (with_claims(iat=NOW - 2000, exp=NOW - LEEWAY - 1), "token expired"),
    "nbf in the future": (with_claims(nbf=NOW + LEEWAY + 1), "token not yet valid"),
    "nbf a string": (with_claims(nbf="0"), "invalid claim: nbf"),
    "iat in the future": (with_claims(iat=NOW + LEEWAY + 1, exp=NOW + 2000), "token issued in the future"),
    **{f"no {name}": (with_claims(**{name: DROP}), f"missing claim: {name}")
       for name in ("sub", "role", "iat", "exp", "jti")},
    "exp a string": (with_claims(exp=str(NOW + 900)), "invalid claim: exp"),
    "exp true": (with_claims(exp=True), "invalid claim: exp"),
    "exp null": (with_claims(exp=None), "invalid claim: exp"),
    "exp NaN": (with_claims(exp=float("nan")), "malformed payload"),  # json.dumps writes NaN
    "exp Infinity": (with_claims(exp=float("inf")), "malformed payload"),
    "exp 1e999": (forge(HEADER, raw('{"sub":"42","role":"user","iat":NOW,"exp":1e999,"jti":"j"}')),
                  "malformed payload"),
    "iat a string": (with_claims(iat="now"), "invalid claim: iat"),
    "iat false": (with_claims(iat=False), "invalid claim: iat"),
    "sub a number": (with_claims(sub=42), "invalid claim: sub"),
    "sub empty": (with_claims(sub=""), "invalid claim: sub"),
    "sub not digits": (with_claims(sub="admin"), "invalid claim: sub"),
    "sub with a leading zero": (with_claims(sub="042"), "invalid claim: sub"),
    "sub negative": (with_claims(sub="-1"), "invalid claim: sub"),
    "sub in Arabic-Indic digits": (with_claims(sub="٤٢"), "invalid claim: sub"),
    "role superuser": (with_claims(role="superuser"), "invalid claim: role"),
    "role Admin": (with_claims(role="Admin"), "invalid claim: role"),
    "role null": (with_claims(role=None), "invalid claim: role"),
    "role a list": (with_claims(role=["admin"]), "invalid claim: role"),
    "jti empty": (with_claims(jti=""), "invalid claim: jti"),
    "jti a number": (with_claims(jti=7), "invalid claim: jti"),
    "duplicate role": (forge(HEADER, raw(
        '{"sub":"42","role":"user","role":"admin","iat":NOW,"exp":NOW,"jti":"j"}')), "malformed payload"),
    "payload a list": (forge(HEADER, raw("[]")), "malformed payload"),
    "payload nested 2,000 deep": (forge(HEADER, _nested_payload(2000)), "malformed payload"),
    "payload with a 5,000-digit number": (forge(HEADER, raw('{"exp":' + "9" * 5000 + "}")), "malformed payload"),
    # other secrets, and things that are not text
    "a refresh token": (new_refresh_token(), "malformed token"),
    "a session id": (new_session_id(), "malformed token"),
    "an API key": (new_api_key()[0], "malformed token"),
    "a CSRF token": (csrf_token_for("a-session", (KEY,)), "malformed token"),
    "a signed cursor": (sign_value({"v": [20]}, (KEY,), purpose="cursor"), "malformed token"),
    "None": (None, "malformed token"),
    "bytes": (VALID_TOKEN.encode(), "malformed token"),
    "int": (42, "malformed token"),
}


def test_the_forged_tokens_are_right_but_for_their_defect():
    assert decode_token(VALID_TOKEN, (KEY,), now=NOW) == CLAIMS


@pytest.mark.parametrize("token, reason", REJECTED_TOKENS.values(), ids=REJECTED_TOKENS.keys())
def test_a_bad_token_is_a_token_error_with_its_reason(token, reason):
    with pytest.raises(TokenError) as caught:  # any other exception type fails the test
        decode_token(token, (KEY,), now=NOW)
    assert str(caught.value) == reason


ACCEPTED_TOKENS = {
    "expired, within the leeway": forge(HEADER, claims_with(iat=NOW - 2000, exp=NOW - LEEWAY)),
    "nbf in the future, within the leeway": forge(HEADER, claims_with(nbf=NOW + LEEWAY)),
    "nbf in the past": forge(HEADER, claims_with(nbf=NOW - 10)),
    "iat in the future, within the leeway": forge(HEADER, claims_with(iat=NOW + LEEWAY)),
    "times as floats": forge(HEADER, claims_with(iat=NOW + 0.5, exp=NOW + 900.5)),
    "no typ": forge(header_with(typ=DROP), CLAIMS),
    "an extra claim": forge(HEADER, claims_with(scope="orders:read")),
    "header members in another order": forge({"kid": KID, "typ": "JWT", "alg": "HS256"}, CLAIMS),
}


@pytest.mark.parametrize("token", ACCEPTED_TOKENS.values(), ids=ACCEPTED_TOKENS.keys())
def test_tokens_within_the_rules_are_accepted(token):
    claims = decode_token(token, (KEY,), now=NOW)
    assert claims["sub"] == "42"


def test_token_errors_never_show_key_material():
    reasons = set()
    for token, _ in REJECTED_TOKENS.values():
        try:
            decode_token(token, (KEY, OTHER_KEY), now=NOW)
        except TokenError as error:
            reasons.add(str(error))
    assert reasons and all(len(reason) <= 30 for reason in reasons)
    assert not any(secret in reason for reason in reasons for secret in ("kkkk", "oooo", KID))


@pytest.fixture
def hmac_new_calls(monkeypatch):
    calls = []
    real_hmac_new = hmac.new

    def spy(key, message=None, digestmod=""):
        calls.append(key)
        return real_hmac_new(key, message, digestmod)

    monkeypatch.setattr(auth.hmac, "new", spy)
    return calls


@pytest.mark.parametrize("alg", ["none", "HS512", "RS256"])
def test_the_alg_is_refused_before_any_signature_work(hmac_new_calls, compare_digest_calls, alg):
    token = forge(header_with(alg=alg), CLAIMS)
    hmac_new_calls.clear()  # forge signed it, with the same hmac.new
    with pytest.raises(TokenError, match=r"^unsupported alg$"):
        decode_token(token, (KEY,), now=NOW)
    assert hmac_new_calls == [] and compare_digest_calls == []


def test_the_signature_is_checked_once_with_compare_digest_and_the_named_key(
        hmac_new_calls, compare_digest_calls):
    token = encode_token(CLAIMS, (OLD_KEY,))
    hmac_new_calls.clear()
    assert decode_token(token, (NEW_KEY, OLD_KEY), now=NOW) == CLAIMS
    assert hmac_new_calls == [OLD_KEY]
    assert len(compare_digest_calls) == 1 and len(compare_digest_calls[0][1]) == 32


def test_a_verified_token_is_remembered_but_its_expiry_checked_every_time(hmac_new_calls):
    token = encode_token(CLAIMS, (KEY,))
    hmac_new_calls.clear()
    assert decode_token(token, (KEY,), now=NOW) == CLAIMS
    assert decode_token(token, (KEY,), now=NOW) == CLAIMS
    assert len(hmac_new_calls) == 1  # the second decode did no signature work
    with pytest.raises(TokenError, match=r"^token expired$"):
        decode_token(token, (KEY,), now=CLAIMS["exp"] + auth.TOKEN_LEEWAY_SECONDS + 1)
    decoded = decode_token(token, (KEY,), now=NOW)
    decoded["role"] = "admin"  # a caller changing its copy changes nothing remembered
    assert decode_token(token, (KEY,), now=NOW)["role"] == CLAIMS["role"]


def test_compare_digest_alone_decides_a_signature(monkeypatch):
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda expected, given: True)
    tampered = f"{HEADER_SEGMENT}.{PAYLOAD_SEGMENT}.{flip(SIGNATURE_SEGMENT, 20)}"
    assert decode_token(tampered, (KEY,), now=NOW) == CLAIMS


# == opaque secrets ============================================================================

OPAQUE_TOKEN_MAKERS = {"refresh token": new_refresh_token, "session id": new_session_id}


@pytest.mark.parametrize("make", OPAQUE_TOKEN_MAKERS.values(), ids=OPAQUE_TOKEN_MAKERS.keys())
def test_opaque_tokens_carry_256_random_bits(make):
    token = make()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    assert len(base64.urlsafe_b64decode(token + "=")) * 8 == 256


@pytest.mark.parametrize("make", OPAQUE_TOKEN_MAKERS.values(), ids=OPAQUE_TOKEN_MAKERS.keys())
def test_opaque_tokens_do_not_repeat(make):
    assert len({make() for _ in range(1000)}) == 1000


def test_hash_token_is_hex_sha256():
    # FIPS 180-2, appendix B.1: SHA-256("abc")
    assert hash_token("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    token = new_refresh_token()
    assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", hash_token(token))


def test_hash_token_of_a_token_that_is_not_unicode_text_still_hashes():
    assert re.fullmatch(r"[0-9a-f]{64}", hash_token("\ud800"))


# -- API keys --

API_KEY_FORMAT = re.compile(r"shop_([a-z2-7]{8})_([A-Za-z0-9_-]{43})")


def test_a_new_api_key_has_the_documented_format():
    key, prefix = new_api_key()
    lookup, secret = API_KEY_FORMAT.fullmatch(key).groups()
    assert lookup == prefix == api_key_prefix(key)
    assert len(base64.urlsafe_b64decode(secret + "=")) * 8 == 256


def test_api_keys_do_not_repeat():
    keys = [new_api_key()[0] for _ in range(1000)]
    assert len(set(keys)) == 1000


WELL_FORMED_KEY = "shop_k3x7m2qa_" + "Ab-_9" * 8 + "Zz0"
API_KEY_CASES = {
    "well formed": (WELL_FORMED_KEY, "k3x7m2qa"),
    "secret starting with _": ("shop_k3x7m2qa_" + "_" * 43, "k3x7m2qa"),
    "None": (None, None),
    "int": (1, None),
    "bytes": (WELL_FORMED_KEY.encode(), None),
    "empty": ("", None),
    "only the kind": ("shop_", None),
    "upper-case kind": ("SHOP" + WELL_FORMED_KEY[4:], None),
    "another kind": ("shap" + WELL_FORMED_KEY[4:], None),
    "prefix of 7": ("shop_k3x7m2q_" + "A" * 43, None),
    "prefix of 9": ("shop_k3x7m2qaa_" + "A" * 43, None),
    "prefix with 1 (not base32)": ("shop_k3x1m2qa_" + "A" * 43, None),
    "prefix with 8 (not base32)": ("shop_k3x8m2qa_" + "A" * 43, None),
    "upper-case prefix": ("shop_K3X7M2QA_" + "A" * 43, None),
    "secret of 42": ("shop_k3x7m2qa_" + "A" * 42, None),
    "secret of 44": ("shop_k3x7m2qa_" + "A" * 44, None),
    "secret with +": ("shop_k3x7m2qa_" + "A" * 42 + "+", None),
    "secret with /": ("shop_k3x7m2qa_" + "A" * 42 + "/", None),
    "secret padded": ("shop_k3x7m2qa_" + "A" * 42 + "=", None),
    "missing separator": ("shopk3x7m2qa_" + "A" * 43, None),
    "trailing newline": (WELL_FORMED_KEY + "\n", None),
    "leading space": (" " + WELL_FORMED_KEY, None),
    "non-ASCII": (WELL_FORMED_KEY[:-1] + "é", None),
    "a refresh token": (new_refresh_token(), None),
    "an access token": (VALID_TOKEN, None),
}


@pytest.mark.parametrize("key, prefix", API_KEY_CASES.values(), ids=API_KEY_CASES.keys())
def test_api_key_prefix(key, prefix):
    assert api_key_prefix(key) == prefix


# -- the token epoch claim "ep" (accounts.token_user compares it with the user's) ----------------

def test_pyjwt_verifies_a_token_with_an_epoch_and_reads_the_claim():
    token = issue_access_token(7, "user", (KEY,), epoch=3)
    claims = jwt.decode(token, KEY, algorithms=["HS256"])
    assert claims["ep"] == 3 and claims["sub"] == "7" and claims["role"] == "user"
    assert decode_token(token, (KEY,))["ep"] == 3


@pytest.mark.parametrize("epoch", [-1, "1", 1.0, True, None])
def test_issue_access_token_refuses_a_bad_epoch(epoch):
    with pytest.raises(ValueError, match="epoch"):
        issue_access_token(7, "user", (KEY,), epoch=epoch)


@pytest.mark.parametrize("epoch", [-1, "1", 1.5, False, None, [1]])
def test_a_malformed_epoch_claim_is_refused(epoch):
    token = encode_token(dict(CLAIMS, ep=epoch), (KEY,))
    with pytest.raises(TokenError, match="invalid claim: ep"):
        decode_token(token, (KEY,), now=NOW)


def test_the_epoch_claim_is_optional():
    assert "ep" not in decode_token(encode_token(CLAIMS, (KEY,)), (KEY,), now=NOW)


# -- found by mutation testing (tools/mutate.py, docs/testing.md) ---------------------------

def test_user_1_gets_an_access_token():
    assert decode_token(issue_access_token(1, "user", (KEY,), now=NOW), (KEY,), now=NOW)["sub"] == "1"


def test_issue_access_token_says_what_is_wrong():
    with pytest.raises(ValueError) as refusal:
        issue_access_token(0, "user", (KEY,))
    assert str(refusal.value) == "user_id must be a positive int"
    with pytest.raises(ValueError) as refusal:
        issue_access_token(7, "superuser", (KEY,))
    assert str(refusal.value) == f"role must be one of {auth.ROLES}"


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_encode_token_refuses_a_claim_json_cannot_express(number):
    # Python's json would write NaN and Infinity, which no other JSON parser reads.
    with pytest.raises(ValueError):
        encode_token(dict(CLAIMS, score=number), (KEY,))


def test_a_token_of_exactly_max_token_chars_is_parsed_and_one_more_character_is_not():
    exactly = "A" * auth.MAX_TOKEN_CHARS
    with pytest.raises(TokenError) as refusal:
        decode_token(exactly, (KEY,), now=NOW)
    assert str(refusal.value) == "malformed token"  # read, then refused for its shape
    with pytest.raises(TokenError) as refusal:
        decode_token(exactly + "A", (KEY,), now=NOW)
    assert str(refusal.value) == "token too long"
