"""Idempotency-Key: a retried POST gets the first answer back instead of doing the work twice.

A client that placed an order and lost the answer (a timeout, a dropped connection) cannot
know whether the order exists. With a key of its choosing it can simply send it again:

    POST /v1/orders                      Idempotency-Key: 9b2c...   -> 201, order 41 placed
    POST /v1/orders (the same again)     Idempotency-Key: 9b2c...   -> 201, order 41 replayed
                                                                       Idempotent-Replayed: true
    POST /v1/orders (another body)       Idempotency-Key: 9b2c...   -> 422, a different request
    (while the first is still running)                               -> 409, Retry-After: 1

The key lives in the `idempotency_keys` table (migrations/0003), so it survives a restart
and is shared by every process. The life of a key:

1. `begin` takes it in a short transaction of its own and commits, so that a second
   request with the key, arriving meanwhile, sees it taken (409) rather than waiting.
2. The work runs, and `save` writes the response inside the work's own transaction:
   the order and the key's memory of it are committed together or not at all.
3. A request refused without changing anything (a 409 for stock, a 422) or failing
   (a 5xx) gives the key back with `release`: nothing was done, so a retry is judged afresh.
4. A request that died holding the key (the process was killed) leaves it "running";
   after LEASE_SECONDS the key may be taken again, and the dead request, should it wake,
   can no longer save (`save` checks that it still holds the key).

Keys are scoped to the user, kept at least KEY_TTL_SECONDS (24 h), and compared
with the request they came with (method, path, JSON body) through a SHA-256 fingerprint.
"""

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import db
import sql_idempotency

KEY_TTL_SECONDS = 24 * 3600
# Far longer than a request holds a key: each of its statements and lock waits is cut
# off after DATABASE_TIMEOUT_SECONDS (3 s by default). Should one still outlive the lease,
# nothing breaks: `save` finds the key taken over, and that request rolls back.
LEASE_SECONDS = 60
# A request that has held its key this long is not running any more (see above): it died,
# and a client is told to come back when the lease ends, not every second until then.
# This assumes DATABASE_TIMEOUT_SECONDS well under it (3 s by default). Set near its 60 s
# maximum, a slow live request may make a client wait longer than needed, never too little.
RUNNING_REQUEST_SECONDS = 10
MAX_KEY_CHARS = 255
# Visible ASCII: what UUIDs and random tokens are made of, and safe to store and log.
KEY_PATTERN = re.compile(rf"[\x21-\x7e]{{1,{MAX_KEY_CHARS}}}")
# Expired keys are removed at most this often per process, by the request that notices.
PURGE_INTERVAL_SECONDS = 60
# The response headers a replay repeats; the others (request id, date) belong to each answer.
REPLAYED_HEADERS = ("Content-Type", "Location", "ETag")


class KeyInUse(Exception):
    """Another request holds this key. Retry after `retry_after_seconds`: 1 while it may
    still be running, else (it died) the time its lease has left."""

    def __init__(self, key, retry_after_seconds=1):
        super().__init__(key)
        self.retry_after_seconds = retry_after_seconds


class KeyReused(Exception):
    """The key was used with a different request."""


@dataclass(frozen=True)
class Claim:
    """This request holds the key. `locked_at` tells it from any later holder."""

    user_id: int
    key: str
    locked_at: str


@dataclass(frozen=True)
class StoredResponse:
    """The response the key's first request sent, to be sent again."""

    status: int
    headers: list
    body: bytes


def valid_key(key):
    """Is this an acceptable Idempotency-Key value?

    >>> valid_key("5f0c4ae1-6b0e-4a3c-9e55-0d5c1e2b7a10"), valid_key(""), valid_key("a b")
    (True, False, False)
    """
    return KEY_PATTERN.fullmatch(key) is not None


def fingerprint(method, path, document):
    """SHA-256 of the request as it matters: the same order with keys in another order or
    other spacing is the same request.

    >>> fingerprint("POST", "/v1/orders", {"a": 1, "b": 2}) == fingerprint("POST", "/v1/orders", {"b": 2, "a": 1})
    True
    """
    canonical = json.dumps([method, path, document], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def begin(database, user_id, key, request_hash):
    """Take the key for this request: a `Claim` to go ahead, or the `StoredResponse` to replay.

    Raises KeyReused (the key came with another request) or KeyInUse (its first request
    is still running). Commits before returning.
    """
    _purge_now_and_then(database)
    with database.transaction() as connection:
        now = db.utc_now()
        expires_at = db.utc_now(KEY_TTL_SECONDS)
        if sql_idempotency.insert_key(connection, user_id, key, request_hash, now, expires_at):
            return Claim(user_id, key, now)
        row = sql_idempotency.get_key(connection, user_id, key)
        if row is None:
            # Purged between our INSERT and this SELECT; a request faster than us may have
            # taken it since, in which case it holds the key and we wait our turn.
            if sql_idempotency.insert_key(connection, user_id, key, request_hash, now, expires_at):
                return Claim(user_id, key, now)
            raise KeyInUse(key)
        if row["expires_at"] <= now:
            # Expired: it is a new key again.
            sql_idempotency.retake_key(connection, user_id, key, request_hash, now, expires_at)
            return Claim(user_id, key, now)
        if row["request_hash"] != request_hash:
            raise KeyReused(key)
        if row["response_status"] is not None:
            headers = [(name, value) for name, value in json.loads(row["response_headers"])]
            return StoredResponse(row["response_status"], headers, row["response_body"].encode())
        if row["locked_at"] < db.utc_now(-LEASE_SECONDS):
            # The request that took the key died without an answer: nothing of it was
            # committed (its work and `save` share one transaction), so run it again.
            sql_idempotency.retake_key(connection, user_id, key, request_hash, now, expires_at)
            return Claim(user_id, key, now)
        raise KeyInUse(key, _retry_after_seconds(row["locked_at"]))


def save(connection, claim, response):
    """Remember the response (a web.Response) in the caller's transaction, before its COMMIT.

    Returns False when the key is no longer this request's (it ran past the lease and
    another request took it over); the caller must then roll back its work.
    """
    headers = [[name, value] for name, value in response.headers if name in REPLAYED_HEADERS]
    return sql_idempotency.save_response(
        connection, claim.user_id, claim.key, claim.locked_at,
        response.status, json.dumps(headers), response.body.decode(),
    )


def release(database, claim):
    """Give the key back: the request changed nothing, so a retry should run it again."""
    with database.transaction() as connection:
        sql_idempotency.delete_key(connection, claim.user_id, claim.key, claim.locked_at)


def purge_expired(database):
    """Remove every expired key; returns how many."""
    with database.transaction() as connection:
        return sql_idempotency.delete_expired(connection, db.utc_now())


_next_purge = 0.0


def _retry_after_seconds(locked_at):
    """When a request that finds the key held should try again, in whole seconds (at least 1)."""
    held_seconds = (datetime.now(UTC) - datetime.fromisoformat(locked_at)).total_seconds()
    if held_seconds < RUNNING_REQUEST_SECONDS:
        return 1  # the holder is most likely still at work and done in a moment
    return max(1, math.ceil(LEASE_SECONDS - held_seconds))


def _purge_now_and_then(database):
    """Housekeeping in a transaction of its own, so it never holds up or fails a claim."""
    global _next_purge
    if time.monotonic() >= _next_purge:
        # Two threads may both get here at once; both deleting the same rows is harmless.
        _next_purge = time.monotonic() + PURGE_INTERVAL_SECONDS
        try:
            purge_expired(database)
        except db.DatabaseUnavailable:
            pass  # the next purge, a minute on, takes these rows too

