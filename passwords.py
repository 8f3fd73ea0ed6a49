"""Passwords: hashed slowly on purpose, checked in constant time, and never too many at once.

Functions on strings, with no HTTP and no SQL (accounts.py calls them), and one piece of
state, the gate below. Malformed input is "not valid", never an exception that skips a
check. The hash is Django's format, so hashes move both ways between this shop and Django.
PBKDF2 (RFC 8018 §5.2) is slow on purpose: whoever steals the users table pays 600,000
HMACs per guess, per user, and the random salt stops one guess serving every user.

    pbkdf2_sha256$600000$bkU8Ztm0yWwCBWkVmeGMcL$NvL+UnqM+O4RkPOZI6M4hArxmaoZMnrBemb3K47WdiU=
    algorithm     iterations   salt (22 chars)  base64 of PBKDF2-HMAC-SHA256, 32 bytes

Slow for a thief is slow for us too: one run costs a core a fifth of a second. So every
PBKDF2 run of the process passes one gate (HashingGate): at most PASSWORD_HASH_THREADS
runs at once, as many again waiting, each for at most HASH_WAIT_SECONDS. A caller who
finds the waiting room full is refused at once with HashingBusy, which the web layer
answers with 503 and Retry-After; fifty logins at once can no longer take every worker
and starve the rest of the shop.

    PASSWORD_HASH_THREADS=2        running  [login][login]
                                   waiting  [login][login]
                                   the 5th  HashingBusy -> 503, Retry-After: 1

    >>> stored = ("pbkdf2_sha256$1000$bkU8Ztm0yWwCBWkVmeGMcL$"
    ...           "fME0lcajQp+aY3Y0apFg8Tezaia8gZlkDBK9FswDl5s=")
    >>> verify_password("correct horse battery staple", stored)
    True
    >>> verify_password("Correct horse battery staple", stored)
    False
"""

import base64
import contextlib
import functools
import hashlib
import hmac
import math
import os
import re
import secrets
import string
import threading
from pathlib import Path

# Django's format, so hashes move both ways:  pbkdf2_sha256$<iterations>$<salt>$<base64 hash>
PASSWORD_ALGORITHM = "pbkdf2_sha256"  # noqa: S105 - the algorithm's name, not a password
# A stored hash that asks for more (or fewer than 1) is refused, not run: whoever can write
# one row of the users table must not be able to make one login cost minutes of CPU. The
# PBKDF2_ITERATIONS setting (config.py) is held to the same ceiling.
MAX_PBKDF2_ITERATIONS = 10_000_000
SALT_BYTES = 16  # 128 bits of salt entropy at least (NIST SP 800-132 asks for 128 bits or more)
# The salt is text between "$" separators, so it is drawn as Django draws it: alphanumerics,
# as many as 128 bits need. 22 characters of 62 give ~131 bits, and Django's own check
# (`must_update_salt`) is satisfied by the hashes we make.
_SALT_ALPHABET = string.ascii_letters + string.digits
SALT_CHARS = math.ceil(SALT_BYTES * 8 / math.log2(len(_SALT_ALPHABET)))  # 22
MIN_PASSWORD_CHARS = 15  # NIST SP 800-63B-4 §3.1.1.2, passwords used as a single factor
MAX_PASSWORD_CHARS = 1024  # NIST asks for at least 64; a passphrase fits, a 1 MiB body does not
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")

# The hashing gate. PBKDF2 runs in OpenSSL without the GIL, so one run per core is as many
# as can make progress at once; more would only share the cores and all finish later. The
# PASSWORD_HASH_THREADS setting (config.py) starts from this default and keeps to the ceiling.
MAX_HASH_THREADS = 64
DEFAULT_HASH_THREADS = min(os.cpu_count() or 1, MAX_HASH_THREADS)
# A waiter waits at most this long for a slot. With as many waiting as running, a waiter
# starts within about one run (a fifth of a second at 600,000 iterations); the bound leaves
# room for a slow machine or a higher PBKDF2_ITERATIONS, and is still far shorter than the
# patience of a person logging in.
HASH_WAIT_SECONDS = 5.0
# What a refused caller is told (Retry-After): by then the runs ahead of it are long done.
HASH_RETRY_AFTER_SECONDS = 1

