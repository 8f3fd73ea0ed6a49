"""Tests for passwords.py: password hashes, the rules for new passwords, and the hashing gate.

The hash format is pinned by known vectors and checked against independent implementations:
RFC 7914 §11's PBKDF2 vectors and Django's own hasher. Everything malformed must be refused
the documented way (False, or a list of problems), never with another exception. Hashing
uses low iteration counts, except where a vector pins 600,000 or Django's own count, so the
suite stays fast. The gate is tested with a PBKDF2 that waits for the test's word, so that
"two run, two wait, the rest are refused" is seen as it happens, without sleeps.
"""

import base64
import hashlib
import math
import os
import re
import statistics
import threading
import time
import unicodedata

import pytest
from conftest import POLL_SECONDS, TEST_SECRET_KEY

import config
import passwords
import server
from passwords import (
    HashingBusy,
    HashingGate,
    burn_password_check,
    hash_password,
    password_needs_rehash,
    password_problems,
    verify_password,
)

PASSWORD = "correct horse battery staple"
UNICODE_PASSWORD = "Thé ☕ 茶, bitte heiß"
LONG_PASSWORD = ("a plum for every tuesday " * 50)[:1024]
FAST = 1_000  # iterations: enough to exercise PBKDF2, cheap enough for a fast suite
# Refusing a malformed hash parses a string: microseconds of CPU time. The bound is thousands of
# times that, and still far below one PBKDF2 run of a hostile hash's 10**9 iterations; that no
# PBKDF2 ran at all is asserted exactly.
REFUSAL_CPU_SECONDS = 0.05
# How far the median CPU time of burn_password_check may stray from a wrong password's, as a
# fraction: three times the 25 % they stay within on an idle machine, since a busy core slows
# a thread's CPU time too. Skipping the burn would be a difference of 100 %; the same PBKDF2
# work, exactly, is test_burn_password_check_does_the_work_of_one_verification.
BURN_TIMING_TOLERANCE = 0.75

# Made once by Django 5.2.19's PBKDF2PasswordHasher and pinned: verify_password must accept
# them exactly as Django wrote them. The first is Django's own test-suite vector
# (make_password("lètmein", "seasalt")) at Django's default count.
DJANGO_SALT = "dSTOLbct9vrzVxCeMiLucr"
DJANGO_HASHES = {
    "lètmein": "pbkdf2_sha256$1000000$seasalt$r1uLUxoxpP2Ued/qxvmje7UH9PUJBkRrvf9gGPL7Cps=",
    UNICODE_PASSWORD: "pbkdf2_sha256$1000$JLngS4laZdngPerEYdFlrv$7mxz1xkeN9x+jSd6ac5KTBbBeVtI7C8qkCyqs8XroVY=",
    PASSWORD: f"pbkdf2_sha256$1000${DJANGO_SALT}$bShT8H6sRv+ixod7egHqAaQVENSmtmnXpgpw7/AMTSc=",
}
# Django before 3.2 drew 12-character salts (~71 bits): such a hash verifies, then is renewed.
DJANGO_OLD_SALT_HASH = "pbkdf2_sha256$1000$Z0KfPcXh3Vwq$g0KL0/Ca5Tt/9+jB/tqx9kX+I9+bxQq+zDJm4dj4csU="
# Independent of Django and of us: base64 of hashlib.pbkdf2_hmac("sha256", PASSWORD,
# b"bkU8Ztm0yWwCBWkVmeGMcL", 600_000), the example in passwords' docstring.
HASH_600K = "pbkdf2_sha256$600000$bkU8Ztm0yWwCBWkVmeGMcL$NvL+UnqM+O4RkPOZI6M4hArxmaoZMnrBemb3K47WdiU="
# RFC 7914 §11, PBKDF2-HMAC-SHA256 test vectors: (P, S, c, the first 32 bytes of DK).
RFC_7914_VECTORS = [
    ("passwd", "salt", 1, "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"),
    ("Password", "NaCl", 80_000, "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56"),
]
OUR_HASH_FORMAT = re.compile(r"pbkdf2_sha256\$(\d+)\$([A-Za-z0-9]{22})\$([A-Za-z0-9+/]{43}=)")


