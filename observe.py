"""Structured logs: one JSON object per line on stdout, written off the request path.

Every request leaves one line, which any log shipper can parse without a regex:

    {"time": "2026-11-28T04:05:50.123Z", "level": "info", "event": "request",
     "request_id": "5f0c...", "method": "GET", "route": "/v1/items/{id:int}",
     "status": 200, "duration_ms": 0.41, "user_id": null, "client": "127.0.0.1"}

Every line written while a request is handled or a job runs also carries its trace id
(`"trace_id": "4bf92f35..."`, tracing.py): the logger reads it from the work in hand, so that
no caller has to pass it along, and one search finds a request, its jobs and their webhooks.

What is never logged: request bodies, query strings, headers such as Authorization or
Cookie, passwords, tokens and keys. The route is logged as its pattern, not the raw path.

Writing to stdout is a system call, and flushing one per request costs more than the
request itself on a fast endpoint. So `log()` formats the line and puts it on a queue, and
one writer thread writes whatever has queued up in one call. A crash loses at most the lines
still queued; `flush()` drains the queue at shutdown. The access log's line, one per request,
has a formatter of its own (`format_request`): the same JSON, from a template.

Libraries log through Python's `logging` module (psycopg_pool when PostgreSQL is out of
reach, the HTTP server when an application fails); `route_standard_logging` sends those
records through the same logger, so that every line is one JSON object on one stream:

    {"time": "...", "level": "warning", "event": "library", "logger": "psycopg.pool",
     "message": "error connecting in 'pool-1': connection refused"}
"""

import json
import logging
import os
import queue
import sys
import threading
import time
import traceback

import tracing

_STOP = object()
# This process's id, kept here rather than asked for each line (os.getpid() is a system call),
# and renewed in a child process after fork().
_process_id = os.getpid()


def _renew_process_id():
    global _process_id
    _process_id = os.getpid()


os.register_at_fork(after_in_child=_renew_process_id)
WRITE_INTERVAL_SECONDS = 0.05  # a line reaches stdout at most this long after it was logged
_RESERVED_FIELDS = frozenset(("time", "level", "event"))  # every line's own: see format_record
_encode = json.JSONEncoder(separators=(",", ":"), default=str, allow_nan=False).encode


class JSONLogger:
    """A thread-safe structured logger. `enabled=False` drops "info" records (errors stay)."""

    def __init__(self, stream=None, *, enabled=True):
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self._queue = queue.SimpleQueue()
        self._writer = None
        self._writer_pid = None
        self._start_lock = threading.Lock()
        self._flush_now = threading.Event()

    def info(self, event, **fields):
        if self.enabled:
            self._put("info", event, fields)

    def request(self, *, request_id, method, route, status, duration_ms, user_id, client):
        """The access log's line for one request: what info("request", ...) would write, made
        faster (format_request), since there is one per request."""
        if self.enabled:
            context = tracing.current()
            trace_id = context.trace_id if context is not None else None
            self._write(format_request(time.time(), request_id, method, route, status, duration_ms, user_id,
                                       client, trace_id))

    def warning(self, event, **fields):
        self._put("warning", event, fields)

    def error(self, event, **fields):
        self._put("error", event, fields)

    def flush(self, timeout=5.0):
        """Write every queued line and stop the writer thread (it restarts on the next record)."""
        writer = self._writer
        self._writer = None
        if writer is None or not writer.is_alive():
            return
        self._queue.put(_STOP)
        self._flush_now.set()
        writer.join(timeout)

    def _put(self, level, event, fields):
        context = tracing.current()
        if context is not None:
            fields.setdefault("trace_id", context.trace_id)
        # Formatted here, in the caller's thread, not by the writer: the writer then holds the
        # GIL only for a join and a write, never for formatting a burst of hundreds of lines,
        # which would stall every request thread for milliseconds (the p99 showed it).
        self._write(format_record(time.time(), level, event, fields))

    def _write(self, line):
        self._queue.put(line)
        # A process forked by gunicorn inherits the attribute but not the thread: start one.
        if self._writer_pid != _process_id or self._writer is None:
            self._start_writer()

    def _start_writer(self):
        with self._start_lock:
            if self._writer_pid == _process_id and self._writer is not None:
                return
            self._writer = threading.Thread(target=self._write_forever, name="json-log-writer", daemon=True)
            self._writer_pid = _process_id
            self._writer.start()

    def _write_forever(self):
        while True:
            # Wake on a timer rather than on every line: a wake-up per request would hand the
            # GIL back and forth with the request threads thousands of times a second.
            self._flush_now.wait(WRITE_INTERVAL_SECONDS)
            self._flush_now.clear()
            records = []
            while True:  # take whatever is waiting, to write it in one call
                try:
                    records.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(record is _STOP for record in records)
            lines = [record for record in records if record is not _STOP]
            if lines:
                try:
                    self.stream.write("".join(lines))
                    self.stream.flush()
                except (OSError, ValueError):
                    pass  # stdout closed: there is nowhere left to report it
            if stop:
                return


