"""Tests for observe.py: one JSON object per line, written by a background thread.

The logger writes asynchronously, so every test calls `flush()` (which drains the queue and
stops the writer) before it reads the StringIO the logger writes into.
"""

import io
import json
import logging
import re
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tracing
from observe import JSONLogger, format_record, format_request, route_standard_logging

TIME_FORMAT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def written_lines(logger, stream):
    """Flush the logger and parse every line it wrote."""
    logger.flush()
    text = stream.getvalue()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


# -- format_record -----------------------------------------------------------------------------

@pytest.mark.parametrize("timestamp, time_text", [
    (0.0, "1970-01-01T00:00:00.000Z"),
    (1_700_000_000.25, "2023-11-14T22:13:20.250Z"),
    (1_795_838_750.5, "2026-11-28T04:05:50.500Z"),
])
def test_format_record_is_one_json_line_with_time_level_event_and_fields(timestamp, time_text):
    line = format_record(timestamp, "info", "request", {"status": 200, "route": "/v1/items/{id:int}"})
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {
        "time": time_text, "level": "info", "event": "request", "status": 200, "route": "/v1/items/{id:int}",
    }
    assert list(json.loads(line))[:3] == ["time", "level", "event"]


@pytest.mark.parametrize("fields, expected", [
    ({"detail": "line one\nline two"}, {"detail": "line one\nline two"}),
    ({"name": "Thé ☕ 茶"}, {"name": "Thé ☕ 茶"}),
    ({"user_id": None, "ok": True}, {"user_id": None, "ok": True}),
    ({"path": io}, {"path": str(io)}),  # not JSON-able: written with str()
    ({"ids": (1, 2)}, {"ids": [1, 2]}),
])
def test_format_record_keeps_any_field_on_one_line(fields, expected):
    line = format_record(0.0, "error", "event", fields)
    assert line.count("\n") == 1
    record = json.loads(line)
    assert {name: record[name] for name in expected} == expected


# format_request writes the access log's line from a template: it must be, byte for byte, what
# format_record writes for the same fields, whatever the strings hold (quotes, backslashes,
# line breaks, control characters, non-ASCII).
@given(timestamp=st.floats(min_value=0, max_value=4e9), request_id=st.text(), method=st.text(min_size=1),
       route=st.none() | st.text(), status=st.integers(100, 599),
       duration_ms=st.floats(min_value=0, max_value=1e7), user_id=st.none() | st.integers(1, 2**63),
       client=st.text(), trace_id=st.none() | st.text(min_size=1))
def test_the_access_log_line_is_what_format_record_writes(timestamp, request_id, method, route, status,
                                                          duration_ms, user_id, client, trace_id):
    fields = {"request_id": request_id, "method": method, "route": route, "status": status,
              "duration_ms": duration_ms, "user_id": user_id, "client": client}
    if trace_id is not None:
        fields["trace_id"] = trace_id
    line = format_request(timestamp, request_id, method, route, status, duration_ms, user_id, client, trace_id)
    assert line == format_record(timestamp, "info", "request", fields)
    assert line.count("\n") == 1 and json.loads(line)["client"] == client


