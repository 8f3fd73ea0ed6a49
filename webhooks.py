"""Webhooks: order events POSTed to the URLs admins subscribe, signed, retried, logged.

An admin subscribes a URL to some order events and gets a secret, shown once. From then on,
each such event is delivered by a background job, with Standard Webhooks headers
(https://www.standardwebhooks.com; the signature is made in signing.py):

    POST /hooks/shop HTTP/1.1
    Host: erp.example
    Content-Type: application/json
    webhook-id: msg_Vz3q0b7mKqM2Vx1bA8cK9w
    webhook-timestamp: 1764322759
    webhook-signature: v1,K3Vq...=
    traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-e5f6a7b8c9d0e1f2-01

    {"data":{"id":2,"status":"paid","total_cents":2200,...},"timestamp":"2026-11-28T09:39:19.000000Z",
     "type":"order.paid"}

How one event travels:

    orders.py, in the order's transaction    enqueue_order_event: one "webhook.deliver" job per
                                             live subscription to this event type, with the
                                             event and its id; a rollback leaves no job
    worker.py, after the COMMIT              deliver: sign, POST (outbound.py: the SSRF guard),
                                             record the attempt in webhook_deliveries; any
                                             answer but a 2xx raises, and the job is retried
                                             with the queue's backoff, DELIVERY_ATTEMPTS times

The event's id (`webhook-id`) is chosen at enqueue time and kept in the job's payload, so
every attempt of one event carries the same id, and a receiver that has seen it already
knows the event is a repeat. That is what makes delivery idempotent: a worker killed after
the POST and before recording it sends the event again, with the same id (at least once,
like every job). `webhook-timestamp` is the time of each attempt, signed with it, so that
receivers may refuse old ones (the specification's libraries allow 5 minutes).

`traceparent` (and `tracestate`, when the order's request sent one) is W3C Trace Context
(tracing.py): the trace id of the request that caused the event, and a new span id for this
attempt, so a receiver that traces its work joins the shop's trace. It is not signed: it
describes the delivery, not the event, and differs on every attempt.

The secret never leaves `webhooks` but in the 201 that creates it and in the signature: it is
not in the job's payload (which admins read), not in errors, not in logs.
"""

import http.client
import json
import secrets
import time
from datetime import UTC, datetime, timedelta

import db
import jobs
import metrics
import outbound
import signing
import sql_webhooks
import tracing

EVENT_TYPES = ("order.created", "order.paid", "order.shipped", "order.cancelled")
DELIVER = "webhook.deliver"  # the job kind
# Every order event reads every live subscription, so their number is kept small.
MAX_WEBHOOKS = 20
# Ten attempts: with the default backoff (base 5 s, cap 1 h) the nine waits between them add
# up to at most 5 + 10 + ... + 1280 = 2555 s, about 43 minutes (half that on average, being
# random): time for a receiver that is down or being deployed to come back.
DELIVERY_ATTEMPTS = 10
MAX_RESPONSE_BYTES = 4096  # of a receiver's answer: only its status matters
MAX_ERROR_CHARS = 500
MESSAGE_ID_PREFIX = "msg_"


class TooManyWebhooks(Exception):
    """MAX_WEBHOOKS subscriptions exist already."""


class DeliveryFailed(Exception):
    """The receiver did not take the event (no 2xx): the job fails, and is retried."""


def create_webhook(database, url, event_types, *, allow_private=False):
    """Subscribe `url` to `event_types` (a subset of EVENT_TYPES); return (the subscription,
    its secret). The secret is returned here and never again.

    Raises outbound.Refused when the URL is not one the shop may send to: its host is
    resolved now, and every address checked (and again at each delivery: DNS may change).
    Raises TooManyWebhooks when MAX_WEBHOOKS subscriptions exist.
    """
    outbound.resolve(outbound.check_url(url), allow_private=allow_private)
    secret = signing.new_webhook_secret()
    with database.transaction() as connection:
        # Two admins subscribing at the same moment on PostgreSQL may both count 19 and end at
        # 21: the limit bounds the work of each order event, and one more does not matter.
        if sql_webhooks.count_live_webhooks(connection) >= MAX_WEBHOOKS:
            raise TooManyWebhooks()
        row = sql_webhooks.insert_webhook(connection, url, _event_types_text(event_types), secret, db.utc_now())
    return public_webhook(row), secret


def list_webhooks(database, **query):
    """A page of live subscriptions (see sql_webhooks.list_webhooks), without secrets."""
    with database.connection() as connection:
        return [public_webhook(row) for row in sql_webhooks.list_webhooks(connection, **query)]


def get_webhook(database, webhook_id):
    """A live subscription without its secret, or None."""
    with database.connection() as connection:
        row = sql_webhooks.get_live_webhook(connection, webhook_id)
    return None if row is None else public_webhook(row)


def delete_webhook(database, webhook_id):
    """Delete a subscription and erase its secret; False when there is no live one. Its
    jobs still queued find it gone and end as done, having sent nothing."""
    with database.transaction() as connection:
        return sql_webhooks.delete_webhook(connection, webhook_id, db.utc_now())


def list_deliveries(database, webhook_id, **query):
    """A page of a subscription's delivery attempts (see sql_webhooks.list_deliveries)."""
    with database.connection() as connection:
        return sql_webhooks.list_deliveries(connection, webhook_id, **query)


def public_webhook(row):
    """A subscription as the API shows it: the event types as a list, never the secret."""
    return {"id": row["id"], "url": row["url"], "event_types": row["event_types"].split(" "),
            "created_at": row["created_at"]}


