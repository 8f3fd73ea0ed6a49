"""Caching, cache-aside: the catalogue's answers and browser sessions, in memory or on Redis.

Cache-aside: a read asks the cache first; on a miss it reads the database, answers, and
stores its answer for the next reader. The database knows nothing of the cache; the code
that reads fills it. The catalogue's handlers say which it was in `X-Cache`:

    GET /v1/items/7     no entry "item:7" of generation 12    read the database, store   X-Cache: MISS
    GET /v1/items/7     "item:7", stored in generation 12     the stored bytes           X-Cache: HIT
    PATCH /v1/items/7   COMMIT, then generation 12 -> 13
    GET /v1/items/7     nothing stored in generation 13       read the database, store   X-Cache: MISS

Invalidation by generation. Which entries show item 7? Its own, and every page of the list
that holds it, under every filter, sort and cursor: too many to find. So each entry belongs
to the generation it was stored in, and only the current generation's entries are served:
one counter, moved on after a change's COMMIT (`invalidate`), puts every older entry out of
reach at once.

The race that rule must survive: a reader reads the database just before a writer's COMMIT,
then stores what it read after the writer's bump. It stores it under the generation it
looked up *before* reading the database (`fetch` reads both in one step), which is the old
one, out of reach already. So an entry of generation N always comes from a read that began
after the bump to N, and so after the COMMIT before it: never stale. One window remains, the
microseconds between a COMMIT and its bump in the writer's request: a reader may then still
get the answer from before. The writer has not been answered yet, so no client can tell
that read from one made just before the write.

Every entry also expires after CACHE_TTL_SECONDS (30 s). Changes through the API need no
TTL; it bounds the ones the shop cannot see: `python server.py seed` or SQL typed by hand
while servers run, a COMMIT whose acknowledgement was lost, and a bump Redis never got.

Stampede. When a hot entry expires, the 50 requests that want it at that moment must not
all read the database. The first reads (the leader); the others in its process wait for
its answer (a single flight per key), so a process reads each missing entry once.

Two stores:
- `MemoryStore`: one process's memory, a bounded LRU with a TTL, safe for threads. A change
  empties it outright; its generation only stops a reader that began before the change from
  storing afterwards. Without Redis each process caches alone, and the API's changes made
  through one process are seen at once by that process, by the others within the TTL.
- `RedisStore` (REDIS_URL): shared by every process. The generation is a Redis counter
  (INCR), so a change made through one process reaches all of them. Each entry is stored as
  `<generation>\\n<value>` with an expiry, and one MGET per lookup fetches the counter and the
  entry together. When Redis does not answer, lookups miss and nothing is stored: reads go to
  the database (redisconn.py), and a bump that failed is made before the cache is used again.

Browser sessions use the same machinery on Redis only (accounts.session_user): a logout
handled by one process must reach every other, which a memory of their own cannot.

Redis stores bytes. The catalogue stores what it sends, encoded once (a response's few
headers as one JSON line, then its body), so a hit re-encodes nothing; a session is a small
JSON object, checked field by field when it is read back. Never pickle: unpickling runs
code, and Redis is shared. The memory store keeps the CachedResponse itself: it never leaves
the process, so there is nothing to encode, and a hit decodes nothing either.
"""

import json
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

# The memory store's byte bound, beside CACHE_MAX_ENTRIES: a few pages of 100 items with long
# descriptions must not take hundreds of MB. Values above MAX_VALUE_BYTES are never stored.
MAX_MEMORY_BYTES = 64 * 1024 * 1024
MAX_VALUE_BYTES = 1024 * 1024
# A Redis generation counter starts at a random number below this, not at 1: if Redis loses
# the counter (a restart, an eviction) while older entries survive, a counter started again
# from 1 could come back to their generation and serve them. 2**62 leaves 2**62 bumps to go.
GENERATION_START_BELOW = 2**62
# What a cached session holds, and each field's type (accounts.session_user).
SESSION_FIELDS = {"id": int, "role": str, "session_row_id": int, "last_used_at": str, "expires_at": str}


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """What the catalogue stores: the body as sent, and the headers that vary with it."""

    body: bytes
    headers: tuple = ()  # (("ETag", '"item-7-v3"'),) or (("Link", "<...>; rel=\"next\""),)


def encode_response(response):
    """bytes for a store: the headers as one line of JSON, then the body.

    >>> encode_response(CachedResponse(b'{"id":7}', (("ETag", '"item-7-v3"'),)))
    b'[["ETag","\\\\"item-7-v3\\\\""]]\\n{"id":7}'
    """
    return json.dumps(response.headers, separators=(",", ":")).encode() + b"\n" + response.body


