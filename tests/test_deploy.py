"""The deployment files: Dockerfile, compose.yaml, .github/workflows/ci.yml, .ci/run.

This machine has no container daemon, so no image is built and no container runs here.
What can be checked without one is checked:

    Dockerfile      hadolint (a pinned test dependency); its structure, read instruction by
                    instruction (stages, user, health check, command, no secret); and its
                    command and health check run for real, outside a container: the same
                    gunicorn flags against the same app, the same Python one-liner against it
    compose.yaml    `docker-compose config` (Debian's docker-compose) validates it and prints
                    it resolved; the services, health checks, volumes and start-up order in
                    it are the ones the README and docs/deploy.md describe
    ci.yml          actionlint (a pinned test dependency), and the same tools as .ci/run

A missing docker-compose, hadolint or actionlint skips its tests with a one-line reason,
except under CI=true, where it fails (conftest.unavailable).
"""

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT_DIR, TEST_SECRET_KEY, free_port, server_env, unavailable

import httpserver
import worker

DOCKERFILE = PROJECT_DIR / "Dockerfile"
COMPOSE_FILE = PROJECT_DIR / "compose.yaml"
WORKFLOW = PROJECT_DIR / ".github" / "workflows" / "ci.yml"
TOOL_TIMEOUT_SECONDS = 60
# What the test's env file gives compose for its two required secrets.
COMPOSE_SECRETS = {"SECRET_KEY": TEST_SECRET_KEY, "POSTGRES_PASSWORD": "d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f"}
SHOP_SERVICES = ("app", "worker", "migrate")  # the services that run the shop's image
# Tools that compile code: none of them may be installed in the final image.
COMPILERS = ("gcc", "g++", "cc", "clang", "build-essential", "make")


def tool(name, install_hint):
    """The path of a command-line tool: beside this Python (pip installs it into the venv) or
    on PATH; skip (fail under CI=true) without it."""
    beside_python = Path(sys.executable).with_name(name)
    path = str(beside_python) if beside_python.exists() else shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed ({install_hint})")
    return path


def run_tool(command, **options):
    return subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, check=False,
                          timeout=TOOL_TIMEOUT_SECONDS, **options)


# -- Dockerfile ------------------------------------------------------------------------------

def dockerfile_stages():
    """[(FROM line, [(INSTRUCTION, arguments), ...]), ...]: one entry per stage, continuation
    lines joined and comments dropped; the ARGs before the first FROM are stage None's."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.read_text().splitlines()
                                          if not line.lstrip().startswith("#")))
    stages = [(None, [])]
    for line in filter(None, (line.strip() for line in text.splitlines())):
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append((arguments.strip(), []))
        else:
            stages[-1][1].append((instruction.upper(), " ".join(arguments.split())))
    return stages


def final_stage():
    return dockerfile_stages()[-1][1]


def instruction(name):
    """The arguments of the final stage's only `name` instruction."""
    found = [arguments for kind, arguments in final_stage() if kind == name]
    assert len(found) == 1, f"the final stage has {len(found)} {name} instructions"
    return found[0]


def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = tool("hadolint", "pip install -r requirements-test.txt")
    result = run_tool([hadolint, "--no-color", str(DOCKERFILE)])
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_image_is_built_in_two_stages_on_one_base():
    stages = dockerfile_stages()
    assert [from_line for from_line, _ in stages[1:]] == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}"]
    # The virtual environment made in the builder points at the base's interpreter: same base.
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim-bookworm") in stages[0][1]
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in final_stage()


def test_the_final_stage_installs_no_compiler_and_runs_pip_nowhere():
    for kind, arguments in final_stage():
        words = arguments.replace(";", " ").replace("&&", " ").split()
        assert not (kind == "RUN" and {"apt-get", "apk", "pip", "yum"} & set(words)), arguments
        assert not set(COMPILERS) & set(words), arguments


def test_the_shop_runs_as_a_user_that_is_not_root():
    user, _, group = instruction("USER").partition(":")
    assert user.isdigit() and int(user) != 0 and group.isdigit() and int(group) != 0
    creates_it = [arguments for kind, arguments in final_stage() if kind == "RUN" and "useradd" in arguments]
    assert len(creates_it) == 1 and f"--uid {user}" in creates_it[0]
    # USER comes before CMD: the command runs as that user.
    kinds = [kind for kind, _ in final_stage()]
    assert kinds.index("USER") < kinds.index("CMD")


