"""The job queue measured: enqueue-to-start latency and no-op jobs per second.

    python bench/job_queue.py sqlite            (or postgresql, with PostgreSQL on 127.0.0.1:5432)

For 1 and 4 worker threads, in a `python server.py worker` process of its own (as under
gunicorn) and, on SQLite, in this process too (as in `python server.py`, woken directly):

- latency: LATENCY_JOBS jobs enqueued one at a time, GAP_SECONDS apart, each in its own
  transaction; from each job's created_at to its started_at, both written by the database's
  clients on this machine. p50 and p99.
- throughput: THROUGHPUT_JOBS no-op jobs enqueued before the worker starts; from the first
  start to the last finish, as the jobs table records them.

Every number comes from the jobs table itself, so the measurement adds nothing to the path.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

import config  # noqa: E402  (after the path is set)
import db  # noqa: E402
import jobs  # noqa: E402
import migrate  # noqa: E402
from observe import JSONLogger  # noqa: E402
from worker import Worker  # noqa: E402

LATENCY_JOBS = 300
GAP_SECONDS = 0.01
THROUGHPUT_JOBS = 5000
POSTGRES_URL = os.environ.get("PG", "postgresql://postgres@127.0.0.1:5432/test")
SECRET_KEY = "bench-secret-key-that-is-at-least-32-bytes-long"  # noqa: S105 - a throwaway database


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("engine", choices=["sqlite", "postgresql"])
    parser.add_argument("--poll-seconds", default="1", help="WORKER_POLL_SECONDS of the worker process")
    arguments = parser.parse_args()
    engine, poll = arguments.engine, arguments.poll_seconds
    for threads in (1, 4):
        places = ["process"] + (["in-process"] if engine == "sqlite" else [])
        for place in places:
            with fresh_database(engine) as (url, database):
                p50, p99 = latency(url, database, threads, place, poll)
            with fresh_database(engine) as (url, database):
                rate = throughput(url, database, threads, place, poll)
            print(f"{engine:10} {threads} thread(s) {place:10}  enqueue-to-start p50 {p50 * 1000:7.1f} ms"
                  f"  p99 {p99 * 1000:7.1f} ms   no-op jobs/s {rate:7.0f}", flush=True)


class fresh_database:
    """A migrated, empty database: a temporary SQLite file or a PostgreSQL schema."""

    def __init__(self, engine):
        self.engine = engine

    def __enter__(self):
        if self.engine == "sqlite":
            self.directory = tempfile.TemporaryDirectory()
            self.url = f"sqlite:///{self.directory.name}/bench.db"
        else:
            import psycopg

            self.schema = "bench_" + uuid.uuid4().hex[:10]
            with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
                admin.execute(f"CREATE SCHEMA {self.schema}")
            self.url = f"{POSTGRES_URL}?options=-csearch_path%3D{self.schema}"
        self.database = db.open_database(self.url)
        migrate.migrate(self.database)
        return self.url, self.database

    def __exit__(self, *exc_info):
        self.database.close()
        if self.engine == "sqlite":
            self.directory.cleanup()
        else:
            import psycopg

            with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
                admin.execute(f"DROP SCHEMA {self.schema} CASCADE")


class running:
    """A worker with `threads` threads, in another process or in this one."""

    def __init__(self, url, database, threads, place, poll):
        self.url, self.database, self.threads, self.place, self.poll = url, database, threads, place, poll

    def __enter__(self):
        env = dict(os.environ, DATABASE_URL=self.url, SECRET_KEY=SECRET_KEY, APP_ENV="test", ACCESS_LOG="0",
                   WORKER_THREADS=str(self.threads), WORKER_POLL_SECONDS=self.poll)
        if self.place == "in-process":
            settings = config.load_settings(env)
            self.worker = Worker(self.database, settings, JSONLogger(enabled=False), threads=self.threads)
            self.worker.start()
            return self
        self.process = subprocess.Popen([sys.executable, "server.py", "worker"], cwd=PROJECT_DIR, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.process.stderr.readline()  # "Running jobs with ...": it is claiming now
        time.sleep(0.5)
        return self

    def __exit__(self, *exc_info):
        if self.place == "in-process":
            self.worker.request_stop()
            self.worker.join(30)
        else:
            self.process.terminate()
            self.process.wait(30)


def latency(url, database, threads, place, poll):
    with running(url, database, threads, place, poll):
        for _ in range(LATENCY_JOBS):
            with database.transaction() as connection:
                jobs.enqueue(connection, "noop", {})
            time.sleep(GAP_SECONDS)
        wait_until_done(database, LATENCY_JOBS)
    with database.connection() as connection:
        rows = connection.fetch_all("SELECT created_at, started_at FROM jobs")
    waits = sorted(seconds_between(row["created_at"], row["started_at"]) for row in rows)
    return statistics.median(waits), waits[int(len(waits) * 0.99) - 1]


def throughput(url, database, threads, place, poll):
    for _ in range(THROUGHPUT_JOBS // 500):
        with database.transaction() as connection:
            for _ in range(500):
                jobs.enqueue(connection, "noop", {})
    with running(url, database, threads, place, poll):
        wait_until_done(database, THROUGHPUT_JOBS)
    with database.connection() as connection:
        span = connection.fetch_one("SELECT min(started_at) AS first, max(finished_at) AS last FROM jobs")
    return THROUGHPUT_JOBS / seconds_between(span["first"], span["last"])


def wait_until_done(database, count):
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with database.connection() as connection:
            if connection.fetch_value("SELECT count(*) FROM jobs WHERE status = 'done'") >= count:
                return
        time.sleep(0.05)
    raise SystemExit("the jobs did not finish within 300 s")


def seconds_between(earlier, later):
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


if __name__ == "__main__":
    main()
