"""Tests for worker.py and `python server.py worker`: jobs run once each however many workers
claim at once, a worker killed mid-job loses nothing, a stopping worker finishes its jobs,
failures back off and end dead, and idle workers are woken at once (not at their next poll).
Short leases and polls keep the waits to a few seconds."""

import dataclasses
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from conftest import (
    POLL_SECONDS,
    count_rows,
    free_port,
    http_request,
    json_headers,
    postgres_admin,
    running_worker,
    server_env,
    wait_for_jobs,
)

import db
import jobs
import mailer
import orders
import sql_events
import sql_jobs

SHORT_LEASE = {"JOB_LEASE_SECONDS": "2", "WORKER_POLL_SECONDS": "0.1"}


def enqueue(database, count=1, kind="noop", **options):
    with database.transaction() as connection:
        return [jobs.enqueue(connection, kind, {"n": n}, **options) for n in range(count)]


def job_row(database, job_id):
    with database.connection() as connection:
        return connection.fetch_one("SELECT * FROM jobs WHERE id = :id", {"id": job_id})


def start_worker(start_program, database_url, tmp_path, **settings):
    """`python server.py worker` in another process, once it runs."""
    env = server_env(database_url, MAIL_OUTBOX_DIR=str(tmp_path / "outbox"), **SHORT_LEASE, **settings)
    program = start_program([sys.executable, "server.py", "worker"], env)
    deadline = time.monotonic() + 15
    while "Running jobs with" not in program.stderr():
        if (report := program.exit_report()) is not None:
            pytest.fail(report)
        assert time.monotonic() < deadline, program.stderr()
        time.sleep(0.05)
    return program


# -- in this process -----------------------------------------------------------------------------

def test_an_idle_worker_is_woken_by_the_commit_not_by_its_poll(database, settings):
    slow_poll = dataclasses.replace(settings, worker_poll_seconds=60)
    with running_worker(database, slow_poll):
        time.sleep(0.2)  # the worker has gone idle: its next poll is a minute away
        started = time.monotonic()
        [job_id] = enqueue(database)
        wait_for_jobs(database, "status = 'done'", timeout_seconds=5)
        assert time.monotonic() - started < 2
    assert job_row(database, job_id)["attempts"] == 1


@pytest.mark.parametrize("engine", ["postgresql"])
def test_on_postgresql_a_notify_from_another_process_wakes_an_idle_worker(database, settings):
    """No local wake-up here: the job is written as another process would, NOTIFY and all."""
    with running_worker(database, dataclasses.replace(settings, worker_poll_seconds=60)) as worker:
        assert worker._listener.connected.wait(5)
        time.sleep(0.2)
        started = time.monotonic()
        with database.transaction() as connection:
            now = jobs.db.utc_now()
            sql_jobs.insert_job(connection, "noop", "{}", 3, now, None, now)
            sql_jobs.notify_workers(connection)
        wait_for_jobs(database, "status = 'done'", timeout_seconds=5)
        assert time.monotonic() - started < 2


@pytest.mark.parametrize("engine", ["postgresql"])
def test_the_listener_reconnects_after_its_connection_is_cut(database, settings, monkeypatch):
    import pgnotify  # needs psycopg, like every PostgreSQL test

    monkeypatch.setattr(pgnotify, "RECONNECT_FIRST_SECONDS", 0.05)
    with running_worker(database, dataclasses.replace(settings, worker_poll_seconds=60)) as worker:
        listener = worker._listener
        assert listener.connected.wait(5)
        cut_pid = listener.backend_pid
        with postgres_admin() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [cut_pid])
        deadline = time.monotonic() + 5
        while not (listener.connected.is_set() and listener.backend_pid != cut_pid):
            assert time.monotonic() < deadline, "the listener did not reconnect"
            time.sleep(0.05)
        time.sleep(0.2)
        with database.transaction() as connection:  # as another process would: NOTIFY only
            now = jobs.db.utc_now()
            sql_jobs.insert_job(connection, "noop", "{}", 3, now, None, now)
            sql_jobs.notify_workers(connection)
        wait_for_jobs(database, "status = 'done'", timeout_seconds=2)


