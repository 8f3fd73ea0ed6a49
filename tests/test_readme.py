"""Every command of the README's walkthrough, run against a live `python server.py`.

The README shows each curl command in a ```sh block and what it prints in the ```http block
after it. This test starts the server the way the README says (`python server.py seed`,
then `python server.py`), runs each curl with the port swapped for a free one, and checks
the status line, the headers shown, and the body where the README shows it whole.
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
# Values that differ on every run or machine: request ids, timestamps, signed cursors.
VOLATILE_HEADERS = {"x-request-id", "date", "link"}
VOLATILE_FIELDS = {"request_id", "created_at", "updated_at"}


def walkthrough_steps():
    """(shell commands, expected output) pairs, in README order."""
    blocks = re.findall(r"```(\w+)\n(.*?)```", README.read_text(), flags=re.S)
    steps = []
    for index, (language, text) in enumerate(blocks):
        if language != "sh" or not text.startswith("curl "):
            continue
        follows = blocks[index + 1] if index + 1 < len(blocks) else ("", "")
        assert follows[0] == "http", f"no ```http block shows what this prints: {text}"
        steps.append((text.strip(), follows[1]))
    return steps


STEPS = walkthrough_steps()


def test_the_readme_has_a_walkthrough():
    assert len(STEPS) >= 10
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
    seeded = subprocess.run(
        [sys.executable, "server.py", "seed"], cwd=PROJECT_DIR, env=environment,
        capture_output=True, text=True, timeout=60,
    )
    assert seeded.returncode == 0, seeded.stderr
    assert seeded.stdout.strip() == "added 30 demo items; the catalogue now holds 30"
    server = subprocess.Popen(
        [sys.executable, "server.py"], cwd=PROJECT_DIR, env=environment,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        banner = server.stderr.readline()
        assert banner.startswith(f"Serving the shop on http://127.0.0.1:{port}"), banner
        wait_until_listening(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0


@pytest.mark.parametrize("command, expected", STEPS, ids=[command[:60] for command, _ in STEPS])
def test_readme_command(readme_server, command, expected):
    shell_command = command.replace(README_ORIGIN, readme_server)
    finished = subprocess.run(
        ["bash", "-c", shell_command], capture_output=True, timeout=30, cwd=PROJECT_DIR,
    )
    assert finished.returncode == 0, finished.stderr
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
