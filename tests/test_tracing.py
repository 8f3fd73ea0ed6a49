"""Tests for tracing.py and its uses: W3C Trace Context headers read by the specification's
rules (the cases of its own test suite, w3c/trace-context test/test.py), a trace continued
or started for each request and named in `traceresponse`, the trace id in the access log,
and one trace followed from an order placed over HTTP to its jobs, the webhook a real
receiver gets, and the worker's log lines."""

import http.client
import json
import threading
from urllib.parse import urlsplit

import pytest
from conftest import place, running_worker, wait_for_jobs
from test_webhooks import allowing_private, subscribe

import jobs
import middleware
import observe
import tracing
import webhooks

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"
TRACEPARENT_FORMAT = r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}"
ONE_PEN = [{"item_id": 1, "quantity": 1}]


# -- traceparent, by the specification's rules -------------------------------------------------

@pytest.mark.parametrize("value, parsed", [
    (VALID, (TRACE_ID, PARENT_ID, 1)),
    (f"00-{TRACE_ID}-{PARENT_ID}-00", (TRACE_ID, PARENT_ID, 0)),
    (f"00-{TRACE_ID}-{PARENT_ID}-ff", (TRACE_ID, PARENT_ID, 1)),  # unknown flag bits are dropped
    # A later version: its first four fields are read, whatever follows a dash.
    (f"cc-{TRACE_ID}-{PARENT_ID}-01", (TRACE_ID, PARENT_ID, 1)),
    (f"cc-{TRACE_ID}-{PARENT_ID}-01-what-the-future-will-be-like", (TRACE_ID, PARENT_ID, 1)),
])
def test_a_valid_traceparent_is_read(value, parsed):
    assert tracing.parse_traceparent(value) == parsed


