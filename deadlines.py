"""Deadlines for blocking sockets: when one passes, a watchdog shuts the socket down.

A thread blocked reading a socket whose peer went silent waits as long as the silence lasts.
Another thread cannot safely close that socket: the reader still uses its descriptor, and a
closed descriptor's number goes to the next socket opened. It can shut the socket down
(shutdown(2), both directions): the reader wakes at once, as if the peer had hung up, and the
descriptor stays open for its owner to close.

    watchdog = Watchdog()
    alarm = watchdog.arm(sock.fileno(), time.monotonic() + 3)
    answer = sock.recv(4096)     # b"" if nothing came within 3 s: the alarm rang
    if watchdog.disarm(alarm):   # True: it rang first, the socket is shut for good
        sock.close()

db.py arms one for every PostgreSQL block, on the connection's socket: psycopg's wait for an
answer has no end of its own.
"""

import heapq
import itertools
import math
import os
import socket
import threading
import time
from dataclasses import dataclass


@dataclass(eq=False)
class Alarm:
    """The socket to shut down at a deadline, unless disarmed first."""

    fileno: int
    armed: bool = True
    rang: bool = False


class Watchdog:
    """One thread that shuts down the sockets whose alarms reach their deadline.

    The watchdog touches a descriptor only while its alarm is armed, under the lock `disarm`
    takes: an owner that disarms before it closes its socket is never surprised. One thread
    serves every alarm, rather than a timer thread each: alarms wait in a heap, the earliest
    deadline first, and nearly all are disarmed long before they would ring.
    """

    def __init__(self):
        self._alarms = []  # a heap of (deadline, sequence number, Alarm)
        self._sequence = itertools.count()  # breaks ties between equal deadlines
        self._condition = threading.Condition()
        self._sleeping_until = math.inf  # the deadline the watch waits for; inf: none
        self._thread = None
        self._stopped = False

    def arm(self, fileno, deadline):
        """An `Alarm` that shuts down socket `fileno` at `deadline` (a time.monotonic() value)."""
        alarm = Alarm(fileno)
        with self._condition:
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="deadline-watchdog", daemon=True)
                self._thread.start()
            # Blocks end in about the order they began: dropping the disarmed alarms at the
            # front keeps the heap about as long as the number of blocks still running.
            while self._alarms and not self._alarms[0][2].armed:
                heapq.heappop(self._alarms)
            heapq.heappush(self._alarms, (deadline, next(self._sequence), alarm))
            if deadline < self._sleeping_until:
                self._condition.notify()  # the watch sleeps past this deadline: wake it
        return alarm

    def disarm(self, alarm):
        """Stop `alarm`. True when it had rung: its socket is shut down, and useless."""
        with self._condition:
            alarm.armed = False
            return alarm.rang

    def stop(self):
        """End the thread; alarms still armed never ring."""
        with self._condition:
            self._stopped = True
            self._condition.notify()
        if self._thread is not None:
            self._thread.join()

    def _watch(self):
        with self._condition:
            while not self._stopped:
                if not self._alarms:
                    self._sleeping_until = math.inf
                    self._condition.wait()
                    continue
                deadline, _, alarm = self._alarms[0]
                seconds_left = deadline - time.monotonic()
                if alarm.armed and seconds_left > 0:
                    self._sleeping_until = deadline
                    self._condition.wait(seconds_left)
                    continue
                heapq.heappop(self._alarms)  # rung now, or disarmed already
                if alarm.armed:
                    alarm.armed, alarm.rang = False, True
                    _shut_down(alarm.fileno)


def _shut_down(fileno):
    """Shut a socket down both ways, through a duplicate of its descriptor: the `socket`
    module closes the descriptor it wraps, and the original one is its owner's to close."""
    try:
        with socket.socket(fileno=os.dup(fileno)) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:  # already reset by the peer: the wait has woken anyway
        pass