@pytest.fixture(scope="module")
def django_hashers():
    """Django's own hashers module, its settings configured once (hashers only).

    Imported here, not at the top: Django's lazy settings object would answer the doctest
    collector's questions about module globals by raising ImproperlyConfigured.
    """
    from django.conf import settings

    if not settings.configured:
        settings.configure(PASSWORD_HASHERS=["django.contrib.auth.hashers.PBKDF2PasswordHasher"])
    from django.contrib.auth import hashers

    return hashers


# -- known vectors, both ways with Django --

@pytest.mark.parametrize("password, stored", DJANGO_HASHES.items(),
                         ids=["django default", "unicode", "ascii"])
def test_hashes_made_by_django_verify(password, stored):
    assert verify_password(password, stored)


@pytest.mark.parametrize("password", [PASSWORD, UNICODE_PASSWORD])
def test_a_wrong_password_fails_against_a_django_hash(password):
    assert not verify_password(password + "!", DJANGO_HASHES[password])


@pytest.mark.parametrize("password", [PASSWORD, UNICODE_PASSWORD, "", LONG_PASSWORD],
                         ids=["ascii", "unicode", "empty", "1,024 characters"])
def test_django_verifies_our_hashes(django_hashers, password):
    ours = hash_password(password, FAST)
    assert django_hashers.PBKDF2PasswordHasher().verify(password, ours)
    assert not django_hashers.PBKDF2PasswordHasher().verify(password + "!", ours)
    assert django_hashers.check_password(password, ours)
    assert django_hashers.identify_hasher(ours).algorithm == passwords.PASSWORD_ALGORITHM


def test_django_refuses_a_wrong_password_against_our_hash(django_hashers):
    # Once only: on a wrong password Django "hardens" the runtime up to its own 1,000,000
    # iterations (its burn_password_check), which takes a third of a second.
    assert not django_hashers.check_password(PASSWORD + "!", hash_password(PASSWORD, FAST))


def test_django_finds_our_salts_long_enough(django_hashers):
    salt = hash_password(PASSWORD, FAST).split("$")[2]
    entropy_wanted = django_hashers.PBKDF2PasswordHasher.salt_entropy
    assert not django_hashers.must_update_salt(salt, entropy_wanted)


def test_hash_password_writes_what_django_writes(monkeypatch):
    salt_characters = iter(DJANGO_SALT)
    monkeypatch.setattr(passwords.secrets, "choice", lambda alphabet: next(salt_characters))
    assert hash_password(PASSWORD, FAST) == DJANGO_HASHES[PASSWORD]


@pytest.mark.parametrize("password, salt, iterations, derived_hex", RFC_7914_VECTORS)
def test_rfc_7914_vectors_verify(password, salt, iterations, derived_hex):
    hash_part = base64.b64encode(bytes.fromhex(derived_hex)).decode()
    stored = f"pbkdf2_sha256${iterations}${salt}${hash_part}"
    assert verify_password(password, stored)
    assert not verify_password(password.swapcase(), stored)


def test_a_pinned_600000_iteration_vector():
    derived = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), b"bkU8Ztm0yWwCBWkVmeGMcL", 600_000)
    assert HASH_600K.endswith("$" + base64.b64encode(derived).decode())
    assert verify_password(PASSWORD, HASH_600K)
    assert HASH_600K in passwords.__doc__


# -- hash_password --

def test_a_hash_has_the_documented_format_and_a_fresh_salt():
    hashes = [hash_password(PASSWORD, FAST) for _ in range(50)]
    salts = set()
    for stored in hashes:
        iterations, salt, _ = OUR_HASH_FORMAT.fullmatch(stored).groups()
        assert iterations == "1000"
        salts.add(salt)
    assert len(salts) == 50


def test_the_salt_carries_at_least_128_bits():
    assert passwords.SALT_CHARS == 22
    assert passwords.SALT_CHARS * math.log2(62) >= 8 * passwords.SALT_BYTES == 128


BAD_HASH_ARGUMENTS = {
    "zero iterations": (PASSWORD, 0, ValueError),
    "negative iterations": (PASSWORD, -1, ValueError),
    "too many iterations": (PASSWORD, 10_000_001, ValueError),
    "bool iterations": (PASSWORD, True, ValueError),
    "float iterations": (PASSWORD, 1000.0, ValueError),
    "text iterations": (PASSWORD, "1000", ValueError),
    "None password": (None, FAST, TypeError),
    "bytes password": (PASSWORD.encode(), FAST, TypeError),
    "lone surrogate": ("\ud800" * 15, FAST, ValueError),
}


