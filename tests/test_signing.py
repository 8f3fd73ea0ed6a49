"""Tests for signing.py: signed values, CSRF tokens, and the HMAC and base64url helpers.

Each wire format is pinned by a known vector and checked against an independent
implementation written here from the module docstring with the standard library; the
helpers against RFC 4231 (HMAC-SHA256) and RFC 4648 §10 (base64). Everything malformed must
be refused the documented way (None or False), never with another exception.
"""

import hashlib
import hmac
import json
import secrets

import pytest
from conftest import b64url, flip

import signing
from signing import (
    b64url_decode,
    b64url_encode,
    csrf_token_for,
    hmac_sha256,
    mac,
    mac_matches,
    sign_value,
    unsign_value,
    verify_csrf_token,
)

KEY = b"k" * 32
OLD_KEY = b"an-older-key-still-verifying-32b"
NEW_KEY = b"the-new-key-that-signs-from-now!"
KNOWN_TOKEN = "eyJ2IjpbMjBdfQ.y9j1eu9exj4SeG5WYjOKM8r9j2sMDKwk0YWMl_rcqhk"  # {"v": [20]}, purpose "cursor"
BASE64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def independent_sign(value, key, purpose):
    """The wire format from the module docstring, written without signing.py."""
    payload = b64url(json.dumps(value, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(key, f"{purpose}:{payload}".encode(), hashlib.sha256).digest()
    return f"{payload}.{b64url(mac)}"


def non_canonical(text):
    """The same bytes with the unused low bit of the last character set differently."""
    last = BASE64URL_ALPHABET.index(text[-1])
    return text[:-1] + BASE64URL_ALPHABET[last ^ 1]


# -- the wire format and the round trip -------------------------------------------------------

def test_a_known_vector_matches_the_independent_implementation():
    assert sign_value({"v": [20]}, (KEY,), purpose="cursor") == KNOWN_TOKEN
    assert independent_sign({"v": [20]}, KEY, "cursor") == KNOWN_TOKEN
    assert unsign_value(KNOWN_TOKEN, (KEY,), purpose="cursor") == {"v": [20]}


@pytest.mark.parametrize("value", [
    {"v": [20]},
    {"sort": "-price_cents", "filters": "856d72db5f10667f", "after": [450, 9]},
    {"name": "Thé ☕ 茶"},
    [1, 2.5, None, True],
    "text",
    0,
    None,
])
def test_round_trip_and_agreement_with_the_independent_implementation(value):
    token = sign_value(value, (KEY,), purpose="cursor")
    assert token == independent_sign(value, KEY, "cursor")
    assert "=" not in token and token.count(".") == 1
    assert unsign_value(token, (KEY,), purpose="cursor") == value


def test_a_value_signed_for_one_purpose_is_refused_for_another():
    token = sign_value({"user_id": 1}, (KEY,), purpose="cursor")
    assert unsign_value(token, (KEY,), purpose="session") is None
    assert unsign_value(token, (KEY,), purpose="cursor ") is None


def test_a_changed_payload_is_refused():
    payload, signature = KNOWN_TOKEN.split(".")
    other_payload = b64url(b'{"v":[21]}')
    assert unsign_value(f"{other_payload}.{signature}", (KEY,), purpose="cursor") is None
    assert unsign_value(f"{flip(payload, 3)}.{signature}", (KEY,), purpose="cursor") is None


@pytest.mark.parametrize("index", [0, 10, 21, 41])
def test_a_changed_signature_is_refused(index):
    payload, signature = KNOWN_TOKEN.split(".")
    assert unsign_value(f"{payload}.{flip(signature, index)}", (KEY,), purpose="cursor") is None


# -- keys and rotation -------------------------------------------------------------------------

def test_a_value_signed_with_the_old_key_verifies_while_keys_rotate():
    token = sign_value({"v": 1}, (OLD_KEY,), purpose="cursor")
    assert unsign_value(token, (NEW_KEY, OLD_KEY), purpose="cursor") == {"v": 1}


def test_the_first_key_signs():
    token = sign_value({"v": 1}, (NEW_KEY, OLD_KEY), purpose="cursor")
    assert token == independent_sign({"v": 1}, NEW_KEY, "cursor")
    assert unsign_value(token, (OLD_KEY,), purpose="cursor") is None


@pytest.mark.parametrize("keys", [(NEW_KEY,), (NEW_KEY, OLD_KEY), ()])
def test_a_value_signed_with_an_unknown_key_is_refused(keys):
    token = sign_value({"v": 1}, (b"u" * 32,), purpose="cursor")
    assert unsign_value(token, keys, purpose="cursor") is None


# -- malformed input fails closed --------------------------------------------------------------

PAYLOAD, SIGNATURE = KNOWN_TOKEN.split(".")
MALFORMED_TOKENS = {
    "None": None,
    "int": 123,
    "bytes": KNOWN_TOKEN.encode(),
    "empty": "",
    "dot": ".",
    "two dots": "..",
    "three parts": "a.b.c",
    "no dot": "abc",
    "signature only": "." + SIGNATURE,
    "payload only": PAYLOAD + ".",
    "valid plus a part": KNOWN_TOKEN + ".x",
    "non-ascii": "é.é",
    "non-ascii signature": PAYLOAD + "." + SIGNATURE[:-1] + "é",
    "3000 chars": "A" * 1500 + "." + "A" * 1499,
    "bad base64": PAYLOAD + ".!!!!",
    "bad base64 length": PAYLOAD + "." + SIGNATURE[:-2],
    "whitespace": " " + KNOWN_TOKEN,
    "nul": PAYLOAD + "\x00." + SIGNATURE,
}


@pytest.mark.parametrize("token", MALFORMED_TOKENS.values(), ids=MALFORMED_TOKENS.keys())
def test_malformed_input_is_none_and_never_raises(token):
    assert unsign_value(token, (KEY,), purpose="cursor") is None


def test_a_payload_with_a_lone_surrogate_is_none():
    assert unsign_value("\ud800." + SIGNATURE, (KEY,), purpose="cursor") is None


SIGNATURE_RESPELLINGS = {
    "padding added": lambda signature: signature + "=",
    "junk characters": lambda signature: signature[:10] + "!!!!" + signature[10:],
    "standard alphabet": lambda signature: signature.replace("_", "/").replace("-", "+"),
    "unused low bits": lambda signature: signature[:-1] + "l",  # "k" and "l" differ only in unused bits
}


@pytest.mark.parametrize("respell", SIGNATURE_RESPELLINGS.values(), ids=SIGNATURE_RESPELLINGS.keys())
def test_only_the_issued_spelling_of_a_signature_verifies(respell):
    respelled = respell(SIGNATURE)
    assert respelled != SIGNATURE
    assert unsign_value(f"{PAYLOAD}.{respelled}", (KEY,), purpose="cursor") is None


# -- constant-time comparison ------------------------------------------------------------------


def test_the_signature_is_compared_with_compare_digest(compare_digest_calls):
    assert unsign_value(KNOWN_TOKEN, (KEY,), purpose="cursor") == {"v": [20]}
    assert len(compare_digest_calls) == 1


def test_every_key_is_tried_with_compare_digest(compare_digest_calls):
    token = sign_value({"v": 1}, (OLD_KEY,), purpose="cursor")
    assert unsign_value(token, (NEW_KEY, OLD_KEY), purpose="cursor") == {"v": 1}
    assert len(compare_digest_calls) == 2


@pytest.mark.parametrize("verdict, token, expected", [
    (False, KNOWN_TOKEN, None),
    (True, f"{PAYLOAD}.{flip(SIGNATURE, 10)}", {"v": [20]}),
])
def test_compare_digest_alone_decides(monkeypatch, verdict, token, expected):
    # If any other comparison (an `==`) also guarded the signature, one of these would differ.
    monkeypatch.setattr(signing.hmac, "compare_digest", lambda expected_mac, given: verdict)
    assert unsign_value(token, (KEY,), purpose="cursor") == expected

# == CSRF tokens ================================================================================

SESSION_ID = "wykPhD_SnkNo7s3Z4HvOK01BHMQGq8SmMrm4EF7pTLo"


def test_a_csrf_token_is_the_documented_hmac():
    expected = b64url(hmac.new(KEY, b"csrf:" + SESSION_ID.encode(), hashlib.sha256).digest())
    assert csrf_token_for(SESSION_ID, (KEY,)) == expected and len(expected) == 43


def test_csrf_round_trip():
    assert verify_csrf_token(csrf_token_for(SESSION_ID, (KEY,)), SESSION_ID, (KEY,))


def test_a_csrf_token_of_another_session_is_refused():
    assert not verify_csrf_token(csrf_token_for(secrets.token_urlsafe(32), (KEY,)), SESSION_ID, (KEY,))


@pytest.mark.parametrize("index", [0, 20, 41])
def test_a_tampered_csrf_token_is_refused(index):
    assert not verify_csrf_token(flip(csrf_token_for(SESSION_ID, (KEY,)), index), SESSION_ID, (KEY,))


def test_a_csrf_token_made_with_the_old_key_verifies_while_keys_rotate():
    token = csrf_token_for(SESSION_ID, (OLD_KEY,))
    assert verify_csrf_token(token, SESSION_ID, (NEW_KEY, OLD_KEY))
    assert not verify_csrf_token(token, SESSION_ID, (NEW_KEY,))
    assert csrf_token_for(SESSION_ID, (NEW_KEY, OLD_KEY)) == csrf_token_for(SESSION_ID, (NEW_KEY,))


def test_every_key_is_tried_with_compare_digest_for_csrf(compare_digest_calls):
    assert not verify_csrf_token("A" * 43, SESSION_ID, (NEW_KEY, OLD_KEY))
    assert len(compare_digest_calls) == 2


CSRF_TOKEN = csrf_token_for(SESSION_ID, (KEY,))
MALFORMED_CSRF = {
    "None": (None, SESSION_ID, (KEY,)),
    "int": (1, SESSION_ID, (KEY,)),
    "bytes": (CSRF_TOKEN.encode(), SESSION_ID, (KEY,)),
    "empty": ("", SESSION_ID, (KEY,)),
    "42 characters": (CSRF_TOKEN[:-1], SESSION_ID, (KEY,)),
    "44 characters": (CSRF_TOKEN + "A", SESSION_ID, (KEY,)),
    "padded": (CSRF_TOKEN + "=", SESSION_ID, (KEY,)),
    "non-ASCII": (CSRF_TOKEN[:-1] + "é", SESSION_ID, (KEY,)),
    "respelled in its unused bits": (non_canonical(CSRF_TOKEN), SESSION_ID, (KEY,)),
    "the session id instead": (SESSION_ID, SESSION_ID, (KEY,)),
    "session id None": (CSRF_TOKEN, None, (KEY,)),
    "session id empty": (csrf_token_for("", (KEY,)), "", (KEY,)),
    "session id a lone surrogate": (CSRF_TOKEN, "\ud800", (KEY,)),
    "no keys": (CSRF_TOKEN, SESSION_ID, ()),
}


@pytest.mark.parametrize("token, session_id, keys", MALFORMED_CSRF.values(), ids=MALFORMED_CSRF.keys())
def test_malformed_csrf_input_is_false_and_never_raises(token, session_id, keys):
    assert verify_csrf_token(token, session_id, keys) is False


def test_the_documented_csrf_vector():
    assert csrf_token_for(SESSION_ID, (KEY,)) == "GwizjiiYYEuyjz2WkwdZ0FqCsvDx7VMPMzxUDf6Zv8I"
    assert "GwizjiiYYEuyjz2WkwdZ0FqCsvDx7VMPMzxUDf6Zv8I" in signing.__doc__


def test_a_csrf_token_and_a_signed_value_never_stand_in_for_each_other():
    # The same key and the same message, two purposes: two unrelated MACs.
    payload = KNOWN_TOKEN.split(".")[0]
    assert unsign_value(f"{payload}.{csrf_token_for(payload, (KEY,))}", (KEY,), purpose="cursor") is None
    assert not verify_csrf_token(KNOWN_TOKEN.split(".")[1], payload, (KEY,))


# == the building blocks: HMAC and base64url =====================================================

def test_hmac_sha256_matches_rfc_4231():
    # RFC 4231 §4.3, test case 2: a short key, a message of ASCII text.
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert hmac_sha256(b"Jefe", b"what do ya want for nothing?").hex() == expected


def test_mac_is_the_hmac_of_the_purpose_a_colon_and_the_message():
    assert mac(KEY, "cursor", b"abc") == hmac.new(KEY, b"cursor:abc", hashlib.sha256).digest()
    assert mac(KEY, "cursor", b"abc") != mac(KEY, "csrf", b"abc")
    assert len(mac(KEY, "cursor", b"")) == 32


def test_mac_matches_tries_every_key_and_one_purpose():
    signature = b64url(mac(OLD_KEY, "state", b"xyz"))
    assert mac_matches(signature, (NEW_KEY, OLD_KEY), "state", b"xyz")
    assert not mac_matches(signature, (NEW_KEY,), "state", b"xyz")
    assert not mac_matches(signature, (OLD_KEY,), "cursor", b"xyz")
    assert not mac_matches(signature, (OLD_KEY,), "state", b"xyzw")


@pytest.mark.parametrize("signature", [None, 7, b"AAAA", "é" * 43, "", non_canonical(b64url(mac(KEY, "state", b"x")))],
                         ids=["None", "int", "bytes", "non-ASCII", "empty", "respelled"])
def test_mac_matches_is_false_for_anything_else(signature):
    assert mac_matches(signature, (KEY,), "state", b"x") is False


# RFC 4648 §10, in the URL-safe alphabet and without padding.
RFC_4648_VECTORS = [(b"", ""), (b"f", "Zg"), (b"fo", "Zm8"), (b"foo", "Zm9v"), (b"foob", "Zm9vYg"),
                    (b"fooba", "Zm9vYmE"), (b"foobar", "Zm9vYmFy"), (b"\xfb\xff", "-_8")]


@pytest.mark.parametrize("raw, text", RFC_4648_VECTORS)
def test_b64url_matches_rfc_4648(raw, text):
    assert b64url_encode(raw) == text
    assert b64url_decode(text) == raw


BAD_BASE64URL = {
    "padded": "Zm8=",
    "standard alphabet +": "+_8",
    "standard alphabet /": "-/8",
    "a space": "Zm9 v",
    "a newline at the end": "Zm9v\n",
    "junk inside": "Zm!9v",
    "one character": "Z",
    "five characters": "Zm9vY",
    "unused bits set": "Zh",  # "Zg" with a bit that carries no data set
    "non-ASCII": "Zm9vé",
    "bytes": b"Zm9v",
    "None": None,
}


@pytest.mark.parametrize("text", BAD_BASE64URL.values(), ids=BAD_BASE64URL.keys())
def test_b64url_decode_refuses_every_other_spelling(text):
    with pytest.raises(ValueError):
        b64url_decode(text)


def test_sign_value_refuses_what_json_cannot_express():
    for value in (float("nan"), {1, 2}):
        with pytest.raises((ValueError, TypeError)):
            sign_value(value, (KEY,), purpose="cursor")


@pytest.mark.parametrize("purpose", ["csrf", "eyJhbGciOiJIUzI1NiJ9"])
def test_a_signed_value_may_not_take_a_purpose_of_another_kind_of_mac(purpose):
    # A cursor signed as "csrf" would be a valid CSRF token for some session id: refused.
    with pytest.raises(ValueError, match="belongs to another kind of MAC"):
        sign_value({"v": 1}, (KEY,), purpose=purpose)
    with pytest.raises(ValueError, match="belongs to another kind of MAC"):
        unsign_value("e30.abc", (KEY,), purpose=purpose)


# -- found by mutation testing (tools/mutate.py, docs/testing.md) ---------------------------

B64URL_REFUSALS = [  # each malformed spelling above, and which of the two refusals it meets
    *[(text, "not base64url") for name, text in BAD_BASE64URL.items() if name != "unused bits set"],
    ("Zh", "not canonical base64url"),  # decodes, but b64url_encode would write "Zg"
]


@pytest.mark.parametrize("text, reason", B64URL_REFUSALS)
def test_b64url_decode_says_which_rule_a_spelling_breaks(text, reason):
    # Outside the alphabet, or a length no base64 has ("Z"), is not base64url at all; a
    # spelling the standard decoder accepts but we would never write is not canonical.
    with pytest.raises(ValueError) as refusal:
        b64url_decode(text)
    assert str(refusal.value) == reason


def test_b64url_encode_strips_the_padding_and_nothing_else():
    assert b64url_encode(b"\x00\x00\x17") == "AAAX" == b64url(b"\x00\x00\x17")
    assert b64url_encode(b"\x00\x00\x17\x00") == "AAAXAA"


def test_a_signed_value_of_the_longest_length_is_read_and_a_longer_one_is_not():
    # A string of 1,501 characters is 1,503 bytes of JSON, 2,004 characters of base64url;
    # with the "." and the 43-character MAC, exactly MAX_SIGNED_VALUE_CHARS.
    value = "a" * 1501
    token = sign_value(value, (KEY,), purpose="cursor")
    assert len(token) == signing.MAX_SIGNED_VALUE_CHARS
    assert unsign_value(token, (KEY,), purpose="cursor") == value
    longer = sign_value(value + "a", (KEY,), purpose="cursor")
    assert len(longer) > signing.MAX_SIGNED_VALUE_CHARS
    assert unsign_value(longer, (KEY,), purpose="cursor") is None


# -- webhook signatures (Standard Webhooks), against the standardwebhooks package ------------------

def test_a_webhook_secret_is_whsec_and_base64_of_24_random_bytes():
    import base64

    secret = signing.new_webhook_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 24
    assert signing.new_webhook_secret() != secret


def test_our_webhook_signatures_are_the_standard_webhooks_ones():
    from datetime import UTC, datetime

    from standardwebhooks import Webhook

    secret, body = signing.new_webhook_secret(), '{"type":"order.paid","data":{"name":"caf\u00e9 \u2615"}}'.encode()
    timestamp = int(datetime.now(UTC).timestamp())
    signature = signing.sign_webhook(secret, "msg_abc", timestamp, body)
    assert signature == Webhook(secret).sign("msg_abc", datetime.fromtimestamp(timestamp, UTC), body.decode())
    headers = {"webhook-id": "msg_abc", "webhook-timestamp": str(timestamp), "webhook-signature": signature}
    assert Webhook(secret).verify(body, headers) == json.loads(body)


@pytest.mark.parametrize("change", ["body", "id", "timestamp", "signature", "secret"])
def test_a_webhook_signature_covers_the_id_the_timestamp_and_the_body(change):
    secret, other_secret = signing.new_webhook_secret(), signing.new_webhook_secret()
    signature = signing.sign_webhook(secret, "msg_abc", 1674087231, b"{}")
    assert signing.verify_webhook(secret, "msg_abc", 1674087231, b"{}", signature)
    arguments = {"secret": secret, "message_id": "msg_abc", "timestamp": 1674087231, "body": b"{}",
                 "signature_header": signature}
    arguments.update({
        "body": {"body": b"{ }"}, "id": {"message_id": "msg_abd"}, "timestamp": {"timestamp": 1674087232},
        "signature": {"signature_header": flip(signature, 10)}, "secret": {"secret": other_secret},
    }[change])
    assert signing.verify_webhook(**arguments) is False


def test_any_of_several_signatures_may_match():
    """A receiver gets "v1,<old> v1,<new>" while a secret rotates (the specification's form)."""
    secret = signing.new_webhook_secret()
    signature = signing.sign_webhook(secret, "msg_abc", 1674087231, b"{}")
    assert signing.verify_webhook(secret, "msg_abc", 1674087231, b"{}", f"v1,AAAA {signature}")
    assert not signing.verify_webhook(secret, "msg_abc", 1674087231, b"{}", "v1,\u00e9")


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_not base64!", "a2tra2tra2tra2tra2tra2tra2tra2tr", None])
def test_a_malformed_webhook_secret_is_refused(secret):
    with pytest.raises(ValueError):
        signing.sign_webhook(secret, "msg_abc", 1, b"{}")