def test_no_secret_is_baked_into_the_image():
    for kind, arguments in (step for _, instructions in dockerfile_stages() for step in instructions):
        if kind in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"SECRET|PASSWORD|TOKEN|_KEY|DATABASE_URL|SMTP_URL", arguments), arguments
    env = instruction("ENV")
    assert "APP_ENV=production" in env.split()  # which makes config.py require SECRET_KEY at start


def test_the_command_is_exec_form_gunicorn_with_the_apps_drain_deadline():
    command = dockerfile_command()
    drain_seconds = str(int(httpserver.SHUTDOWN_DEADLINE_SECONDS))
    assert command == ["gunicorn", "--bind", "0.0.0.0:8000", "--worker-class", "gthread", "--threads", "8",
                       "--graceful-timeout", drain_seconds, "--no-control-socket", "server:app"]
    # An event stream holds a thread while it is open: fewer streams than threads per process.
    assert int(dict(pair.split("=") for pair in instruction("ENV").split() if "=" in pair)["MAX_EVENT_STREAMS"]) < 8
    assert "--access-logfile" not in command  # the app logs each request as JSON itself
    assert instruction("STOPSIGNAL") == "SIGTERM"


def dockerfile_command():
    """CMD as a list: exec form is a JSON array (shell form is not JSON, and fails here)."""
    return json.loads(instruction("CMD"))


def health_check_command():
    """The HEALTHCHECK's command as a list (exec form after `CMD`)."""
    options, _, command = instruction("HEALTHCHECK").partition(" CMD ")
    assert re.fullmatch(r"(--\w[\w-]*=\w+ ?)+", options), options
    return json.loads(command)


def test_the_health_check_asks_health_with_python_alone():
    command = health_check_command()
    assert command[:2] == ["python", "-c"]
    assert "urllib.request.urlopen('http://127.0.0.1:8000/health'" in command[2]


def test_the_image_command_and_health_check_work_outside_a_container(tmp_path, start_program):
    """CMD's gunicorn flags, as written, serve the app; HEALTHCHECK's one-liner passes against
    it and fails where nothing answers; SIGTERM drains and exits 0. Only the address changes
    (and `gunicorn`/`python` are this venv's, as /opt/venv/bin is first on the image's PATH).
    gunicorn's workers load the app in production mode, which needs SECRET_KEY and migrates
    nothing: the release step runs first, as in compose.yaml."""
    env = server_env(f"sqlite:///{tmp_path}/shop.db", APP_ENV="production", WEB_CONCURRENCY="2")
    migrated = subprocess.run([sys.executable, "server.py", "migrate"], cwd=PROJECT_DIR, env=env,
                              capture_output=True, text=True, check=False, timeout=TOOL_TIMEOUT_SECONDS)
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    command = [arguments.replace("0.0.0.0:8000", f"127.0.0.1:{port}") for arguments in dockerfile_command()]
    gunicorn = start_program([str(Path(sys.executable).with_name(command[0])), *command[1:]], env)
    gunicorn.wait_until_accepting(port)

    check = health_check_command()
    answered = subprocess.run([sys.executable, check[1], check[2].replace(":8000/", f":{port}/")],
                              capture_output=True, check=False, timeout=10)
    assert answered.returncode == 0, answered.stderr
    nobody = subprocess.run([sys.executable, check[1], check[2].replace(":8000/", f":{free_port()}/")],
                            capture_output=True, check=False, timeout=10)
    assert nobody.returncode != 0

    gunicorn.send_signal(signal.SIGTERM)
    assert gunicorn.wait(httpserver.SHUTDOWN_DEADLINE_SECONDS) == 0
    assert gunicorn.stderr().count("Booting worker") == 2  # WEB_CONCURRENCY, read by gunicorn itself


def dockerignore_patterns():
    return [line for line in (PROJECT_DIR / ".dockerignore").read_text().splitlines()
            if line and not line.startswith("#")]


@pytest.mark.parametrize("path", [".env", ".env.production", "var/", ".venv/", ".git/", "tests/"])
def test_secrets_data_and_tests_stay_out_of_the_image(path):
    assert path in dockerignore_patterns() or any(fnmatch(path, pattern) for pattern in dockerignore_patterns())