@pytest.mark.parametrize("password, iterations, error", BAD_HASH_ARGUMENTS.values(),
                         ids=BAD_HASH_ARGUMENTS.keys())
def test_hash_password_refuses_bad_arguments(password, iterations, error):
    with pytest.raises(error):
        hash_password(password, iterations)


# -- verify_password --

OUR_HASH = hash_password(PASSWORD, FAST)
OUR_UNICODE_HASH = hash_password(UNICODE_PASSWORD, FAST)
OUR_LONG_HASH = hash_password(LONG_PASSWORD, FAST)
OUR_EMPTY_HASH = hash_password("", FAST)

VERIFICATIONS = {
    "right": (PASSWORD, OUR_HASH, True),
    "one character short": (PASSWORD[:-1], OUR_HASH, False),
    "one character more": (PASSWORD + " ", OUR_HASH, False),
    "other case": (PASSWORD.title(), OUR_HASH, False),
    "empty": ("", OUR_HASH, False),
    "empty, against the hash of empty": ("", OUR_EMPTY_HASH, True),
    "unicode": (UNICODE_PASSWORD, OUR_UNICODE_HASH, True),
    # No Unicode normalisation, as Django: the same text in NFD is another password.
    "unicode, decomposed": (unicodedata.normalize("NFD", UNICODE_PASSWORD), OUR_UNICODE_HASH, False),
    "1,024 characters": (LONG_PASSWORD, OUR_LONG_HASH, True),
    "1,023 of them": (LONG_PASSWORD[:-1], OUR_LONG_HASH, False),
    "None": (None, OUR_HASH, False),
    "bytes": (PASSWORD.encode(), OUR_HASH, False),
    "lone surrogate": ("\ud800", OUR_HASH, False),
}


@pytest.mark.parametrize("password, stored, expected", VERIFICATIONS.values(), ids=VERIFICATIONS.keys())
def test_verify_password(password, stored, expected):
    assert verify_password(password, stored) is expected


ALGORITHM, ITERATIONS, SALT, HASH_PART = DJANGO_HASHES[PASSWORD].split("$")
MALFORMED_HASHES = {
    "None": None,
    "int": 1000,
    "bytes": DJANGO_HASHES[PASSWORD].encode(),
    "empty": "",
    "None as text": "None",
    "null as text": "null",
    "django's unusable password": "!Z0KfPcXh3VwqZ0KfPcXh3VwqZ0KfPcXh3VwqZ0Kf",
    "pbkdf2_sha512": f"pbkdf2_sha512${ITERATIONS}${SALT}${HASH_PART}",
    "pbkdf2_sha1": f"pbkdf2_sha1${ITERATIONS}${SALT}${HASH_PART}",
    "upper-case algorithm": f"PBKDF2_SHA256${ITERATIONS}${SALT}${HASH_PART}",
    "argon2": "argon2$argon2id$v=19$m=102400,t=2,p=8$c29tZXNhbHQ$YWFhYWFhYWFhYWFhYWFhYQ",
    "bcrypt_sha256": "bcrypt_sha256$$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
    "only the algorithm": ALGORITHM,
    "missing hash": f"{ALGORITHM}${ITERATIONS}${SALT}",
    "missing salt": f"{ALGORITHM}${ITERATIONS}${HASH_PART}",
    "empty salt": f"{ALGORITHM}${ITERATIONS}$${HASH_PART}",
    "an extra part": f"{ALGORITHM}${ITERATIONS}${SALT}${HASH_PART}$x",
    "iterations not a number": f"{ALGORITHM}$many${SALT}${HASH_PART}",
    "iterations zero": f"{ALGORITHM}$0${SALT}${HASH_PART}",
    "iterations negative": f"{ALGORITHM}$-1000${SALT}${HASH_PART}",
    "iterations 10**9": f"{ALGORITHM}$1000000000${SALT}${HASH_PART}",
    "iterations one over the maximum": f"{ALGORITHM}$10000001${SALT}${HASH_PART}",
    "iterations with a leading zero": f"{ALGORITHM}$01000${SALT}${HASH_PART}",
    "iterations 1e3": f"{ALGORITHM}$1e3${SALT}${HASH_PART}",
    "iterations with a plus": f"{ALGORITHM}$+1000${SALT}${HASH_PART}",
    "iterations in full-width digits": f"{ALGORITHM}$１０００${SALT}${HASH_PART}",
    "salt not alphanumeric": f"{ALGORITHM}${ITERATIONS}$dSTOLbct-9vrzVxCe${HASH_PART}",
    "salt not ascii": f"{ALGORITHM}${ITERATIONS}$sälz${HASH_PART}",
    "bad base64": f"{ALGORITHM}${ITERATIONS}${SALT}${HASH_PART[:10]}!!!!{HASH_PART[14:]}",
    "url-safe base64": f"{ALGORITHM}${ITERATIONS}${SALT}${HASH_PART.translate(str.maketrans('+/', '-_'))}",
    "hash without padding": f"{ALGORITHM}${ITERATIONS}${SALT}${HASH_PART.rstrip('=')}",
    "hash too short": f"{ALGORITHM}${ITERATIONS}${SALT}${HASH_PART[:-5]}=",
    "hash of 64 bytes": f"{ALGORITHM}${ITERATIONS}${SALT}${base64.b64encode(bytes(64)).decode()}",
    "trailing newline": DJANGO_HASHES[PASSWORD] + "\n",
    "leading space": " " + DJANGO_HASHES[PASSWORD],
}