@pytest.mark.parametrize("value", [
    pytest.param(None, id="missing"),
    pytest.param("", id="empty"),
    pytest.param(f"00-{'0' * 32}-{PARENT_ID}-01", id="all-zero trace-id"),
    pytest.param(f"00-{TRACE_ID}-{'0' * 16}-01", id="all-zero parent-id"),
    pytest.param(VALID.upper(), id="uppercase"),
    pytest.param(f"00-{TRACE_ID.upper()}-{PARENT_ID}-01", id="uppercase trace-id"),
    pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-0A", id="uppercase flags"),
    pytest.param(f"ff-{TRACE_ID}-{PARENT_ID}-01", id="version ff"),
    pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-01.", id="version 00 with a trailing character"),
    pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-01-what-the-future-will-be-like", id="version 00 with extra fields"),
    pytest.param(f"cc-{TRACE_ID}-{PARENT_ID}-01.what-the-future-will-be-like", id="future version, no dash"),
    pytest.param(f"000-{TRACE_ID}-{PARENT_ID}-01", id="version too long"),
    pytest.param(f"0-{TRACE_ID}-{PARENT_ID}-01", id="version too short"),
    pytest.param(f".0-{TRACE_ID}-{PARENT_ID}-01", id="version not hex"),
    pytest.param(f"00-{TRACE_ID}1-{PARENT_ID}-01", id="trace-id too long"),
    pytest.param(f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01", id="trace-id too short"),
    pytest.param(f"00-.{TRACE_ID[1:]}-{PARENT_ID}-01", id="trace-id not hex"),
    pytest.param(f"00-{TRACE_ID}-{PARENT_ID}1-01", id="parent-id too long"),
    pytest.param(f"00-{TRACE_ID}-{PARENT_ID[:-1]}-01", id="parent-id too short"),
    pytest.param(f"00-{TRACE_ID}-{PARENT_ID[:-1]}.-01", id="parent-id not hex"),
    pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-.0", id="flags not hex"),
    pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-1", id="flags too short"),
    pytest.param(f" {VALID}", id="leading space"),
    pytest.param(f"{VALID}, 00-{'1' * 32}-{PARENT_ID}-01", id="two headers, joined"),
    pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-01\n", id="a newline"),
    pytest.param(f"00-{'٣' * 32}-{PARENT_ID}-01", id="other digits than 0-9"),
])
def test_an_invalid_traceparent_is_ignored(value):
    assert tracing.parse_traceparent(value) is None


def test_a_valid_traceparent_is_continued_with_a_new_span_of_its_own():
    context = tracing.continue_trace(VALID, "rojo=1")
    assert (context.trace_id, context.parent_id, context.flags, context.tracestate) == (TRACE_ID, PARENT_ID, 1,
                                                                                      "rojo=1")
    assert context.span_id not in (PARENT_ID, "0" * 16)
    assert context.traceparent == f"00-{TRACE_ID}-{context.span_id}-01"


def test_a_future_version_is_passed_on_as_version_00():
    context = tracing.continue_trace(f"cc-{TRACE_ID}-{PARENT_ID}-01-what-the-future-will-be-like", None)
    assert context.traceparent == f"00-{TRACE_ID}-{context.span_id}-01"


@pytest.mark.parametrize("traceparent", [None, f"00-{'0' * 32}-{PARENT_ID}-01", f"ff-{TRACE_ID}-{PARENT_ID}-01"])
def test_no_valid_traceparent_starts_a_new_unsampled_trace_and_ignores_tracestate(traceparent):
    context = tracing.continue_trace(traceparent, "rojo=00f067aa0ba902b7")
    assert context.trace_id != TRACE_ID and context.trace_id != "0" * 32
    assert (context.parent_id, context.flags, context.tracestate) == (None, 0, None)


def test_ids_are_random_lowercase_hex_and_never_repeat():
    trace_ids = {tracing.new_trace_id() for _ in range(1000)}
    span_ids = {tracing.new_span_id() for _ in range(1000)}
    assert len(trace_ids) == len(span_ids) == 1000
    assert all(tracing.parse_traceparent(f"00-{trace_id}-{PARENT_ID}-00") for trace_id in trace_ids)
    assert all(tracing.parse_traceparent(f"00-{TRACE_ID}-{span_id}-00") for span_id in span_ids)


# -- tracestate ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value, passed_on", [
    ("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
    (" rojo=1 ,\t congo=2 ", "rojo=1,congo=2"),  # optional whitespace around members
    ("foo=1,,, ,bar=2,", "foo=1,bar=2"),  # empty members are allowed, and dropped
    ("foo= leading spaces kept", "foo= leading spaces kept"),
    ("tenant@system=1,a-b_c*d/e=2,0tenant@s=3", "tenant@system=1,a-b_c*d/e=2,0tenant@s=3"),
    (",".join(f"k{number}=v" for number in range(32)), ",".join(f"k{number}=v" for number in range(32))),
    ("k" * 256 + "=" + "v" * 255, "k" * 256 + "=" + "v" * 255),  # the longest key, 512 characters in all
    ("k" * 256 + "=" + "v" * 256, None),  # the longest value too: valid, but over the 512 the shop passes on
    ("t" * 241 + "@" + "s" * 14 + "=1", "t" * 241 + "@" + "s" * 14 + "=1"),  # the longest tenant and system
    ("", None), (" , ", None), (None, None),
])
def test_a_valid_tracestate_is_passed_on_tidied(value, passed_on):
    assert tracing.parse_tracestate(value) == passed_on


