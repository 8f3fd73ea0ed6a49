"""SQL for the job queue (migrations/0007_jobs.sql): one function per query.

The rules (when a job is due, how long a lease lasts, when a failure is final) are in
jobs.py; these functions run the statements inside the caller's transaction. Every change to
a claimed job names the claim it belongs to (`attempts = :attempts`), so an outcome reported
by a worker that lost its lease changes nothing.

The one engine difference is how two workers avoid claiming the same job (`claim_jobs`):

    PostgreSQL   SELECT ... FOR UPDATE SKIP LOCKED: rows another worker is claiming right now
                 are skipped, not waited for, so workers claim side by side
    SQLite       nothing to add: the claim runs in a write transaction, and SQLite has one
                 writer at a time, so no other claim can run in between
"""

from sql_paging import page_sql

JOB_COLUMNS = (
    "id, kind, payload, status, attempts, max_attempts, run_at, locked_until, locked_by,"
    " last_error, unique_key, created_at, updated_at, started_at, finished_at, traceparent, tracestate"
)
SORTABLE_COLUMNS = frozenset({"id"})
# The PostgreSQL LISTEN/NOTIFY channel that wakes idle workers (pgnotify.py listens on it).
CHANNEL = "shop_jobs"


def insert_job(connection, kind, payload, max_attempts, run_at, unique_key, now, traceparent=None, tracestate=None):
    """A new queued job; its id, or None when `unique_key` is already taken (the job exists).
    `traceparent` and `tracestate`: the trace of the work that enqueued it (tracing.py).

    `ON CONFLICT DO NOTHING` is spelled the same on both engines. On PostgreSQL a second
    transaction inserting the same key waits for the first to end, then inserts nothing.
    """
    return connection.fetch_value(
        "INSERT INTO jobs (kind, payload, max_attempts, run_at, unique_key, created_at, updated_at, traceparent,"
        " tracestate)"
        " VALUES (:kind, :payload, :max_attempts, :run_at, :unique_key, :now, :now, :traceparent, :tracestate)"
        " ON CONFLICT (unique_key) DO NOTHING RETURNING id",
        {"kind": kind, "payload": payload, "max_attempts": max_attempts, "run_at": run_at,
         "unique_key": unique_key, "now": now, "traceparent": traceparent, "tracestate": tracestate},
    )


def job_id_by_unique_key(connection, unique_key):
    """The id of the job holding `unique_key` (its UNIQUE index finds it), or None."""
    return connection.fetch_value("SELECT id FROM jobs WHERE unique_key = :unique_key", {"unique_key": unique_key})


def notify_workers(connection):
    """Wake idle workers when this transaction commits.

    PostgreSQL delivers a NOTIFY at COMMIT, and never after a ROLLBACK, to every session
    that LISTENs on the channel (in any process), and folds repeats within one transaction
    into one. SQLite has no such thing: jobs.py wakes the workers of this process itself,
    and a worker in another process finds the job at its next poll.
    """
    if connection.engine == "postgresql":
        connection.execute(f"NOTIFY {CHANNEL}")


def commit_without_waiting_for_the_disk(connection):
    """Let this transaction's COMMIT return before its WAL record is on disk (PostgreSQL's
    synchronous_commit = off, for this transaction only).

    For a worker's bookkeeping only, never for an enqueue. A crash may then lose the last
    fraction of a second of claims and outcomes, and at least once still holds: a lost claim
    leaves the job queued, a lost outcome leaves it running until its lease expires; either
    way it runs again, as any job may. The database itself stays consistent. Measured: two
    to three times the no-op jobs per second (docs/performance.md). SQLite has no such
    setting per transaction, and its commits are cheaper: each writes the WAL and
    synchronous=FULL syncs it, unchanged here.
    """
    if connection.engine == "postgresql":
        connection.execute("SET LOCAL synchronous_commit = off")


def claim_jobs(connection, worker_id, limit, now, locked_until):
    """Claim up to `limit` due jobs, oldest first, in one statement; the claimed rows.

    The CTE picks the jobs; MATERIALIZED makes it run exactly once (folded into the UPDATE,
    a subquery with LIMIT may be run again for each row it is compared with, and then
    claim more than `limit`). On PostgreSQL, FOR UPDATE SKIP LOCKED locks the picked rows
    and passes over the ones another worker has locked, so a claim never waits for
    another; under READ COMMITTED without it, two workers would pick the same job and the
    second would claim it again once the first committed. On SQLite the write transaction
    alone keeps claims apart.
    """
    skip_locked = " FOR UPDATE SKIP LOCKED" if connection.engine == "postgresql" else ""
    return connection.fetch_all(
        "WITH due AS MATERIALIZED ("
        " SELECT id FROM jobs WHERE status = 'queued' AND run_at <= :now"
        f" ORDER BY run_at, id LIMIT :limit{skip_locked})"
        " UPDATE jobs SET status = 'running', attempts = attempts + 1, locked_by = :worker_id,"
        " locked_until = :locked_until, started_at = :now, updated_at = :now"
        f" WHERE id IN (SELECT id FROM due) RETURNING {JOB_COLUMNS}",
        {"worker_id": worker_id, "limit": limit, "now": now, "locked_until": locked_until},
    )


