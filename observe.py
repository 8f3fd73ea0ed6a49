"""Structured logs: one JSON object per line on stdout, written off the request path.

Every request leaves one line, which any log shipper can parse without a regex:

    {"time": "2026-11-28T04:05:50.123Z", "level": "info", "event": "request",
     "request_id": "5f0c...", "method": "GET", "route": "/v1/items/{id:int}",
     "status": 200, "duration_ms": 0.41, "user_id": null, "client": "127.0.0.1"}

What is never logged: request bodies, query strings, headers such as Authorization or
Cookie, passwords, tokens and keys. The route is logged as its pattern, not the raw path.

Writing to stdout is a system call, and flushing one per request costs more than the
request itself on a fast endpoint. So `log()` only puts the record on a queue (a few
hundred nanoseconds), and one writer thread formats whatever has queued up and writes it
in one call. A crash loses at most the lines still queued; `flush()` drains the queue at
shutdown.
"""

import json
import os
import queue
import sys
import threading
import time

_STOP = object()


class JSONLogger:
    """A thread-safe structured logger. `enabled=False` drops "info" records (errors stay)."""

    def __init__(self, stream=None, *, enabled=True):
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self._queue = queue.SimpleQueue()
        self._writer = None
        self._writer_pid = None
        self._start_lock = threading.Lock()

    def info(self, event, **fields):
        if self.enabled:
            self._put("info", event, fields)

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
        writer.join(timeout)

    def _put(self, level, event, fields):
        # time.time() now, not when the writer gets to it: the line says when it happened.
        self._queue.put((time.time(), level, event, fields))
        # A process forked by gunicorn inherits the attribute but not the thread: start one.
        if self._writer_pid != os.getpid() or self._writer is None:
            self._start_writer()

    def _start_writer(self):
        with self._start_lock:
            if self._writer_pid == os.getpid() and self._writer is not None:
                return
            self._writer = threading.Thread(target=self._write_forever, name="json-log-writer", daemon=True)
            self._writer_pid = os.getpid()
            self._writer.start()

    def _write_forever(self):
        while True:
            records = [self._queue.get()]
            while True:  # take whatever else is waiting, to write it in one call
                try:
                    records.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(record is _STOP for record in records)
            lines = [format_record(*record) for record in records if record is not _STOP]
            if lines:
                try:
                    self.stream.write("".join(lines))
                    self.stream.flush()
                except (OSError, ValueError):
                    pass  # stdout closed: there is nowhere left to report it
            if stop:
                return


def format_record(timestamp, level, event, fields):
    """One JSON log line.

    >>> format_record(0.0, "info", "started", {"port": 8000})
    '{"time":"1970-01-01T00:00:00.000Z","level":"info","event":"started","port":8000}\\n'
    """
    seconds = int(timestamp)
    milliseconds = int((timestamp - seconds) * 1000)
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{milliseconds:03d}Z",
        "level": level,
        "event": event,
    }
    for name, value in fields.items():
        record.setdefault(name, value)  # a field never overwrites time, level or event
    try:
        return json.dumps(record, separators=(",", ":"), default=str, allow_nan=False) + "\n"
    except (TypeError, ValueError):
        # A field JSON cannot hold (NaN, a dict with tuple keys): keep the line, as text.
        fallback = {name: record[name] for name in ("time", "level", "event")}
        fallback["unencodable_fields"] = repr(fields)
        return json.dumps(fallback, separators=(",", ":")) + "\n"
