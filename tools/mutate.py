"""make mutate: mutation testing of the modules that guard security and money.

A mutation tester (mutmut) changes one small thing in the code at a time (`<` becomes `<=`,
a constant changes, a call is dropped) and runs the tests that cover that line. A test
that fails "kills" the mutant; a mutant that every test survives is a bug the suite would
not notice. The score counts a mutant as detected when a test failed (killed) or hung
until mutmut stopped it (timeout):

    score = (killed + timeout) / (killed + timeout + survived + untested)

"untested" means no selected test ran the mutated function at all.

    $ make mutate                       # every module below, 10 to 20 minutes on 2 cores
    $ make mutate MODULES="pagination"  # one module, under a minute

Each module is run on its own, in a scratch copy of the tracked files (under the system's
temp folder, never the working tree), against its own tests only (TARGETS), so its score
says how well *its* tests guard it. Results: a table per module, then every surviving or
untested mutant as a diff, to be triaged in docs/testing.md (killed by a new test, or
equivalent and why). Not part of CI: a run takes too long for every push, and its verdicts
need a person.

Which tests, and why (each module's `select`, a pytest -k expression):
- PostgreSQL variants are left out where the module holds no engine-specific code: the
  SQLite variant runs the same lines of the module, and a PostgreSQL test costs a schema
  of its own, several times the run time. The differences live in db.py and sql_*.py.
- The live-client variants ([live-...], the app behind a real socket) are left out for
  the services (orders, idempotency): the service is called the same way in-process.
  Middleware keeps them, since it reads what a real server puts in the environ (Host,
  the scheme, the peer address); http11 keeps every test, sockets are what it is about.
- Tests that only a PostgreSQL server can run (the row-lock wait) are kept by name.

mutmut runs pytest many times in one process (collecting which tests cover which function,
then a clean run; each mutant's run is a fork of that process). pytest imports conftest.py
afresh for every run but finds the test files already imported, still holding the names
they took from the first conftest: `isinstance(client, LiveClient)` in a test file then
compares with a class from another import of conftest and says False, and a live test fails
for no fault of the code (the session logout with our own Origin did: its Origin came out
as wsgiref's default host, and the CSRF check refused it). So this file is also a pytest
plugin, loaded with `-p tools.mutate`: at the start of each session it forgets the test
files, and pytest imports them again next to the fresh conftest, as a run by hand would.
A test file that cannot even be imported with the mutant in place (it calls the module at
import time) then counts as a failed test, which is what it is, not as an interrupted run.
"""

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
TESTS_FOLDER = "tests"
# The -k expressions of the selections described above.
SQLITE_ONLY = "not postgresql"
IN_PROCESS_SQLITE_ONLY = "not postgresql and not [live-"
Target = collections.namedtuple("Target", "tests select")
# Each module with the test files that are about it: mutmut runs, for each mutant, only
# the selected tests of these files that execute the mutated function.
TARGETS = {
    "http11": Target(["tests/test_http11.py", "tests/test_httpserver.py"], None),
    "http11_responses": Target(["tests/test_http11_responses.py", "tests/test_httpserver.py"], None),
    "auth": Target(["tests/test_auth.py"], None),
    "passwords": Target(["tests/test_passwords.py"], None),
    "signing": Target(["tests/test_signing.py"], None),
    "pagination": Target(["tests/test_pagination.py"], None),
    "orders": Target(["tests/test_orders.py", "tests/test_api_orders.py"],
                     f"({IN_PROCESS_SQLITE_ONLY}) or waits_for_the_row_lock"),
    # Its lease, expiry and restart paths are tested with the races, in test_orders_concurrency.
    "idempotency": Target(["tests/test_idempotency.py", *[f"tests/test_orders_concurrency.py::{test}" for test in (
        "test_twenty_copies_of_one_keyed_request_place_one_order",
        "test_a_key_held_by_a_running_request_is_409_and_another_body_is_422",
        "test_a_key_held_past_its_lease_is_taken_over_and_its_dead_holder_cannot_save",
        "test_an_expired_key_is_a_new_key_and_purge_removes_expired_keys",
        "test_a_key_survives_a_restart_of_the_app",
    )]], IN_PROCESS_SQLITE_ONLY),
    "middleware": Target(["tests/test_middleware.py", "tests/test_api_auth.py"], SQLITE_ONLY),
}
# Results as mutmut names them (`mutmut results --all true`) and as this report counts them.
STATUS_NAMES = {"killed": "killed", "survived": "survived", "tests": "untested",
                "timeout": "timeout", "suspicious": "suspicious", "skipped": "skipped"}