# -- events: enqueued with the order, delivered by a worker ------------------------------------

def enqueue_order_event(connection, order, event_type):
    """Enqueue `event_type` of `order` (with its lines) for every live subscription to it,
    inside the caller's transaction; the job ids. Once per order, event and subscription
    (the unique key), whatever calls this twice."""
    subscribed = [webhook for webhook in sql_webhooks.live_webhooks(connection)
                  if event_type in webhook["event_types"].split(" ")]
    if not subscribed:
        return []
    event = {"type": event_type, "timestamp": db.utc_now(), "data": order_data(order)}
    message_id = new_message_id()  # one id per event; each subscription's job carries it
    return [
        jobs.enqueue(connection, DELIVER, {"webhook_id": webhook["id"], "message_id": message_id, "event": event},
                     unique_key=f"{DELIVER}:{webhook['id']}:order-{order['id']}:{event_type}",
                     max_attempts=DELIVERY_ATTEMPTS)
        for webhook in subscribed
    ]


def order_data(order):
    """The order as an event shows it: what GET /v1/orders/{id} shows."""
    fields = ("id", "user_id", "status", "total_cents", "created_at", "updated_at")
    data = {field: order[field] for field in fields}
    data["lines"] = [{key: line[key] for key in ("item_id", "name", "quantity", "unit_price_cents")}
                     for line in order["lines"]]
    return data


def new_message_id():
    """A webhook-id: "msg_" and 16 random bytes in base64url (22 characters)."""
    return MESSAGE_ID_PREFIX + secrets.token_urlsafe(16)


def deliver(context, job):
    """The "webhook.deliver" job: sign the event and POST it to its subscription's URL.

    Idempotent in the way the specification asks for: every attempt carries the event's one
    `webhook-id`, by which the receiver recognises a repeat. A subscription deleted since
    the event was enqueued has nothing to send to, and the job ends at once. Each attempt,
    sent or refused, is recorded in webhook_deliveries; anything but a 2xx then raises
    DeliveryFailed, and the queue retries with its backoff.
    """
    webhook_id, message_id, event = job.payload["webhook_id"], job.payload["message_id"], job.payload["event"]
    with context.database.connection() as connection:
        subscription = sql_webhooks.get_signing_secret(connection, webhook_id)
    if subscription is None:
        return
    body = event_body(event)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signing.sign_webhook(subscription["secret"], message_id, timestamp, body),
        **tracing.outgoing_headers(),  # the job's trace (the worker made it current), a new span
    }
    settings = context.settings
    started_at, started = db.utc_now(), time.perf_counter()
    status_code, error = None, None
    try:
        answer = outbound.post(subscription["url"], body, headers, timeout=settings.webhook_timeout_seconds,
                               allow_private=settings.webhook_allow_private, max_response_bytes=MAX_RESPONSE_BYTES)
        status_code, error = _status_outcome(answer.status)
    except outbound.Refused as refused:
        error = f"refused: {refused}"
    except (OSError, http.client.HTTPException) as failure:  # refused, timed out, TLS, a garbled answer
        error = f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
    record_delivery(context.database, {
        "webhook_id": webhook_id, "message_id": message_id, "event_type": event["type"], "attempt": job.attempts,
        "status_code": status_code, "duration_ms": round((time.perf_counter() - started) * 1000),
        "error": None if error is None else error[:MAX_ERROR_CHARS], "started_at": started_at,
        "finished_at": db.utc_now(),
    })
    # In the worker's process: with METRICS_DIR shared, a scrape of the web processes shows it.
    outcome = "delivered" if error is None else "rejected" if status_code is not None else "failed"
    metrics.RECORDER.count("webhook_deliveries_total", outcome)
    if error is not None:
        raise DeliveryFailed(error)


def event_body(event):
    """The bytes POSTed and signed: compact JSON, keys sorted, so every attempt sends the same."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def record_delivery(database, delivery):
    with database.transaction() as connection:
        sql_webhooks.insert_delivery(connection, delivery)


def purge_deliveries(database, *, retention_seconds, now=None):
    """Delete the delivery attempts that finished over `retention_seconds` ago, in batches;
    how many. The worker runs it with the jobs' retention (JOB_RETENTION_SECONDS)."""
    now = now or datetime.now(UTC)
    finished_before = db.utc_text(now - timedelta(seconds=retention_seconds))
    return jobs.delete_in_batches(
        database, lambda connection, limit: sql_webhooks.delete_old_deliveries(connection, finished_before, limit))


def _status_outcome(status):
    """(the status to log, None) for a 2xx; otherwise with what the log says about it.

    >>> _status_outcome(204), _status_outcome(302), _status_outcome(503), _status_outcome(799)
    ((204, None), (302, 'HTTP 302: redirects are not followed'), (503, 'HTTP 503'), (None, 'HTTP 799: not a status'))
    """
    if not 100 <= status <= 599:  # http.client reads any three digits; RFC 9110 §15 defines these
        return None, f"HTTP {status}: not a status"
    if 200 <= status <= 299:
        return status, None
    if 300 <= status <= 399:
        return status, f"HTTP {status}: redirects are not followed"
    return status, f"HTTP {status}"


def _event_types_text(event_types):
    """The event types as stored: known ones only, each once, in EVENT_TYPES order."""
    unknown = set(event_types) - set(EVENT_TYPES)
    if unknown or not event_types:
        raise ValueError(f"unknown event types: {sorted(unknown)}")
    return " ".join(event_type for event_type in EVENT_TYPES if event_type in event_types)