@pytest.mark.parametrize("value", [
    pytest.param("foo=1,foo=1", id="a key twice"),
    pytest.param("foo=1,foo=2", id="a key twice, two values"),
    pytest.param("Foo=1", id="uppercase key"),
    pytest.param("foo.bar=1", id="a dot in the key"),
    pytest.param("_foo=1", id="key starting with _"),
    pytest.param("foo=1=2", id="= in the value"),
    pytest.param("foo=", id="empty value"),
    pytest.param("foo=caf\u00e9", id="not ASCII"),
    pytest.param("foo=a\tb", id="a tab in the value"),
    pytest.param("foo", id="no ="),
    pytest.param("foo=1,bar", id="one bad member among good ones"),
    pytest.param(",".join(f"k{number}=v" for number in range(33)), id="33 members"),
    pytest.param("k" * 257 + "=1", id="key of 257 characters"),
    pytest.param("foo=" + "v" * 257, id="value of 257 characters"),
    pytest.param("t" * 242 + "@s=1", id="tenant of 242 characters"),
    pytest.param("t@" + "s" * 15 + "=1", id="system of 15 characters"),
    pytest.param("a=" + "," * tracing.MAX_TRACESTATE_INPUT_CHARS, id="longer than any valid list"),
])
def test_an_invalid_tracestate_is_dropped_whole(value):
    assert tracing.parse_tracestate(value) is None


def test_a_long_tracestate_is_cut_by_whole_members_long_ones_first_then_from_the_end():
    long_member = "big=" + "x" * 200  # over 128 characters: the first to go
    small = [f"k{number}={'v' * 40}" for number in range(15)]  # 15 x 44 characters, with commas 674
    kept = tracing.parse_tracestate(",".join([small[0], long_member, *small[1:]]))
    assert len(kept) <= tracing.MAX_TRACESTATE_CHARS
    assert long_member not in kept
    assert kept == ",".join(small[:len(kept.split(","))])  # the leftmost (newest) members stay, in order
    assert len(kept.split(",")) == 11  # 11 x 44 + 10 = 494; a 12th would make 539


# -- the context of the work in hand --------------------------------------------------------------

def test_the_current_context_is_per_thread_and_restored_by_detach():
    outer = tracing.start_trace()
    token = tracing.attach(outer)
    try:
        seen_by_another_thread = []
        thread = threading.Thread(target=lambda: seen_by_another_thread.append(tracing.current()))
        thread.start()
        thread.join()
        assert seen_by_another_thread == [None]
        inner_token = tracing.attach(outer.child())
        tracing.detach(inner_token)
        assert tracing.current() is outer
    finally:
        tracing.detach(token)
    assert tracing.current() is None


def test_outgoing_headers_name_a_new_span_of_the_current_trace_with_its_tracestate():
    context = tracing.continue_trace(VALID, "rojo=1")
    token = tracing.attach(context)
    try:
        first, second = tracing.outgoing_headers(), tracing.outgoing_headers()
    finally:
        tracing.detach(token)
    assert first["tracestate"] == second["tracestate"] == "rojo=1"
    first_parsed, second_parsed = (tracing.parse_traceparent(headers["traceparent"]) for headers in (first, second))
    assert first_parsed[0] == second_parsed[0] == TRACE_ID and first_parsed[2] == 1
    assert len({first_parsed[1], second_parsed[1], context.span_id, PARENT_ID}) == 4  # a new span per call


def test_log_lines_carry_the_trace_id_of_the_work_in_hand(log_stream):
    logger = observe.JSONLogger(stream=log_stream)
    context = tracing.start_trace()
    token = tracing.attach(context)
    try:
        logger.info("inside")
        logger.error("inside, an error", trace_id="given")  # a field given by the caller wins
    finally:
        tracing.detach(token)
    logger.info("outside")
    logger.flush()
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert [(line["event"], line.get("trace_id")) for line in lines] == [
        ("inside", context.trace_id), ("inside, an error", "given"), ("outside", None)]


# -- over HTTP: WSGI and a live socket, both engines ----------------------------------------------

def read_log(logger, log_stream):
    logger.flush()
    return [json.loads(line) for line in log_stream.getvalue().splitlines()]


