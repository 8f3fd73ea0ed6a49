"""Metrics: what the server has done, counted cheaply, and shown to Prometheus at GET /metrics.

Prometheus asks every 15 s or so (a "scrape") and reads plain text, the text exposition
format, version 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/):

    # HELP http_requests_total Requests answered, by method, route pattern and status.
    # TYPE http_requests_total counter
    http_requests_total{method="GET",route="/v1/items/{id:int}",status="200"} 1027
    # TYPE http_request_duration_seconds histogram
    http_request_duration_seconds_bucket{method="GET",route="/v1/items/{id:int}",le="0.001"} 998
    http_request_duration_seconds_bucket{method="GET",route="/v1/items/{id:int}",le="+Inf"} 1027
    http_request_duration_seconds_sum{method="GET",route="/v1/items/{id:int}"} 0.61
    http_request_duration_seconds_count{method="GET",route="/v1/items/{id:int}"} 1027

A counter only goes up: Prometheus turns it into a rate (`rate(http_requests_total[5m])`).
A histogram counts observations per bucket, cumulatively (`le`: less than or equal), so
that buckets of many processes add up, and quantiles are estimated from the sum.

Cardinality: every distinct set of labels is a series Prometheus keeps, so labels take their
values from bounded sets only: the route's *pattern*, never the raw path (which a client
chooses), NO_ROUTE for a path without a route, the method among the standard ones (else
"other"), the status, a rate-limit policy, a job kind of our code.

The request path pays little: `request_started` and `request_finished` take one lock,
uncontended, for a few dict and int operations each (README, "Metrics", has the figures).
What the database or the operating system knows (jobs, the pool, memory) is read at scrape
time, not counted on the way.

Many processes (gunicorn --workers N, and `python server.py worker`): each counts in its own
memory. With METRICS_DIR set, each also writes what it has counted, every
FLUSH_INTERVAL_SECONDS, to METRICS_DIR/<pid>-<random>.json (a temporary file renamed into
place: a reader never sees half a file), and a scrape, whichever process answers it, adds up
every file of the directory (the idea of prometheus_client's multiprocess mode, written here):

    counters, histograms   summed over every file, the files of exited processes included:
                           a worker that exits (gunicorn --max-requests) must not make the
                           server's totals go down, which Prometheus would take for a reset
    gauges                 summed over the live processes only: those whose file was written
                           within GAUGE_FRESH_SECONDS (a dead worker has no request in flight)
    process_*              one series per live process, labelled by its pid

The random part of a file's name keeps a new process that reuses an old pid from
overwriting the old one's counts. Every process ever started leaves a file: empty the
directory when the whole server is redeployed, and keep worker restarts rare (gunicorn's
--max-requests makes one per restart), since a scrape reads the newest MAX_FILES only.
"""

import bisect
import json
import os
import resource
import threading
import time
from pathlib import Path

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds. Most requests here take well under a millisecond, so the buckets start low.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
NO_ROUTE = "(none)"  # the route label of a request whose path matched no route (a 404)
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
FLUSH_INTERVAL_SECONDS = 1.0  # how stale another process's counts may be in a scrape
GAUGE_FRESH_SECONDS = 5 * FLUSH_INTERVAL_SECONDS  # a file older than this is a dead process's
# Read by one scrape, the newest first: a directory never emptied cannot make scrapes slow. A
# process's file holds a few kilobytes (its series are bounded), so a larger one is not ours.
MAX_FILES = 1024
MAX_FILE_BYTES = 1024 * 1024