@pytest.mark.parametrize("stored", MALFORMED_HASHES.values(), ids=MALFORMED_HASHES.keys())
def test_a_malformed_hash_is_false_at_once(pbkdf2_calls, stored):
    started = time.thread_time()
    assert verify_password(PASSWORD, stored) is False
    assert time.thread_time() - started < REFUSAL_CPU_SECONDS
    assert pbkdf2_calls == []  # refused before any PBKDF2 work: no DoS from a hostile hash


def test_the_hash_is_compared_with_compare_digest(compare_digest_calls):
    assert verify_password(PASSWORD, OUR_HASH)
    assert len(compare_digest_calls) == 1


@pytest.mark.parametrize("verdict, password", [(False, PASSWORD), (True, "a wrong password")])
def test_compare_digest_alone_decides_a_password(monkeypatch, verdict, password):
    monkeypatch.setattr(passwords.hmac, "compare_digest", lambda expected, given: verdict)
    assert verify_password(password, OUR_HASH) is verdict


# -- password_needs_rehash --

REHASH_CASES = {
    "as many iterations as the setting": (OUR_HASH, FAST, False),
    "fewer than the setting": (OUR_HASH, FAST + 1, True),
    "more than the setting": (hash_password(PASSWORD, 2 * FAST), FAST, False),
    "django's default count, ours lower": (hash_password(PASSWORD, FAST).replace("$1000$", "$1000000$"),
                                           600_000, False),
    "the 600,000 default": (HASH_600K, config.DEFAULT_PBKDF2_ITERATIONS, False),
    "a short django salt": (DJANGO_OLD_SALT_HASH, FAST, True),
    "malformed": ("pbkdf2_sha1$1000$salt$hash", FAST, True),
    "absurd iterations": (MALFORMED_HASHES["iterations 10**9"], FAST, True),
    "empty": ("", FAST, True),
    "None": (None, FAST, True),
}


@pytest.mark.parametrize("stored, iterations, expected", REHASH_CASES.values(), ids=REHASH_CASES.keys())
def test_password_needs_rehash(stored, iterations, expected):
    assert password_needs_rehash(stored, iterations) is expected


def test_a_short_django_salt_still_verifies():
    assert verify_password(PASSWORD, DJANGO_OLD_SALT_HASH)


# -- burn_password_check --

def test_burn_password_check_does_the_work_of_one_verification(pbkdf2_calls):
    burn_password_check("a guess at some password", 20_000)
    verify_password("a guess at some password", hash_password(PASSWORD, 20_000))
    assert pbkdf2_calls == [20_000, 20_000, 20_000]  # the burn, the hashing, the verification


def test_burn_password_check_takes_as_long_as_a_wrong_password():
    iterations = 20_000
    stored = hash_password(PASSWORD, iterations)
    verify_seconds, burn_seconds = [], []
    for _ in range(7):  # interleaved, so a slow moment of the machine hits both alike
        verify_seconds.append(_cpu_seconds(verify_password, "a wrong password guess", stored))
        burn_seconds.append(_cpu_seconds(burn_password_check, "a wrong password guess", iterations))
    verify_median, burn_median = statistics.median(verify_seconds), statistics.median(burn_seconds)
    assert abs(burn_median - verify_median) <= BURN_TIMING_TOLERANCE * verify_median


