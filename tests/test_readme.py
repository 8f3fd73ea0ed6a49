"""Every command of the README's walkthrough, run against a live `python server.py`.

The README shows each curl command in a ```sh block and what it prints in the ```http block
after it. This test runs the walkthrough's set-up block as the README shows it (`seed`,
`create-admin`, then `python server.py` on a free port, with the settings its line gives,
such as CORS_ORIGINS), runs each step in order, and checks the status line, the headers
shown, and the body where the README shows it whole. Steps that only set shell variables
(TOKEN=$(curl ...)) have no output block; the variables they set are kept for the steps
after them, as they would be in the reader's terminal. A step that is a loop
(`for ...; do curl -i ...; done`) shows its last answer, and that is the one checked.

Steps that read what a background job did (`GET /v1/jobs/5`, `GET /v1/exports/5`) are tried
again for a few seconds until their answer is the README's, since the worker runs after the
response. A CSV body is compared row by row, its volatile columns (`created_at`) aside.

A stream of server-sent events (`curl -N --max-time 2`, which exits 28 when its time is up)
is checked event by event, the times in its data aside.

A few steps look at files the server wrote instead (`ls var/outbox/`, `cat var/outbox/...`:
the emails a background job wrote), with a ```text block after them: their output must be
those lines, but for a `Date:` header, once the job has run (they are tried again for a few
seconds, since the worker runs after the response). A GET step (a `curl -i` without `-X`)
is tried again in the same way until it prints what the README shows, for a background job
may not have run yet (a webhook's delivery log); a GET changes nothing, so this is what the
reader would do.

A set-up line that ends with `&` starts a program in the background (the webhook receiver),
which runs until the test ends; its port, 9000 in the README, is a free one here, in every
command and answer.

The backup steps run the shop's own command line (`python server.py backup var/backup.db`,
`DATABASE_URL=... python server.py restore ...`) in the reader's folder, with the settings
of the walkthrough's server; what they print, on stdout and stderr, must be the ```text
block after them, but for the schema version (it grows with each migration).

The steps are a walkthrough, so they depend on each other: a step that uses $TOKEN needs
the step that set it to have run first. A failing step names itself (its number, section
and command) and the variables it used, with the steps that set them; run alone
(`-k`), a step that needs an earlier one says so instead of failing obscurely.

The HTTPS section's commands (a throw-away certificate with `openssl`, the server on it,
and `curl --cacert`) run too, in a folder of their own.

The README's map and links are checked too: every module has a row, every file named
exists, and no link or path leads outside the repository.
"""

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PROJECT_DIR, TEST_SECRET_KEY, Program, free_port, unavailable, wait_until_listening

README = PROJECT_DIR / "README.md"
README_TEXT = README.read_text()
README_ORIGIN = "http://127.0.0.1:8000"
RECEIVER_ORIGIN = "http://127.0.0.1:9000"  # the webhook receiver's, in the set-up and the steps
STEP_TIMEOUT_SECONDS = 30
# Values that differ on every run or machine: request ids, timestamps, signed cursors, the
# days a report covers (the last 30 up to the day the test runs), and what is left of a rate
# limit and when it comes back; a job's times, worker and trace (a request without a
# traceparent starts a new one), and the name an export is saved under (made of its days); a
# webhook's secret and message ids, and how long a delivery took.
# These headers must be there, with any value.
VOLATILE_HEADERS = {"x-request-id", "date", "link", "retry-after", "ratelimit", "content-disposition"}
VOLATILE_FIELDS = {"request_id", "created_at", "updated_at", "from", "to", "day", "run_at", "started_at",
                   "finished_at", "locked_by", "secret", "message_id", "duration_ms", "traceparent"}