def route_standard_logging(logger, level=logging.WARNING):
    """Send records of Python's `logging` module at `level` and above to `logger` (a JSONLogger)
    instead of stderr's plain text. Replaces the handlers of the root logger; call it once."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(StandardLoggingBridge(logger))
    root.setLevel(level)


class StandardLoggingBridge(logging.Handler):
    """A `logging` handler that writes each record as one line of a JSONLogger."""

    def __init__(self, logger):
        super().__init__()
        self.json_logger = logger

    def emit(self, record):
        fields = {"logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            fields["traceback"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.levelno >= logging.ERROR:
            self.json_logger.error("library", **fields)
        elif record.levelno >= logging.WARNING:
            self.json_logger.warning("library", **fields)
        else:
            self.json_logger.info("library", **fields)


def format_record(timestamp, level, event, fields):
    """One JSON log line.

    >>> format_record(0.0, "info", "started", {"port": 8000})
    '{"time":"1970-01-01T00:00:00.000Z","level":"info","event":"started","port":8000}\\n'
    """
    record = {
        "time": _time_text(timestamp),
        "level": level,
        "event": event,
    }
    if _RESERVED_FIELDS.isdisjoint(fields):
        record.update(fields)
    else:  # a field never overwrites time, level or event
        record.update((name, value) for name, value in fields.items() if name not in _RESERVED_FIELDS)
    try:
        return _encode(record) + "\n"
    except (TypeError, ValueError):
        # A field JSON cannot hold (NaN, a dict with tuple keys): keep the line, as text.
        fallback = {name: record[name] for name in ("time", "level", "event")}
        fallback["unencodable_fields"] = repr(fields)
        return json.dumps(fallback, separators=(",", ":")) + "\n"


def format_request(timestamp, request_id, method, route, status, duration_ms, user_id, client, trace_id):
    """The access log's line: exactly what format_record writes for the "request" event,
    written from a template. json's encoder sets itself up anew on every call (about 1 µs)
    before it walks the dict; here only the strings go through it, each on its own, for
    json's escaping (a str alone takes its quick path). At one line per request, this was a
    tenth of the cost of a cached GET. What the access log passes, it takes: status an int,
    duration_ms a float (of perf_counter's, so never NaN), user_id an int or None.

    >>> line = format_request(0.0, "abc", "GET", "/v1/items", 200, 0.5, None, "127.0.0.1", None)
    >>> line == format_record(0.0, "info", "request", {"request_id": "abc", "method": "GET", "route": "/v1/items",
    ...     "status": 200, "duration_ms": 0.5, "user_id": None, "client": "127.0.0.1"})
    True
    """
    trace = "" if trace_id is None else f',"trace_id":{_encode(trace_id)}'
    return (f'{{"time":"{_time_text(timestamp)}","level":"info","event":"request",'
            f'"request_id":{_json(request_id)},"method":{_encode(method)},"route":{_json(route)},'
            f'"status":{int(status)},"duration_ms":{float(duration_ms)!r},"user_id":{_json(user_id)},'
            f'"client":{_encode(client)}{trace}}}\n')


def _json(value):
    """A str, an int or None as JSON: "text" (escaped by json), 42 or null."""
    if value is None:
        return "null"
    return str(value) if type(value) is int else _encode(value)


def _time_text(timestamp):
    """'2026-11-28T04:05:50.123Z' for a Unix time: UTC, to the millisecond."""
    seconds = int(timestamp)
    return f"{_utc_second(seconds)}.{int((timestamp - seconds) * 1000):03d}Z"


_second_cache = (None, "")


def _utc_second(seconds):
    """'2026-11-28T04:05:50' for a Unix time, formatted once per second, not once per line."""
    global _second_cache
    cached_seconds, text = _second_cache
    if cached_seconds != seconds:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second_cache = (seconds, text)  # one tuple assignment: atomic, no lock needed
    return text