def test_burn_password_check_returns_none_and_never_raises():
    assert burn_password_check(None, FAST) is None
    assert burn_password_check("\ud800", FAST) is None


def _cpu_seconds(function, *args):
    """The CPU time one call costs this thread. Wall-clock time would also count the moments
    another process held the CPU, and the process's CPU time the work of its other threads
    (a live server's, the log writer's): either makes the comparison flaky on a busy machine.
    The work done is what an attacker's stopwatch sees on an idle server."""
    started = time.thread_time()
    function(*args)
    return time.thread_time() - started


# -- password_problems --

TOO_SHORT = "is too short: at least 15 characters"
TOO_LONG = "is too long: at most 1,024 characters"
COMMON = "is a commonly used password"
PASSWORD_RULES = {
    "14 characters": ("plumjamonmonda", [TOO_SHORT]),
    "15 characters": ("plumjamonmonday", []),
    "14 code points, 28 UTF-8 bytes": ("é" * 14, [TOO_SHORT]),
    "15 code points": ("é" * 15, []),
    "7 letters with 7 combining accents": ("e\u0301" * 7, [TOO_SHORT]),
    "empty": ("", [TOO_SHORT]),
    "1,024 characters": (LONG_PASSWORD, []),
    "1,025 characters": (LONG_PASSWORD + "x", [TOO_LONG]),
    "no composition rules: 15 lower-case letters": ("plumjamonmonday", []),
    "no composition rules: 15 digits": ("839201746593028", []),
    "common, from django's list": ("manchesterunited", [COMMON]),
    "common, from django's list, upper-case": ("MANCHESTERUNITED", [COMMON]),
    "common, a repeated word": ("passwordpassword", [COMMON]),
    "common, mixed case": ("PassWordPassWord", [COMMON]),
    "common, a digit run": ("123456789012345", [COMMON]),
    "common, a keyboard walk": ("qwertyuiopasdfghjkl", [COMMON]),
    "common, a famous passphrase": ("Correct Horse Battery Staple", [COMMON]),
    "a short common password is only too short": ("password", [TOO_SHORT]),
    "a lone surrogate": ("\ud800" * 15, ["must be Unicode text (it holds a lone surrogate)"]),
    "None": (None, ["must be text"]),
    "bytes": (b"plumjamonmonday", ["must be text"]),
}


@pytest.mark.parametrize("password, problems", PASSWORD_RULES.values(), ids=PASSWORD_RULES.keys())
def test_password_problems(password, problems):
    assert password_problems(password) == problems


def _common_password_entries():
    lines = passwords.COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def test_the_common_password_list_is_long_passwords_lower_case_and_unique():
    entries = _common_password_entries()
    assert len(entries) >= 100
    assert len(set(entries)) == len(entries)
    assert all(len(entry) >= 15 and entry == entry.lower() == entry.strip() for entry in entries)
    header = passwords.COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").split("\n\n")[0]
    assert "Django" in header and "Royce Williams" in header and "BSD 3-Clause" in header


def test_every_listed_password_is_refused_in_any_case():
    for entry in _common_password_entries():
        assert password_problems(entry) == [COMMON]
        assert password_problems(entry.upper()) == [COMMON]


def test_the_list_is_read_once_and_only_when_needed(monkeypatch):
    opened = []
    real_open = open

    def spy_open(*args, **kwargs):
        opened.append(args[0])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(passwords, "open", spy_open, raising=False)
    passwords._common_passwords.cache_clear()
    password_problems("too short")
    assert opened == []
    for _ in range(3):
        password_problems("plumjamonmonday")
    assert opened == [passwords.COMMON_PASSWORDS_FILE]
    assert isinstance(passwords._common_passwords(), frozenset)



# -- found by mutation testing (tools/mutate.py, docs/testing.md) ---------------------------

def test_hash_password_says_what_is_wrong_with_its_arguments():
    with pytest.raises(TypeError) as refusal:
        hash_password(PASSWORD.encode(), FAST)
    assert str(refusal.value) == "the password must be a str"
    with pytest.raises(ValueError) as refusal:
        hash_password(PASSWORD, 0)
    assert str(refusal.value) == "iterations must be an int from 1 to 10,000,000"