# The counters beside the requests, by family: (label names, help). `Recorder.count` adds one.
EVENT_COUNTERS = {
    "rate_limit_refusals_total": (("policy",), "Requests refused with a 429, by rate-limit policy."),
    "cache_requests_total": (("cache", "result"), "Reads through a cache, by cache and result (hit, miss)."),
    "webhook_deliveries_total": (("outcome",), "Webhook delivery attempts: delivered (2xx), rejected"
                                               " (another status), failed (no answer)."),
    "http_loop_moves_total": ((), "Times the event loop moved to its standby thread: a request it ran"
                                  " itself took longer than its budget (httpthreads.py)."),
}
# Gauges a process reports about itself at each flush (db.*Database.pool_stats), summed over processes.
GAUGE_HELP = {
    "db_pool_connections_in_use": "PostgreSQL connections lent out by the pools.",
    "db_pool_connections_idle": "PostgreSQL connections waiting in the pools.",
    "db_pool_connections_max": "The most connections the pools may open.",
    "db_pool_requests_waiting": "Threads waiting for a PostgreSQL connection.",
    "db_sqlite_connections": "SQLite connections open (one per thread that used the database).",
    "db_sqlite_write_lock_held": "Processes whose SQLite write lock is taken right now (one writer each).",
}


class Recorder:
    """The counts of one process. One per process (RECORDER below), like its log: every app
    of the process counts into it, and the jobs of its worker threads too."""

    def __init__(self):
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one writer of this process's file at a time
        self._reset()
        self.directory = None
        self.pool_stats = None  # a function answering {gauge name: value}, or None
        self._flusher = None

    def request_started(self):
        """One more request in flight; returns its start, for `request_finished`."""
        with self._lock:
            self._in_flight += 1
        return time.perf_counter()

    def request_finished(self, method, route, status, started):
        """Count one answered request; `route` is its pattern, or None when no route matched."""
        seconds = time.perf_counter() - started
        if method not in KNOWN_METHODS:
            method = "other"  # a client may send any token as a method: never a new series
        route = route or NO_ROUTE
        slot = bisect.bisect_left(DURATION_BUCKETS, seconds)  # the first bucket whose `le` holds it
        with self._lock:
            self._in_flight -= 1
            key = (method, route, status)
            self._requests[key] = self._requests.get(key, 0) + 1
            histogram = self._durations.get((method, route))
            if histogram is None:  # buckets (the last one +Inf), then the sum of the seconds
                histogram = self._durations[(method, route)] = [0] * (len(DURATION_BUCKETS) + 1) + [0.0]
            histogram[slot] += 1
            histogram[-1] += seconds

    def count(self, family, *labels):
        """Add one to a counter of EVENT_COUNTERS: count("cache_requests_total", "catalogue", "hit")."""
        key = (family, labels)
        with self._lock:
            self._events[key] = self._events.get(key, 0) + 1

    def snapshot(self):
        """This process's counts and gauges, as JSON-ready lists."""
        with self._lock:
            requests = [[*key, count] for key, count in self._requests.items()]
            durations = [[method, route, histogram[:-1], histogram[-1]]
                         for (method, route), histogram in self._durations.items()]
            events = [[family, list(labels), count] for (family, labels), count in self._events.items()]
            in_flight = self._in_flight
        gauges = {"http_requests_in_flight": in_flight}
        if self.pool_stats is not None:
            gauges.update(self.pool_stats())
        return {"pid": os.getpid(), "requests": requests, "durations": durations, "events": events,
                "gauges": gauges, "process": process_stats()}

    def share_in(self, directory):
        """Write this process's counts to `directory` from now on, every FLUSH_INTERVAL_SECONDS,
        for the scrapes of every process sharing it (METRICS_DIR)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._start_flusher()

    def totals(self):
        """Every count of the server: this process's, plus the files of the others when the
        counts are shared. A `Totals`."""
        totals = Totals()
        totals.add(self.snapshot(), live=True)
        if self.directory is None:
            return totals
        try:
            self.flush()  # the next scrape, perhaps answered by another process, sees these counts
        except OSError:
            pass
        for snapshot, modified in _read_files(self.directory, skip=self._file_path):
            totals.add(snapshot, live=time.time() - modified <= GAUGE_FRESH_SECONDS)
        return totals

    def flush(self):
        """Write the snapshot to this process's file: a temporary file, then an atomic rename."""
        if self.directory is None:
            return
        with self._flush_lock:
            if self._file_path is None:
                self._file_path = self.directory / f"{os.getpid()}-{os.urandom(4).hex()}.json"
            temporary = self._file_path.with_suffix(".tmp")
            temporary.write_text(json.dumps(self.snapshot(), separators=(",", ":")))
            os.replace(temporary, self._file_path)

    def _reset(self):
        self._in_flight = 0
        self._requests = {}   # (method, route, status) -> count
        self._durations = {}  # (method, route) -> [count per bucket..., +Inf, sum of seconds]
        self._events = {}     # (family, label values) -> count
        self._file_path = None

    def _after_fork(self):
        # A forked child (gunicorn --preload) starts with no counts and a file of its own; the
        # parent's counts stay in the parent's file. Its flusher thread did not survive the fork.
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._reset()
        self._flusher = None
        if self.directory is not None:
            self._start_flusher()

    def _start_flusher(self):
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_forever, name="metrics-flusher", daemon=True)
            self._flusher.start()

    def _flush_forever(self):
        while True:
            try:
                self.flush()
            except OSError:
                pass  # a full disk or a removed directory: the scrapes then miss this process, and say nothing
            time.sleep(FLUSH_INTERVAL_SECONDS)


