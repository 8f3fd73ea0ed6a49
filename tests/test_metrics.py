"""GET /metrics and metrics.py: the format (prometheus_client's parser, promtool), counters
that move with the requests, bounded labels, who may scrape, and many processes, one scrape.

Counts live in one recorder per process (metrics.RECORDER), shared by every app a test
makes, so a test compares a scrape after its requests with one before them.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    LiveClient,
    WSGIClient,
    free_port,
    http_request,
    running_server,
    server_env,
    settings_with,
    unavailable,
)

import jobs
import metrics
import server

parser = pytest.importorskip("prometheus_client.parser")

GUNICORN = Path(sys.executable).with_name("gunicorn")
TOKEN = "scrape-token-0123456789abcdef"
POLL_SECONDS = 0.05
SHUTDOWN_DEADLINE_SECONDS = 30


def scrape(client, headers=None):
    """The samples of one scrape: {(name, ((label, value), ...)): value}."""
    response = client.get("/metrics", headers=headers or {})
    assert response.status == 200, response
    assert response.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    return samples_of(response.body.decode())


def samples_of(text):
    families = parser.text_string_to_metric_families(text)
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in families for sample in family.samples}


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def series(samples, name):
    return {labels for sample_name, labels in samples if sample_name == name}


def test_counters_and_the_histogram_move_with_the_requests(client, seeded):
    before = scrape(client)
    for _ in range(3):
        assert client.get("/health").status == 200
    assert [client.get("/v1/items/5").status for _ in range(2)] == [200, 200]
    assert client.get("/v1/items/999999").status == 404
    after = scrape(client)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("http_requests_total", method="GET", route="/health", status="200") == 3
    assert moved("http_requests_total", method="GET", route="/v1/items/{id:int}", status="200") == 2
    assert moved("http_requests_total", method="GET", route="/v1/items/{id:int}", status="404") == 1
    assert moved("http_requests_total", method="GET", route="/metrics", status="200") == 1  # the first scrape
    route = {"method": "GET", "route": "/health"}
    assert moved("http_request_duration_seconds_count", **route) == 3
    assert moved("http_request_duration_seconds_bucket", **route, le="+Inf") == 3
    assert moved("http_request_duration_seconds_sum", **route) > 0
    assert value(after, "http_requests_in_flight") >= 1  # the scrape itself
    # Item 5 read from the database once, then from the cache; the missing item is never kept.
    assert moved("cache_requests_total", cache="catalogue", result="miss") == 2
    assert moved("cache_requests_total", cache="catalogue", result="hit") == 1
    pid = str(os.getpid())
    assert value(after, "process_resident_memory_bytes", pid=pid) > 1_000_000
    assert value(after, "process_open_fds", pid=pid) > 0
    assert time.time() - 86400 < value(after, "process_start_time_seconds", pid=pid) <= time.time()
    assert value(after, "process_cpu_seconds_total", pid=pid) > 0


def test_the_database_and_the_queue_are_read_at_scrape_time(wsgi_client, database, settings):
    with database.transaction() as connection:
        for _ in range(2):
            jobs.enqueue(connection, "metrics.test", {})
        jobs.enqueue(connection, "metrics.later", {}, delay_seconds=3600)
    samples = scrape(wsgi_client)
    assert value(samples, "jobs", status="queued", kind="metrics.test") == 2
    assert value(samples, "jobs", status="queued", kind="metrics.later") == 1
    assert 0 <= value(samples, "jobs_oldest_queued_age_seconds") < 60  # the job due later is not waiting
    if database.engine == "sqlite":
        assert value(samples, "db_sqlite_connections") >= 1
        assert value(samples, "db_sqlite_write_lock_held") == 0
    else:
        assert value(samples, "db_pool_connections_max") == 20
        assert value(samples, "db_pool_connections_in_use") >= 0
        assert ("db_pool_requests_waiting", ()) in samples


def test_a_scrape_without_the_database_still_answers(wsgi_client, app, monkeypatch):
    def refuse(**options):
        raise jobs.db.DatabaseUnavailable("down for the test")

    monkeypatch.setattr(app.services.database, "connection", refuse)
    samples = scrape(wsgi_client)
    assert series(samples, "jobs") == set()
    assert series(samples, "http_requests_total")


@pytest.mark.no_rate_limits  # a thousand requests from one client
def test_a_thousand_unknown_paths_add_a_series_per_method_not_per_path(wsgi_client):
    before = scrape(wsgi_client)
    for _ in range(1000):
        path = f"/no-such-{random.getrandbits(64):x}"
        method = random.choice(["GET", "TRACE"])  # TRACE: a method the shop does not know
        assert wsgi_client.request(method, path).status in (404, 501)
    after = scrape(wsgi_client)
    added = series(after, "http_requests_total") - series(before, "http_requests_total")
    assert len(added) <= 2  # at most: GET and "other", with route="(none)"
    unmatched = sum(value(after, "http_requests_total", **dict(labels)) - value(before, "http_requests_total",
                                                                                **dict(labels))
                    for labels in series(after, "http_requests_total") if ("route", "(none)") in labels)
    assert unmatched == 1000
    assert {dict(labels)["method"] for labels in series(after, "http_requests_total")} <= {
        *metrics.KNOWN_METHODS, "other"}


@pytest.mark.parametrize("forwarded_for, status", [("127.0.0.1", 200), ("::1", 200), ("203.0.113.9", 403)])
def test_without_a_token_only_loopback_clients_may_scrape(make_app, forwarded_for, status):
    # Behind a trusted proxy the client is the address it forwards: here, any address at all.
    client = WSGIClient(make_app(TRUSTED_PROXIES="127.0.0.1"))
    response = client.get("/metrics", headers={"X-Forwarded-For": forwarded_for})
    assert response.status == status
    if status == 403:
        assert response.header("Content-Type") == "application/problem+json"
        assert "METRICS_TOKEN" in response.json()["detail"]
        assert b"http_requests_total" not in response.body


@pytest.mark.parametrize("authorization, status, challenge", [
    (None, 401, 'Bearer realm="shop"'),
    ("Bearer wrong-token-0123456789", 401, 'Bearer realm="shop", error="invalid_token"'),
    (f"Basic {TOKEN}", 401, 'Bearer realm="shop"'),
    (f"Bearer {TOKEN}x", 401, 'Bearer realm="shop", error="invalid_token"'),
    (f"Bearer {TOKEN}", 200, None),
    (f"bearer  {TOKEN}", 200, None),
])
def test_with_a_token_everyone_needs_it(make_app, authorization, status, challenge):
    app = make_app(METRICS_TOKEN=TOKEN, TRUSTED_PROXIES="127.0.0.1")
    for client_address in ("127.0.0.1", "203.0.113.9"):  # loopback is no excuse once a token is set
        headers = {"X-Forwarded-For": client_address}
        if authorization is not None:
            headers["Authorization"] = authorization
        response = WSGIClient(app).get("/metrics", headers=headers)
        assert response.status == status, response
        assert response.header("WWW-Authenticate") == challenge
        assert response.header("RateLimit") is None  # never rate limited, like the probes


def limited_client(settings, database, logger, **environment):
    """A client of an app with these settings, rate limits included (make_app turns them off)."""
    return WSGIClient(server.create_app(settings_with(settings, **environment), database=database, logger=logger))


def test_wrong_tokens_count_against_the_address_like_wrong_api_keys(settings, database, logger):
    client = limited_client(settings, database, logger, METRICS_TOKEN=TOKEN, RATE_LIMITS="bad_credentials=2/60")
    before = scrape(client, {"Authorization": f"Bearer {TOKEN}"})
    statuses = [client.get("/metrics", headers={"Authorization": "Bearer guess-0123456789abcdef"}).status
                for _ in range(3)]
    assert statuses == [401, 401, 429]
    # The address is shut out of credential checks now, the right token included.
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status == 429
    refusals = samples_of(metrics.render(metrics.RECORDER.totals()).decode())
    assert value(refusals, "rate_limit_refusals_total", policy="bad_credentials") - value(
        before, "rate_limit_refusals_total", policy="bad_credentials") == 2


def test_rate_limit_refusals_are_counted_by_policy(settings, database, logger):
    client = limited_client(settings, database, logger, RATE_LIMITS="default=2/60")
    before = scrape(client)
    assert [client.get("/v1/items").status for _ in range(3)] == [200, 200, 429]
    after = scrape(client)  # /metrics spends no budget: it answers while the caller is refused
    assert value(after, "rate_limit_refusals_total", policy="default") - value(
        before, "rate_limit_refusals_total", policy="default") == 1


def test_promtool_accepts_the_exposition(client, seeded):
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool is not installed (Debian: apt-get install prometheus)")
    client.get("/v1/items/1")
    client.get("/v1/items/1")
    body = client.get("/metrics").body
    checked = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30,
                             check=False)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_the_files_of_other_processes_are_added_up(tmp_path):
    """Counters and histograms of every file, the exited processes' included; gauges and
    process metrics of the live ones only (a file written within GAUGE_FRESH_SECONDS)."""
    live, exited, scraper = metrics.Recorder(), metrics.Recorder(), metrics.Recorder()
    for recorder in (live, exited, scraper):
        recorder.directory = tmp_path  # no flusher thread: the test flushes by hand
    for recorder, count in ((live, 2), (exited, 3), (scraper, 1)):
        for _ in range(count):
            recorder.request_finished("GET", "/health", 200, recorder.request_started())
    live.request_started()  # one request still in flight in the live process
    live.count("webhook_deliveries_total", "delivered")
    exited.count("webhook_deliveries_total", "delivered")
    live.flush()
    exited.flush()
    old = time.time() - 10 * metrics.GAUGE_FRESH_SECONDS
    for path in tmp_path.glob("*.json"):
        if json.loads(path.read_text())["requests"][0][3] == 3:
            os.utime(path, (old, old))
    samples = samples_of(metrics.render(scraper.totals()).decode())
    assert value(samples, "http_requests_total", method="GET", route="/health", status="200") == 6
    assert value(samples, "http_request_duration_seconds_count", method="GET", route="/health") == 6
    assert value(samples, "webhook_deliveries_total", outcome="delivered") == 2
    assert value(samples, "http_requests_in_flight") == 1
    assert len(series(samples, "process_resident_memory_bytes")) == 1  # pids alike here: one per live file


def test_a_snapshot_file_that_is_not_ours_is_passed_over(tmp_path):
    scraper = metrics.Recorder()
    scraper.directory = tmp_path
    (tmp_path / "garbage.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    samples = samples_of(metrics.render(scraper.totals()).decode())
    assert series(samples, "http_requests_total") == set()


@pytest.mark.parametrize("engine", ["sqlite"])
def test_one_scrape_of_two_gunicorn_workers_counts_both(database_url, start_program, tmp_path):
    metrics_dir = tmp_path / "metrics"
    env = server_env(database_url, METRICS_DIR=str(metrics_dir))
    assert subprocess.run([sys.executable, "server.py", "migrate"], env=env, cwd=Path(__file__).parent.parent,
                          capture_output=True, check=False).returncode == 0
    port = free_port()
    command = [str(GUNICORN), "--workers", "2", "--bind", f"127.0.0.1:{port}", "--no-control-socket", "server:app"]
    gunicorn = start_program(command, env).wait_until_accepting(port)
    # Requests on fresh connections until each worker has answered some (its file says so).
    sent, deadline = 0, time.monotonic() + 30
    while len(workers_that_answered(metrics_dir)) < 2:
        assert time.monotonic() < deadline, f"after {sent} requests: {workers_that_answered(metrics_dir)}"
        status, _, _ = http_request(port, "/health")
        assert status == 200
        sent += 1
        if sent % 20 == 0:
            time.sleep(metrics.FLUSH_INTERVAL_SECONDS)  # let both flush before looking again
    # Whichever worker answers the scrape, it adds the other's file: every request is there.
    deadline = time.monotonic() + 10
    while True:
        status, _, body = http_request(port, "/metrics")
        assert status == 200
        samples = samples_of(body.decode())
        counted = value(samples, "http_requests_total", method="GET", route="/health", status="200")
        if counted == sent or time.monotonic() > deadline:
            break
        time.sleep(POLL_SECONDS)
    assert counted == sent
    assert len(series(samples, "process_start_time_seconds")) == 2  # both workers, by pid
    gunicorn.send_signal(signal.SIGTERM)
    assert gunicorn.wait(SHUTDOWN_DEADLINE_SECONDS) == 0


def workers_that_answered(metrics_dir):
    """The pids whose file counts a GET /health."""
    answered = set()
    for path in metrics_dir.glob("*.json"):
        try:
            snapshot = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if any(route == "/health" for _, route, _, _ in snapshot["requests"]):
            answered.add(snapshot["pid"])
    return answered


def test_the_moves_of_the_event_loop_are_counted_from_zero():
    """http_loop_moves_total has no labels: it shows 0 before the first move, not nothing."""
    recorder = metrics.Recorder()
    assert samples_of(metrics.render(recorder.totals()).decode())[("http_loop_moves_total", ())] == 0
    recorder.count("http_loop_moves_total")
    recorder.count("http_loop_moves_total")
    assert value(samples_of(metrics.render(recorder.totals()).decode()), "http_loop_moves_total") == 2


def test_the_served_http_server_counts_the_moves_of_its_loop(settings, database, monkeypatch):
    """server.serve hands the HTTP server the hook its watchdog calls (tests/test_httpserver.py
    moves a loop for real): here the server is caught as it is made, and refuses to listen."""
    options = {}

    def no_server(*args, **kwargs):
        options.update(kwargs)
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(server, "HTTPServer", no_server)
    monkeypatch.setattr(server, "route_standard_logging", lambda logger: None)  # leave the test's logging be
    monkeypatch.setattr(metrics, "RECORDER", metrics.Recorder())  # and the process's counts
    assert server.serve(settings, database, host="127.0.0.1", port=0) == 1
    options["on_loop_moved"]()
    assert metrics.RECORDER.snapshot()["events"] == [["http_loop_moves_total", [], 1]]


def test_methods_a_client_makes_up_are_counted_as_other():
    recorder = metrics.Recorder()
    for _ in range(1000):
        recorder.request_finished(f"BREW{random.getrandbits(32)}", None, 501, recorder.request_started())
    samples = samples_of(metrics.render(recorder.totals()).decode())
    assert series(samples, "http_requests_total") == {(("method", "other"), ("route", "(none)"), ("status", "501"))}
    assert value(samples, "http_requests_total", method="other", route="(none)", status="501") == 1000


def test_a_live_server_is_scraped_over_its_socket(app, seeded):
    with running_server(app) as base_url:
        client = LiveClient(base_url)
        before = scrape(client)
        client.get("/v1/items?limit=2")
        after = scrape(client)
    assert value(after, "http_requests_total", method="GET", route="/v1/items", status="200") - value(
        before, "http_requests_total", method="GET", route="/v1/items", status="200") == 1