# One spelling per hash: iterations written without leading zeros, the salt alphanumeric as
# Django makes it, 32 bytes of standard base64 (43 characters and one "=").
_PASSWORD_HASH = re.compile(
    re.escape(PASSWORD_ALGORITHM)
    + r"\$(?P<iterations>[1-9][0-9]{0,7})"
    + r"\$(?P<salt>[A-Za-z0-9]{1,128})"
    + r"\$(?P<hash>[A-Za-z0-9+/]{43}=)"
)
# burn_password_check runs a verification against this hash. Its salt and hash are public
# and fixed; the hash part is 32 zero bytes, which no password's PBKDF2 output will equal.
_DUMMY_SALT = "A" * SALT_CHARS
_DUMMY_HASH_PART = base64.b64encode(bytes(32)).decode("ascii")


class HashingBusy(Exception):
    """No PBKDF2 run could start: the gate's waiting room was full, or the wait too long.

    Nothing was checked or changed; the caller may try again in HASH_RETRY_AFTER_SECONDS.
    """


class HashingGate:
    """At most `threads` callers inside at once; at most `waiting_room` more waiting to enter,
    each for at most `wait_seconds`; anyone else is refused with HashingBusy at once.

        gate = HashingGate(2)
        with gate.slot():                 # may raise HashingBusy; never waits without bound
            hashlib.pbkdf2_hmac(...)

    The waiting room is as large as the gate unless told otherwise: then hashing holds at
    most twice `threads` request threads, running or waiting, whatever server runs the app
    (gunicorn's threads included), and the others stay free for everything else; and a
    waiter has at most one run ahead of it per slot, so it starts within about one run. A
    free slot is not handed out first come, first served; the wait bound is what keeps an
    unlucky waiter from waiting long.
    """

    def __init__(self, threads, *, waiting_room=None, wait_seconds=HASH_WAIT_SECONDS):
        self.threads = threads
        self.waiting_room = threads if waiting_room is None else waiting_room
        self.wait_seconds = wait_seconds
        self._slots = threading.BoundedSemaphore(threads)
        self._waiting = 0  # callers in the waiting room now
        self._lock = threading.Lock()  # guards _waiting

    @property
    def waiting(self):
        """How many callers wait for a slot right now."""
        return self._waiting

    @contextlib.contextmanager
    def slot(self):
        """Hold one of the gate's slots for the `with` block; raise HashingBusy if none comes."""
        if not self._slots.acquire(blocking=False):
            self._wait_for_slot()
        try:
            yield
        finally:
            self._slots.release()

    def _wait_for_slot(self):
        with self._lock:
            if self._waiting >= self.waiting_room:
                raise HashingBusy("every password hashing slot is taken and the waiting room is full")
            self._waiting += 1
        try:
            acquired = self._slots.acquire(timeout=self.wait_seconds)
        finally:
            with self._lock:
                self._waiting -= 1
        if not acquired:
            raise HashingBusy(f"no password hashing slot came free within {self.wait_seconds} s")


# The gate every PBKDF2 run of this process passes: one per process, not one per app, since
# the cores it rations are the process's. server.create_app sizes it once at start-up
# (set_hash_threads); a run already inside the gate it replaces finishes there as usual.
_gate = HashingGate(DEFAULT_HASH_THREADS)


def set_hash_threads(threads: int) -> None:
    """From now on at most `threads` PBKDF2 runs at once in this process, and as many waiting.

    Called once at start-up with settings.password_hash_threads. Raises ValueError outside
    1..MAX_HASH_THREADS.
    """
    global _gate
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_HASH_THREADS:
        raise ValueError(f"threads must be an int from 1 to {MAX_HASH_THREADS}")
    _gate = HashingGate(threads)


def hash_password(password: str, iterations: int) -> str:
    """The Django-format hash of a password, with a fresh random salt.

    Each call draws a new salt, so one password hashes differently every time. Raises
    TypeError if the password is not a str, ValueError if iterations is outside
    1..MAX_PBKDF2_ITERATIONS or the password holds a lone surrogate (it is not Unicode
    text), HashingBusy when the hashing gate is full. Whether the password is acceptable
    is password_problems()'s question, not this function's.
    """
    if not isinstance(password, str):
        raise TypeError("the password must be a str")
    if not _is_iteration_count(iterations):
        raise ValueError(f"iterations must be an int from 1 to {MAX_PBKDF2_ITERATIONS:,}")
    salt = "".join(secrets.choice(_SALT_ALPHABET) for _ in range(SALT_CHARS))
    return _password_hash(password.encode("utf-8"), salt, iterations)