def decode_response(raw):
    """The CachedResponse `encode_response` made, or None for bytes it did not make.

    >>> decode_response(b'[["ETag","\\\\"item-7-v3\\\\""]]\\n{"id":7}')
    CachedResponse(body=b'{"id":7}', headers=(('ETag', '"item-7-v3"'),))
    """
    head, newline, body = raw.partition(b"\n")  # compact JSON holds no newline of its own
    try:
        headers = json.loads(head)
    except ValueError:
        return None
    if not newline or not isinstance(headers, list) or not all(_is_header(pair) for pair in headers):
        return None
    return CachedResponse(body, tuple((name, value) for name, value in headers))


def response_size(response):
    """The bytes a CachedResponse holds, body and header text: what MemoryStore counts."""
    return len(response.body) + sum(len(name) + len(value) for name, value in response.headers)


def unchanged(value):
    """The memory store's encode and decode: a value kept in the process stays as it is."""
    return value


def encode_session(session):
    """bytes for a store: the session row accounts.session_user read, as compact JSON."""
    return json.dumps(session, separators=(",", ":")).encode()


def decode_session(raw):
    """The session `encode_session` stored, or None for bytes of any other shape: a session
    grants access, so whatever is not exactly what we wrote is a miss, never a guess.

    >>> decode_session(b'{"id":7,"role":"user","session_row_id":3,"last_used_at":"t","expires_at":"u"}')["role"]
    'user'
    >>> decode_session(b'{"id":7,"role":"admin"}') is None
    True
    """
    try:
        session = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(session, dict) or session.keys() != SESSION_FIELDS.keys():
        return None
    if not all(type(session[name]) is kind for name, kind in SESSION_FIELDS.items()):
        return None
    return session


def _is_header(pair):
    """Is this [name, value], two strings on one line? (Redis is shared: no guessing.)"""
    return (isinstance(pair, list) and len(pair) == 2
            and all(isinstance(part, str) and "\n" not in part and "\r" not in part for part in pair))


class Cache:
    """Cache-aside over a store: lookup and save, fetch (both, with a single flight), invalidate.

    `encode` and `decode` turn values into the bytes a store keeps and back (decode answers
    None for bytes it cannot read: a miss). Nothing here raises because of the store.
    """

    def __init__(self, store, *, ttl_seconds, encode, decode, wait_seconds):
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.encode, self.decode = encode, decode
        self.wait_seconds = wait_seconds  # the most a follower waits for its leader's read
        self._flights = {}  # (key, generation) -> _Flight: the reads under way in this process
        self._lock = threading.Lock()

    def lookup(self, key):
        """(generation, value or None on a miss). The generation is None when the store cannot
        tell it (Redis down): then the caller reads the database and saves nothing."""
        generation, raw = self.store.lookup(key)
        return generation, None if raw is None else self.decode(raw)

    def save(self, key, generation, value):
        """Store `value` under the generation that `lookup` gave *before* it was read."""
        raw = self.encode(value)
        if generation is not None and self.store.size(raw) <= MAX_VALUE_BYTES:
            self.store.save(key, generation, raw, self.ttl_seconds)

    def fetch(self, key, load):
        """(value, hit): the cached value (hit True), or load()'s, stored for the next reader.

        load() reads the database; it returns None for "nothing there", which is answered
        and not stored. Of the requests of this process that miss one key at once, only the
        first runs load(); the others wait for its value and count as hits. If that first
        read fails, each of them reads for itself.
        """
        generation, value = self.lookup(key)
        if value is not None:
            return value, True
        if generation is None:
            return load(), False
        flight_key = (key, generation)  # a request after a bump never joins a read from before it
        with self._lock:
            flight = self._flights.get(flight_key)
            leader = flight is None
            if leader:
                flight = self._flights[flight_key] = _Flight()
            else:
                flight.followers += 1
        if not leader:
            if flight.done.wait(self.wait_seconds) and flight.loaded:
                return flight.value, True
            return load(), False
        try:
            value = load()
            if value is not None:
                self.save(key, generation, value)
            flight.value, flight.loaded = value, True
            return value, False
        finally:
            with self._lock:
                del self._flights[flight_key]
            flight.done.set()

    def invalidate(self):
        """After a change has committed: every entry stored so far is out of reach."""
        self.store.new_generation()


class _Flight:
    """One read of the database under way, and the requests waiting for its value."""

    def __init__(self):
        self.done = threading.Event()
        self.loaded = False  # True once `value` holds what the read found (None included)
        self.value = None
        self.followers = 0  # requests waiting for it (tests watch this)


