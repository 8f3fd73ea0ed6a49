"""Live order events: each change of an order's status, as it commits, to every stream that
may see it (`GET /v1/orders/events`; api_events.py speaks the wire format).

    orders.py, in the change's own transaction    record(connection, order, "order.paid")
                                                  -> a row of order_events, id 42
    COMMIT                                        -> wake-ups (below)
    the Broadcaster, one thread per process       SELECT ... WHERE id > 41 ORDER BY id  (once)
                                                  -> each Stream allowed to see it: the order's
                                                     owner's and every admin's
    a Stream, one per open request                -> id: 42 / event: order.paid / data: {...}

The table is the source of truth and the wake-ups only say "look now", so a lost wake-up
delays an event and never loses it:

    in this process       record() asks the COMMIT to wake this process's broadcasters
    PostgreSQL            NOTIFY shop_order_events, sent at COMMIT, heard through LISTEN
                          (pgnotify.py) by the broadcaster of every process
    Redis (REDIS_URL)     PUBLISH after the COMMIT; every broadcaster SUBSCRIBEs
    anything missed       a read every EVENT_POLL_SECONDS anyway: SQLite in another process,
                          Redis or the LISTEN connection down

One query per wake-up serves every stream of the process, however many there are.

Resuming. A client that reconnects sends the id of the last event it got (Last-Event-ID):
its stream first reads the rows after that id from the table, up to where the broadcaster
was when it subscribed, then takes the broadcaster's rows from there on. Each event once, in
order, none missed, as long as ids commit in order (sql_events.lock_event_ids). Events are
kept EVENT_RETENTION_SECONDS: a client away longer gets what is left.

Bounds. A stream holds at most STREAM_QUEUE_EVENTS events its client has not taken; one more
and the stream is ended (its client reconnects and catches up from the table), so a client
that stops reading costs bounded memory. A process serves at most MAX_EVENT_STREAMS streams,
EVENT_STREAMS_PER_USER per user and EVENT_STREAMS_PER_ADDRESS per client address (one
machine signed in as many users cannot take every place), each for STREAM_MAX_SECONDS at
most: a client then reconnects, and its credentials are checked again.
"""

import json
import threading
import time
import weakref
from collections import deque
from datetime import UTC, datetime, timedelta

import db
import jobs
import redisconn
import sql_events

# The event of each status an order can reach; "pending" is where an order starts.
EVENT_TYPES = {"pending": "order.created", "paid": "order.paid", "shipped": "order.shipped",
               "cancelled": "order.cancelled"}
READ_BATCH = 500             # events per query: the broadcaster's reads, a stream's backlog
STREAM_QUEUE_EVENTS = 1000   # events a stream may hold that its client has not taken
STREAM_MAX_SECONDS = 900     # then the stream ends and the client reconnects (an access token's life)
DATABASE_RETRY_SECONDS = 1.0  # after a failed read, the broadcaster waits this long
REDIS_CHANNEL = "order-events"  # under REDIS_PREFIX
REDIS_WAIT_SECONDS = 0.5     # a wait for a Redis message ends this often to look at the stop flag
REDIS_RETRY_MAX_SECONDS = 30.0


class TooManyStreams(Exception):
    """The process (`per_caller` False), or this user or client address (`per_caller` True),
    has all the streams allowed."""

    def __init__(self, message, *, per_caller):
        super().__init__(message)
        self.per_caller = per_caller


class Closed(Exception):
    """The process is shutting down: no new streams."""


def record(connection, order, event_type):
    """Record that `order` (a dict with id, user_id, status, total_cents) had `event_type`, in
    the caller's transaction; its id. Call it last in the transaction (see
    sql_events.lock_event_ids); the streams are woken once the transaction commits."""
    now = db.utc_now()
    data = json.dumps({"order_id": order["id"], "user_id": order["user_id"], "status": order["status"],
                       "total_cents": order["total_cents"], "created_at": now}, separators=(",", ":"))
    sql_events.lock_event_ids(connection)
    event_id = sql_events.insert_event(connection, order["id"], order["user_id"], event_type, data, now)
    sql_events.notify_streams(connection)
    connection.after_commit(_wake_broadcasters)
    return event_id


def purge_old(database, *, retention_seconds, now=None):
    """Delete the events older than `retention_seconds`, a batch per transaction; how many."""
    cutoff = db.utc_text((now or datetime.now(UTC)) - timedelta(seconds=retention_seconds))
    return jobs.delete_in_batches(
        database, lambda connection, limit: sql_events.delete_events_before(connection, cutoff, limit))


