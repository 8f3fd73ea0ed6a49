"""The job queue: work done after the response, from a table, at least once.

A job is a row of `jobs` (migrations/0007_jobs.sql), enqueued inside the transaction of the
change that causes it, the "transactional outbox":

    with database.transaction() as connection:
        order = sql_orders.insert_order(connection, ...)
        jobs.enqueue(connection, "email.order", {"order_id": order["id"], "event": "created"},
                     unique_key=f"email.order:{order['id']}:created")
    # COMMIT: the order and its job exist together, or (ROLLBACK) neither does

A worker (worker.py) claims due jobs, runs each, and reports the outcome:

    claim     queued -> running, attempts + 1, a lease of JOB_LEASE_SECONDS (renewed while it runs)
    complete  running -> done
    fail      running -> queued again at now + backoff, or dead after max_attempts, error kept
    (lease)   a running job whose lease expired (its worker was killed) -> queued, or dead

A job carries the trace of the request that enqueued it (tracing.py: its `traceparent` and
`tracestate` columns, migrations/0013_job_trace_context.sql). The worker runs it as a child
span of that request, so the job's log lines, and the webhooks it sends, carry the request's
trace id.

So a job runs at least once, and may run again after a crash at the wrong moment: every
handler must be idempotent, and says how it is (mailer.py). Backoff is exponential with
"full jitter" (a random wait between 0 and base * 2^(attempt-1), at most the cap), so jobs
that failed together, because a mail server was down, do not all come back together.
"""

import json
import random
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import db
import sql_jobs
import tracing

STATUSES = ("queued", "running", "done", "dead")
NOTIFY_CHANNEL = sql_jobs.CHANNEL  # PostgreSQL: a worker LISTENs here to hear of new jobs
DEFAULT_MAX_ATTEMPTS = 10
MAX_ATTEMPTS = 100
MAX_PAYLOAD_CHARS = 65_536
MAX_ERROR_CHARS = 2000
LEASE_EXPIRED_ERROR = "the lease expired: the worker stopped or was killed while running this job"
# Finished jobs are deleted this many at a time, each batch in a transaction of its own, and
# at most this many batches per purge (the next purge takes the rest).
PURGE_BATCH_SIZE = 1000
PURGE_MAX_BATCHES = 100


@dataclass(frozen=True)
class Job:
    """A claimed job, as a handler sees it. `attempts` is this claim's number (1 the first
    time), and identifies the claim when its outcome is reported."""

    id: int
    kind: str
    payload: dict
    attempts: int
    max_attempts: int
    unique_key: str | None
    traceparent: str | None = None  # the enqueuing work's span; None for jobs from before 0013
    tracestate: str | None = None


class NotDead(Exception):
    """Only a dead job can be retried; `status` is the job's."""

    def __init__(self, job_id, status):
        super().__init__(f"job {job_id} is {status}, not dead")
        self.job_id, self.status = job_id, status


def enqueue(connection, kind, payload, *, unique_key=None, max_attempts=DEFAULT_MAX_ATTEMPTS, delay_seconds=0):
    """Add a job inside the caller's transaction (a Connection from `database.transaction()`);
    return its id. With a `unique_key` already enqueued, return that job's id and add nothing.

    The job belongs to the current trace (tracing.current(): the request's, or the running
    job's); enqueued outside any (a command line, a test), it starts a trace of its own, so
    that every attempt of it logs the same trace id.

    Workers are woken when the transaction commits: on PostgreSQL by a NOTIFY, in this
    process directly (see `wake_local_workers`). Raises ValueError for a payload that is
    not JSON or too large: a programming error, and the caller's transaction rolls back.
    """
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    if len(text) > MAX_PAYLOAD_CHARS:
        raise ValueError(f"a job payload is at most {MAX_PAYLOAD_CHARS} characters")
    if not 1 <= max_attempts <= MAX_ATTEMPTS:
        raise ValueError(f"max_attempts must be between 1 and {MAX_ATTEMPTS}")
    now = db.utc_now()
    run_at = db.utc_now(delay_seconds) if delay_seconds else now
    trace = tracing.current() or tracing.start_trace()
    job_id = sql_jobs.insert_job(connection, kind, text, max_attempts, run_at, unique_key, now, trace.traceparent,
                                 trace.tracestate)
    if job_id is None:
        return sql_jobs.job_id_by_unique_key(connection, unique_key)
    sql_jobs.notify_workers(connection)
    connection.after_commit(wake_local_workers)
    return job_id


