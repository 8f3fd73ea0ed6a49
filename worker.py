"""The worker: claims due jobs from the queue (jobs.py) and runs them on a few threads.

    $ python server.py worker          a worker process, WORKER_THREADS threads
    $ python server.py                 the web server, plus one worker thread (unless WORKER=off)

One dispatcher thread does the bookkeeping; N job threads run handlers:

    dispatcher   claim up to (free threads) jobs in one statement -> hand them to the job threads
                 renew the leases of the jobs in hand every third of JOB_LEASE_SECONDS
                 put back jobs whose lease expired (another worker died), purge old finished jobs
                 (and the export files they leave: exports.sweep), and old order events (events.py)
                 (and old webhook delivery attempts)
                 sleep until woken: a job was enqueued, a thread came free, or the poll interval
    job thread   run the handler of the job's kind -> complete, or fail (backoff, or dead)

How an idle worker learns of a new job at once: on PostgreSQL, a NOTIFY sent by the
enqueuing transaction's COMMIT reaches a LISTEN connection of its own (pgnotify.py); in the
process that enqueued it, the commit sets the worker's event directly (jobs.wake_local_workers).
A worker of another process on SQLite finds it at its next poll (WORKER_POLL_SECONDS).

Each job runs as a span of the trace that enqueued it (the request's: tracing.py), so every
line logged while it runs, the worker's "job" line included, carries that trace id, and a
webhook it sends passes it on.

Stopping (SIGTERM, Ctrl-C): claim nothing more, let the jobs in hand finish, renewing their
leases, for at most SHUTDOWN_DEADLINE_SECONDS; a job still running then is not lost: its
lease expires and another worker runs it again. That is why every handler is idempotent.
"""

import os
import queue
import random
import secrets
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime

import db
import events
import exports
import jobs
import mailer
import tracing
import webhooks

# The web server's deadline too (httpserver.py): the whole process stops within it.
SHUTDOWN_DEADLINE_SECONDS = 30
# Old finished jobs are deleted at most this often per worker (and once at its start).
PURGE_INTERVAL_SECONDS = 600
# After a failed claim (the database is down), wait at least this long before the next one.
DATABASE_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class JobContext:
    """What a handler may use: the settings, the database, the logger."""

    settings: object  # config.Settings
    database: object  # db.SQLiteDatabase or db.PostgresDatabase
    logger: object  # observe.JSONLogger


def run_noop(context, job):
    """Does nothing. The queue's own cost, measured (bench), and a check that workers run."""


# The job kinds and their handlers: handler(context, job), raising on failure. Each says in
# its docstring how it is idempotent, since a job may run more than once.
HANDLERS = {
    "noop": run_noop,
    mailer.ORDER_EMAIL: mailer.send_order_email,
    exports.ORDERS_EXPORT: exports.write_orders_export,
    webhooks.DELIVER: webhooks.deliver,
}