def test_the_access_log_line_carries_the_trace_of_the_request(logger, log_stream):
    token = tracing.attach(tracing.TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"))
    try:
        logger.request(request_id="abc", method="GET", route="/health", status=200, duration_ms=0.25,
                       user_id=None, client="127.0.0.1")
    finally:
        tracing.detach(token)
    logger.request(request_id="def", method="GET", route=None, status=404, duration_ms=0.5, user_id=7, client="")
    first, second = written_lines(logger, log_stream)
    assert first["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and first["event"] == "request"
    assert "trace_id" not in second and second["user_id"] == 7 and second["route"] is None


def test_a_disabled_logger_writes_no_access_log_line(log_stream):
    logger = JSONLogger(log_stream, enabled=False)
    logger.request(request_id="abc", method="GET", route="/health", status=200, duration_ms=0.25,
                   user_id=None, client="127.0.0.1")
    assert written_lines(logger, log_stream) == []


# -- JSONLogger --------------------------------------------------------------------------------

def test_lines_are_written_in_order_with_their_levels(logger, log_stream):
    logger.info("started", port=8000)
    logger.warning("slow", duration_ms=1500.5)
    logger.error("failed", request_id="abc-123")
    lines = written_lines(logger, log_stream)
    assert [(line["level"], line["event"]) for line in lines] == [
        ("info", "started"), ("warning", "slow"), ("error", "failed"),
    ]
    assert (lines[0]["port"], lines[1]["duration_ms"], lines[2]["request_id"]) == (8000, 1500.5, "abc-123")
    assert all(TIME_FORMAT.match(line["time"]) for line in lines)


def test_a_disabled_logger_drops_info_but_keeps_warnings_and_errors(log_stream):
    logger = JSONLogger(stream=log_stream, enabled=False)
    logger.info("request", status=200)
    logger.warning("slow")
    logger.error("unhandled exception", request_id="abc-123")
    assert [line["event"] for line in written_lines(logger, log_stream)] == ["slow", "unhandled exception"]


def test_flush_without_any_record_writes_nothing(logger, log_stream):
    logger.flush()
    assert log_stream.getvalue() == ""


def test_the_logger_works_again_after_flush(logger, log_stream):
    logger.info("first")
    assert [line["event"] for line in written_lines(logger, log_stream)] == ["first"]
    logger.info("second")
    logger.error("third")
    assert [line["event"] for line in written_lines(logger, log_stream)] == ["first", "second", "third"]


def test_many_threads_logging_at_once_give_complete_lines(logger, log_stream):
    thread_count, records_per_thread = 16, 250
    barrier = threading.Barrier(thread_count)

    def log_many(thread_number):
        barrier.wait()
        for record_number in range(records_per_thread):
            logger.info("request", thread=thread_number, record=record_number, detail="line\nbreak é" * 3)

    threads = [threading.Thread(target=log_many, args=(number,)) for number in range(thread_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = written_lines(logger, log_stream)
    assert len(lines) == thread_count * records_per_thread
    assert {(line["thread"], line["record"]) for line in lines} == {
        (thread, record) for thread in range(thread_count) for record in range(records_per_thread)
    }
    for thread_number in range(thread_count):  # each thread's lines stay in its own order
        own = [line["record"] for line in lines if line["thread"] == thread_number]
        assert own == sorted(own)


def test_a_closed_stream_does_not_break_the_logger():
    """The writer swallows the ValueError and stops cleanly. Had it died of it instead,
    pytest.ini turns the unhandled thread exception into a failure of this test."""
    stream = io.StringIO()
    stream.close()
    logger = JSONLogger(stream=stream)
    logger.error("nowhere to go")
    writer = logger._writer
    logger.flush()
    assert not writer.is_alive()  # it reached its own end, within flush's wait
    logger.error("still nowhere")  # and a new writer starts for the next record
    assert logger._writer is not writer and logger._writer.is_alive()
    logger.flush()


def test_the_default_stream_is_stdout(capsys):
    logger = JSONLogger()
    logger.info("to stdout")
    logger.flush()
    assert json.loads(capsys.readouterr().out)["event"] == "to stdout"


def test_one_unencodable_field_does_not_silence_the_logger(logger, log_stream):
    logger.info("before")
    logger.flush()
    logger.error("bad field", counts={(1, 2): 3})
    logger.info("after")
    lines = written_lines(logger, log_stream)
    assert "after" in [line["event"] for line in lines]
    assert [line["event"] for line in lines] == ["before", "bad field", "after"]
    assert lines[1]["unencodable_fields"] == repr({"counts": {(1, 2): 3}})


# -- libraries' logging, as JSON lines -------------------------------------------------------

@pytest.fixture
def routed(logger, log_stream):
    """The root logger routed into `logger`; its handlers and level restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    route_standard_logging(logger)
    yield logger, log_stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)


def test_a_librarys_warning_becomes_one_json_line_on_the_same_stream(routed):
    logger, log_stream = routed
    logging.getLogger("psycopg.pool").warning("error connecting in %r: %s", "pool-1", "connection refused")
    logging.getLogger("psycopg.pool").info("below the level: not written")
    logger.flush()
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert len(lines) == 1
    assert {name: lines[0][name] for name in ("level", "event", "logger", "message")} == {
        "level": "warning", "event": "library", "logger": "psycopg.pool",
        "message": "error connecting in 'pool-1': connection refused",
    }


def test_an_exception_logged_by_a_library_keeps_its_traceback_inside_the_json(routed):
    logger, log_stream = routed
    try:
        raise RuntimeError("the application failed")
    except RuntimeError:
        logging.getLogger("httpserver").exception("application error: %s %s", "GET", "/boom")
    logger.flush()
    (line,) = log_stream.getvalue().splitlines()
    record = json.loads(line)
    assert (record["level"], record["logger"]) == ("error", "httpserver")
    assert record["message"] == "application error: GET /boom"
    assert record["traceback"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: the application failed" in record["traceback"]


def test_routing_twice_leaves_one_handler(routed, logger):
    route_standard_logging(logger)
    assert len(logging.getLogger().handlers) == 1