class Totals:
    """Counts and gauges added up over snapshots (of processes), ready to be rendered."""

    def __init__(self):
        self.requests = {}
        self.durations = {}
        self.events = {}
        self.gauges = dict.fromkeys(["http_requests_in_flight"], 0)
        self.processes = {}  # pid -> process_stats()

    def add(self, snapshot, *, live):
        for method, route, status, count in snapshot["requests"]:
            key = (method, route, status)
            self.requests[key] = self.requests.get(key, 0) + count
        for method, route, buckets, seconds in snapshot["durations"]:
            if len(buckets) != len(DURATION_BUCKETS) + 1:
                continue  # written with other buckets (another release): cannot be added up
            histogram = self.durations.setdefault((method, route), [0] * len(buckets) + [0.0])
            for slot, count in enumerate(buckets):
                histogram[slot] += count
            histogram[-1] += seconds
        for family, labels, count in snapshot["events"]:
            if family in EVENT_COUNTERS:
                key = (family, tuple(labels))
                self.events[key] = self.events.get(key, 0) + count
        if live:
            for name, value in snapshot["gauges"].items():
                self.gauges[name] = self.gauges.get(name, 0) + value
            self.processes[snapshot["pid"]] = snapshot["process"]


def render(totals, extra_families=()):
    """The text exposition of `totals`, then of `extra_families` ((name, type, help, samples),
    samples as (labels dict, value)), as bytes."""
    lines = []
    family(lines, "http_requests_total", "counter", "Requests answered, by method, route pattern and status.",
           [({"method": method, "route": route, "status": status}, count)
            for (method, route, status), count in sorted(totals.requests.items())])
    lines.append("# HELP http_request_duration_seconds Time to answer, from the first middleware to the last.")
    lines.append("# TYPE http_request_duration_seconds histogram")
    for (method, route), histogram in sorted(totals.durations.items()):
        labels = {"method": method, "route": route}
        cumulative = 0
        for bound, count in zip([*DURATION_BUCKETS, "+Inf"], histogram[:-1], strict=True):
            cumulative += count
            le = bound if isinstance(bound, str) else repr(bound)
            lines.append(f"http_request_duration_seconds_bucket{_labels({**labels, 'le': le})} {cumulative}")
        lines.append(f"http_request_duration_seconds_sum{_labels(labels)} {_number(histogram[-1])}")
        lines.append(f"http_request_duration_seconds_count{_labels(labels)} {cumulative}")
    for name, (label_names, help_text) in EVENT_COUNTERS.items():
        samples = [(dict(zip(label_names, labels, strict=True)), count)
                   for (event, labels), count in sorted(totals.events.items()) if event == name]
        if not label_names and not samples:
            samples = [({}, 0)]  # a counter without labels has a value from the start: 0
        family(lines, name, "counter", help_text, samples)
    family(lines, "http_requests_in_flight", "gauge", "Requests being answered right now.",
           [({}, totals.gauges["http_requests_in_flight"])])
    for name, help_text in GAUGE_HELP.items():
        if name in totals.gauges:
            family(lines, name, "gauge", help_text, [({}, totals.gauges[name])])
    for name, kind, help_text, key in PROCESS_FAMILIES:
        family(lines, name, kind, help_text,
               [({"pid": str(pid)}, stats[key]) for pid, stats in sorted(totals.processes.items())
                if stats.get(key) is not None])
    for name, kind, help_text, samples in extra_families:
        family(lines, name, kind, help_text, samples)
    return ("\n".join(lines) + "\n").encode()


