"""Tests for cache.py: both stores, the generation race, the single flight, Redis failing.

The catalogue and the sessions through the API: tests/test_cache_catalogue.py and
tests/test_cache_sessions.py.
"""

import threading
import time

import pytest
from conftest import REDIS_TEST_URL, free_port, require_redis

import cache
import redisconn

TTL_SECONDS = 30
WAIT_SECONDS = 10  # a test's bound on waiting for other threads; never reached when it passes


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FlakyLink:
    """A RedisLink whose Redis the test takes away and gives back: while `down`, every run()
    gets its fallback, as RedisLink's does when Redis fails."""

    def __init__(self, link):
        self.link, self.down = link, False

    def key(self, *parts):
        return self.link.key(*parts)

    def run(self, operation, fallback):
        return fallback() if self.down else self.link.run(operation, fallback)


@pytest.fixture
def redis_link(redis_prefix):
    link = redisconn.RedisLink(REDIS_TEST_URL, prefix=redis_prefix)
    yield link
    link.close()


@pytest.fixture(params=["memory", "redis"])
def store(request):
    """An empty store of each kind."""
    if request.param == "memory":
        return cache.MemoryStore(100)
    return cache.RedisStore(request.getfixturevalue("redis_link"), "catalogue")


def generation_of(store):
    return store.lookup("any")[0]


def response_cache(store, *, wait_seconds=WAIT_SECONDS):
    return cache.Cache(store, ttl_seconds=TTL_SECONDS, encode=cache.encode_response, decode=cache.decode_response,
                       wait_seconds=wait_seconds)


# -- the stores --------------------------------------------------------------------------------

def test_a_value_is_found_in_the_generation_it_was_saved_in(store):
    generation = generation_of(store)
    assert store.lookup("item:7") == (generation, None)
    store.save("item:7", generation, b"seven", TTL_SECONDS)
    assert store.lookup("item:7") == (generation, b"seven")


def test_after_a_new_generation_nothing_saved_before_is_found(store):
    generation = generation_of(store)
    store.save("item:7", generation, b"seven", TTL_SECONDS)
    store.new_generation()
    newer, value = store.lookup("item:7")
    assert value is None and newer != generation


def test_a_value_read_before_a_change_and_saved_after_it_is_never_found(store):
    """The race: looked up in generation N, read from the database, the change commits and
    bumps to N + 1, then the old read is saved, under N: out of reach."""
    looked_up_in = generation_of(store)
    store.new_generation()
    store.save("item:7", looked_up_in, b"stale", TTL_SECONDS)
    assert store.lookup("item:7")[1] is None


def test_memory_drops_the_least_recently_used_entry_beyond_its_count():
    store = cache.MemoryStore(2)
    for key in ("a", "b"):
        store.save(key, 0, key.encode(), TTL_SECONDS)
    store.lookup("a")  # "b" is now the least recently used
    store.save("c", 0, b"c", TTL_SECONDS)
    assert [store.lookup(key)[1] for key in ("a", "b", "c")] == [b"a", None, b"c"]


def test_memory_drops_the_least_recently_used_entries_beyond_its_bytes():
    store = cache.MemoryStore(100, max_bytes=10)
    for key in ("a", "b", "c"):
        store.save(key, 0, b"x" * 4, TTL_SECONDS)  # the third takes it to 12 bytes
    assert [store.lookup(key)[1] for key in ("a", "b", "c")] == [None, b"xxxx", b"xxxx"]
    store.save("b", 0, b"y", TTL_SECONDS)  # replacing an entry counts its new size only
    store.save("d", 0, b"z" * 5, TTL_SECONDS)
    assert [store.lookup(key)[1] for key in ("b", "c", "d")] == [b"y", b"xxxx", b"zzzzz"]


def test_memory_entries_expire_after_their_ttl():
    clock = Clock()
    store = cache.MemoryStore(10, clock=clock)
    store.save("k", 0, b"v", TTL_SECONDS)
    clock.now += TTL_SECONDS - 0.001
    assert store.lookup("k") == (0, b"v")
    clock.now += 0.001
    assert store.lookup("k") == (0, None)