def test_a_failing_job_is_retried_until_it_succeeds(database, settings):
    calls = []

    def flaky(context, job):
        calls.append(job.attempts)
        if job.attempts < 3:
            raise ConnectionRefusedError(f"attempt {job.attempts}: the mail server is down")

    with running_worker(database, settings, handlers={"flaky": flaky}, jitter=lambda: 0.0):
        [job_id] = enqueue(database, kind="flaky")
        wait_for_jobs(database, "status = 'done'")
    stored = job_row(database, job_id)
    assert calls == [1, 2, 3]
    assert stored["attempts"] == 3
    assert stored["last_error"] == "ConnectionRefusedError: attempt 2: the mail server is down"  # kept from before


def test_a_job_that_always_fails_is_dead_after_its_last_attempt(database, settings):
    def broken(context, job):
        raise ValueError("no such template")

    with running_worker(database, settings, handlers={"broken": broken}, jitter=lambda: 0.0):
        [job_id] = enqueue(database, kind="broken", max_attempts=3)
        wait_for_jobs(database, "status = 'dead'")
    stored = job_row(database, job_id)
    assert (stored["attempts"], stored["last_error"]) == (3, "ValueError: no such template")


def test_a_kind_this_worker_does_not_know_fails_and_backs_off(database, settings):
    with running_worker(database, settings, handlers={}):
        [job_id] = enqueue(database, kind="report.export")
        wait_for_jobs(database, "status = 'queued' AND attempts = 1")
    expected = "LookupError: no handler for job kind 'report.export' in this worker"
    assert job_row(database, job_id)["last_error"] == expected


def test_a_job_that_runs_longer_than_its_lease_keeps_it(database, settings):
    """Renewed every third of the lease: a second worker never takes the job meanwhile."""
    short = dataclasses.replace(settings, job_lease_seconds=2, worker_poll_seconds=0.1)
    release = threading.Event()

    def slow(context, job):
        release.wait(10)

    handlers = {"slow": slow}
    with running_worker(database, short, handlers=handlers), running_worker(database, short, handlers=handlers):
        [job_id] = enqueue(database, kind="slow")
        wait_for_jobs(database, "status = 'running'")
        time.sleep(3.5)  # past the first lease, and a requeue check by each worker
        assert job_row(database, job_id)["attempts"] == 1
        release.set()
        wait_for_jobs(database, "status = 'done'")
    assert job_row(database, job_id)["attempts"] == 1


# -- python server.py worker -------------------------------------------------------------------------

JOB_COUNT = 1000