def claim(database, worker_id, limit, *, lease_seconds, now=None):
    """Claim up to `limit` due jobs for `worker_id`, oldest first; a list of `Job`s."""
    now = now or datetime.now(UTC)
    with _bookkeeping(database) as connection:
        rows = sql_jobs.claim_jobs(
            connection, worker_id, limit, db.utc_text(now), db.utc_text(now + timedelta(seconds=lease_seconds))
        )
    # RETURNING gives rows in no promised order: oldest first again.
    return [_job(row) for row in sorted(rows, key=lambda row: (row["run_at"], row["id"]))]


def renew(database, worker_id, *, lease_seconds, now=None):
    """Extend the lease of every job `worker_id` runs; how many it holds."""
    now = now or datetime.now(UTC)
    with _bookkeeping(database) as connection:
        return sql_jobs.renew_leases(
            connection, worker_id, db.utc_text(now + timedelta(seconds=lease_seconds)), db.utc_text(now)
        )


def complete(database, job, *, now=None):
    """The job succeeded. False when its claim was no longer current (the lease expired and
    the job was requeued or taken again): then this outcome is not recorded."""
    now = now or datetime.now(UTC)
    with _bookkeeping(database) as connection:
        return sql_jobs.finish_job(connection, job.id, job.attempts, db.utc_text(now))


def fail(database, job, error, *, backoff_base_seconds, backoff_cap_seconds, jitter=random.random, now=None):
    """The job failed with `error` (text): queue it again after a backoff, or, after its last
    attempt, make it dead. Returns the new status, or None when the claim was no longer current.

    `jitter()` returns a number in [0, 1) (random.random); tests pass their own.
    """
    now = now or datetime.now(UTC)
    error = error[:MAX_ERROR_CHARS]
    with _bookkeeping(database) as connection:
        if job.attempts >= job.max_attempts:
            buried = sql_jobs.bury_job(connection, job.id, job.attempts, error, db.utc_text(now))
            return "dead" if buried else None
        delay = backoff_seconds(job.attempts, backoff_base_seconds, backoff_cap_seconds, jitter)
        run_at = db.utc_text(now + timedelta(seconds=delay))
        queued = sql_jobs.reschedule_job(connection, job.id, job.attempts, run_at, error, db.utc_text(now))
        return "queued" if queued else None


def backoff_seconds(attempt, base_seconds, cap_seconds, jitter=random.random):
    """How long to wait after failed attempt number `attempt` (1, 2, ...): "full jitter",
    uniformly random between 0 and min(cap, base * 2^(attempt-1)).

    >>> [backoff_seconds(attempt, 5, 60, jitter=lambda: 0.5) for attempt in (1, 2, 3, 4, 5)]
    [2.5, 5.0, 10.0, 20.0, 30.0]

    Why random: clients that failed at the same moment and wait the same time come back at
    the same moment, and fail together again. (AWS Architecture Blog, "Exponential Backoff
    And Jitter", 2015: full jitter spreads them best for the least total work.)
    """
    ceiling = min(cap_seconds, base_seconds * 2 ** min(attempt - 1, 32))
    return ceiling * jitter()


def requeue_expired(database, *, now=None):
    """Put back every running job whose lease has expired, or bury it after its last attempt.
    Returns [{"id", "status"}] of the jobs it moved."""
    now = now or datetime.now(UTC)
    with _bookkeeping(database) as connection:
        moved = sql_jobs.requeue_expired(connection, LEASE_EXPIRED_ERROR, db.utc_text(now))
        if any(row["status"] == "queued" for row in moved):
            sql_jobs.notify_workers(connection)
    return moved


