#!/usr/bin/env bash
# The job queue against Celery, on the same machine in the same run.
#
#   bash bench/jobs.sh sqlite            (or: postgresql, with PostgreSQL on 127.0.0.1:5432)
#
# First this project's queue (bench/job_queue.py: enqueue-to-start p50/p99 and no-op jobs
# per second, 1 and 4 worker threads), then Celery 5 with a Redis broker running the same
# no-op task the same way: 300 tasks 10 ms apart for the latency (each task records
# time.time() minus the time it was sent), then 5,000 tasks waiting when the worker starts
# (a first and a last task stamp the span). Celery is installed into a temporary venv, which
# is removed at the end with everything else; its queue and keys live in Redis database 15
# under a name of this run's own, deleted at the end. Needs Redis at 127.0.0.1:6379 (REDIS).
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE="${1:-sqlite}"
PYTHON="${PYTHON:-python3}"
REDIS="${REDIS:-redis://127.0.0.1:6379/15}"
CELERY_VERSION="${CELERY_VERSION:-5.7.0}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
case $ENGINE in
  sqlite|postgresql) ;;
  *) echo "usage: $0 sqlite|postgresql" >&2; exit 2 ;;
esac

echo "== this project's queue ($ENGINE)"
"$PYTHON" bench/job_queue.py "$ENGINE"

echo "== Celery $CELERY_VERSION, Redis broker"
"$PYTHON" -m venv "$work/celery"
"$work/celery/bin/pip" install --quiet --disable-pip-version-check "celery[redis]==$CELERY_VERSION"

cat >"$work/tasks.py" <<'PY'
import os
import time

import redis
from celery import Celery

BROKER = os.environ["BROKER"]
app = Celery("bench", broker=BROKER)
app.conf.task_ignore_result = True
app.conf.task_default_queue = os.environ["QUEUE"]
store = redis.Redis.from_url(BROKER)
PREFIX = os.environ["QUEUE"] + ":"


@app.task
def noop():
    pass


@app.task
def stamp(sent):
    store.rpush(PREFIX + "latency", time.time() - sent)


@app.task
def first():
    store.set(PREFIX + "first", time.time())


@app.task
def last():
    store.set(PREFIX + "last", time.time())
PY

cat >"$work/drive.py" <<'PY'
import os
import statistics
import subprocess
import sys
import time

import tasks

TASKS, LATENCY_TASKS, GAP_SECONDS = 5000, 300, 0.01
store, prefix, queue = tasks.store, tasks.PREFIX, os.environ["QUEUE"]
celery = os.path.join(os.path.dirname(sys.executable), "celery")


def start_worker(pool, concurrency):
    command = [celery, "-A", "tasks", "worker", f"--pool={pool}", f"--concurrency={concurrency}",
               "--loglevel=WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_worker(worker):
    worker.terminate()
    worker.wait(30)


def wait_for(predicate):
    deadline = time.monotonic() + 300
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("Celery did not finish within 300 s")
        time.sleep(0.01)


def clean():
    store.delete(prefix + "latency", prefix + "first", prefix + "last", queue)


for pool, concurrency in [("threads", 1), ("threads", 4), ("prefork", 4)]:
    clean()
    worker = start_worker(pool, concurrency)
    time.sleep(3)  # started and listening
    for _ in range(LATENCY_TASKS):
        tasks.stamp.delay(time.time())
        time.sleep(GAP_SECONDS)
    wait_for(lambda: store.llen(prefix + "latency") >= LATENCY_TASKS)
    waits = sorted(float(wait) for wait in store.lrange(prefix + "latency", 0, -1))
    stop_worker(worker)
    clean()
    tasks.first.delay()
    for _ in range(TASKS):
        tasks.noop.delay()
    tasks.last.delay()
    worker = start_worker(pool, concurrency)
    wait_for(lambda: store.get(prefix + "last"))
    rate = TASKS / (float(store.get(prefix + "last")) - float(store.get(prefix + "first")))
    stop_worker(worker)
    p50, p99 = statistics.median(waits), waits[int(len(waits) * 0.99) - 1]
    print(f"celery     {concurrency} thread(s) {pool:10}  enqueue-to-start p50 {p50 * 1000:7.1f} ms"
          f"  p99 {p99 * 1000:7.1f} ms   no-op jobs/s {rate:7.0f}", flush=True)
clean()
PY

(cd "$work" && BROKER="$REDIS" QUEUE="shop-bench-$$-$RANDOM" "$work/celery/bin/python" drive.py)