def trace_response(response):
    """(trace_id, span_id, flags) of a response's traceresponse header."""
    value = response.header("traceresponse")
    assert value is not None, response.headers
    parsed = tracing.parse_traceparent(value)
    assert parsed is not None and value.startswith("00-"), value
    return parsed


def test_a_request_with_a_valid_traceparent_continues_its_trace(client, logger, log_stream):
    response = client.get("/health", headers={"traceparent": VALID, "tracestate": "rojo=1"})
    assert response.status == 200
    trace_id, span_id, flags = trace_response(response)
    assert (trace_id, flags) == (TRACE_ID, 1)
    assert span_id != PARENT_ID
    assert response.header("traceparent") is None  # a request header: not echoed
    [line] = [line for line in read_log(logger, log_stream) if line["event"] == "request"]
    assert (line["trace_id"], line["request_id"]) == (TRACE_ID, response.header("X-Request-ID"))


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="missing"),
    pytest.param({"traceparent": f"00-{'0' * 32}-{PARENT_ID}-01"}, id="all-zero trace-id"),
    pytest.param({"traceparent": f"00-{TRACE_ID}-{'0' * 16}-01"}, id="all-zero parent-id"),
    pytest.param({"traceparent": VALID.upper()}, id="uppercase"),
    pytest.param({"traceparent": VALID[:-1]}, id="too short"),
    pytest.param({"traceparent": VALID + "-extra"}, id="version 00 with extra fields"),
    pytest.param({"traceparent": "ff" + VALID[2:]}, id="version ff"),
])
def test_a_request_without_a_valid_traceparent_gets_a_new_trace(client, logger, log_stream, headers):
    first = client.get("/health", headers=headers)
    second = client.get("/health", headers=headers)
    assert first.status == second.status == 200
    (first_trace, _, first_flags), (second_trace, _, _) = trace_response(first), trace_response(second)
    assert first_trace != TRACE_ID and first_trace != second_trace  # a new trace each time
    assert first_flags == 0  # started here, not recorded here
    logged = [line["trace_id"] for line in read_log(logger, log_stream) if line["event"] == "request"]
    assert logged == [first_trace, second_trace]


def test_a_future_version_with_extra_fields_continues_the_trace(client):
    response = client.get("/health", headers={"traceparent": f"cc-{TRACE_ID}-{PARENT_ID}-01-future-field"})
    assert trace_response(response)[:1] == (TRACE_ID,)


def test_two_traceparent_fields_on_the_wire_start_a_new_trace(live_server):
    """The server joins repeated fields with ", " (RFC 9110 §5.3): no longer one traceparent."""
    connection = http.client.HTTPConnection(urlsplit(live_server).hostname, urlsplit(live_server).port, timeout=10)
    try:
        connection.putrequest("GET", "/health")
        connection.putheader("traceparent", VALID)
        connection.putheader("traceparent", f"00-{'1' * 32}-{PARENT_ID}-01")
        connection.endheaders()
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status == 200
    trace_id = tracing.parse_traceparent(response.getheader("traceresponse"))[0]
    assert trace_id not in (TRACE_ID, "1" * 32)


def test_every_answer_is_traced_errors_included_and_no_trace_outlives_its_request(wsgi_client, logger, log_stream):
    answers = [wsgi_client.get("/no/such/path", headers={"traceparent": VALID}),
               wsgi_client.post("/v1/orders", json={"lines": []}, headers={"traceparent": VALID})]
    assert [answer.status for answer in answers] == [404, 401]
    assert all(trace_response(answer)[0] == TRACE_ID for answer in answers)
    assert [line.get("trace_id") for line in read_log(logger, log_stream)
            if line["event"] == "request"] == [TRACE_ID, TRACE_ID]
    assert tracing.current() is None  # the WSGI client ran the app on this thread


def test_cors_lets_a_traced_page_send_traceparent_and_read_traceresponse():
    assert "traceparent, tracestate" in middleware.CORS_ALLOWED_HEADERS
    assert "traceresponse" in middleware.CORS_EXPOSED_HEADERS


