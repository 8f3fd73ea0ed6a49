"""make mutate: mutation testing of the modules that guard security and money.

A mutation tester (mutmut) changes one small thing in the code at a time (`<` becomes `<=`,
a constant changes, a call is dropped) and runs the tests that cover that line. A test
that fails "kills" the mutant; a mutant that every test survives is a bug the suite would
not notice. The score is killed / (killed + survived + untested).

    $ make mutate                      # every module below, ~15-30 minutes on 2 cores
    $ make mutate MODULES="pagination"  # one module

The run happens in a scratch copy of the tracked files (under the system's temp folder),
never in the working tree. Results: a table per module, then every surviving mutant as a
diff, to be triaged in docs/testing.md (killed by a new test, or equivalent and why).
Not part of CI: a full run takes too long for every push, and its verdicts need a person.
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
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Each module with the test files that are about it: mutmut runs, for each mutant, only
# the tests of these files that execute the mutated function.
TARGETS = {
    "http11": ["tests/test_http11.py", "tests/test_httpserver.py"],
    "auth": ["tests/test_auth.py"],
    "signing": ["tests/test_signing.py"],
    "pagination": ["tests/test_pagination.py"],
    "orders": ["tests/test_orders.py", "tests/test_api_orders.py"],
    "idempotency": ["tests/test_idempotency.py", "tests/test_api_orders.py"],
    "middleware": ["tests/test_middleware.py", "tests/test_api_auth.py"],
}
# Results as mutmut names them (`mutmut results --all true`) and as this report counts them.
STATUS_NAMES = {"killed": "killed", "survived": "survived", "tests": "untested",
                "timeout": "timeout", "suspicious": "suspicious", "skipped": "skipped"}
MUTANT_LINE = re.compile(r"\s*(?P<name>[\w.]+): (?P<status>.+)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(TARGETS), help=f"default: {' '.join(TARGETS)}")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy and print where it is")
    arguments = parser.parse_args(argv)
    unknown = sorted(set(arguments.modules) - set(TARGETS))
    if unknown:
        parser.error(f"not a mutation target: {', '.join(unknown)}")
    work = Path(tempfile.mkdtemp(prefix="shop-mutate-"))
    try:
        _copy_tracked_files(work)
        _write_config(work, arguments.modules)
        mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or "mutmut"
        subprocess.run([mutmut, "run", "--max-children", str(os.cpu_count() or 1)], cwd=work, check=False)
        listing = subprocess.run([mutmut, "results", "--all", "true"], cwd=work, capture_output=True,
                                 text=True, check=True).stdout
        statuses = _statuses(listing)
        _print_scores(statuses, arguments.modules)
        for name, status in sorted(statuses.items()):
            if status in ("survived", "untested"):
                shown = subprocess.run([mutmut, "show", name], cwd=work, capture_output=True, text=True, check=True)
                diff = shown.stdout
                print(f"\n## {name} ({status})\n{diff.strip()}")
    finally:
        if arguments.keep:
            print(f"\nscratch copy kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _copy_tracked_files(work):
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT_DIR, capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if name and (PROJECT_DIR / name).is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_DIR / name, work / name)


def _write_config(work, modules):
    """mutmut's settings, written into the scratch copy's pyproject.toml."""
    sources = [f"{module}.py" for module in modules]
    tests = sorted({test for module in modules for test in TARGETS[module] if (work / test).exists()})
    # Everything else that the tests import or read is copied beside the mutated modules.
    others = sorted(path.name for path in work.iterdir()
                    if path.name not in sources and path.name not in ("tests", "pyproject.toml"))
    config = (
        "\n[tool.mutmut]\n"
        f"source_paths = {json.dumps(sources)}\n"
        f"also_copy = {json.dumps(others)}\n"
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]\n'
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


def _print_scores(statuses, modules):
    counts = {module: collections.Counter() for module in modules}
    for name, status in statuses.items():
        module = name.split(".")[0]
        if module in counts:
            counts[module][status] += 1
    print("\n| module | mutants | killed | survived | untested | timeout | score |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for module, count in counts.items():
        judged = count["killed"] + count["survived"] + count["untested"]
        score = f"{100 * count['killed'] / judged:.0f} %" if judged else "-"
        print(f"| {module} | {sum(count.values())} | {count['killed']} | {count['survived']} |"
              f" {count['untested']} | {count['timeout']} | {score} |")


if __name__ == "__main__":
    sys.exit(main())