def test_redis_entries_carry_their_generation_and_an_expiry(redis_link, redis_prefix):
    store = cache.RedisStore(redis_link, "catalogue")
    generation = generation_of(store)
    store.save("item:7", generation, b"seven", TTL_SECONDS)
    client = require_redis()
    assert client.get(f"{redis_prefix}cache:catalogue:item:7") == b"%d\nseven" % generation
    assert 0 < client.ttl(f"{redis_prefix}cache:catalogue:item:7") <= TTL_SECONDS
    assert client.get(f"{redis_prefix}cache:catalogue:generation") == b"%d" % generation


def test_a_redis_counter_starts_at_a_random_number_and_again_when_lost(redis_link, redis_prefix):
    """An INCR of a missing counter would start at 1 and could climb back to the generation
    of entries a lost counter left behind; a random start cannot."""
    store = cache.RedisStore(redis_link, "catalogue")
    generation, value = store.lookup("item:7")  # the first look starts the counter, and misses
    assert value is None and generation == generation_of(store) > 2
    store.save("item:7", generation, b"seven", TTL_SECONDS)
    require_redis().delete(f"{redis_prefix}cache:catalogue:generation")  # evicted, say
    restarted, value = store.lookup("item:7")
    assert value is None and restarted not in (generation, generation + 1)
    assert store.lookup("item:7") == (restarted, None)
    store.new_generation()  # a bump after a loss starts at a random number too
    require_redis().delete(f"{redis_prefix}cache:catalogue:generation")
    store.new_generation()
    assert generation_of(store) > 2


def test_a_redis_that_fails_misses_stores_nothing_and_raises_nothing():
    link = redisconn.RedisLink(f"redis://127.0.0.1:{free_port()}/0")
    store = cache.RedisStore(link, "catalogue")
    assert store.lookup("item:7") == (None, None)
    store.save("item:7", 5, b"seven", TTL_SECONDS)
    store.new_generation()
    loads = []
    answers = response_cache(store)
    for _ in range(2):  # no generation known: the database each time, nothing stored
        assert answers.fetch("item:7", lambda: loads.append(1) or cache.CachedResponse(b"{}")) == (
            cache.CachedResponse(b"{}"), False)
    assert len(loads) == 2
    link.close()


def test_a_bump_redis_missed_is_made_before_the_cache_is_used_again(redis_link):
    link = FlakyLink(redis_link)
    store = cache.RedisStore(link, "catalogue")
    generation = generation_of(store)
    store.save("item:7", generation, b"old stock", TTL_SECONDS)
    link.down = True
    store.new_generation()  # the change committed; Redis did not hear of it
    assert store.lookup("item:7") == (None, None)
    link.down = False  # back, still holding the old entry: the bump comes first
    newer, value = store.lookup("item:7")
    assert value is None and newer == generation + 1
    assert store.lookup("item:7") == (generation + 1, None)  # made once, not on every lookup


# -- the values --------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"", b"no newline", b"{}\n{}", b"[1]\n{}", b"[[1,2,3]]\n{}", b"\xff\n{}",
                                 b'[["ETag","a\\r\\nSet-Cookie: x"]]\n{}'])
def test_bytes_the_catalogue_did_not_write_are_a_miss(raw):
    assert cache.decode_response(raw) is None


def test_a_response_survives_the_trip_through_bytes():
    response = cache.CachedResponse(b'{"a":"\n"}', (("ETag", '"item-1-v1"'), ("Link", '</v1/items>; rel="first"')))
    assert cache.decode_response(cache.encode_response(response)) == response


SESSION = {"id": 7, "role": "user", "session_row_id": 3, "last_used_at": "2026-01-01T00:00:00.000000Z",
           "expires_at": "2026-01-08T00:00:00.000000Z"}


@pytest.mark.parametrize("change", [
    {"role": None}, {"id": "7"}, {"id": True}, {"expires_at": 1}, {"extra": 1}, {"last_used_at": ["x"]},
])
def test_a_cached_session_of_any_other_shape_is_a_miss(change):
    assert cache.decode_session(cache.encode_session(SESSION)) == SESSION
    assert cache.decode_session(cache.encode_session(dict(SESSION, **change))) is None
    assert cache.decode_session(b"[]") is None
    assert cache.decode_session(b"not json") is None


def test_too_large_a_value_is_answered_but_not_stored():
    store = cache.MemoryStore(10)
    answers = response_cache(store)
    large = cache.CachedResponse(b"x" * cache.MAX_VALUE_BYTES)
    assert answers.fetch("big", lambda: large) == (large, False)
    assert store.lookup("big") == (0, None)


