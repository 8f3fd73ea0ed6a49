"""deadlines.py: a watchdog that wakes a blocked reader at its deadline, and only then.

Each test reads from one end of a socket pair whose other end never writes: the silence of a
peer that stopped answering, with no network needed.
"""

import socket
import threading
import time

import pytest

from deadlines import Watchdog

DEADLINE_SECONDS = 0.2
MARGIN_SECONDS = 0.5  # threads scheduled late on a busy machine


@pytest.fixture
def watchdog():
    watchdog = Watchdog()
    yield watchdog
    watchdog.stop()


@pytest.fixture
def silent_pair():
    """(reader, peer): sockets connected to each other; the peer writes only when told to."""
    reader, peer = socket.socketpair()
    yield reader, peer
    reader.close()
    peer.close()


def test_an_alarm_wakes_a_blocked_reader_at_its_deadline(watchdog, silent_pair):
    reader, _ = silent_pair
    started = time.monotonic()
    alarm = watchdog.arm(reader.fileno(), started + DEADLINE_SECONDS)
    assert reader.recv(100) == b""  # woken as if the peer had hung up
    elapsed = time.monotonic() - started
    assert DEADLINE_SECONDS <= elapsed < DEADLINE_SECONDS + MARGIN_SECONDS
    assert watchdog.disarm(alarm) is True
    assert reader.fileno() != -1  # shut down, not closed: the descriptor is still its owner's


def test_a_disarmed_alarm_never_rings(watchdog, silent_pair):
    reader, peer = silent_pair
    alarm = watchdog.arm(reader.fileno(), time.monotonic() + DEADLINE_SECONDS)
    assert watchdog.disarm(alarm) is False
    reader.settimeout(DEADLINE_SECONDS + MARGIN_SECONDS)
    with pytest.raises(TimeoutError):
        reader.recv(100)  # past the deadline, nothing shut it down
    peer.sendall(b"late")
    assert reader.recv(100) == b"late"


def test_alarms_ring_in_deadline_order_whatever_the_order_they_were_set_in(watchdog):
    pairs = [socket.socketpair() for _ in range(3)]
    now = time.monotonic()
    # Set the latest first: each earlier one must wake the watch from a longer sleep.
    deadlines = [now + 3 * DEADLINE_SECONDS, now + 2 * DEADLINE_SECONDS, now + DEADLINE_SECONDS]
    woken = {}

    def read(position, reader):
        reader.recv(100)
        woken[position] = time.monotonic()

    try:
        for (reader, _), deadline in zip(pairs, deadlines, strict=True):
            watchdog.arm(reader.fileno(), deadline)
        threads = [threading.Thread(target=read, args=(position, reader))
                   for position, (reader, _) in enumerate(pairs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5)
        assert sorted(woken, key=woken.get) == [2, 1, 0]
        for position, deadline in enumerate(deadlines):
            assert deadline <= woken[position] < deadline + MARGIN_SECONDS
    finally:
        for pair in pairs:
            for end in pair:
                end.close()


def test_after_stop_no_alarm_rings(silent_pair):
    reader, _ = silent_pair
    watchdog = Watchdog()
    watchdog.arm(reader.fileno(), time.monotonic() + DEADLINE_SECONDS)
    watchdog.stop()
    reader.settimeout(DEADLINE_SECONDS + MARGIN_SECONDS)
    with pytest.raises(TimeoutError):
        reader.recv(100)