class Broadcaster:
    """The process's one reader of order_events, and the streams it feeds (see the module
    docstring). Its threads start with the first stream, so a process that never serves one
    (or a gunicorn master before its fork) runs none; `request_close()` ends every stream."""

    def __init__(self, database, settings, logger, *, redis=None):
        self.database, self.settings, self.logger, self.redis = database, settings, logger, redis
        self.last_seen = None  # the id of the last event read; None until started
        self._lock = threading.Lock()  # guards _streams and last_seen
        self._start_lock = threading.Lock()
        self._streams = set()
        self._wakeup = threading.Event()
        self._closing = threading.Event()
        self._threads = []
        self._listener = None
        with _registry_lock:
            _broadcasters.add(self)

    def open_stream(self, user_id, *, admin, client, last_event_id=None):
        """A Stream of the events `user_id` may see (an admin: all), from after
        `last_event_id`, or from now when it is None. `client` is the caller's address as the
        rate limits count it (ratelimit.address_caller: an IPv6 /64 is one), or "" when none is
        known (a unix socket), which no address limit applies to. Raises TooManyStreams,
        Closed, or db.DatabaseUnavailable."""
        self._start()
        with self.database.connection() as connection:
            latest = sql_events.latest_event_id(connection)
        with self._lock:
            if self._closing.is_set():
                raise Closed("the server is shutting down")
            if len(self._streams) >= self.settings.max_event_streams:
                raise TooManyStreams("the server has all the event streams it can hold", per_caller=False)
            if sum(stream.user_id == user_id for stream in self._streams) >= self.settings.event_streams_per_user:
                raise TooManyStreams(f"at most {self.settings.event_streams_per_user} event streams per user",
                                     per_caller=True)
            if client and sum(stream.client == client for stream in self._streams) >= \
                    self.settings.event_streams_per_address:
                raise TooManyStreams(f"at most {self.settings.event_streams_per_address} event streams per client"
                                     " address", per_caller=True)
            # An id above every event (a database that was reset since) would hide the next
            # events: such a client starts from the newest one instead.
            after = self.last_seen if last_event_id is None else min(last_event_id, latest)
            stream = Stream(self, user_id, admin, client=client, after=after, backlog_up_to=self.last_seen)
            self._streams.add(stream)
        return stream

    def streams(self):
        """How many streams are open in this process."""
        with self._lock:
            return len(self._streams)

    def committed_here(self):
        """An event was committed by this process: look now, and tell the other processes
        (Redis; PostgreSQL's NOTIFY told them already). Runs in the committing thread."""
        self._wakeup.set()
        if self.redis is not None:
            self.redis.run(lambda client: client.publish(self.redis.key(REDIS_CHANNEL), b"1"), fallback=lambda: None)

    def request_close(self):
        """End every stream and accept no more. Only sets flags: safe in a signal handler."""
        self._closing.set()
        self._wakeup.set()

    def close(self, timeout=5.0):
        """request_close(), then wait for the threads (at most `timeout` seconds each)."""
        self.request_close()
        for thread in self._threads:
            thread.join(timeout)

    def _start(self):
        with self._start_lock:
            if self._threads or self._closing.is_set():
                return
            with self.database.connection() as connection:
                self.last_seen = sql_events.latest_event_id(connection)
            if self.database.engine == "postgresql":
                import pgnotify  # only PostgreSQL has it

                self._listener = pgnotify.Listener(self.settings.database_url, sql_events.CHANNEL,
                                                   self._wakeup.set, self.logger)
                self._listener.start()
            targets = [self._broadcast] + ([self._subscribe] if self.redis is not None else [])
            self._threads = [threading.Thread(target=target, name=f"events-{target.__name__.strip('_')}",
                                              daemon=True) for target in targets]
            for thread in self._threads:
                thread.start()

    def _broadcast(self):
        """The broadcaster's thread: wait to be woken (or for the poll interval), read what is
        new once, hand it out; at the end, end every stream."""
        while not self._closing.is_set():
            self._wakeup.wait(self.settings.event_poll_seconds)
            self._wakeup.clear()  # before the read: a wake-up from now on is not lost
            if self._closing.is_set():
                break
            try:
                self._read_new_events()
            except db.DatabaseUnavailable as error:
                self.logger.warning("order events: the database did not answer", error=str(error))
                self._closing.wait(DATABASE_RETRY_SECONDS)
            except Exception as error:  # a bug must not silently stop every stream of the process
                self.logger.error("order events: broadcaster error", error=repr(error))
                self._closing.wait(DATABASE_RETRY_SECONDS)
        with self._lock:
            streams, self._streams = self._streams, set()
        for stream in streams:
            stream.end()
        if self._listener is not None:
            self._listener.stop()

    def _read_new_events(self):
        while True:
            with self.database.connection() as connection:
                rows = sql_events.events_after(connection, self.last_seen, READ_BATCH)
            if not rows:
                return
            with self._lock:
                for row in rows:
                    for stream in [stream for stream in self._streams if stream.may_see(row)]:
                        if not stream.offer(row):  # its client fell too far behind: ended
                            self._streams.discard(stream)
                self.last_seen = rows[-1]["id"]
            if len(rows) < READ_BATCH:
                return

    def _subscribe(self):
        """With Redis: a thread that SUBSCRIBEs to the channel and wakes the broadcaster for
        each message; reconnects with a growing pause while Redis is away (the poll covers)."""
        pause = REDIS_WAIT_SECONDS
        while not self._closing.is_set():
            pubsub = self.redis.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.redis.key(REDIS_CHANNEL))
                self._wakeup.set()  # whatever was published while we were not listening
                pause = REDIS_WAIT_SECONDS
                while not self._closing.is_set():
                    if pubsub.get_message(timeout=REDIS_WAIT_SECONDS) is not None:
                        self._wakeup.set()
            except redisconn.redis.RedisError as error:
                self.logger.warning("order events: redis subscription lost", error=type(error).__name__,
                                    retry_in_seconds=pause)
                self._closing.wait(pause)
                pause = min(pause * 2, REDIS_RETRY_MAX_SECONDS)
            finally:
                pubsub.close()

    def unsubscribe(self, stream):
        with self._lock:
            self._streams.discard(stream)