def retry(database, job_id):
    """Queue a dead job again, with all its attempts; returns it, or None when there is no
    such job. Raises NotDead for a job in any other status."""
    with database.transaction() as connection:
        row = sql_jobs.retry_dead_job(connection, job_id, db.utc_now())
        if row is None:
            current = sql_jobs.get_job(connection, job_id)
            if current is None:
                return None
            raise NotDead(job_id, current["status"])
        sql_jobs.notify_workers(connection)
        connection.after_commit(wake_local_workers)
    return public_job(row)


def get_job(database, job_id):
    """One job with its payload decoded, or None."""
    with database.connection() as connection:
        row = sql_jobs.get_job(connection, job_id)
    return None if row is None else public_job(row)


def list_jobs(database, **query):
    """A page of jobs (see sql_jobs.list_jobs for the arguments), payloads decoded."""
    with database.connection() as connection:
        return [public_job(row) for row in sql_jobs.list_jobs(connection, **query)]


def purge_finished(database, *, retention_seconds, now=None):
    """Delete the jobs that finished (done or dead) over `retention_seconds` ago, in
    batches of PURGE_BATCH_SIZE; returns how many."""
    now = now or datetime.now(UTC)
    finished_before = db.utc_text(now - timedelta(seconds=retention_seconds))
    return delete_in_batches(
        database, lambda connection, limit: sql_jobs.delete_finished(connection, finished_before, limit))


def delete_in_batches(database, delete_batch):
    """Call delete_batch(connection, PURGE_BATCH_SIZE), a transaction each time, until a batch
    deletes fewer (or PURGE_MAX_BATCHES ran); how many rows went in all. Short transactions:
    a purge of a million rows never holds the write lock for long. Old order events and
    webhook delivery attempts go the same way (events.py, webhooks.py)."""
    deleted = 0
    for _ in range(PURGE_MAX_BATCHES):
        with database.transaction() as connection:
            batch = delete_batch(connection, PURGE_BATCH_SIZE)
        deleted += batch
        if batch < PURGE_BATCH_SIZE:
            break
    return deleted


def queue_stats(database, *, timeout_seconds, now=None):
    """For /metrics: ({(status, kind): jobs}, the seconds the job due the longest has waited,
    0.0 when none is waiting). Raises db.DatabaseUnavailable past `timeout_seconds`."""
    now = now or datetime.now(UTC)
    with database.connection(timeout_seconds=timeout_seconds) as connection:
        counts = {(row["status"], row["kind"]): row["jobs"] for row in sql_jobs.count_jobs(connection)}
        oldest = sql_jobs.oldest_due_run_at(connection, db.utc_text(now))
    waited = 0.0 if oldest is None else (now - datetime.fromisoformat(oldest)).total_seconds()
    return counts, max(waited, 0.0)


def public_job(row):
    """A job row as the admin API shows it: the payload as JSON, not as text."""
    return dict(row, payload=json.loads(row["payload"]))


# -- waking the workers of this process ------------------------------------------------------

_local_wakeups: set[threading.Event] = set()
_local_wakeups_lock = threading.Lock()


def add_local_wakeup(event):
    """Have `event` (a threading.Event) set whenever this process commits a new job."""
    with _local_wakeups_lock:
        _local_wakeups.add(event)


def remove_local_wakeup(event):
    with _local_wakeups_lock:
        _local_wakeups.discard(event)


def wake_local_workers():
    """Set every registered worker's event: there is a job to claim. Called after COMMIT,
    so the worker that wakes can see it. (On PostgreSQL, workers of other processes are
    woken by the NOTIFY; on SQLite they find the job at their next poll.)"""
    with _local_wakeups_lock:
        events = list(_local_wakeups)
    for event in events:
        event.set()


@contextmanager
def _bookkeeping(database):
    """A transaction for a worker's own bookkeeping (claims, leases, outcomes): on PostgreSQL
    its COMMIT does not wait for the disk; see sql_jobs.commit_without_waiting_for_the_disk."""
    with database.transaction() as connection:
        sql_jobs.commit_without_waiting_for_the_disk(connection)
        yield connection


def _job(row):
    return Job(row["id"], row["kind"], json.loads(row["payload"]), row["attempts"], row["max_attempts"],
               row["unique_key"], row["traceparent"], row["tracestate"])