def family(lines, name, kind, help_text, samples):
    """Append one metric family: its HELP and TYPE lines, then a line per sample."""
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    lines.extend(f"{name}{_labels(labels)} {_number(value)}" for labels, value in samples)


PROCESS_FAMILIES = [
    ("process_resident_memory_bytes", "gauge", "Resident memory, by process.", "resident_memory_bytes"),
    ("process_cpu_seconds_total", "counter", "CPU time used, user and system, by process.", "cpu_seconds"),
    ("process_open_fds", "gauge", "Open file descriptors, by process.", "open_fds"),
    ("process_start_time_seconds", "gauge", "When the process started, in Unix seconds.", "start_time_seconds"),
]


def process_stats():
    """This process's memory, CPU time, open files and start time: /proc/self on Linux; elsewhere
    what `resource` and `os.times` know (the peak resident memory; no count of open files)."""
    times = os.times()
    stats = {"cpu_seconds": times.user + times.system, "start_time_seconds": _START_TIME,
             "resident_memory_bytes": None, "open_fds": None}
    try:
        with open("/proc/self/statm") as statm:  # sizes in pages: total, resident, ...
            stats["resident_memory_bytes"] = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        stats["open_fds"] = len(os.listdir("/proc/self/fd"))
    except OSError:
        # ru_maxrss is the peak, not the current size: kibibytes on Linux, bytes on macOS.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        stats["resident_memory_bytes"] = peak if os.uname().sysname == "Darwin" else peak * 1024
    return stats


def _process_start_time():
    """The Unix time this process started: /proc/self/stat's start (in clock ticks after boot)
    plus /proc/stat's boot time; elsewhere, the time this module was imported."""
    try:
        with open("/proc/self/stat") as stat:
            # Field 22 counted from the end of the command name, which may hold spaces and ")".
            ticks = int(stat.read().rpartition(")")[2].split()[19])
        with open("/proc/stat") as system:
            boot = next(int(line.split()[1]) for line in system if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def _read_files(directory, *, skip):
    """(snapshot, modified time) of the newest MAX_FILES files of `directory` but `skip`;
    a file that vanished, is too large or is not a snapshot is passed over."""
    found = []
    for path in directory.glob("*.json"):
        try:
            found.append((path.stat().st_mtime, path))
        except OSError:
            continue
    found.sort(reverse=True)
    for modified, path in found[:MAX_FILES]:
        if path == skip:
            continue
        try:
            with open(path, "rb") as snapshot_file:
                raw = snapshot_file.read(MAX_FILE_BYTES + 1)
            snapshot = json.loads(raw) if len(raw) <= MAX_FILE_BYTES else None
            if isinstance(snapshot, dict) and {"requests", "durations", "events", "gauges"} <= snapshot.keys():
                yield snapshot, modified
        except (OSError, ValueError):
            continue


def _labels(labels):
    """'{a="1",b="x"}', each value escaped; '' when there is none."""
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items()) + "}"


def _escape(value):
    r"""A label value as the format quotes it: backslash, double quote and newline escaped.

    >>> print(_escape('C:\\dir "x"'))
    C:\\dir \"x\"
    """
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value):
    """An int as is; a float as Python writes it (the format takes Go's and Python's)."""
    return str(value) if isinstance(value, int) else repr(float(value))


_START_TIME = _process_start_time()
RECORDER = Recorder()
os.register_at_fork(after_in_child=RECORDER._after_fork)
