"""Tests for redisconn.py: the real Redis when it answers, the fallback when it does not.

"Down" is a port where nothing listens (refused at once) or a paused proxy in front of the
real Redis (no answer at all, the harder case): both end within the link's timeout.
"""
import time

import pytest
from conftest import REDIS_TEST_URL, free_port, require_redis
from tcpproxy import TCPProxy

import redisconn
from observe import JSONLogger


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def log():
    records = []

    class Recorder(JSONLogger):
        def warning(self, event, **fields):
            records.append((event, fields))
    return records, Recorder(enabled=False)


def test_a_command_runs_on_redis_under_the_prefix(redis_prefix):
    link = redisconn.RedisLink(REDIS_TEST_URL, prefix=redis_prefix)
    assert link.key("cache", "items", 7) == f"{redis_prefix}cache:items:7"
    assert link.run(lambda client: client.incr(link.key("n")), fallback=lambda: "memory") == 1
    assert require_redis().get(f"{redis_prefix}n") == b"1"
    assert link.ping()
    link.close()


def test_redis_refusing_gives_the_fallback_and_one_warning_per_ten_seconds(log):
    records, logger = log
    clock = Clock()
    link = redisconn.RedisLink(f"redis://127.0.0.1:{free_port()}/0", logger=logger, clock=clock)
    assert link.run(lambda client: client.get("k"), fallback=lambda: "memory") == "memory"
    assert [event for event, _ in records] == ["redis unavailable; using the fallback"]
    assert records[0][1]["error"].startswith("ConnectionError")
    clock.now += redisconn.BACKOFF_SECONDS / 2     # backing off: Redis is not even tried
    assert link.run(lambda client: pytest.fail("tried Redis while backing off"), fallback=lambda: 1) == 1
    clock.now += redisconn.BACKOFF_SECONDS          # tried again, failed again: no new warning yet
    assert link.run(lambda client: client.get("k"), fallback=lambda: 2) == 2
    assert len(records) == 1
    clock.now += redisconn.WARN_EVERY_SECONDS
    assert link.run(lambda client: client.get("k"), fallback=lambda: 3) == 3
    assert len(records) == 2
    assert not link.ping()


def test_a_redis_that_hangs_costs_one_timeout_then_recovers(redis_prefix, log):
    _, logger = log
    with TCPProxy(("127.0.0.1", 6379)) as proxy:
        link = redisconn.RedisLink(f"redis://127.0.0.1:{proxy.port}/0", prefix=redis_prefix, logger=logger)
        assert link.run(lambda client: client.set(link.key("k"), "v"), fallback=lambda: None)
        proxy.pause()
        started = time.monotonic()
        assert link.run(lambda client: client.get(link.key("k")), fallback=lambda: "memory") == "memory"
        assert time.monotonic() - started < 3 * redisconn.TIMEOUT_SECONDS
        started = time.monotonic()   # within the back-off: the fallback at once
        assert link.run(lambda client: client.get(link.key("k")), fallback=lambda: "memory") == "memory"
        assert time.monotonic() - started < 0.05
        proxy.resume()
        time.sleep(redisconn.BACKOFF_SECONDS)
        assert link.run(lambda client: client.get(link.key("k")), fallback=lambda: "memory") == b"v"
        link.close()


def test_without_the_package_a_redis_url_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(redisconn, "HAVE_REDIS", False)
    with pytest.raises(redisconn.RedisMissing, match=r"pip install -r requirements\.txt"):
        redisconn.RedisLink(REDIS_TEST_URL)
