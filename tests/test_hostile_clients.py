"""Hostile clients against the real `python server.py`, on both engines.

Each test starts the program as an operator would (PBKDF2 at its production 600,000
iterations, `python server.py seed` for a catalogue), attacks it while probing
GET /health and GET /v1/items/1, and asserts on what honest clients felt:

- slow clients: 50 connections trickling a body and 50 trickling a head, at once, with
  tools/hostile.py (the tool the README shows). Every probe is answered within 100 ms,
  every slow connection ends with a 408, and the server's file descriptors come back to
  what they were.
- a burst of logins: 50 wrong-password logins at a time, again and again. Every probe of
  /health within 100 ms and of the item within 200 ms; every login answered 401, or 503
  with Retry-After, and none left hanging.
- slowhttptest, an independent tool (the Debian package): its slow-body, slow-head and
  slow-read attacks at once, and its own probe reporting the service available every second.

The server runs with RATE_LIMITS=off: the probes ask 20 times a second from one address,
above the default quota, and these attacks are about what the server withstands by
itself (the hashing gate, the lanes, the selector). tests/test_ratelimit.py floods logins
with the rate limits on.

The limits hold for every probe, not a percentile: the issue asks for "throughout", and a
server whose probes wait behind attackers misses by seconds, not by a few milliseconds (a
probe measured on this kind of 2-core machine while every core hashed passwords took 45 ms
at most). The attacks are short (seconds, not minutes) to keep the file near a minute.
"""

import csv
import json
import shutil
import subprocess
import sys

import pytest
from conftest import PROJECT_DIR, free_port, server_env, unavailable

from httpserver import HEADER_TIMEOUT_SECONDS

PRODUCTION_ITERATIONS = "600000"  # config.DEFAULT_PBKDF2_ITERATIONS: the attack is on real hashing
ATTACKERS = 50                    # of each kind, as in the issue
ITEM = "/v1/items/1"
HEALTH_LIMIT_MS = 100
ITEM_LIMIT_MS = 100               # while slow clients attack
ITEM_LIMIT_DURING_LOGINS_MS = 200  # while the cores hash passwords
# A slow head gets its 408 once the head timeout has passed; the attack may last a little
# longer, so that a server a moment late is seen as late rather than as still open.
SLOW_ATTACK_SECONDS = HEADER_TIMEOUT_SECONDS + 3
LOGIN_FLOOD_SECONDS = 6
LOGIN_ANSWER_SECONDS = 10         # a login not answered within this hangs
SLOWHTTPTEST_SECONDS = 8
SLOWHTTPTEST_PROBE_SECONDS = 2    # its probe calls the service unavailable past this
TOOL_MARGIN_SECONDS = 30          # the tool's set-up, last answers and fd settling, at most


@pytest.fixture
def shop(engine, database_url, start_program):
    """`python server.py seed`, then `python server.py` on a free port: the Program."""
    env = server_env(database_url, PBKDF2_ITERATIONS=PRODUCTION_ITERATIONS, RATE_LIMITS="off")
    seeded = subprocess.run([sys.executable, "server.py", "seed"], cwd=PROJECT_DIR, env=env, capture_output=True,
                            text=True, timeout=60, check=False)  # the assertion says what went wrong
    assert seeded.returncode == 0, seeded.stderr
    return start_program([sys.executable, "server.py", "--port", str(free_port())], env).wait_for_url()


def test_slow_bodies_and_slow_heads_get_408_while_probes_answer_at_once(shop):
    report = hostile(shop, "both", "--duration", str(SLOW_ATTACK_SECONDS))

    within_limits(report, {"/health": HEALTH_LIMIT_MS, ITEM: ITEM_LIMIT_MS})
    for kind in ("slow-body", "slow-head"):
        assert report["slow_connections"][kind]["ended"] == {"408": ATTACKERS}, described(report)
    fds = report["open_fds"]
    assert fds["during_max"] > fds["before"] + ATTACKERS, "the fd count did not see the attack: " + described(report)
    assert fds["after"] <= fds["before"], "the slow connections' fds were not released: " + described(report)