class MemoryStore:
    """Entries in this process's memory: an LRU bounded in count and bytes, each with a TTL.
    `size(value)` tells the bytes a value holds: len() for bytes, response_size for responses."""

    def __init__(self, max_entries, *, max_bytes=MAX_MEMORY_BYTES, clock=time.monotonic, size=len):
        self.max_entries, self.max_bytes, self.clock, self.size = max_entries, max_bytes, clock, size
        self._entries = OrderedDict()  # key -> (value, expires at), the least recently used first
        self._bytes = 0
        self._generation = 0
        self._lock = threading.Lock()

    def lookup(self, key):
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return self._generation, None
            if self.clock() >= found[1]:
                self._drop(key)
                return self._generation, None
            self._entries.move_to_end(key)
            return self._generation, found[0]

    def save(self, key, generation, value, ttl_seconds):
        with self._lock:
            if generation != self._generation:
                return  # read before the last change: it may be stale, and is never stored
            if key in self._entries:
                self._drop(key)
            self._entries[key] = (value, self.clock() + ttl_seconds)
            self._bytes += self.size(value)
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def new_generation(self):
        with self._lock:
            self._generation += 1
            self._entries.clear()  # none of them may be served again
            self._bytes = 0

    def _drop(self, key):
        value, _ = self._entries.pop(key)
        self._bytes -= self.size(value)


class RedisStore:
    """Entries on Redis, shared by every process; `namespace` keeps two caches apart.

        shop:cache:catalogue:generation     the counter: 8210433562417 (INCR on each change)
        shop:cache:catalogue:item:7         b'8210433562417\\n[["ETag",...]]\\n{"id":7,...}'  EX 30
    """

    size = staticmethod(len)  # values on Redis are bytes

    def __init__(self, link, namespace):
        self.link = link  # a redisconn.RedisLink: bounded waits, and a fallback when Redis fails
        self.generation_key = link.key("cache", namespace, "generation")
        self.entry_prefix = link.key("cache", namespace, "")
        self._bump_pending = False  # a change whose bump Redis has not had yet
        self._lock = threading.Lock()

    def lookup(self, key):
        if self._bump_pending and not self._bump():
            return None, None  # Redis still holds entries that a change has made stale
        return self.link.run(lambda client: self._read(client, key), fallback=lambda: (None, None))

    def save(self, key, generation, value, ttl_seconds):
        entry = b"%d\n" % generation + value
        self.link.run(lambda client: client.set(self.entry_prefix + key, entry, ex=ttl_seconds),
                      fallback=lambda: None)

    def new_generation(self):
        with self._lock:
            self._bump_pending = True
        self._bump()

    def _read(self, client, key):
        generation, entry = client.mget(self.generation_key, self.entry_prefix + key)
        if generation is None:  # a new Redis, or one that lost the counter: start it, and miss
            pipeline = client.pipeline(transaction=False)  # one round trip for both commands
            pipeline.set(self.generation_key, secrets.randbelow(GENERATION_START_BELOW), nx=True)
            pipeline.get(self.generation_key)  # ours, or the one another process set first
            return int(pipeline.execute()[1]), None
        if entry is None:
            return int(generation), None
        tag, _, value = entry.partition(b"\n")
        return int(generation), value if tag == generation else None

    def _bump(self):
        """Move the counter on if a bump is pending; True when none is pending any more.

        The flag is cleared before trying and set again on failure, under the lock, so a
        change that comes in meanwhile is never lost: its own new_generation sets it again.
        """
        with self._lock:
            if not self._bump_pending:
                return True
            self._bump_pending = False
        if self.link.run(self._increment, fallback=lambda: False):
            return True
        with self._lock:
            self._bump_pending = True
        return False

    def _increment(self, client):
        pipeline = client.pipeline(transaction=False)
        pipeline.set(self.generation_key, secrets.randbelow(GENERATION_START_BELOW), nx=True)
        pipeline.incr(self.generation_key)
        pipeline.execute()
        return True


def build_caches(settings, redis_link):
    """(the catalogue's cache, the sessions' cache), as the settings say; None where there is none.

    CACHE=off: neither. Without Redis: the catalogue in each process's memory, and no session
    cache, since a session kept in one process's memory would outlive its logout through
    another. With Redis: both, shared by every process.
    """
    if not settings.cache:
        return None, None
    # A follower waits as long as its leader may: two waits on the database at most.
    wait_seconds = 2 * settings.database_timeout_seconds
    if redis_link is None:
        store = MemoryStore(settings.cache_max_entries, size=response_size)
        return Cache(store, ttl_seconds=settings.cache_ttl_seconds, encode=unchanged,
                     decode=unchanged, wait_seconds=wait_seconds), None
    catalogue = Cache(RedisStore(redis_link, "catalogue"), ttl_seconds=settings.cache_ttl_seconds,
                      encode=encode_response, decode=decode_response, wait_seconds=wait_seconds)
    sessions = Cache(RedisStore(redis_link, "sessions"), ttl_seconds=settings.cache_ttl_seconds,
                     encode=encode_session, decode=decode_session, wait_seconds=wait_seconds)
    return catalogue, sessions
