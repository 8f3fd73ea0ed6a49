"""PostgreSQL LISTEN on a connection of its own: a worker hears of a new job at once (and the
order events' broadcaster of a new event, events.py).

    enqueuing transaction:   INSERT INTO jobs ...; NOTIFY shop_jobs; COMMIT
    this listener:           LISTEN shop_jobs  ->  notification  ->  on_notify()  (wake the worker)

A NOTIFY is delivered at COMMIT, never after a ROLLBACK, to every session listening on the
channel, in every process. A listening session must stay connected, so it cannot be one of
the pool's (db.py), which are lent to a block and handed back.

Notifications only make a worker look sooner; they are not how it finds work. One missed
while the connection was down is covered by the worker's poll (WORKER_POLL_SECONDS), and
after every reconnection `on_notify()` is called once, for whatever was sent meanwhile.

Every wait is bounded: the connection is made within CONNECT_TIMEOUT_SECONDS, a wait for
notifications ends after WAIT_SECONDS to look at the stop flag, TCP keepalives find a dead
link, and reconnection backs off from 0.5 s to RECONNECT_MAX_SECONDS.
"""

import threading

try:  # Optional, as in db.py: only a worker on PostgreSQL creates a Listener.
    import psycopg
    from psycopg import sql
except ImportError:  # pragma: no cover - exercised on a machine without the package
    pass

CONNECT_TIMEOUT_SECONDS = 5
WAIT_SECONDS = 0.5  # a wait for notifications ends this often to look at the stop flag
RECONNECT_FIRST_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 30.0
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


class Listener:
    """LISTEN on `channel` at `url` in a thread of its own; `on_notify()` for each notification
    (it must be quick: it runs in the listening thread)."""

    def __init__(self, url, channel, on_notify, logger):
        self.url, self.channel, self.on_notify, self.logger = url, channel, on_notify, logger
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._listen_forever, name="pg-listener", daemon=True)
        self.connected = threading.Event()  # set while LISTEN is in effect (tests wait for it)
        self.backend_pid = None  # the server process of the listening session, for tests

    def start(self):
        self._thread.start()

    def stop(self):
        """Stop listening; returns within about WAIT_SECONDS."""
        self._stopping.set()
        self._thread.join(WAIT_SECONDS + CONNECT_TIMEOUT_SECONDS)

    def _listen_forever(self):
        pause = RECONNECT_FIRST_SECONDS
        while not self._stopping.is_set():
            try:
                self._listen()
                pause = RECONNECT_FIRST_SECONDS
            except psycopg.Error as error:
                # Never the URL: it may hold a password.
                self.logger.warning("listener disconnected", channel=self.channel, error=type(error).__name__,
                                    retry_in_seconds=pause)
                self._stopping.wait(pause)
                pause = min(pause * 2, RECONNECT_MAX_SECONDS)
            finally:
                self.connected.clear()

    def _listen(self):
        with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS, **KEEPALIVE) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self.backend_pid = conn.info.backend_pid
            self.connected.set()
            self.on_notify()  # anything sent while we were not listening
            while not self._stopping.is_set():
                for _ in conn.notifies(timeout=WAIT_SECONDS):
                    self.on_notify()