@pytest.mark.parametrize("path", ["server.py", "schema.sql", "migrations/", "common_passwords.txt",
                                  "requirements.txt", "constraints.txt"])
def test_what_the_shop_reads_goes_into_the_image(path):
    assert not any(fnmatch(path, pattern) or path == pattern for pattern in dockerignore_patterns())


# -- compose.yaml ----------------------------------------------------------------------------

def compose_config(tmp_path, secrets, *override_files):
    """`docker-compose config` with an env file holding `secrets`: (exit status, stdout, stderr).
    The environment is emptied first: a SECRET_KEY exported in the shell running the tests
    would win over the env file."""
    docker_compose = tool("docker-compose", "apt-get install docker-compose")
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in secrets.items()))
    files = [argument for path in (COMPOSE_FILE, *override_files) for argument in ("--file", str(path))]
    result = run_tool([docker_compose, *files, "--env-file", str(env_file), "config"],
                      env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def compose(tmp_path_factory):
    """compose.yaml as `docker-compose config` resolves it, parsed."""
    status, output, errors = compose_config(tmp_path_factory.mktemp("compose"), COMPOSE_SECRETS)
    assert status == 0, errors
    return yaml.safe_load(output)


def test_compose_runs_the_shop_beside_its_services(compose):
    assert set(compose["services"]) == {"app", "worker", "migrate", "postgres", "redis", "mailpit"}
    services = compose["services"]
    assert "command" not in services["app"]  # the image's CMD: gunicorn
    assert services["worker"]["command"] == ["python", "server.py", "worker"]
    assert services["migrate"]["command"] == ["python", "server.py", "migrate"]
    assert services["migrate"]["restart"] == "no"  # one-shot: the release step
    for name in SHOP_SERVICES:
        assert services[name]["build"]["context"] == str(PROJECT_DIR)
    assert len({services[name]["image"] for name in SHOP_SERVICES}) == 1  # one image, built once


def test_postgres_and_redis_have_health_checks_and_named_volumes(compose):
    services = compose["services"]
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert services["postgres"]["volumes"] == ["postgres-data:/var/lib/postgresql/data:rw"]
    assert services["redis"]["volumes"] == ["redis-data:/data:rw"]
    assert set(compose["volumes"]) == {"postgres-data", "redis-data", "exports"}


def test_the_app_and_the_worker_start_after_migrate_succeeded_and_the_services_are_healthy(compose):
    services = compose["services"]
    ready = {"migrate": {"condition": "service_completed_successfully"},
             "postgres": {"condition": "service_healthy"}, "redis": {"condition": "service_healthy"}}
    assert services["app"]["depends_on"] == ready
    assert services["worker"]["depends_on"] == dict(ready, mailpit={"condition": "service_started"})
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_the_worker_and_migrate_do_not_inherit_the_web_health_check(compose):
    # The image's HEALTHCHECK asks port 8000, where only the app listens.
    for name in ("worker", "migrate"):
        assert compose["services"][name]["healthcheck"] == {"test": ["NONE"]}
    assert "healthcheck" not in compose["services"]["app"]  # the image's own: /health


def test_the_shop_is_configured_for_production_from_the_environment(compose):
    for name in SHOP_SERVICES:
        environment = compose["services"][name]["environment"]
        assert environment["APP_ENV"] == "production"  # no migration on start
        assert environment["SECRET_KEY"] == COMPOSE_SECRETS["SECRET_KEY"]  # from the env file only
        password = COMPOSE_SECRETS["POSTGRES_PASSWORD"]
        assert environment["DATABASE_URL"] == f"postgresql://shop:{password}@postgres:5432/shop"
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        assert environment["SMTP_URL"] == "smtp://mailpit:1025"  # the emails go to the catcher
        assert environment["SESSION_COOKIE_SECURE"] == "1"  # browsers reach it over TLS (the proxy)
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == COMPOSE_SECRETS["POSTGRES_PASSWORD"]


def test_exports_are_one_volume_shared_by_the_app_and_the_worker(compose):
    for name in ("app", "worker"):
        service = compose["services"][name]
        assert f"exports:{service['environment']['EXPORT_DIR']}:rw" in service["volumes"]


def test_stopping_leaves_time_for_the_drain(compose):
    """SIGTERM, then SIGKILL after stop_grace_period (docker's default: 10 s): longer than the
    30 s the server gives requests in flight, and the worker its jobs in hand."""
    deadlines = {"app": httpserver.SHUTDOWN_DEADLINE_SECONDS, "worker": worker.SHUTDOWN_DEADLINE_SECONDS}
    for name, deadline in deadlines.items():
        grace = compose["services"][name]["stop_grace_period"]
        assert re.fullmatch(r"[0-9]+s", grace) and int(grace[:-1]) > deadline


def test_ports_are_published_on_the_loopback_only(compose):
    published = [port for service in compose["services"].values() for port in service.get("ports", [])]
    assert sorted(published) == ["127.0.0.1:8000:8000/tcp", "127.0.0.1:8025:8025/tcp"]


@pytest.mark.parametrize("missing", sorted(COMPOSE_SECRETS))
def test_compose_refuses_to_start_without_a_secret(tmp_path, missing):
    status, _, errors = compose_config(tmp_path, dict(COMPOSE_SECRETS, **{missing: ""}))
    assert status != 0 and f"set {missing} in .env" in errors


def test_the_proxy_of_docs_deploy_md_fits_compose_yaml(tmp_path):
    """docs/deploy.md's compose.override.yaml (Caddy in front) merges with compose.yaml, and
    the address it fixes for the proxy is the one the guide puts in TRUSTED_PROXIES."""
    guide = (PROJECT_DIR / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"^```yaml\n(# compose\.override\.yaml.*?)^```", guide, flags=re.M | re.S)
    assert len(blocks) == 1
    override = tmp_path / "compose.override.yaml"
    override.write_text(blocks[0])
    status, output, errors = compose_config(tmp_path, COMPOSE_SECRETS, override)
    assert status == 0, errors
    proxy = yaml.safe_load(output)["services"]["proxy"]
    address = proxy["networks"]["default"]["ipv4_address"]
    assert f"TRUSTED_PROXIES={address}" in guide
    assert sorted((port["published"], port["target"]) for port in proxy["ports"]) == [(80, 80), (443, 443)]


def test_the_env_example_holds_no_secret_and_env_files_are_never_committed():
    values = dict(line.split("=", 1) for line in (PROJECT_DIR / ".env.example").read_text().splitlines()
                  if line and not line.startswith("#"))
    assert values == {"SECRET_KEY": "", "POSTGRES_PASSWORD": ""}
    assert ".env" in (PROJECT_DIR / ".gitignore").read_text().splitlines()


# -- the CI workflow and .ci/run -------------------------------------------------------------

def test_actionlint_finds_nothing_in_the_workflow():
    actionlint = tool("actionlint", "pip install -r requirements-test.txt")
    result = run_tool([actionlint, "-no-color", str(WORKFLOW)])
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def workflow():
    return yaml.safe_load(WORKFLOW.read_text())


def test_the_workflow_tests_on_postgresql_and_redis_with_ci_true():
    job = workflow()["jobs"]["test"]
    assert set(job["services"]) == {"postgres", "redis"}
    assert job["env"]["CI"] == "true"
    assert job["container"]["image"].startswith("python:3.11-")
    runs = [step.get("run", "") for step in job["steps"]]
    assert runs.index("make lint") < runs.index("make test")


def test_the_workflow_builds_the_image():
    runs = " ".join(step.get("run", "") for step in workflow()["jobs"]["image"]["steps"])
    assert "docker build" in runs


def ci_run_packages():
    """The Debian packages .ci/run installs: its `for tool in ...` list, and chromium."""
    text = (PROJECT_DIR / ".ci" / "run").read_text()
    loop = re.search(r"^for tool in ([^;]+);", text, flags=re.M)
    assert loop, ".ci/run has no `for tool in ...` loop"
    return {*loop.group(1).split(), *re.findall(r"install -y -qq (chromium)\b", text)}


def test_the_workflow_installs_what_ci_run_installs():
    job = workflow()["jobs"]["test"]
    installs = [shlex.split(step["run"].split("apt-get install", 1)[1]) for step in job["steps"]
                if "apt-get install" in step.get("run", "")]
    assert len(installs) == 1
    packages = {word for word in installs[0] if not word.startswith("-") and word != ">/dev/null"}
    assert ci_run_packages() == packages
    assert {"curl", "slowhttptest", "chromium", "docker-compose"} <= packages
