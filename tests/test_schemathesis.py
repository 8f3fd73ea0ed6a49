"""schemathesis against the real program: every check, from the document the server serves.

`python server.py` runs in another process on a fresh database (SQLite, then PostgreSQL),
with a seeded catalogue, a customer and an admin. schemathesis reads GET /openapi.json and,
logged in as one of them, sends each operation examples, boundary values (the coverage
phase), generated requests that obey the document and requests that break it (fuzzing), then
chains operations along the links it infers (stateful):

    st --config-file schemathesis.toml run http://127.0.0.1:PORT/openapi.json --checks all \\
       --max-examples 8 --seed 20261129

Every check must pass: never a 5xx, every answer of a status, content type, headers and body
the document declares, what breaks the document refused with a 4xx, what obeys it accepted,
401 without credentials, 405 with Allow for other methods. A finding is fixed in the server,
or in the document's generator when the document was wrong; schemathesis.toml says which
designs it is told about (with their reasons), and tests/schemathesis_hooks.py which rules
no document can state.

The server runs as the README ships it but for:
    RATE_LIMITS=off          the fuzzer sends hundreds of requests a second from one address:
                             with limits on, nearly all would be 429s and test nothing but the
                             limiter (tests/test_ratelimit.py tests it)
    PBKDF2_ITERATIONS=1000   a login or registration hashes a password (conftest's count)
    WORKER=off               the jobs the fuzzer causes (emails, exports, webhooks) are queued,
                             not run: their work is tested in test_jobs.py and test_webhooks.py
    EVENT_HEARTBEAT_SECONDS  a stream the fuzzer hung up on is noticed, and its slot freed,
                             within a tenth of a second (schemathesis.toml reads each stream
                             for less than a second)

Destructive operations are fuzzed too. POST /v1/auth/logout-all ends the account's tokens:
schemathesis logs in again on the 401 (schemathesis.toml). PATCH /v1/users/{id} can take the
campaign's own admin rights away (promote another account, then demote itself), after which
every admin route is a 403: it runs last, in a run of its own (LAST_OPERATIONS).

Bounded for CI: FUZZ_EXAMPLES examples per operation and phase (8 here: 20 to 30 s a run on
2 cores, most of it the coverage phase, whose boundary cases do not grow with the examples);
a fixed seed and no example database, so every run sends the same first requests (the
server's answers, ids and times, can still steer later ones). `make fuzz` runs the same test
with FUZZ_EXAMPLES=100: a campaign of several minutes.
"""

import importlib.util
import os
import re
import subprocess
import sys

import pytest
from conftest import PROJECT_DIR, TEST_ITERATIONS, TEST_PASSWORD, free_port, server_env, unavailable

import orders
import seed

SEED = 20261129
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
# A run that takes longer than this has hung: fail it rather than CI's whole job.
RUN_TIMEOUT_SECONDS = 120 + 6 * EXAMPLES
ACCOUNTS = {"user": "fuzz-user@example.com", "admin": "fuzz-admin@example.com"}
# Operations that can take the campaign's account its rights: fuzzed after all the others.
LAST_OPERATIONS = ("update_user",)
# An order may have up to MAX_LINES lines, each of another item: seed as many.
SEEDED_ITEMS = orders.MAX_LINES
# What of a failed run's output goes into the test's failure message.
REPORT_LINES = 300


@pytest.fixture
def schemathesis_installed():
    if importlib.util.find_spec("schemathesis") is None:
        unavailable("schemathesis is not installed (pip install -r requirements-test.txt -c constraints.txt)")


@pytest.fixture
def fuzzed_server(database, settings, users, start_program, tmp_path):
    """`python server.py` on the test's database, with SEEDED_ITEMS items and both accounts;
    its base URL."""
    seed.seed_items(database, SEEDED_ITEMS)
    users.create(ACCOUNTS["user"])
    users.admin(ACCOUNTS["admin"])
    env = server_env(settings.database_url, RATE_LIMITS="off", PBKDF2_ITERATIONS=str(TEST_ITERATIONS),
                     MAIL_OUTBOX_DIR=str(tmp_path / "outbox"), EXPORT_DIR=str(tmp_path / "exports"),
                     EVENT_HEARTBEAT_SECONDS="0.1")
    server = start_program([sys.executable, "server.py", "--port", str(free_port())], env).wait_for_url()
    return server.url


@pytest.mark.parametrize("role", ["user", "admin"])
def test_schemathesis_finds_nothing(schemathesis_installed, fuzzed_server, role, tmp_path):
    everything_else = [f"--exclude-operation-id={name}" for name in LAST_OPERATIONS]
    last = [f"--include-operation-id={name}" for name in LAST_OPERATIONS]
    for number, selection in enumerate([everything_else, last], start=1):
        run = fuzz(fuzzed_server, ACCOUNTS[role], selection)
        report = tmp_path / f"schemathesis-{number}.txt"
        report.write_text(run.stdout + run.stderr)
        tail = "\n".join((run.stdout + run.stderr).splitlines()[-REPORT_LINES:])
        assert run.returncode == 0, f"schemathesis found problems (whole report: {report}):\n{tail}"
        # Every generated case passed every check (a skipped one is a case no check applied to).
        assert re.search(r"\b([0-9]+) generated, \1 passed\b", run.stdout), tail


def fuzz(base_url, email, selection):
    """Run `st` against the server as `email`; the completed process (output captured)."""
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", "schemathesis.toml", "--no-color",
               "run", f"{base_url}/openapi.json", "--checks", "all", "--max-examples", str(EXAMPLES),
               "--seed", str(SEED), "--workers", "1", *selection]
    env = {**os.environ, "FUZZ_EMAIL": email, "FUZZ_PASSWORD": TEST_PASSWORD, "FUZZ_ITEMS": str(SEEDED_ITEMS)}
    return subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_SECONDS, check=False)