# traceresponse: the trace id a step sends is checked, the span id the server makes for
# each request is new every time.
NEW_SPAN_ID = re.compile(r"^(00-[0-9a-f]{32}-)[0-9a-f]{16}(-[0-9a-f]{2})$")
ASSIGNMENT = re.compile(r"^([A-Z_]+)=", flags=re.M)
VARIABLE_USE = re.compile(r"\$([A-Z_]+)")
HEADING_OR_BLOCK = re.compile(r"^(#{2,4}) ([^\n]+)$|^```(\w+)\n(.*?)^```", flags=re.M | re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")
OUTSIDE_PATHS = re.compile(r"\.\./shared|/work/|shared/bench")
SERVER_LINE = re.compile(r"((?:[A-Z_]+=\S+ )*)python server\.py")  # `NAME=value ... python server.py`
HTTP_STEP_STARTS = ("curl ", "for ")  # a command, or a loop of them
LAST_ANSWER = re.compile(r"HTTP/1\.1 [0-9]{3}(?!.*HTTP/1\.1 [0-9]{3})", flags=re.S)
FILE_COMMANDS = ("ls var/outbox/", "cat var/outbox/")
# The shop's own commands the walkthrough shows, settings first when it gives some.
PROGRAM_STEP = re.compile(r"(?:[A-Z_]+=\S+ )*python server\.py (?:backup|restore) ")
SCHEMA_VERSION = re.compile(r"schema version [0-9]+")
# GET steps whose answer a background job changes: retried until it matches, like file steps.

STEP_STARTS = HTTP_STEP_STARTS + FILE_COMMANDS
# How long a file step waits for the background job that writes its file.
JOB_WAIT_SECONDS = 10
VOLATILE_LINES = re.compile(r"^Date: ")
IS_GET = re.compile(r"curl -i (?!.*(?:-X |-d |--data))")  # a curl -i step that sends no method and no body


@dataclass(frozen=True)
class Step:
    number: int
    section: str
    command: str
    expected: str | None  # the ```http (or ```text) block shown after it; None for an assignment
    sets: tuple
    uses: tuple

    def describe(self, *, whole=True):
        """'step 12 (Accounts and tokens): curl ...', with the command whole or its first line."""
        lines = self.command.splitlines()
        command = self.command if whole or len(lines) == 1 else lines[0] + " ..."
        return f"step {self.number} ({self.section}): {command}"


def readme_blocks():
    """[(section heading, language, text)] for every fenced block, in README order."""
    blocks, section = [], ""
    for match in HEADING_OR_BLOCK.finditer(README_TEXT):
        if match.group(1):
            section = match.group(2).strip()
        else:
            blocks.append((section, match.group(3), match.group(4)))
    return blocks


def walkthrough_steps():
    """Every curl command and variable assignment of the walkthrough, in order, as Steps."""
    blocks = readme_blocks()
    steps = []
    for index, (section, language, text) in enumerate(blocks):
        program = PROGRAM_STEP.match(text) is not None
        if language != "sh" or not (text.startswith(STEP_STARTS) or program or ASSIGNMENT.match(text)):
            continue
        command = text.strip()
        expected = None
        if command.startswith(STEP_STARTS) or program:
            shows = "http" if command.startswith(HTTP_STEP_STARTS) else "text"
            follows = blocks[index + 1] if index + 1 < len(blocks) else ("", "", "")
            assert follows[1] == shows, f"no ```{shows} block shows what this prints: {command}"
            expected = follows[2]
        # A program step's NAME=value sets that program's environment, not the shell's.
        sets = () if program else tuple(dict.fromkeys(ASSIGNMENT.findall(command)))
        uses = tuple(name for name in dict.fromkeys(VARIABLE_USE.findall(command)) if name not in sets)
        steps.append(Step(len(steps) + 1, section, command, expected, sets, uses))
    return steps


def setup_commands():
    """The walkthrough's set-up block: (every line before the final `python server.py`, some
    ending with `&`, the settings that line starts the server with, as {name: value})."""
    for _, language, text in readme_blocks():
        lines = text.strip().splitlines()
        if language == "sh" and lines[0] == "python server.py seed":
            server_line = SERVER_LINE.fullmatch(lines[-1])
            assert server_line, f"the set-up block ends with {lines[-1]!r}, not `python server.py`"
            return lines[:-1], dict(setting.split("=", 1) for setting in server_line.group(1).split())
    raise AssertionError("the README has no walkthrough set-up block")


STEPS = walkthrough_steps()


def test_the_readme_has_a_walkthrough():
    assert len(STEPS) >= 25
    assert "python server.py\n" in README_TEXT and "make test\n" in README_TEXT


def test_every_variable_a_step_uses_is_set_by_an_earlier_step():
    for step in STEPS:
        for name in step.uses:
            assert setter_of(name, step) is not None, f"{step.describe()} uses ${name}, which no earlier step sets"


def test_the_map_names_every_module_and_only_files_that_exist():
    the_map = README_TEXT[README_TEXT.index("## Where each idea lives"):README_TEXT.index("## Walkthrough")]
    rows = "\n".join(line for line in the_map.splitlines() if line.startswith("| `"))
    named = set(re.findall(r"`([\w./-]+\.(?:py|sql)|[\w-]+/)`", rows))
    modules = {path.name for path in PROJECT_DIR.glob("*.py")}
    assert modules - named == set(), "modules with no row in the README's map"
    missing = {name for name in named if not (PROJECT_DIR / name).exists()}
    assert missing == set(), "the README's map names files that do not exist"


@pytest.mark.parametrize("document", ["README.md", *sorted(str(path.relative_to(PROJECT_DIR))
                                                          for path in (PROJECT_DIR / "docs").glob("*.md"))])
def test_links_stay_inside_the_repository(document):
    path = PROJECT_DIR / document
    text = path.read_text()
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "#")):
            continue
        resolved = (path.parent / target.split("#")[0]).resolve()
        assert resolved.is_relative_to(PROJECT_DIR) and resolved.exists(), f"{document} links to {target}"
    assert OUTSIDE_PATHS.findall(text) == []