# -- the single flight -------------------------------------------------------------------------

def fetch_at_once(answers, count, load, key="item:7"):
    """`count` threads fetch `key` at the same moment; their (value, hit) answers, or the
    exception a fetch raised."""
    barrier = threading.Barrier(count)
    results = [None] * count

    def fetch(position):
        barrier.wait(WAIT_SECONDS)
        try:
            results[position] = answers.fetch(key, load)
        except Exception as error:  # the test looks at it
            results[position] = error

    threads = [threading.Thread(target=fetch, args=(position,)) for position in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_SECONDS)
    assert None not in results, "a fetch did not finish"
    return results


def wait_for_followers(answers, count):
    """Return once `count` requests wait for a read under way (a test's load calls this)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while sum(flight.followers for flight in list(answers._flights.values())) < count:
        assert time.monotonic() < deadline, f"{count} requests never waited for the read"
        time.sleep(0.001)


def test_fifty_requests_that_miss_one_key_read_the_database_once(store):
    answers = response_cache(store)
    reads = []

    def load():
        reads.append(1)
        wait_for_followers(answers, 49)  # every other request is waiting for this read
        return cache.CachedResponse(b'{"id":7}')

    results = fetch_at_once(answers, 50, load)
    assert len(reads) == 1
    assert {value for value, _ in results} == {cache.CachedResponse(b'{"id":7}')}
    assert sorted(hit for _, hit in results) == [False] + [True] * 49
    assert answers.fetch("item:7", load) == (cache.CachedResponse(b'{"id":7}'), True)


def test_when_the_first_read_fails_each_waiting_request_reads_for_itself():
    answers = response_cache(cache.MemoryStore(10))
    reads = []

    def load():
        reads.append(1)
        if len(reads) == 1:
            wait_for_followers(answers, 4)
            raise ConnectionError("the database went away")
        return cache.CachedResponse(b"{}")

    results = fetch_at_once(answers, 5, load)
    assert len(reads) == 5
    assert [type(result) for result in results].count(ConnectionError) == 1
    assert [result for result in results if not isinstance(result, ConnectionError)] == [
        (cache.CachedResponse(b"{}"), False)] * 4


def test_a_request_after_a_change_never_waits_for_a_read_from_before_it():
    answers = response_cache(cache.MemoryStore(10))
    reading, release = threading.Event(), threading.Event()
    stock = ["10 in stock"]

    def slow_load():
        value = cache.CachedResponse(stock[0].encode())
        reading.set()
        release.wait(WAIT_SECONDS)
        return value

    results = []
    reader = threading.Thread(target=lambda: results.append(answers.fetch("item:7", slow_load)))
    reader.start()
    assert reading.wait(WAIT_SECONDS)
    stock[0] = "9 in stock"
    answers.invalidate()  # the order committed while the read above was under way
    assert answers.fetch("item:7", lambda: cache.CachedResponse(stock[0].encode())) == (
        cache.CachedResponse(b"9 in stock"), False)
    release.set()
    reader.join(WAIT_SECONDS)
    assert results == [(cache.CachedResponse(b"10 in stock"), False)]  # answered: it began first
    assert answers.fetch("item:7", pytest.fail) == (cache.CachedResponse(b"9 in stock"), True)


def test_the_memory_catalogue_keeps_responses_as_they_are_and_counts_their_bytes(settings):
    catalogue, _ = cache.build_caches(settings, None)
    response = cache.CachedResponse(b'{"id":7}', (("ETag", '"item-7-v3"'),))
    assert cache.response_size(response) == len(b'{"id":7}') + len("ETag") + len('"item-7-v3"')
    generation, _ = catalogue.lookup("item:7")
    catalogue.save("item:7", generation, response)
    assert catalogue.lookup("item:7")[1] is response  # nothing encoded, nothing decoded
    assert catalogue.store._bytes == cache.response_size(response)
    small = cache.MemoryStore(100, max_bytes=30, size=cache.response_size)
    for key in ("a", "b"):
        small.save(key, 0, response, TTL_SECONDS)  # 23 bytes each: the second pushes the first out
    assert (small.lookup("a")[1], small.lookup("b")[1]) == (None, response)