class Stream:
    """One client's events: first the backlog read from the table (after its Last-Event-ID,
    up to where the broadcaster was when it subscribed), then what the broadcaster hands it."""

    def __init__(self, broadcaster, user_id, admin, *, client, after, backlog_up_to):
        self.broadcaster, self.user_id, self.admin, self.client = broadcaster, user_id, admin, client
        self.last_id = after  # the id of the last event handed out; nothing at or below it again
        self._backlog_up_to = backlog_up_to
        self._queue = deque()
        self._ready = threading.Condition()
        self._ended = False
        self._expires_at = time.monotonic() + STREAM_MAX_SECONDS

    def may_see(self, event):
        return self.admin or event["user_id"] == self.user_id

    def next_events(self, timeout):
        """The next events, oldest first: [] when none came within `timeout` seconds, None
        once the stream has ended (shutdown, a client too far behind, STREAM_MAX_SECONDS).
        May raise db.DatabaseUnavailable while it reads the backlog."""
        if self._backlog_up_to is not None and self.last_id < self._backlog_up_to:
            with self.broadcaster.database.connection() as connection:
                rows = sql_events.events_after(connection, self.last_id, READ_BATCH, up_to=self._backlog_up_to,
                                               user_id=None if self.admin else self.user_id)
            if rows:
                self.last_id = rows[-1]["id"]
                return rows
            self._backlog_up_to = None  # none of the rest is ours
        with self._ready:
            remaining = self._expires_at - time.monotonic()
            if not self._queue and not self._ended and remaining > 0:
                self._ready.wait(min(timeout, remaining))
            if self._ended or time.monotonic() >= self._expires_at:
                return None
            # The backlog may have sent some of these already: each event once.
            events = [event for event in self._queue if event["id"] > self.last_id]
            self._queue.clear()
        if events:
            self.last_id = events[-1]["id"]
        return events

    def offer(self, event):
        """The broadcaster hands an event over; False (and the stream ends) when it is full."""
        with self._ready:
            if len(self._queue) >= STREAM_QUEUE_EVENTS:
                self._ended = True
            else:
                self._queue.append(event)
            self._ready.notify()
            return not self._ended

    def end(self):
        with self._ready:
            self._ended = True
            self._ready.notify()

    def close(self):
        """The client is gone or the response is over: unsubscribe."""
        self.end()
        self.broadcaster.unsubscribe(self)


# Every broadcaster of this process, for record()'s after-commit wake-up. Weak: an app that is
# dropped (tests make many) takes its broadcaster with it.
_broadcasters: "weakref.WeakSet[Broadcaster]" = weakref.WeakSet()
_registry_lock = threading.Lock()


def _wake_broadcasters():
    with _registry_lock:
        broadcasters = list(_broadcasters)
    for broadcaster in broadcasters:
        broadcaster.committed_here()