@pytest.mark.parametrize("script", sorted(path.name for path in (PROJECT_DIR / "bench").glob("*.sh")))
def test_bench_scripts_need_nothing_outside_the_repository(script):
    assert OUTSIDE_PATHS.findall((PROJECT_DIR / "bench" / script).read_text()) == []


@pytest.fixture(scope="module")
def readme_server(tmp_path_factory):
    """`python server.py seed` then `python server.py`, as the README says, on a free port."""
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to run the README's commands")
    directory = tmp_path_factory.mktemp("readme")
    # The reader's folder has var/ (the server made it); the cookie jar goes there.
    (directory / "var").mkdir()
    port = free_port()
    # The server runs in the project folder; its emails go to the reader's var/outbox/.
    environment = dict(
        os.environ, DATABASE_URL=f"sqlite:///{directory}/shop.db", SECRET_KEY=TEST_SECRET_KEY,
        PORT=str(port), APP_ENV="development", MAIL_OUTBOX_DIR=str(directory / "var" / "outbox"),
        EXPORT_DIR=str(directory / "var" / "exports"),
    )
    # `python` in the README is the interpreter running this test (the venv's).
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    commands, server_settings = setup_commands()
    receiver_port = free_port()
    background = []
    for line in commands:
        command = line.replace("python ", f"{sys.executable} ", 1)
        if command.endswith(" &"):
            background.append(start_in_background(command, receiver_port, environment, directory))
            continue
        # check=False: the assertion below says which command failed, and what it printed.
        done = subprocess.run(["bash", "-c", command], check=False,
                              cwd=PROJECT_DIR, env=environment, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (command, done.stderr)
    server = Program([sys.executable, "server.py"], dict(environment, **server_settings), directory / "server")
    try:
        assert server.wait_for_url().url == f"http://127.0.0.1:{port}", server.stderr()
        yield server.url, directory, f"http://127.0.0.1:{receiver_port}", environment
    finally:
        for program in background:
            program.kill()
        server.send_signal(signal.SIGTERM)
        try:
            assert server.wait(timeout=30) == 0
        finally:
            server.kill()


def start_in_background(command, port, environment, directory):
    """A set-up line ending with `&` (the webhook receiver), on `port` instead of the README's,
    with its files in the reader's var/; returns the Program, once it listens."""
    command = command.removesuffix(" &").replace(f"--port {RECEIVER_ORIGIN.rsplit(':', 1)[1]}", f"--port {port}")
    command = command.replace(" var/", f" {directory}/var/")
    program = Program(["bash", "-c", f"exec {command}"], environment, directory / f"background-{port}")
    wait_until_listening(port, exit_report=program.exit_report)
    return program


@pytest.mark.parametrize("step", STEPS, ids=[f"{step.number:02d}-{step.command[:55]}" for step in STEPS])
def test_readme_command(readme_server, step):
    base_url, directory, receiver_origin, environment = readme_server
    # Run where the reader's shell would be, with the variables earlier steps set.
    state = directory / "shell-variables.sh"
    unset = [name for name in step.uses if not is_set(state, name)]
    if unset:
        pytest.fail(f"{step.describe()}\nneeds {needs(step, unset)}, which did not run or failed: "
                    f"the walkthrough's steps run in order (run the whole file)", pytrace=False)
    if step.command.startswith(FILE_COMMANDS):
        check_file_step(step, directory)
        return
    if PROGRAM_STEP.match(step.command):
        check_program_step(step, directory, environment)
        return
    run_http_step(step, state, base_url, directory, receiver_origin)


def run_http_step(step, state, base_url, directory, receiver_origin):
    """Run one curl step in the reader's shell and compare what it printed with the README."""
    keep = "".join(f"; declare -p {name} >> {state}" for name in step.sets)
    command = step.command.replace(README_ORIGIN, base_url).replace(RECEIVER_ORIGIN, receiver_origin)
    script = f"set -e; [ -f {state} ] && . {state}; {command}{keep}"
    expected = None if step.expected is None else step.expected.replace(RECEIVER_ORIGIN, receiver_origin)
    # A GET changes nothing: tried again until a background job has done what it shows.
    deadline = time.monotonic() + (JOB_WAIT_SECONDS if IS_GET.match(step.command) else 0)
    while True:
        try:
            run_curl(step, script, expected, directory)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def run_curl(step, script, expected, directory):
    finished = subprocess.run(["bash", "-c", script], capture_output=True, timeout=STEP_TIMEOUT_SECONDS, cwd=directory,
                              check=False)  # the assertion below names the step
    context = step.describe() + (f"\nwith {needs(step, step.uses)}" if step.uses else "")
    assert finished.returncode == 0, f"{context}\nexited {finished.returncode}: {finished.stderr.decode()}"
    if expected is None:
        return
    output = finished.stdout.decode()
    context += f"\nprinted:\n{output}"
    if step.command.startswith("for "):
        output = output[LAST_ANSWER.search(output).start():]
    actual_status, actual_headers, actual_body = parse_http(output)
    expected_status, expected_headers, expected_body = parse_http(expected)
    assert actual_status == expected_status, context
    actual_pairs = [(name.lower(), value) for name, value in actual_headers]
    for name, value in expected_headers:
        if name.lower() in VOLATILE_HEADERS:
            assert name.lower() in dict(actual_pairs), f"{context}\nmissing header {name}"
        elif name.lower() == "traceresponse":
            got = dict(actual_pairs).get("traceresponse", "")
            assert NEW_SPAN_ID.match(got) and NEW_SPAN_ID.sub(r"\1\2", got) == NEW_SPAN_ID.sub(r"\1\2", value), \
                f"{context}\ntraceresponse: {got}, not {value} (but for its span id)"
        else:
            assert (name.lower(), value) in actual_pairs, f"{context}\nmissing header {name}: {value}"
    shown_link = dict((name.lower(), value) for name, value in expected_headers).get("link")
    if shown_link is not None:
        got_link = dict(actual_pairs).get("link", "")
        assert re.findall(r'rel="(\w+)"', got_link) == re.findall(r'rel="(\w+)"', shown_link), context
        if "..." not in shown_link:
            assert got_link == shown_link, context
    if ("content-type", "text/event-stream") in actual_pairs:
        assert event_blocks(actual_body) == event_blocks(expected_body), context
    elif expected_body and "..." not in expected_body:
        if dict(actual_pairs).get("content-type", "").startswith("text/csv"):
            assert csv_without_volatile(actual_body) == csv_without_volatile(expected_body), context
        else:
            assert without_volatile(json.loads(actual_body)) == without_volatile(json.loads(expected_body)), context


def check_file_step(step, directory):
    """Run `ls`/`cat` in the reader's folder until it prints the README's lines (a `Date:`
    header aside), or JOB_WAIT_SECONDS have passed: a background job writes these files."""
    expected = [line for line in step.expected.strip().splitlines() if not VOLATILE_LINES.match(line)]
    deadline = time.monotonic() + JOB_WAIT_SECONDS
    while True:
        finished = subprocess.run(["bash", "-c", step.command], capture_output=True, text=True, cwd=directory,
                                  timeout=STEP_TIMEOUT_SECONDS, check=False)
        printed = [line.rstrip() for line in finished.stdout.strip().splitlines() if not VOLATILE_LINES.match(line)]
        if printed == expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert printed == expected, f"{step.describe()}\nprinted:\n{finished.stdout}{finished.stderr}"


def check_program_step(step, directory, environment):
    """Run `python server.py backup|restore ...` in the reader's folder, with the walkthrough
    server's settings; it must print the README's lines (any schema version)."""
    command = step.command.replace("python server.py", f"{sys.executable} {PROJECT_DIR / 'server.py'}", 1)
    finished = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=directory, env=environment,
                              timeout=STEP_TIMEOUT_SECONDS, check=False)
    printed = SCHEMA_VERSION.sub("schema version N", finished.stdout + finished.stderr).strip().splitlines()
    expected = SCHEMA_VERSION.sub("schema version N", step.expected).strip().splitlines()
    assert printed == expected, (f"{step.describe()}\nexited {finished.returncode}, printed:\n"
                                 f"{finished.stdout}{finished.stderr}")