def renew_leases(connection, worker_id, locked_until, now):
    """Extend the lease of every job `worker_id` is running; how many."""
    cursor = connection.execute(
        "UPDATE jobs SET locked_until = :locked_until, updated_at = :now"
        " WHERE status = 'running' AND locked_by = :worker_id",
        {"worker_id": worker_id, "locked_until": locked_until, "now": now},
    )
    return cursor.rowcount


def finish_job(connection, job_id, attempts, now):
    """Mark the claim `attempts` of a job done; False when that claim is no longer current."""
    cursor = connection.execute(
        "UPDATE jobs SET status = 'done', locked_until = NULL, finished_at = :now, updated_at = :now"
        " WHERE id = :job_id AND status = 'running' AND attempts = :attempts",
        {"job_id": job_id, "attempts": attempts, "now": now},
    )
    return cursor.rowcount == 1


def reschedule_job(connection, job_id, attempts, run_at, error, now):
    """A failed claim, to be tried again at `run_at`; False when the claim is not current."""
    cursor = connection.execute(
        "UPDATE jobs SET status = 'queued', run_at = :run_at, last_error = :error, locked_until = NULL,"
        " updated_at = :now WHERE id = :job_id AND status = 'running' AND attempts = :attempts",
        {"job_id": job_id, "attempts": attempts, "run_at": run_at, "error": error, "now": now},
    )
    return cursor.rowcount == 1


def bury_job(connection, job_id, attempts, error, now):
    """A failed last attempt: the job is dead, its error kept; False when the claim is not current."""
    cursor = connection.execute(
        "UPDATE jobs SET status = 'dead', last_error = :error, locked_until = NULL, finished_at = :now,"
        " updated_at = :now WHERE id = :job_id AND status = 'running' AND attempts = :attempts",
        {"job_id": job_id, "attempts": attempts, "error": error, "now": now},
    )
    return cursor.rowcount == 1


def requeue_expired(connection, error, now):
    """Every running job whose lease has expired (its worker died or hung) goes back to the
    queue, or is dead when that was its last attempt; returns their ids and new statuses."""
    return connection.fetch_all(
        "UPDATE jobs SET"
        " status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,"
        " finished_at = CASE WHEN attempts >= max_attempts THEN :now END,"
        " run_at = :now, last_error = :error, locked_until = NULL, updated_at = :now"
        " WHERE status = 'running' AND locked_until < :now RETURNING id, status",
        {"error": error, "now": now},
    )


def retry_dead_job(connection, job_id, now):
    """A dead job queued again with all its attempts back; the row, or None when the job
    does not exist or is not dead. Its last error stays until the next attempt ends."""
    return connection.fetch_one(
        "UPDATE jobs SET status = 'queued', attempts = 0, run_at = :now, finished_at = NULL,"
        f" updated_at = :now WHERE id = :job_id AND status = 'dead' RETURNING {JOB_COLUMNS}",
        {"job_id": job_id, "now": now},
    )


def get_job(connection, job_id):
    """One job, or None."""
    return connection.fetch_one(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = :job_id", {"job_id": job_id})


def list_jobs(connection, *, sort, limit, offset=None, after=None, status=None, kind=None):
    """Up to `limit` jobs in `sort` order (by id), filtered by status and kind.

    Indexes: jobs_status_id with a status, jobs_kind_id with a kind (and both: one of them,
    the other condition checked on its rows), the primary key with neither.
    """
    conditions, params = [], {}
    if status is not None:
        conditions.append("status = :status")
        params["status"] = status
    if kind is not None:
        conditions.append("kind = :kind")
        params["kind"] = kind
    sql, params = page_sql(
        f"SELECT {JOB_COLUMNS} FROM jobs", conditions, params, sort=sort, limit=limit, offset=offset, after=after
    )
    return connection.fetch_all(sql, params)


def count_jobs(connection):
    """[{status, kind, jobs}]: how many jobs of each status and kind, for /metrics. Read from
    the index jobs_status_kind alone; its size is bounded by JOB_RETENTION_SECONDS."""
    return connection.fetch_all("SELECT status, kind, count(*) AS jobs FROM jobs GROUP BY status, kind")


def oldest_due_run_at(connection, now):
    """The run_at of the queued job that has been due the longest, or None: the first entry
    of jobs_status_run_at_id for status 'queued' (a queued job not yet due is not waiting)."""
    return connection.fetch_value("SELECT min(run_at) FROM jobs WHERE status = 'queued' AND run_at <= :now",
                                  {"now": now})


def delete_finished(connection, finished_before, limit):
    """Delete up to `limit` jobs that finished (done or dead) before `finished_before`, the
    oldest first; how many. A batch at a time keeps each transaction, and its locks, short."""
    cursor = connection.execute(
        "DELETE FROM jobs WHERE id IN ("
        " SELECT id FROM jobs WHERE finished_at < :finished_before ORDER BY finished_at LIMIT :limit)",
        {"finished_before": finished_before, "limit": limit},
    )
    return cursor.rowcount
