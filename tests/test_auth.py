"""Tests for auth.py: signed values (sign_value / unsign_value).

A known vector pins the wire format, and an independent implementation written here from
the standard library (base64url of the JSON, "." , base64url of HMAC-SHA256 over
"purpose:payload") checks it. Everything malformed must come back as None, never raise.
"""

import base64
import hashlib
import hmac
import json

import pytest

import auth
from auth import sign_value, unsign_value

KEY = b"k" * 32
OLD_KEY = b"an-older-key-still-verifying-32b"
NEW_KEY = b"the-new-key-that-signs-from-now!"
KNOWN_TOKEN = "eyJ2IjpbMjBdfQ.y9j1eu9exj4SeG5WYjOKM8r9j2sMDKwk0YWMl_rcqhk"  # {"v": [20]}, purpose "cursor"


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def independent_sign(value, key, purpose):
    """The wire format from the module docstring, written without auth.py."""
    payload = b64url(json.dumps(value, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(key, f"{purpose}:{payload}".encode(), hashlib.sha256).digest()
    return f"{payload}.{b64url(mac)}"


def flip(text, index):
    return text[:index] + ("B" if text[index] == "A" else "A") + text[index + 1:]


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

@pytest.fixture
def compare_digest_calls(monkeypatch):
    """Record every hmac.compare_digest call auth makes, still answering truthfully."""
    calls = []
    real_compare_digest = hmac.compare_digest

    def spy(expected, given):
        calls.append((expected, given))
        return real_compare_digest(expected, given)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    return calls


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
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda expected_mac, given: verdict)
    assert unsign_value(token, (KEY,), purpose="cursor") == expected