# -- one trace, from an order placed over HTTP to the webhook and the worker's log ----------------

def test_one_trace_id_from_the_order_to_its_jobs_the_webhook_and_the_worker_log(
        client, alice, seeded, settings, logger, log_stream, webhook_receiver):
    """An order placed with a traceparent: the access log, both jobs the order enqueued (its
    email and its webhook), the webhook the receiver gets, and the worker's log line for
    each job carry the caller's trace id; each hop has a span id of its own."""
    subscribe(seeded, webhook_receiver.url + "/hooks/shop", ["order.created"])
    _, customer = alice
    response = place(client, {**customer, "traceparent": VALID, "tracestate": "rojo=00f067aa0ba902b7"}, ONE_PEN)
    assert response.status == 201, response
    _, request_span, _ = trace_response(response)

    [email_job] = jobs.list_jobs(seeded, sort=(("id", True),), limit=5, kind="email.order")
    [webhook_job] = jobs.list_jobs(seeded, sort=(("id", True),), limit=5, kind=webhooks.DELIVER)
    for job in (email_job, webhook_job):  # enqueued as children of the request's span
        assert job["traceparent"] == f"00-{TRACE_ID}-{request_span}-01"
        assert job["tracestate"] == "rojo=00f067aa0ba902b7"

    with running_worker(seeded, allowing_private(settings), logger=logger):
        [(_, headers, _)] = webhook_receiver.wait_for(1)
        wait_for_jobs(seeded, "status = 'done'", count=2)
    delivery_trace, delivery_span, delivery_flags = tracing.parse_traceparent(headers["traceparent"])
    assert (delivery_trace, delivery_flags) == (TRACE_ID, 1)
    assert delivery_span not in (PARENT_ID, request_span)
    assert headers["tracestate"] == "rojo=00f067aa0ba902b7"

    log = read_log(logger, log_stream)
    [request_line] = [line for line in log if line["event"] == "request"]
    job_lines = {line["kind"]: line for line in log if line["event"] == "job"}
    assert request_line["trace_id"] == TRACE_ID
    assert {kind: (line["trace_id"], line["outcome"]) for kind, line in job_lines.items()} == {
        "email.order": (TRACE_ID, "done"), webhooks.DELIVER: (TRACE_ID, "done")}
    assert tracing.current() is None


def test_a_job_enqueued_outside_a_request_gets_a_trace_of_its_own_kept_on_every_attempt(database, settings,
                                                                                         logger, log_stream):
    attempts = []

    def flaky(context, job):
        attempts.append(tracing.current())
        if len(attempts) == 1:
            raise RuntimeError("the first attempt fails")

    with database.transaction() as connection:
        job_id = jobs.enqueue(connection, "flaky", {})
    traceparent = jobs.get_job(database, job_id)["traceparent"]
    trace_id, enqueue_span, flags = tracing.parse_traceparent(traceparent)
    assert flags == 0
    with running_worker(database, settings, logger=logger, handlers={"flaky": flaky}, jitter=lambda: 0):
        wait_for_jobs(database, "status = 'done'")
    assert [(context.trace_id, context.parent_id) for context in attempts] == [(trace_id, enqueue_span)] * 2
    assert attempts[0].span_id != attempts[1].span_id  # each run a span of its own
    logged = [(line["event"], line.get("trace_id")) for line in read_log(logger, log_stream)
              if line["event"] in ("job", "job failed")]
    assert logged == [("job failed", trace_id), ("job", trace_id)]


def test_a_job_from_before_migration_0013_runs_in_a_new_trace():
    job = jobs.Job(1, "noop", {}, 1, 3, None)  # no traceparent: the previous release enqueued it
    first, second = (tracing.continue_trace(job.traceparent, job.tracestate) for _ in range(2))
    assert first.trace_id != second.trace_id and first.parent_id is None