def test_a_burst_of_wrong_password_logins_leaves_health_and_reads_fast(shop):
    report = hostile(shop, "login-flood", "--duration", str(LOGIN_FLOOD_SECONDS),
                     "--timeout", str(LOGIN_ANSWER_SECONDS))

    within_limits(report, {"/health": HEALTH_LIMIT_MS, ITEM: ITEM_LIMIT_DURING_LOGINS_MS})
    logins = report["logins"]
    assert logins["no_answer"] == 0, f"logins left hanging over {LOGIN_ANSWER_SECONDS} s: " + described(report)
    assert set(logins["statuses"]) <= {"401", "503"}, described(report)
    assert logins["503_without_retry_after"] == 0, described(report)
    assert logins["statuses"].get("401", 0) > 0, "no login was checked at all: " + described(report)


def test_slowhttptest_slow_body_head_and_read_leave_the_service_available(shop, tmp_path):
    """slowhttptest's three slow modes at once, against one server: each reports every
    second whether its own probe (a plain GET of its URL) was answered in time."""
    if shutil.which("slowhttptest") is None:
        unavailable("slowhttptest is not installed (apt-get install slowhttptest)")
    common = ["-c", str(ATTACKERS), "-r", str(ATTACKERS), "-l", str(SLOWHTTPTEST_SECONDS),
              "-p", str(SLOWHTTPTEST_PROBE_SECONDS), "-g"]
    modes = {
        # A body announced as 10,000 bytes, then a few bytes of it every second.
        "slow-body": ["-B", "-s", "10000", "-i", "1", "-x", "10", "-u", f"{shop.url}{ITEM}"],
        # A head that grows by one header line every second.
        "slow-head": ["-H", "-i", "1", "-x", "10", "-u", f"{shop.url}{ITEM}"],
        # Ten pipelined requests for the largest page, read a byte a second through a tiny window.
        "slow-read": ["-X", "-k", "10", "-n", "1", "-w", "1", "-y", "16", "-z", "1",
                      "-u", f"{shop.url}/v1/items?limit=100"],
    }
    runs = {mode: subprocess.Popen(["slowhttptest", *options, *common, "-o", str(tmp_path / mode)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for mode, options in modes.items()}
    for run in runs.values():
        assert run.wait(timeout=SLOWHTTPTEST_SECONDS + TOOL_MARGIN_SECONDS) == 0

    seconds_down = {}
    for mode in runs:
        with open(tmp_path / f"{mode}.csv", newline="") as report:
            seconds = list(csv.DictReader(report))
        assert len(seconds) >= SLOWHTTPTEST_SECONDS // 2, f"{mode}: slowhttptest reported too few seconds"
        if down := [int(row["Seconds"]) for row in seconds if int(row["Service Available"]) == 0]:
            seconds_down[mode] = down
    # The three ran together: one mode that takes the server down shows in all three reports.
    assert seconds_down == {}, f"seconds without service, by report: {seconds_down}"


# -- helpers -------------------------------------------------------------------------------

def hostile(shop, attack, *options):
    """Run tools/hostile.py against the shop, ATTACKERS strong, counting its fds: the report."""
    command = [sys.executable, "tools/hostile.py", shop.url, attack, "--connections", str(ATTACKERS),
               "--pid", str(shop.process.pid), *options]
    done = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, check=False,
                          timeout=SLOW_ATTACK_SECONDS + LOGIN_ANSWER_SECONDS + TOOL_MARGIN_SECONDS)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def within_limits(report, limits):
    """Every probe of each path answered 200, each within its limit in milliseconds."""
    for path, limit_ms in limits.items():
        probes = report["probes"][path]
        assert probes["count"] > 0, f"{path} was never probed"
        assert probes["failures"] == 0, f"{path}: probes failed or went unanswered: " + described(report)
        assert probes["max_ms"] <= limit_ms, f"{path}: a probe took over {limit_ms} ms: " + described(report)


def described(report):
    return "\n" + json.dumps(report, indent=2)
