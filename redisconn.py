"""Redis, when REDIS_URL is set: one client per process, bounded waits, and a fallback.

Redis is optional. Without it, rate limits and the cache live in each process's memory
(ratelimit.py, cache.py); with it, every process (``gunicorn --workers 4 server:app``) shares
one budget and one cache. Either way Redis is a helper, never a dependency a request cannot
do without: when it does not answer, callers fall back to memory (the limiter) or to the
database (the cache), and /ready names it so an operator notices.

    link = RedisLink("redis://127.0.0.1:6379/0", prefix="shop:", logger=logger)
    count = link.run(lambda client: client.incr(link.key("visits")), fallback=lambda: None)

Waiting is bounded like every other wait here: connecting and each command may take
TIMEOUT_SECONDS at most. After a failure the link does not try again for BACKOFF_SECONDS
(a small circuit breaker), so a Redis that is down costs one timeout per second, not one per
request, and the warning about it is logged at most once every WARN_EVERY_SECONDS.
"""

import threading
import time

try:  # Optional, like psycopg: only a REDIS_URL needs the package.
    import redis
    HAVE_REDIS = True
except ImportError:  # pragma: no cover - exercised on a machine without the package
    HAVE_REDIS = False

TIMEOUT_SECONDS = 0.25        # to connect, and for each command: Redis answers in microseconds
BACKOFF_SECONDS = 1.0         # after a failure, the fallback alone for this long
WARN_EVERY_SECONDS = 10.0     # at most one "redis unavailable" warning this often
MAX_CONNECTIONS = 64          # per process; a thread waits TIMEOUT_SECONDS for one at most
DEFAULT_PREFIX = "shop:"      # every key starts with it, so one Redis can serve several shops


class RedisMissing(Exception):
    """REDIS_URL is set but the redis package is not installed."""


class RedisLink:
    """A Redis client that never raises: `run()` answers from Redis, or from the fallback."""

    def __init__(self, url, *, prefix=DEFAULT_PREFIX, logger=None, clock=time.monotonic):
        if not HAVE_REDIS:
            raise RedisMissing("REDIS_URL is set: pip install -r requirements.txt (the redis package)")
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=TIMEOUT_SECONDS,
            socket_connect_timeout=TIMEOUT_SECONDS, socket_timeout=TIMEOUT_SECONDS)
        self.client = redis.Redis(connection_pool=pool)
        self.prefix, self.logger, self.clock = prefix, logger, clock
        self._lock = threading.Lock()
        self._down_until = 0.0      # clock() before which run() goes straight to the fallback
        self._warned_at = None      # clock() of the last warning

    def key(self, *parts) -> str:
        """The full key for parts: key("cache", "items", 7) -> "shop:cache:items:7"."""
        return self.prefix + ":".join(str(part) for part in parts)

    def run(self, operation, fallback):
        """operation(client)'s answer; fallback()'s if Redis fails or failed a moment ago."""
        if self.clock() < self._down_until:
            return fallback()
        try:
            return operation(self.client)
        except redis.RedisError as error:  # ConnectionError and TimeoutError included
            self._failed(error)
            return fallback()

    def ping(self) -> bool:
        """Does Redis answer now? For /ready, which must not trust the back-off."""
        try:
            return bool(self.client.ping())
        except redis.RedisError as error:
            self._failed(error)
            return False

    def close(self) -> None:
        self.client.close()
        self.client.connection_pool.disconnect()

    def _failed(self, error) -> None:
        now = self.clock()
        with self._lock:
            self._down_until = now + BACKOFF_SECONDS
            warn = self._warned_at is None or now - self._warned_at >= WARN_EVERY_SECONDS
            if warn:
                self._warned_at = now
        if warn and self.logger is not None:
            # The error's class names the cause (ConnectionError, TimeoutError, ...); its text
            # may hold the address, which is configuration, not a secret.
            self.logger.warning("redis unavailable; using the fallback", error=f"{type(error).__name__}: {error}")