class Worker:
    """Runs jobs on `threads` threads until stopped. `clock` and `jitter` are for tests."""

    def __init__(self, database, settings, logger, *, threads, handlers=None, clock=None, jitter=random.random):
        self.database, self.settings, self.logger = database, settings, logger
        self.threads = threads
        self.handlers = HANDLERS if handlers is None else handlers
        self.clock = clock or (lambda: datetime.now(UTC))
        self.jitter = jitter
        # Unique among every worker that ever runs: host, process, and a random part for
        # workers that share a process (tests) or a recycled process id.
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.context = JobContext(settings, database, logger)
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._in_hand = {}  # job id -> Job, claimed and not yet reported
        self._in_hand_lock = threading.Lock()
        self._handed_over = queue.SimpleQueue()  # claimed jobs for the job threads; None: stop
        self._dispatcher = None
        self._job_threads = []
        self._listener = None
        self._next = {}  # bookkeeping task -> when it is due next (see _dispatch)
        self.drained = None  # after join(): True when every job in hand finished in time

    def start(self):
        """Start the dispatcher and the job threads (and, on PostgreSQL, the listener)."""
        jobs.add_local_wakeup(self._wakeup)
        if self.database.engine == "postgresql":
            import pgnotify  # only PostgreSQL has it, and only a worker needs it

            self._listener = pgnotify.Listener(self.settings.database_url, jobs.NOTIFY_CHANNEL, self._wakeup.set,
                                               self.logger)
            self._listener.start()
        for number in range(self.threads):
            thread = threading.Thread(target=self._run_jobs, name=f"job-{number}", daemon=True)
            thread.start()
            self._job_threads.append(thread)
        self._dispatcher = threading.Thread(target=self._dispatch, name="job-dispatcher", daemon=True)
        self._dispatcher.start()

    def request_stop(self):
        """Stop claiming; jobs in hand finish (see module docstring). Safe in a signal handler."""
        self._stopping.set()
        self._wakeup.set()

    def join(self, timeout=None):
        """Wait for the worker to stop (after request_stop); True when it did within `timeout`."""
        self._dispatcher.join(timeout)
        return not self._dispatcher.is_alive()

    def in_hand(self):
        """How many jobs this worker has claimed and not yet finished."""
        with self._in_hand_lock:
            return len(self._in_hand)

    # -- the dispatcher ----------------------------------------------------------------------

    def _dispatch(self):
        started = time.monotonic()
        # When each bookkeeping task is due next (time.monotonic()); purging starts at once.
        self._next = {"renew": started, "requeue": started, "purge": started}
        try:
            while not self._stopping.is_set():
                try:
                    self._dispatch_round()
                except Exception as error:  # a bug must not silently stop every job of the process
                    self.logger.error("job dispatcher error", worker=self.worker_id, error=repr(error))
                    self._stopping.wait(DATABASE_RETRY_SECONDS)
            self.drained = self._drain()
        finally:
            jobs.remove_local_wakeup(self._wakeup)
            if self._listener is not None:
                self._listener.stop()
            for _ in range(self.threads):
                self._handed_over.put(None)  # each job thread stops at its None

    def _dispatch_round(self):
        """One round: the bookkeeping that is due, a claim, then a wait until woken (a job
        was enqueued, a thread came free), the poll interval passed, or a renewal is due."""
        self._wakeup.clear()  # before the claim: a wake-up from now on is not lost
        self._renew_leases_when_due()
        if self._due("requeue", self.settings.job_lease_seconds / 2):
            self._housekeeping(jobs.requeue_expired, self.database, now=self.clock())
        if self._due("purge", PURGE_INTERVAL_SECONDS):
            self._housekeeping(jobs.purge_finished, self.database,
                               retention_seconds=self.settings.job_retention_seconds, now=self.clock())
            # Then the files of the exports purged with their jobs (and of superseded attempts).
            self._housekeeping(exports.sweep, self.database, self.settings.export_dir)
            self._housekeeping(events.purge_old, self.database,
                               retention_seconds=self.settings.event_retention_seconds, now=self.clock())
            self._housekeeping(webhooks.purge_deliveries, self.database,
                               retention_seconds=self.settings.job_retention_seconds, now=self.clock())
        free = self.threads - self.in_hand()
        claimed = self._claim(free) if free > 0 else []
        if claimed is None:  # the database did not answer
            self._stopping.wait(DATABASE_RETRY_SECONDS)
        elif free == 0 or len(claimed) < free:  # (every thread got a job: there may be more waiting)
            until_renewal = max(0.0, self._next["renew"] - time.monotonic())
            self._wakeup.wait(min(self.settings.worker_poll_seconds, until_renewal))

    def _due(self, task, interval_seconds):
        """Is `task` due? If so, it is next due `interval_seconds` from now."""
        now = time.monotonic()
        if now < self._next[task]:
            return False
        self._next[task] = now + interval_seconds
        return True

    def _claim(self, free):
        """Claim up to `free` jobs and hand them to the job threads; None when the database failed."""
        try:
            claimed = jobs.claim(self.database, self.worker_id, free, lease_seconds=self.settings.job_lease_seconds,
                                 now=self.clock())
        except db.DatabaseUnavailable as error:
            self.logger.warning("job claim failed", worker=self.worker_id, error=str(error))
            return None
        with self._in_hand_lock:
            self._in_hand.update((job.id, job) for job in claimed)
        for job in claimed:
            self._handed_over.put(job)
        return claimed

    def _drain(self):
        """Stopping: wait for the jobs in hand, renewing their leases, until the deadline."""
        deadline = time.monotonic() + SHUTDOWN_DEADLINE_SECONDS
        while self.in_hand() and time.monotonic() < deadline:
            self._wakeup.clear()
            self._renew_leases_when_due()
            if self.in_hand():
                self._wakeup.wait(min(1.0, max(0.0, deadline - time.monotonic())))
        return self.in_hand() == 0

    def _renew_leases_when_due(self):
        """Every third of the lease: two renewals may fail (the database is slow) before it ends."""
        if self._due("renew", self.settings.job_lease_seconds / 3) and self.in_hand():
            self._housekeeping(jobs.renew, self.database, self.worker_id,
                               lease_seconds=self.settings.job_lease_seconds, now=self.clock())

    def _housekeeping(self, task, *args, **kwargs):
        """Run a bookkeeping task; a database that does not answer is logged, and tried again
        on the next round."""
        try:
            task(*args, **kwargs)
        except db.DatabaseUnavailable as error:
            self.logger.warning("job housekeeping failed", task=task.__name__, error=str(error))

    # -- the job threads ---------------------------------------------------------------------

    def _run_jobs(self):
        while (job := self._handed_over.get()) is not None:
            try:
                self._run(job)
            finally:
                with self._in_hand_lock:
                    self._in_hand.pop(job.id, None)
                self._wakeup.set()  # a thread is free: the dispatcher may claim again

    def _run(self, job):
        """Run one job, in its trace, and record its outcome; never raises.

        The job runs as a new span, child of the span that enqueued it; a job enqueued
        without a trace (by a release before migration 0013) gets a new one."""
        token = tracing.attach(tracing.continue_trace(job.traceparent, job.tracestate))
        try:
            self._run_traced(job)
        finally:
            tracing.detach(token)  # the next job on this thread has a trace of its own

    def _run_traced(self, job):
        started = time.perf_counter()
        handler = self.handlers.get(job.kind)
        try:
            if handler is None:
                # A newer release's kind, met by an older worker during a rolling deploy: a
                # failure with backoff lets a worker that knows it take it later.
                raise LookupError(f"no handler for job kind {job.kind!r} in this worker")
            handler(self.context, job)
        except Exception as error:
            self._report_failure(job, error, started)
            return
        try:
            recorded = jobs.complete(self.database, job, now=self.clock())
        except db.DatabaseUnavailable as error:
            # Done, but not recorded: the lease expires and the job runs again (idempotent).
            self.logger.warning("job done but not recorded", job_id=job.id, kind=job.kind, error=str(error))
            return
        self._log_outcome(job, "done" if recorded else "lease lost", started)

    def _report_failure(self, job, error, started):
        # The error's type and message, never its traceback's locals: the message may be shown
        # to an admin (GET /v1/jobs/{id}); the log line gets where it was raised, for us.
        text = f"{type(error).__name__}: {error}"
        where = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
        try:
            status = jobs.fail(self.database, job, text, backoff_base_seconds=self.settings.job_backoff_base_seconds,
                               backoff_cap_seconds=self.settings.job_backoff_cap_seconds, jitter=self.jitter,
                               now=self.clock())
        except db.DatabaseUnavailable:
            status = "failed, not recorded"
        self.logger.warning("job failed", job_id=job.id, kind=job.kind, attempt=job.attempts,
                            outcome=status or "lease lost",
                            error=text[:jobs.MAX_ERROR_CHARS],
                            at=[f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" for frame in where],
                            duration_ms=round((time.perf_counter() - started) * 1000, 2))

    def _log_outcome(self, job, outcome, started):
        self.logger.info("job", job_id=job.id, kind=job.kind, attempt=job.attempts, outcome=outcome,
                         duration_ms=round((time.perf_counter() - started) * 1000, 2))