def test_the_largest_iteration_count_is_read_and_one_more_is_not():
    # password_needs_rehash parses without running PBKDF2, which at 10,000,000 takes seconds.
    salt, hash_part = "A" * passwords.SALT_CHARS, base64.b64encode(bytes(32)).decode()
    most = f"pbkdf2_sha256${passwords.MAX_PBKDF2_ITERATIONS}${salt}${hash_part}"
    too_many = f"pbkdf2_sha256${passwords.MAX_PBKDF2_ITERATIONS + 1}${salt}${hash_part}"
    assert password_needs_rehash(most, FAST) is False
    assert password_needs_rehash(too_many, FAST) is True


# == the hashing gate =========================================================================

# Long enough never to run out while a test watches what waits; a waiter the test releases
# goes on at once, and one that should be refused is refused far sooner.
PATIENT_SECONDS = 30.0
# "At once" for a refusal: a tiny fraction of PATIENT_SECONDS, and far more than it needs.
AT_ONCE_SECONDS = 1.0
SETTLE_SECONDS = 10.0  # the most a test waits for threads to reach the state it expects


class HeldPBKDF2:
    """Replaces hashlib.pbkdf2_hmac: each run waits until release(), and the runs in progress,
    the most at once and the total are counted, so a test sees who got past the gate."""

    def __init__(self):
        self.real = hashlib.pbkdf2_hmac
        self.running = self.most = self.total = 0
        self.released = threading.Event()
        self.changed = threading.Condition()

    def __call__(self, name, password, salt, iterations, *args):
        with self.changed:
            self.running += 1
            self.total += 1
            self.most = max(self.most, self.running)
            self.changed.notify_all()
        try:
            assert self.released.wait(SETTLE_SECONDS), "the test never released PBKDF2"
            return self.real(name, password, salt, iterations, *args)
        finally:
            with self.changed:
                self.running -= 1

    def wait_until_running(self, count):
        with self.changed:
            assert self.changed.wait_for(lambda: self.running == count, SETTLE_SECONDS), self.running

    def release(self):
        self.released.set()


@pytest.fixture
def held_pbkdf2(monkeypatch):
    held = HeldPBKDF2()
    monkeypatch.setattr(hashlib, "pbkdf2_hmac", held)
    yield held
    held.release()  # a failed test must not leave threads waiting


@pytest.fixture
def use_gate(monkeypatch):
    """use_gate(gate): every PBKDF2 run of the test passes `gate`; the app's gate comes back after."""
    return lambda gate: monkeypatch.setattr(passwords, "_gate", gate)