def setter_of(name, step):
    """The last step before `step` that sets the shell variable `name`, or None."""
    earlier = [other for other in STEPS[: step.number - 1] if name in other.sets]
    return earlier[-1] if earlier else None


def needs(step, names):
    """'$TOKEN (set by step 12, ...)': which variables, and where the walkthrough sets them."""
    return ", ".join(f"${name} (set by {setter_of(name, step).describe(whole=False)})" for name in names)


def is_set(state, name):
    return state.exists() and re.search(rf"^declare -\S* {name}=", state.read_text(), flags=re.M) is not None


def parse_http(text):
    """Status line, [(name, value)] headers and body of curl -i output (or the README's copy)."""
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    lines = head.strip().split("\n")
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
    return lines[0].strip(), headers, body.strip()


def csv_without_volatile(text):
    """The rows of a CSV body, with the cells of volatile columns (by the header) blanked."""
    rows = list(csv.reader(io.StringIO(text)))
    volatile = [position for position, name in enumerate(rows[0] if rows else []) if name in VOLATILE_FIELDS]
    return [[("" if position in volatile else cell) for position, cell in enumerate(row)] for row in rows]


def event_blocks(text):
    """A text/event-stream body as a list of its events and fields, each `data` compared as
    JSON without its volatile fields; comments (heartbeats) left out."""
    blocks = []
    for block in text.replace("\r\n", "\n").strip().split("\n\n"):
        fields = [line.partition(": ") for line in block.split("\n") if line and not line.startswith(":")]
        if fields:
            blocks.append([(name, without_volatile(json.loads(value)) if name == "data" else value)
                           for name, _, value in fields])
    return blocks