MUTANT_LINE = re.compile(r"\s*(?P<name>[\w.]+): (?P<status>.+)")
# pytest's exit codes (pytest.ExitCode), named here so the command line need not import pytest.
TESTS_FAILED, INTERRUPTED = 1, 2
# mutmut's spinner redraws a line with a carriage return; a failed run shows this many lines.
FAILED_RUN_LINES = 60


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(TARGETS), help=f"default: {' '.join(TARGETS)}")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies and print where they are")
    arguments = parser.parse_args(argv)
    unknown = sorted(set(arguments.modules) - set(TARGETS))
    if unknown:
        parser.error(f"not a mutation target: {', '.join(unknown)}")
    scratch = Path(tempfile.mkdtemp(prefix="shop-mutate-"))
    results = {}
    try:
        for module in arguments.modules:
            results[module] = _mutate(module, scratch / module)
        _print_scores(results)
        for statuses, diffs, _ in results.values():
            for name, status in sorted(statuses.items()):
                if name in diffs:
                    print(f"\n## {name} ({status})\n{diffs[name]}")
    finally:
        if arguments.keep:
            print(f"\nscratch copies kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0 if all(statuses for statuses, _, _ in results.values()) else 1


def pytest_sessionstart(session):
    """pytest plugin hook (see the module docstring): forget the test files imported by an
    earlier session in this process, so that they import the fresh conftest."""
    tests = Path(session.config.rootpath, TESTS_FOLDER)
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and Path(path).parent == tests and name != "conftest":
            del sys.modules[name]


def pytest_sessionfinish(session, exitstatus):
    """pytest plugin hook: a test file that failed to import is a failed test (exit 1);
    pytest calls it an interrupted run (exit 2), which mutmut does not count as a kill."""
    if exitstatus == INTERRUPTED and session.testsfailed:
        session.exitstatus = TESTS_FAILED


def _mutate(module, work):
    """Run mutmut on one module in its own copy: ({mutant: status}, {mutant: diff}, seconds).
    Statuses are empty when mutmut could not start (its output says why)."""
    started = time.monotonic()
    _copy_tracked_files(work)
    _write_config(work, module)
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or "mutmut"
    target = TARGETS[module]
    print(f"{module}: {' '.join(target.tests)}" + (f" -k {target.select!r}" if target.select else ""), flush=True)
    run = subprocess.run([mutmut, "run", "--max-children", str(os.cpu_count() or 1)], cwd=work,
                         capture_output=True, text=True, check=False)
    listing = subprocess.run([mutmut, "results", "--all", "true"], cwd=work, capture_output=True,
                             text=True, check=False).stdout
    statuses = {name: status for name, status in _statuses(listing).items() if name.startswith(f"{module}.")}
    if run.returncode != 0 or not statuses:
        lines = (run.stdout + run.stderr).replace("\r", "\n").splitlines()
        print("\n".join(lines[-FAILED_RUN_LINES:]), f"\n{module}: mutmut failed (exit {run.returncode})")
        statuses = {}
    diffs = {}
    for name, status in statuses.items():
        if status in ("survived", "untested"):
            shown = subprocess.run([mutmut, "show", name], cwd=work, capture_output=True, text=True, check=True)
            diffs[name] = shown.stdout.strip()
    seconds = time.monotonic() - started
    print(f"{module}: {len(statuses)} mutants in {seconds:.0f} s", flush=True)
    return statuses, diffs, seconds


def _copy_tracked_files(work):
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT_DIR, capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if name and (PROJECT_DIR / name).is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_DIR / name, work / name)


def _write_config(work, module):
    """mutmut's settings, written into the scratch copy's pyproject.toml."""
    target = TARGETS[module]
    source = f"{module}.py"
    # Everything else that the tests import or read is copied beside the mutated module,
    # this file included (tools/), for `-p tools.mutate`.
    others = sorted(path.name for path in work.iterdir() if path.name not in (source, TESTS_FOLDER, "pyproject.toml"))
    pytest_arguments = ["-p", "no:cacheprovider", "-p", "tools.mutate"]
    if target.select:
        pytest_arguments += ["-k", target.select]
    config = (
        "\n[tool.mutmut]\n"
        f"source_paths = {json.dumps([source])}\n"
        f"also_copy = {json.dumps(others)}\n"
        f"pytest_add_cli_args_test_selection = {json.dumps(target.tests)}\n"
        f"pytest_add_cli_args = {json.dumps(pytest_arguments)}\n"
    )
    with open(work / "pyproject.toml", "a") as pyproject:
        pyproject.write(config)


def _statuses(listing):
    """{mutant name: status} from `mutmut results --all true`."""
    statuses = {}
    for line in listing.splitlines():
        match = MUTANT_LINE.fullmatch(line)
        if match:
            statuses[match["name"]] = STATUS_NAMES.get(match["status"].split()[-1], match["status"])
    return statuses


def _print_scores(results):
    print("\n| module | mutants | killed | timeout | survived | untested | score | time |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for module, (statuses, _, seconds) in results.items():
        count = collections.Counter(statuses.values())
        detected = count["killed"] + count["timeout"]
        judged = detected + count["survived"] + count["untested"]
        score = f"{100 * detected / judged:.0f} %" if judged else "-"
        minutes, rest = divmod(round(seconds), 60)
        print(f"| {module} | {len(statuses)} | {count['killed']} | {count['timeout']} | {count['survived']} |"
              f" {count['untested']} | {score} | {minutes} min {rest:02d} s |")


if __name__ == "__main__":
    sys.exit(main())
