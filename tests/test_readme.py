"""Every command of the README's walkthrough, run against a live `python server.py`.

The README shows each curl command in a ```sh block and what it prints in the ```http block
after it. This test runs the walkthrough's set-up block as the README shows it (`seed`,
`create-admin`, then `python server.py` on a free port), runs each step in order, and checks
the status line, the headers shown, and the body where the README shows it whole. Steps
that only set shell variables (TOKEN=$(curl ...)) have no output block; the variables they
set are kept for the steps after them, as they would be in the reader's terminal.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TEST_SECRET_KEY

PROJECT_DIR = Path(__file__).resolve().parent.parent
README = PROJECT_DIR / "README.md"
README_ORIGIN = "http://127.0.0.1:8000"
# Values that differ on every run or machine: request ids, timestamps, signed cursors, and
# the days a report covers (the last 30 up to the day the test runs).
VOLATILE_HEADERS = {"x-request-id", "date", "link"}
VOLATILE_FIELDS = {"request_id", "created_at", "updated_at", "from", "to", "day"}


ASSIGNMENT = re.compile(r"^([A-Z_]+)=", flags=re.M)
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README.read_text(), flags=re.S)


def walkthrough_steps():
    """(shell commands, expected output or None) pairs, in README order."""
    steps = []
    for index, (language, text) in enumerate(BLOCKS):
        if language != "sh" or not (text.startswith("curl ") or ASSIGNMENT.match(text)):
            continue
        follows = BLOCKS[index + 1] if index + 1 < len(BLOCKS) else ("", "")
        if text.startswith("curl "):
            assert follows[0] == "http", f"no ```http block shows what this prints: {text}"
            steps.append((text.strip(), follows[1]))
        else:
            steps.append((text.strip(), None))
    return steps


def setup_commands():
    """The walkthrough's set-up block: every line before the final `python server.py`."""
    for language, text in BLOCKS:
        lines = text.strip().splitlines()
        if language == "sh" and lines[0] == "python server.py seed":
            assert lines[-1] == "python server.py"
            return lines[:-1]
    raise AssertionError("the README has no walkthrough set-up block")


STEPS = walkthrough_steps()


def test_the_readme_has_a_walkthrough():
    assert len(STEPS) >= 25
    text = README.read_text()
    assert "python server.py\n" in text and "make test\n" in text


@pytest.fixture(scope="module")
def readme_server(tmp_path_factory):
    """`python server.py seed` then `python server.py`, as the README says, on a free port."""
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to run the README's commands")
    directory = tmp_path_factory.mktemp("readme")
    port = free_port()
    environment = dict(
        os.environ, DATABASE_URL=f"sqlite:///{directory}/shop.db", SECRET_KEY=TEST_SECRET_KEY,
        PORT=str(port), APP_ENV="development",
    )
    # `python` in the README is the interpreter running this test (the venv's).
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    for command in setup_commands():
        done = subprocess.run(["bash", "-c", command.replace("python ", f"{sys.executable} ", 1)],
                              cwd=PROJECT_DIR, env=environment, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (command, done.stderr)
    server = subprocess.Popen(
        [sys.executable, "server.py"], cwd=PROJECT_DIR, env=environment,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        banner = server.stderr.readline()
        assert banner.startswith(f"Serving the shop on http://127.0.0.1:{port}"), banner
        wait_until_listening(port)
        yield f"http://127.0.0.1:{port}", directory
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0


@pytest.mark.parametrize("command, expected", STEPS, ids=[command[:60] for command, _ in STEPS])
def test_readme_command(readme_server, command, expected):
    base_url, directory = readme_server
    # Run where the reader's shell would be, with the variables earlier steps set.
    state = directory / "shell-variables.sh"
    keep = "".join(f"; declare -p {name} >> {state}" for name in ASSIGNMENT.findall(command))
    script = f"set -e; [ -f {state} ] && . {state}; {command.replace(README_ORIGIN, base_url)}{keep}"
    finished = subprocess.run(["bash", "-c", script], capture_output=True, timeout=30, cwd=directory)
    assert finished.returncode == 0, finished.stderr
    if expected is None:
        return
    actual_status, actual_headers, actual_body = parse_http(finished.stdout.decode())
    expected_status, expected_headers, expected_body = parse_http(expected)
    assert actual_status == expected_status
    for name, value in expected_headers:
        if name.lower() in VOLATILE_HEADERS:
            continue
        assert (name.lower(), value) in [(key.lower(), val) for key, val in actual_headers], (name, value)
    if "link" in [name.lower() for name, _ in expected_headers]:
        shown = dict((key.lower(), val) for key, val in expected_headers)["link"]
        got = dict((key.lower(), val) for key, val in actual_headers)["link"]
        assert re.findall(r'rel="(\w+)"', got) == re.findall(r'rel="(\w+)"', shown)
        if "..." not in shown:
            assert got == shown
    if expected_body and "..." not in expected_body:
        assert without_volatile(json.loads(actual_body)) == without_volatile(json.loads(expected_body))


def parse_http(text):
    """Status line, [(name, value)] headers and body of curl -i output (or the README's copy)."""
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    lines = head.strip().split("\n")
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
    return lines[0].strip(), headers, body.strip()


def without_volatile(document):
    if isinstance(document, dict):
        return {key: without_volatile(value) for key, value in document.items() if key not in VOLATILE_FIELDS}
    if isinstance(document, list):
        return [without_volatile(value) for value in document]
    return document


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_listening(port, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")