def hash_in_threads(count):
    """Start `count` threads, each hashing a password; (threads, their outcomes: a hash or an exception)."""
    outcomes = []

    def hash_one():
        try:
            outcomes.append(hash_password(PASSWORD, FAST))
        except HashingBusy as busy:
            outcomes.append(busy)

    threads = [threading.Thread(target=hash_one) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, outcomes


def wait_until(condition):
    """Poll `condition` until it holds (SETTLE_SECONDS at most): for a count with no event to await."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "the expected state never came"
        time.sleep(POLL_SECONDS)


def test_the_gate_lets_n_hash_m_wait_and_refuses_the_rest_at_once(held_pbkdf2, use_gate):
    gate = HashingGate(2, waiting_room=2, wait_seconds=PATIENT_SECONDS)
    use_gate(gate)
    running, running_outcomes = hash_in_threads(2)
    held_pbkdf2.wait_until_running(2)
    waiting, waiting_outcomes = hash_in_threads(2)
    wait_until(lambda: gate.waiting == 2)

    for _ in range(3):  # the fifth caller and more: refused at once, not after PATIENT_SECONDS
        started = time.monotonic()
        with pytest.raises(HashingBusy, match="the waiting room is full"):
            hash_password(PASSWORD, FAST)
        assert time.monotonic() - started < AT_ONCE_SECONDS

    held_pbkdf2.release()
    for thread in running + waiting:
        thread.join(SETTLE_SECONDS)
    assert (held_pbkdf2.most, held_pbkdf2.total, gate.waiting) == (2, 4, 0)
    hashes = running_outcomes + waiting_outcomes
    assert len(hashes) == 4 and all(verify_password(PASSWORD, stored) for stored in hashes)


def test_every_kind_of_pbkdf2_run_passes_the_gate(held_pbkdf2, use_gate):
    # One slot, taken; no waiting room: any run at all is refused, and none reaches PBKDF2.
    gate = HashingGate(1, waiting_room=0)
    use_gate(gate)
    with gate.slot():
        for run in (lambda: hash_password(PASSWORD, FAST),
                    lambda: verify_password(PASSWORD, DJANGO_HASHES[PASSWORD]),
                    lambda: burn_password_check(PASSWORD, FAST)):
            with pytest.raises(HashingBusy):
                run()
    assert held_pbkdf2.total == 0


def test_a_waiter_waits_no_longer_than_the_bound(use_gate):
    gate = HashingGate(1, waiting_room=1, wait_seconds=0.2)
    use_gate(gate)
    with gate.slot():  # taken by this thread, so its own hash_password must wait, then give up
        started = time.monotonic()
        with pytest.raises(HashingBusy, match=r"no password hashing slot came free within 0\.2 s"):
            hash_password(PASSWORD, FAST)
        waited = time.monotonic() - started
    assert 0.2 <= waited < 0.2 + AT_ONCE_SECONDS
    assert gate.waiting == 0
    assert verify_password(PASSWORD, hash_password(PASSWORD, FAST))  # the slot is free again


def test_a_waiter_gets_the_slot_when_it_comes_free(held_pbkdf2, use_gate):
    gate = HashingGate(1, waiting_room=1, wait_seconds=PATIENT_SECONDS)
    use_gate(gate)
    threads, outcomes = hash_in_threads(2)
    held_pbkdf2.wait_until_running(1)
    wait_until(lambda: gate.waiting == 1)
    held_pbkdf2.release()
    for thread in threads:
        thread.join(SETTLE_SECONDS)
    assert (held_pbkdf2.most, held_pbkdf2.total) == (1, 2)
    assert [verify_password(PASSWORD, stored) for stored in outcomes] == [True, True]


def test_a_run_that_fails_gives_its_slot_back(monkeypatch, use_gate):
    use_gate(HashingGate(1, waiting_room=0))

    def broken_pbkdf2(*args):
        raise MemoryError("out of memory in the middle of a run")

    with monkeypatch.context() as patch:
        patch.setattr(hashlib, "pbkdf2_hmac", broken_pbkdf2)
        with pytest.raises(MemoryError):
            hash_password(PASSWORD, FAST)
    assert verify_password(PASSWORD, hash_password(PASSWORD, FAST))


def test_the_waiting_room_is_as_large_as_the_gate_unless_told():
    gate = HashingGate(3)
    assert (gate.threads, gate.waiting_room, gate.wait_seconds) == (3, 3, passwords.HASH_WAIT_SECONDS)
    assert HashingGate(3, waiting_room=0).waiting_room == 0


def test_set_hash_threads_replaces_the_gate(use_gate):
    use_gate(passwords._gate)  # put back after the test
    passwords.set_hash_threads(5)
    assert (passwords._gate.threads, passwords._gate.waiting_room) == (5, 5)


@pytest.mark.parametrize("threads", [0, 65, -1, True, 2.0, "2", None])
def test_set_hash_threads_refuses_what_is_not_a_count_from_1_to_64(use_gate, threads):
    use_gate(passwords._gate)
    before = passwords._gate
    with pytest.raises(ValueError, match="threads must be an int from 1 to 64"):
        passwords.set_hash_threads(threads)
    assert passwords._gate is before


def test_the_default_is_one_run_per_core():
    cores = os.cpu_count() or 1
    assert (min(cores, 64), 64) == (passwords.DEFAULT_HASH_THREADS, passwords.MAX_HASH_THREADS)


def test_the_app_sets_the_gate_from_its_settings_once_at_start(tmp_path, use_gate):
    use_gate(passwords._gate)
    settings = config.load_settings({"APP_ENV": "test", "SECRET_KEY": TEST_SECRET_KEY,
                                     "DATABASE_URL": f"sqlite:///{tmp_path}/shop.db", "PASSWORD_HASH_THREADS": "3"})
    app = server.create_app(settings)
    try:
        gate = passwords._gate
        assert (gate.threads, gate.waiting_room) == (3, 3)
    finally:
        app.services.database.close()