def verify_password(password: str, encoded: str) -> bool:
    """True if the password matches the stored Django-format hash; False otherwise.

    A malformed, foreign or other-algorithm hash, or one whose iteration count is outside
    1..MAX_PBKDF2_ITERATIONS, is False at once, without running PBKDF2. Otherwise the
    comparison takes the same time however much of the hash was right. The one exception
    it raises is HashingBusy, when the hashing gate is full: then nothing was checked, and
    the answer is neither True nor False.
    """
    parsed = _parse_password_hash(encoded)
    password_bytes = _utf8_or_none(password)
    if parsed is None or password_bytes is None:
        return False
    iterations, salt, stored_hash = parsed
    return hmac.compare_digest(_pbkdf2_base64(password_bytes, salt, iterations), stored_hash)


def password_needs_rehash(encoded: str, iterations: int) -> bool:
    """True when a stored hash should be replaced at the next successful login.

    That is when it has fewer iterations than the setting (the setting rose since), a salt
    shorter than ours (Django's rule too: old Django salts had 12 characters), or is
    malformed. A hash with more iterations than the setting is kept: it is not weaker.
    """
    parsed = _parse_password_hash(encoded)
    if parsed is None:
        return True
    stored_iterations, salt, _ = parsed
    return stored_iterations < iterations or len(salt) < SALT_CHARS


def burn_password_check(password: str, iterations: int) -> None:
    """Spend the time of one password verification, and learn nothing.

    A login for an unknown email calls this, so that it takes as long as a wrong password
    for a known one: otherwise the response time tells an attacker which emails have
    accounts. It runs verify_password itself, on a fixed hash, so both paths do the same
    work, through the same gate (and raise the same HashingBusy when it is full).
    """
    verify_password(password, _password_hash_text(iterations, _DUMMY_SALT, _DUMMY_HASH_PART))


def password_problems(password: str) -> list[str]:
    """What is wrong with a new password: [] when it is acceptable, else human messages.

    The rules are NIST SP 800-63B-4's: a length (counted in Unicode code points, as a person
    counts characters) and a list of common passwords, compared case-insensitively. No
    composition rules ("a digit and a symbol"): they make passwords harder to remember, not
    harder to guess.

    >>> password_problems("a plum for every tuesday")
    []
    >>> password_problems("Tr0ub4dor&3")
    ['is too short: at least 15 characters']
    >>> password_problems("Correct Horse Battery Staple")
    ['is a commonly used password']
    """
    if not isinstance(password, str):
        return ["must be text"]
    problems = []
    if len(password) < MIN_PASSWORD_CHARS:
        problems.append(f"is too short: at least {MIN_PASSWORD_CHARS} characters")
    elif len(password) > MAX_PASSWORD_CHARS:
        problems.append(f"is too long: at most {MAX_PASSWORD_CHARS:,} characters")
    if _utf8_or_none(password) is None:
        problems.append("must be Unicode text (it holds a lone surrogate)")
    elif not problems and password.casefold() in _common_passwords():
        problems.append("is a commonly used password")
    return problems


def _is_iteration_count(iterations):
    return (
        isinstance(iterations, int)
        and not isinstance(iterations, bool)
        and 1 <= iterations <= MAX_PBKDF2_ITERATIONS
    )


def _password_hash(password_bytes, salt, iterations):
    return _password_hash_text(iterations, salt, _pbkdf2_base64(password_bytes, salt, iterations))


def _password_hash_text(iterations, salt, hash_part):
    """The one place the hash format is built; _parse_password_hash is the one that reads it."""
    return f"{PASSWORD_ALGORITHM}${iterations}${salt}${hash_part}"


def _parse_password_hash(encoded):
    """(iterations, salt, base64 hash) of a well-formed hash of ours, else None."""
    if not isinstance(encoded, str):
        return None
    match = _PASSWORD_HASH.fullmatch(encoded)
    if match is None or not _is_iteration_count(int(match["iterations"])):
        return None
    return int(match["iterations"]), match["salt"], match["hash"]


def _pbkdf2_base64(password_bytes, salt, iterations):
    """The one place PBKDF2 runs, so every run passes the gate."""
    with _gate.slot():
        # Django feeds PBKDF2 the UTF-8 bytes of the password as typed, without Unicode
        # normalisation; so do we, or non-ASCII passwords would stop moving between the two.
        derived = hashlib.pbkdf2_hmac("sha256", password_bytes, salt.encode("ascii"), iterations)
    return base64.b64encode(derived).decode("ascii")


def _utf8_or_none(text):
    """The UTF-8 bytes of a str, or None if it is not a str or not Unicode text."""
    if not isinstance(text, str):
        return None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800"
        return None


@functools.cache
def _common_passwords():
    """The common-password list, read once on first use: lines that are not blank or '#'."""
    with open(COMMON_PASSWORDS_FILE, encoding="utf-8") as lines:
        return frozenset(
            line.strip().casefold() for line in lines if line.strip() and not line.startswith("#")
        )