def without_volatile(document):
    if isinstance(document, dict):
        return {key: without_volatile(value) for key, value in document.items() if key not in VOLATILE_FIELDS}
    if isinstance(document, list):
        return [without_volatile(value) for value in document]
    return document


# ---- the HTTPS section: its own commands, in a folder of their own -------------------------

TLS_PORT = "8443"  # the README's; a free port here
PLAIN_HTTP_ON_TLS_PORT = "this port speaks HTTPS; the request was plain HTTP (use https://)"


def https_blocks():
    """The HTTPS section's set-up block (openssl, then the server), its curl block, and the
    ```http block of what the first curl prints."""
    blocks = readme_blocks()
    for index, (_, language, text) in enumerate(blocks):
        if language == "sh" and text.startswith("openssl req"):
            assert [block[1] for block in blocks[index + 1:index + 3]] == ["sh", "http"]
            return text, blocks[index + 1][2], blocks[index + 2][2]
    raise AssertionError("the README has no HTTPS set-up block (openssl req ...)")


def test_the_https_commands_run_as_shown(tmp_path):
    for tool in ("openssl", "curl"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is needed to run the README's HTTPS commands")
    setup, curls, shown = https_blocks()
    *certificate_lines, server_line = setup.strip().splitlines()
    (tmp_path / "var").mkdir()
    made = subprocess.run(["bash", "-c", "\n".join(certificate_lines)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    port = str(free_port())
    server_command = server_line.replace("python server.py", f"{sys.executable} {PROJECT_DIR / 'server.py'}")
    environment = dict(os.environ, DATABASE_URL=f"sqlite:///{tmp_path}/shop.db", SECRET_KEY=TEST_SECRET_KEY,
                       APP_ENV="development", WORKER="off")
    server = Program(["bash", "-c", f"cd {tmp_path} && exec env {server_command.replace(TLS_PORT, port)}"],
                     environment, tmp_path / "server")
    try:
        # "It prints `Serving the shop on https://127.0.0.1:8443`"
        assert server.wait_for_url().url == f"https://127.0.0.1:{port}"
        printed = subprocess.run(["bash", "-c", curls.replace(TLS_PORT, port)], cwd=tmp_path, capture_output=True,
                                 text=True, timeout=STEP_TIMEOUT_SECONDS, check=False)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            assert server.wait(timeout=30) == 0
        finally:
            server.kill()
    assert printed.returncode == 0, printed.stderr
    # Three answers: the two URLs of the first curl (over one connection), then the plain one.
    answers = ["HTTP/1.1 " + answer for answer in printed.stdout.split("HTTP/1.1 ")[1:]]
    assert len(answers) == 3, printed.stdout
    expected_status, expected_headers, _ = parse_http(shown)
    expected_headers = [header for header in expected_headers if len(header) == 2]  # not the "..."
    for answer in answers[:2]:
        status, headers, _ = parse_http(answer)
        assert status == expected_status
        assert set(expected_headers) <= set(headers), answer
    status, headers, body = parse_http(answers[2])
    assert status == "HTTP/1.1 400 Bad Request" and ("Strict-Transport-Security", "max-age=63072000") not in headers
    assert json.loads(body)["detail"] == PLAIN_HTTP_ON_TLS_PORT
    assert PLAIN_HTTP_ON_TLS_PORT in " ".join(README_TEXT.split())  # the detail the README quotes