def test_two_worker_processes_run_each_of_1000_jobs_exactly_once(database, database_url, start_program, tmp_path):
    """Two processes of two threads each, claiming side by side while the jobs arrive."""
    workers = [start_worker(start_program, database_url, tmp_path, WORKER_THREADS="2") for _ in range(2)]
    for _ in range(JOB_COUNT // 100):
        enqueue(database, 100)
    wait_for_jobs(database, "status = 'done'", timeout_seconds=60, count=JOB_COUNT)
    with database.connection() as connection:
        rows = connection.fetch_all("SELECT status, attempts, locked_by FROM jobs")
    assert len(rows) == JOB_COUNT
    assert {(row["status"], row["attempts"]) for row in rows} == {("done", 1)}  # each claimed once, and done
    processes = {row["locked_by"].split(":")[1] for row in rows}
    pids = {str(worker.process.pid) for worker in workers}
    if database.engine == "postgresql":
        assert processes == pids  # both took part, side by side (SKIP LOCKED)
    else:
        # SQLite has one writer, and its busy handler is not fair: a process that keeps
        # finding the lock free may run every job while the other sleeps in its retry.
        assert processes <= pids
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0


def place_an_order(database, users):
    user = users.create("ada@example.com")
    return orders.place_order(database, user["id"], [{"item_id": 1, "quantity": 1}])


def test_a_worker_killed_in_the_middle_of_a_job_loses_nothing(seeded, users, database_url, start_program, tmp_path,
                                                              smtp_server):
    url, received = smtp_server
    received.hold()  # the first message waits inside DATA: the job is in the middle of sending
    order = place_an_order(seeded, users)
    first = start_worker(start_program, database_url, tmp_path, SMTP_URL=url)
    assert received.held.wait(10)
    first.kill()  # kill -9: no shutdown, no report, the lease still held
    received.release()  # that connection is gone; the server never took its message
    second = start_worker(start_program, database_url, tmp_path, SMTP_URL=url)
    [message] = received.wait_for(1, timeout=15)  # once the lease (2 s) has expired
    assert message["Subject"] == f"Your order {order['id']} is placed"
    wait_for_jobs(seeded, "status = 'done'")
    with seeded.connection() as connection:
        job = connection.fetch_one("SELECT attempts, locked_by, last_error FROM jobs")
    assert job["attempts"] == 2 and job["locked_by"].split(":")[1] == str(second.process.pid)
    assert job["last_error"] == jobs.LEASE_EXPIRED_ERROR
    assert message["Message-ID"] == f"<order-{order['id']}-created.job-1@localhost>"


def test_sigterm_lets_the_job_in_hand_finish_then_exits_0(seeded, users, database_url, start_program, tmp_path,
                                                          smtp_server):
    url, received = smtp_server
    received.hold()
    place_an_order(seeded, users)
    worker = start_worker(start_program, database_url, tmp_path, SMTP_URL=url)
    assert received.held.wait(10)
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert worker.exit_report() is None  # still finishing its job
    received.release()  # the held message is refused (421): the job fails, and is recorded so
    assert worker.wait(30) == 0
    assert "worker stopped" in worker.stdout() and '"drained":true' in worker.stdout()
    assert job_row(seeded, 1)["status"] == "queued"  # back in the queue, for its next attempt
    assert "SMTPDataError" in job_row(seeded, 1)["last_error"]


# -- python server.py: one worker thread in the web server's process -----------------------------------

@pytest.mark.parametrize("worker_setting, emails", [(None, 1), ("off", 0)])
def test_the_web_server_runs_its_own_worker_unless_told_not_to(seeded, users, database_url, start_program, tmp_path,
                                                              worker_setting, emails):
    outbox = tmp_path / "outbox"
    env = server_env(database_url, MAIL_OUTBOX_DIR=str(outbox), PORT=str(free_port()), WORKER=worker_setting)
    server = start_program([sys.executable, "server.py"], env).wait_for_url()
    user = users.create()
    body = b'{"lines": [{"item_id": 1, "quantity": 1}]}'
    status, _, _ = http_request(server.port, "/v1/orders", method="POST", body=body,
                                headers=json_headers(users.headers(user)))
    assert status == 201
    if emails:
        wait_for_jobs(seeded, "status = 'done'")
        assert [path.name for path in outbox.iterdir()] == ["order-1-created.eml"]
    else:
        time.sleep(0.5)
        assert job_row(seeded, 1)["status"] == "queued" and not outbox.exists()
    server.send_signal(signal.SIGTERM)
    assert server.wait(30) == 0
    assert job_row(seeded, 1)["kind"] == mailer.ORDER_EMAIL


def test_a_worker_deletes_order_events_older_than_their_retention_when_it_starts(settings, database):
    now = datetime.now(UTC)
    with database.transaction() as connection:
        for age_seconds in (2 * 86_400, 60):
            created_at = db.utc_text(now - timedelta(seconds=age_seconds))
            sql_events.insert_event(connection, 7, 1, "order.paid", "{}", created_at)
    with running_worker(database, settings):  # purging is due at once, then every PURGE_INTERVAL_SECONDS
        deadline = time.monotonic() + 10
        while count_rows(database, "order_events") != 1 and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
    with database.connection() as connection:
        [kept] = sql_events.events_after(connection, 0, 10)
    assert kept["created_at"] > db.utc_text(now - timedelta(hours=1))  # the old one went, the new one stayed
