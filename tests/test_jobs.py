"""Tests for jobs.py: the queue's rules, on both engines, with the clock and the jitter chosen
by the test (no sleeps): enqueue in the caller's transaction, unique keys, claims that never
overlap, leases, backoff, dead jobs and their retry, retention."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from conftest import count_rows

import db
import jobs

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
LEASE = 30
BACKOFF = {"backoff_base_seconds": 5, "backoff_cap_seconds": 60}


def enqueue(database, kind="noop", payload=None, **options):
    with database.transaction() as connection:
        return jobs.enqueue(connection, kind, payload or {}, **options)


def row(database, job_id):
    with database.connection() as connection:
        return connection.fetch_one("SELECT * FROM jobs WHERE id = :id", {"id": job_id})


def claim_one(database, now, worker_id="worker-a"):
    claimed = jobs.claim(database, worker_id, 1, lease_seconds=LEASE, now=now)
    assert len(claimed) == 1
    return claimed[0]


# -- enqueue ---------------------------------------------------------------------------------

def test_a_job_is_enqueued_with_its_payload_and_is_due_at_once(database):
    job_id = enqueue(database, "email.order", {"order_id": 7, "event": "created"})
    job = jobs.get_job(database, job_id)
    assert job["kind"] == "email.order"
    assert job["payload"] == {"order_id": 7, "event": "created"}
    assert (job["status"], job["attempts"], job["max_attempts"]) == ("queued", 0, jobs.DEFAULT_MAX_ATTEMPTS)
    assert job["run_at"] == job["created_at"]
    assert (job["locked_until"], job["locked_by"], job["last_error"], job["finished_at"]) == (None,) * 4


def test_a_rolled_back_transaction_leaves_no_job_and_wakes_nobody(database):
    woken = threading.Event()
    jobs.add_local_wakeup(woken)
    try:
        with pytest.raises(RuntimeError), database.transaction() as connection:
            jobs.enqueue(connection, "noop", {})
            raise RuntimeError("the order failed after its job was enqueued")
        assert count_rows(database, "jobs") == 0
        assert not woken.is_set()
    finally:
        jobs.remove_local_wakeup(woken)


def test_workers_of_this_process_are_woken_after_the_commit_not_before(database):
    woken = threading.Event()
    jobs.add_local_wakeup(woken)
    try:
        with database.transaction() as connection:
            jobs.enqueue(connection, "noop", {})
            assert not woken.is_set()  # a worker woken now could not see the job yet
        assert woken.is_set()
    finally:
        jobs.remove_local_wakeup(woken)


def test_the_same_unique_key_twice_gives_one_job(database):
    first = enqueue(database, "email.order", {"order_id": 1}, unique_key="email.order:1:created")
    again = enqueue(database, "email.order", {"order_id": 1}, unique_key="email.order:1:created")
    other = enqueue(database, "email.order", {"order_id": 1}, unique_key="email.order:1:paid")
    assert again == first and other != first
    assert count_rows(database, "jobs") == 2


def test_jobs_without_a_unique_key_never_collide(database):
    assert len({enqueue(database) for _ in range(3)}) == 3


@pytest.mark.parametrize("payload, options, message", [
    ({"text": "x" * jobs.MAX_PAYLOAD_CHARS}, {}, "a job payload is at most"),
    ({"value": float("nan")}, {}, "Out of range float values are not JSON compliant"),
    ({}, {"max_attempts": 0}, "max_attempts must be between 1 and 100"),
])
def test_a_bad_payload_or_attempt_count_is_refused_and_rolls_back(database, payload, options, message):
    with pytest.raises(ValueError, match=message), database.transaction() as connection:
        jobs.enqueue(connection, "noop", payload, **options)
    assert count_rows(database, "jobs") == 0


# -- claims and leases -------------------------------------------------------------------------

def test_claim_takes_due_jobs_oldest_first_and_holds_a_lease(database):
    ids = [enqueue(database, payload={"n": n}) for n in range(3)]
    later = enqueue(database, delay_seconds=3600)
    now = datetime.now(UTC) + timedelta(seconds=1)
    claimed = jobs.claim(database, "worker-a", 10, lease_seconds=LEASE, now=now)
    assert [job.id for job in claimed] == ids
    assert [job.payload for job in claimed] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert {job.attempts for job in claimed} == {1}
    stored = row(database, ids[0])
    assert (stored["status"], stored["locked_by"]) == ("running", "worker-a")
    assert stored["locked_until"] == db.utc_text(now + timedelta(seconds=LEASE))
    assert stored["started_at"] == db.utc_text(now)
    assert row(database, later)["status"] == "queued"  # not due for an hour
    assert jobs.claim(database, "worker-b", 10, lease_seconds=LEASE, now=now) == []


def test_claim_takes_at_most_its_limit(database):
    for _ in range(5):
        enqueue(database)
    now = datetime.now(UTC) + timedelta(seconds=1)
    assert len(jobs.claim(database, "worker-a", 2, lease_seconds=LEASE, now=now)) == 2
    assert len(jobs.claim(database, "worker-b", 10, lease_seconds=LEASE, now=now)) == 3


def test_concurrent_claims_never_give_a_job_twice(database):
    """Eight threads claim batches of 5 at once (PostgreSQL: SKIP LOCKED; SQLite: one writer)."""
    with database.transaction() as connection:
        job_ids = {jobs.enqueue(connection, "noop", {"n": n}) for n in range(200)}
    now = datetime.now(UTC) + timedelta(seconds=1)
    claimed, lock = [], threading.Lock()
    start = threading.Barrier(8)

    def claim_until_empty(worker_id):
        start.wait()
        while batch := jobs.claim(database, worker_id, 5, lease_seconds=LEASE, now=now):
            with lock:
                claimed.extend(job.id for job in batch)

    threads = [threading.Thread(target=claim_until_empty, args=(f"worker-{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(claimed) == sorted(job_ids)  # every job, each once


def test_a_renewed_lease_runs_from_the_renewal(database):
    enqueue(database)
    job = claim_one(database, datetime.now(UTC) + timedelta(seconds=1))
    later = datetime.now(UTC) + timedelta(seconds=20)
    assert jobs.renew(database, "worker-a", lease_seconds=LEASE, now=later) == 1
    assert row(database, job.id)["locked_until"] == db.utc_text(later + timedelta(seconds=LEASE))
    assert jobs.renew(database, "worker-b", lease_seconds=LEASE, now=later) == 0  # holds nothing


def test_an_expired_lease_puts_the_job_back_and_its_old_claim_can_report_nothing(database):
    job_id = enqueue(database)
    start = datetime.now(UTC) + timedelta(seconds=1)
    first = claim_one(database, start)
    assert jobs.requeue_expired(database, now=start + timedelta(seconds=LEASE - 1)) == []  # still held
    moved = jobs.requeue_expired(database, now=start + timedelta(seconds=LEASE + 1))
    assert moved == [{"id": job_id, "status": "queued"}]
    assert row(database, job_id)["last_error"] == jobs.LEASE_EXPIRED_ERROR
    second = claim_one(database, start + timedelta(seconds=LEASE + 2), worker_id="worker-b")
    assert (second.id, second.attempts) == (job_id, 2)
    # The first worker was only slow, not dead: it finishes now, too late to count.
    assert jobs.complete(database, first) is False
    assert jobs.fail(database, first, "boom", **BACKOFF) is None
    assert row(database, job_id)["status"] == "running"
    assert jobs.complete(database, second) is True
    assert (row(database, job_id)["status"], row(database, job_id)["locked_by"]) == ("done", "worker-b")


def test_an_expired_lease_on_the_last_attempt_makes_the_job_dead(database):
    job_id = enqueue(database, max_attempts=1)
    start = datetime.now(UTC) + timedelta(seconds=1)
    claim_one(database, start)
    assert jobs.requeue_expired(database, now=start + timedelta(seconds=LEASE + 1)) == [
        {"id": job_id, "status": "dead"}]
    stored = row(database, job_id)
    assert (stored["status"], stored["last_error"]) == ("dead", jobs.LEASE_EXPIRED_ERROR)
    assert stored["finished_at"] is not None


# -- failures, backoff, dead jobs --------------------------------------------------------------

@pytest.mark.parametrize("jitter", [0.0, 0.5, 0.999])
def test_failures_back_off_exponentially_with_full_jitter_then_the_job_is_dead(database, jitter):
    job_id = enqueue(database, max_attempts=4)
    now = datetime.now(UTC) + timedelta(seconds=1)
    waits = []
    for attempt in range(1, 5):
        job = claim_one(database, now)
        assert job.attempts == attempt
        status = jobs.fail(database, job, f"smtp down ({attempt})", jitter=lambda: jitter, now=now, **BACKOFF)
        stored = row(database, job_id)
        if attempt < 4:
            assert status == "queued"
            run_at = datetime.fromisoformat(stored["run_at"])
            waits.append((run_at - now).total_seconds())
            too_early = run_at - timedelta(microseconds=1)
            assert jobs.claim(database, "worker-a", 1, lease_seconds=LEASE, now=too_early) == []
            now = run_at
    # 5 s, 10 s, 20 s, each scaled by the jitter (the cap of 60 s is not reached yet).
    assert waits == pytest.approx([5 * jitter, 10 * jitter, 20 * jitter], abs=1e-6)
    assert status == "dead"
    assert (stored["status"], stored["attempts"], stored["last_error"]) == ("dead", 4, "smtp down (4)")
    assert stored["locked_until"] is None and stored["finished_at"] == db.utc_text(now)


def test_backoff_never_passes_the_cap():
    assert jobs.backoff_seconds(40, 5, 60, jitter=lambda: 0.999999) == pytest.approx(60, abs=1e-3)
    assert jobs.backoff_seconds(1, 5, 60, jitter=lambda: 0.0) == 0


def test_a_long_error_is_cut_to_its_limit(database):
    job_id = enqueue(database)
    job = claim_one(database, datetime.now(UTC) + timedelta(seconds=1))
    jobs.fail(database, job, "x" * 10_000, **BACKOFF)
    assert len(row(database, job_id)["last_error"]) == jobs.MAX_ERROR_CHARS


def test_a_dead_job_is_retried_with_all_its_attempts(database):
    job_id = enqueue(database, max_attempts=1)
    now = datetime.now(UTC) + timedelta(seconds=1)
    jobs.fail(database, claim_one(database, now), "refused", now=now, **BACKOFF)
    woken = threading.Event()
    jobs.add_local_wakeup(woken)
    try:
        retried = jobs.retry(database, job_id)
    finally:
        jobs.remove_local_wakeup(woken)
    assert woken.is_set()
    assert (retried["status"], retried["attempts"], retried["finished_at"]) == ("queued", 0, None)
    assert retried["last_error"] == "refused"  # until the next attempt ends
    job = claim_one(database, datetime.now(UTC) + timedelta(seconds=1))
    assert (job.id, job.attempts) == (job_id, 1)
    assert jobs.complete(database, job)


def test_only_a_dead_job_can_be_retried(database):
    job_id = enqueue(database)
    with pytest.raises(jobs.NotDead) as refused:
        jobs.retry(database, job_id)
    assert refused.value.status == "queued"
    assert jobs.retry(database, job_id + 1) is None


# -- retention ---------------------------------------------------------------------------------

def test_finished_jobs_are_deleted_after_the_retention_in_batches(database, monkeypatch):
    monkeypatch.setattr(jobs, "PURGE_BATCH_SIZE", 3)
    now = datetime.now(UTC) + timedelta(seconds=1)
    for number in range(8):
        enqueue(database, max_attempts=1)
        job = claim_one(database, now)
        if number % 2:
            jobs.complete(database, job, now=now)
        else:
            jobs.fail(database, job, "dead", now=now, **BACKOFF)
    recent = enqueue(database)
    jobs.complete(database, claim_one(database, now + timedelta(days=2)), now=now + timedelta(days=2))
    waiting = enqueue(database)

    assert jobs.purge_finished(database, retention_seconds=86400, now=now + timedelta(hours=23)) == 0
    assert jobs.purge_finished(database, retention_seconds=86400, now=now + timedelta(days=1, seconds=1)) == 8
    with database.connection() as connection:
        left = connection.fetch_all("SELECT id, status FROM jobs ORDER BY id")
    assert left == [{"id": recent, "status": "done"}, {"id": waiting, "status": "queued"}]


@pytest.mark.parametrize("engine", ["postgresql"])
def test_only_a_workers_bookkeeping_skips_the_wait_for_the_disk(database):
    """synchronous_commit = off for claims and outcomes (a lost one only runs a job again),
    for that transaction alone: an enqueue, like every other transaction, still waits."""
    with database.transaction() as connection:
        jobs.sql_jobs.commit_without_waiting_for_the_disk(connection)
        assert connection.fetch_value("SHOW synchronous_commit") == "off"
    with database.transaction() as connection:
        jobs.enqueue(connection, "noop", {})
        assert connection.fetch_value("SHOW synchronous_commit") == "on"
