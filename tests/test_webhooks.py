"""Tests for webhooks.py: order events enqueued in the order's own transaction (and not at all
when it rolls back), delivered by a worker to a real receiver on 127.0.0.1 with Standard
Webhooks headers that an independent implementation (the `standardwebhooks` package)
verifies, retried with the same webhook-id, every attempt recorded, the SSRF guard applied
again at delivery time, and the secret kept out of payloads and logs."""

import dataclasses
import json

import pytest
from conftest import count_rows, running_worker, wait_for_jobs
from standardwebhooks import Webhook, WebhookVerificationError

import jobs
import metrics
import orders
import webhooks
from worker import JobContext

PUBLIC_URL = "https://93.184.215.14/hooks"  # an address: subscribing to it needs no DNS
ONE_PEN = [{"item_id": 1, "quantity": 1}]


def subscribe(database, url=PUBLIC_URL, event_types=webhooks.EVENT_TYPES, **options):
    """A subscription (checked as the API does, private addresses allowed for receivers on
    127.0.0.1); (its row, its secret)."""
    return webhooks.create_webhook(database, url, list(event_types), allow_private=True, **options)


def delivery_jobs(database):
    with database.connection() as connection:
        rows = connection.fetch_all("SELECT unique_key, payload FROM jobs WHERE kind = :kind ORDER BY id",
                                    {"kind": webhooks.DELIVER})
    return [(row["unique_key"], json.loads(row["payload"])) for row in rows]


def deliveries(database, webhook_id):
    """Every attempt recorded for a subscription, oldest first."""
    return list(reversed(webhooks.list_deliveries(database, webhook_id, sort=(("id", True),), limit=100)))


def allowing_private(settings, **changes):
    """Settings whose worker may deliver to 127.0.0.1, retrying at once (the backoff is a
    random wait from 0, and tests pass jitter 0)."""
    return dataclasses.replace(settings, **{"webhook_allow_private": True, "webhook_timeout_seconds": 2, **changes})


# -- enqueued with the order ---------------------------------------------------------------------

def test_each_order_event_enqueues_one_job_per_subscription_to_it(seeded, users):
    everything, _ = subscribe(seeded)
    paid_only, _ = subscribe(seeded, event_types=["order.paid"])
    user = users.create()
    order = orders.place_order(seeded, user["id"], ONE_PEN)
    orders.change_status(seeded, order["id"], "paid")
    orders.change_status(seeded, order["id"], "shipped")
    keys = [key for key, _ in delivery_jobs(seeded)]
    prefix = f"{webhooks.DELIVER}:"
    assert keys == [
        f"{prefix}{everything['id']}:order-{order['id']}:order.created",
        f"{prefix}{everything['id']}:order-{order['id']}:order.paid",
        f"{prefix}{paid_only['id']}:order-{order['id']}:order.paid",
        f"{prefix}{everything['id']}:order-{order['id']}:order.shipped",
    ]


def test_the_payload_holds_the_event_and_its_id_but_never_the_secret(seeded, users):
    _, secret = subscribe(seeded, event_types=["order.created"])
    user = users.create()
    order = orders.place_order(seeded, user["id"], ONE_PEN)
    [(_, payload)] = delivery_jobs(seeded)
    assert payload["message_id"].startswith("msg_") and len(payload["message_id"]) == 26
    event = payload["event"]
    assert (event["type"], event["data"]["id"], event["data"]["status"]) == ("order.created", order["id"], "pending")
    assert event["data"]["lines"] == [{"item_id": 1, "name": "Handmade Bamboo Pen", "quantity": 1,
                                       "unit_price_cents": order["lines"][0]["unit_price_cents"]}]
    assert event["timestamp"].endswith("Z")
    with seeded.connection() as connection:
        assert secret not in connection.fetch_value("SELECT payload FROM jobs WHERE kind = :kind",
                                                    {"kind": webhooks.DELIVER})


def test_a_cancellation_is_an_event_too(seeded, users):
    subscribe(seeded, event_types=["order.cancelled"])
    user = users.create()
    order = orders.place_order(seeded, user["id"], ONE_PEN)
    orders.change_status(seeded, order["id"], "cancelled", user_id=user["id"], only_from="pending")
    [(_, payload)] = delivery_jobs(seeded)
    assert (payload["event"]["type"], payload["event"]["data"]["status"]) == ("order.cancelled", "cancelled")


def test_the_same_event_is_enqueued_once(seeded, users):
    subscribe(seeded, event_types=["order.created"])
    user = users.create()
    order = orders.place_order(seeded, user["id"], ONE_PEN)
    before = delivery_jobs(seeded)
    with seeded.transaction() as connection:
        webhooks.enqueue_order_event(connection, order, "order.created")  # a new event id is drawn...
    assert delivery_jobs(seeded) == before  # ...and dropped: the job, and its webhook-id, stay as they were
    assert len(before) == 1


def test_a_refused_order_leaves_no_delivery(seeded, users):
    subscribe(seeded)
    user = users.create()
    with pytest.raises(orders.OutOfStock):
        orders.place_order(seeded, user["id"], [{"item_id": 1, "quantity": 1000}])
    assert delivery_jobs(seeded) == []


def test_an_order_rolled_back_after_its_webhooks_were_enqueued_leaves_none(seeded, users):
    """before_commit runs after the order's jobs are written; refusing rolls them all back."""
    subscribe(seeded)
    user = users.create()
    with pytest.raises(orders.LostClaim):
        orders.place_order(seeded, user["id"], ONE_PEN, before_commit=lambda connection, order: False)
    assert (count_rows(seeded, "orders"), count_rows(seeded, "jobs")) == (0, 0)


def test_a_deleted_subscription_gets_no_new_events(seeded, users):
    webhook, _ = subscribe(seeded)
    assert webhooks.delete_webhook(seeded, webhook["id"]) is True
    assert webhooks.delete_webhook(seeded, webhook["id"]) is False
    user = users.create()
    orders.place_order(seeded, user["id"], ONE_PEN)
    assert delivery_jobs(seeded) == []


def test_no_more_than_max_webhooks_subscriptions(database):
    for _ in range(webhooks.MAX_WEBHOOKS):
        subscribe(database)
    with pytest.raises(webhooks.TooManyWebhooks):
        subscribe(database)


# -- delivered by a worker to a real receiver ---------------------------------------------------------

def test_a_delivery_is_verified_by_the_standard_webhooks_library(seeded, users, settings, webhook_receiver):
    webhook, secret = subscribe(seeded, webhook_receiver.url + "/hooks/shop", ["order.created"])
    user = users.create()
    with running_worker(seeded, allowing_private(settings)):
        order = orders.place_order(seeded, user["id"], ONE_PEN)
        [(path, headers, body)] = webhook_receiver.wait_for(1)
        wait_for_jobs(seeded, "kind = :kind AND status = 'done'", kind=webhooks.DELIVER)
    assert path == "/hooks/shop" and headers["content-type"] == "application/json"
    event = Webhook(secret).verify(body, headers)  # raises unless the signature is right
    assert (event["type"], event["data"]["id"]) == ("order.created", order["id"])
    [(_, payload)] = delivery_jobs(seeded)
    assert headers["webhook-id"] == payload["message_id"]
    [attempt] = deliveries(seeded, webhook["id"])
    assert (attempt["attempt"], attempt["status_code"], attempt["error"]) == (1, 204, None)
    assert attempt["message_id"] == payload["message_id"] and attempt["event_type"] == "order.created"
    assert attempt["duration_ms"] >= 0


@pytest.mark.parametrize("tamper", ["body", "signature", "id", "timestamp", "secret"])
def test_a_tampered_delivery_is_rejected_by_the_library(seeded, users, settings, webhook_receiver, tamper):
    _, secret = subscribe(seeded, webhook_receiver.url, ["order.created"])
    user = users.create()
    with running_worker(seeded, allowing_private(settings)):
        orders.place_order(seeded, user["id"], ONE_PEN)
        [(_, headers, body)] = webhook_receiver.wait_for(1)
    Webhook(secret).verify(body, headers)  # untouched, it passes
    if tamper == "body":
        body = body.replace(b'"quantity":1', b'"quantity":9')
    elif tamper == "signature":
        signature = headers["webhook-signature"]
        headers["webhook-signature"] = signature[:5] + ("A" if signature[5] != "A" else "B") + signature[6:]
    elif tamper == "id":
        headers["webhook-id"] = "msg_someotherevent"
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 1)
    else:
        secret = "whsec_" + "A" * 32
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_failed_attempts_are_recorded_and_retried_with_the_same_webhook_id(seeded, users, settings, webhook_receiver):
    webhook, secret = subscribe(seeded, webhook_receiver.url, ["order.created"])
    webhook_receiver.statuses = [500, 503]  # then 204
    user = users.create()
    counted_before = delivery_outcomes()
    with running_worker(seeded, allowing_private(settings), jitter=lambda: 0):
        orders.place_order(seeded, user["id"], ONE_PEN)
        received = webhook_receiver.wait_for(3)
        wait_for_jobs(seeded, "kind = :kind AND status = 'done'", kind=webhooks.DELIVER)
    assert len({headers["webhook-id"] for _, headers, _ in received}) == 1
    assert len({body for _, _, body in received}) == 1  # the same event, byte for byte
    for _, headers, body in received:
        Webhook(secret).verify(body, headers)  # each attempt signed for its own timestamp
    attempts = deliveries(seeded, webhook["id"])
    assert [(row["attempt"], row["status_code"], row["error"]) for row in attempts] == [
        (1, 500, "HTTP 500"), (2, 503, "HTTP 503"), (3, 204, None)]
    counted = delivery_outcomes()  # for GET /metrics, by the worker's process
    assert {outcome: counted[outcome] - counted_before[outcome] for outcome in counted} == {
        "delivered": 1, "rejected": 2, "failed": 0}
    [job] = jobs.list_jobs(seeded, sort=(("id", True),), limit=5, kind=webhooks.DELIVER)
    assert (job["status"], job["attempts"]) == ("done", 3)


def test_a_redirect_is_a_failure_and_is_not_followed(seeded, users, settings, webhook_receiver):
    webhook, _ = subscribe(seeded, webhook_receiver.url + "/old", ["order.created"])
    webhook_receiver.statuses = [301]
    user = users.create()
    with running_worker(seeded, allowing_private(settings), jitter=lambda: 0):
        orders.place_order(seeded, user["id"], ONE_PEN)
        received = webhook_receiver.wait_for(2)
        wait_for_jobs(seeded, "kind = :kind AND status = 'done'", kind=webhooks.DELIVER)
    assert [path for path, _, _ in received] == ["/old", "/old"]  # never /redirected
    attempts = deliveries(seeded, webhook["id"])
    assert [(row["status_code"], row["error"]) for row in attempts] == [
        (301, "HTTP 301: redirects are not followed"), (204, None)]


def test_a_receiver_that_is_down_is_recorded_and_the_job_dies_after_its_last_attempt(seeded, users, settings,
                                                                                     silent_listener):
    port, _ = silent_listener  # listens but never answers: each attempt times out
    webhook, _ = subscribe(seeded, f"http://127.0.0.1:{port}/", ["order.created"])
    user = users.create()
    orders.place_order(seeded, user["id"], ONE_PEN)
    with seeded.transaction() as connection:  # two attempts, not ten, for the test's sake
        connection.execute("UPDATE jobs SET max_attempts = 2 WHERE kind = :kind", {"kind": webhooks.DELIVER})
    counted_before = delivery_outcomes()
    with running_worker(seeded, allowing_private(settings, webhook_timeout_seconds=0.2), jitter=lambda: 0):
        wait_for_jobs(seeded, "kind = :kind AND status = 'dead'", kind=webhooks.DELIVER)
    attempts = deliveries(seeded, webhook["id"])
    assert [row["attempt"] for row in attempts] == [1, 2]
    assert all(row["status_code"] is None and row["error"].startswith("TimeoutError") for row in attempts)
    assert delivery_outcomes()["failed"] - counted_before["failed"] == 2  # no answer at all


def delivery_outcomes():
    """webhook_deliveries_total of this process, by outcome."""
    events = metrics.RECORDER.totals().events
    return {outcome: events.get(("webhook_deliveries_total", (outcome,)), 0)
            for outcome in ("delivered", "rejected", "failed")}


def test_the_guard_runs_again_at_delivery_time(seeded, users, settings, webhook_receiver):
    """A subscription made while private addresses were allowed (or a name whose DNS has
    changed since) is refused when it is delivered: recorded, retried, nothing sent."""
    webhook, _ = subscribe(seeded, webhook_receiver.url, ["order.created"])
    user = users.create()
    strict = dataclasses.replace(settings, webhook_allow_private=False, webhook_timeout_seconds=2)
    with running_worker(seeded, strict):
        orders.place_order(seeded, user["id"], ONE_PEN)
        wait_for_jobs(seeded, "kind = :kind AND last_error IS NOT NULL", kind=webhooks.DELIVER)
    [attempt] = deliveries(seeded, webhook["id"])
    assert attempt["status_code"] is None
    assert attempt["error"] == "refused: the host '127.0.0.1' resolves to 127.0.0.1, a loopback address"
    assert webhook_receiver.requests == []


def test_a_deleted_subscriptions_queued_jobs_finish_without_sending(seeded, users, settings, webhook_receiver):
    webhook, _ = subscribe(seeded, webhook_receiver.url, ["order.created"])
    user = users.create()
    orders.place_order(seeded, user["id"], ONE_PEN)
    webhooks.delete_webhook(seeded, webhook["id"])
    [job] = [job for job in jobs.claim(seeded, "worker-a", 5, lease_seconds=30) if job.kind == webhooks.DELIVER]
    webhooks.deliver(JobContext(allowing_private(settings), seeded, None), job)  # returns: nothing to do
    assert webhook_receiver.requests == [] and deliveries(seeded, webhook["id"]) == []
    with seeded.connection() as connection:
        assert connection.fetch_value("SELECT secret FROM webhooks WHERE id = :id", {"id": webhook["id"]}) is None


def test_the_secret_never_reaches_the_logs(seeded, users, settings, webhook_receiver, logger, log_stream):
    _, secret = subscribe(seeded, webhook_receiver.url, ["order.created"])
    webhook_receiver.statuses = [500]
    user = users.create()
    from worker import Worker

    worker = Worker(seeded, allowing_private(settings), logger, threads=1, jitter=lambda: 0)
    worker.start()
    try:
        orders.place_order(seeded, user["id"], ONE_PEN)
        webhook_receiver.wait_for(2)
        wait_for_jobs(seeded, "kind = :kind AND status = 'done'", kind=webhooks.DELIVER)
    finally:
        worker.request_stop()
        assert worker.join(30)
    logger.flush()
    logged = log_stream.getvalue()
    assert "job failed" in logged and "HTTP 500" in logged  # the log is there, and speaks of it
    assert secret not in logged and secret.removeprefix("whsec_") not in logged


def test_old_deliveries_are_purged(seeded, users, settings, webhook_receiver):
    webhook, _ = subscribe(seeded, webhook_receiver.url, ["order.created"])
    webhooks.record_delivery(seeded, {
        "webhook_id": webhook["id"], "message_id": "msg_old", "event_type": "order.created", "attempt": 1,
        "status_code": 204, "duration_ms": 3, "error": None, "started_at": "2026-01-01T00:00:00.000000Z",
        "finished_at": "2026-01-01T00:00:00.000000Z"})
    webhooks.record_delivery(seeded, {
        "webhook_id": webhook["id"], "message_id": "msg_new", "event_type": "order.created", "attempt": 1,
        "status_code": 204, "duration_ms": 3, "error": None, "started_at": "2099-01-01T00:00:00.000000Z",
        "finished_at": "2099-01-01T00:00:00.000000Z"})
    assert webhooks.purge_deliveries(seeded, retention_seconds=3600) == 1
    assert [row["message_id"] for row in deliveries(seeded, webhook["id"])] == ["msg_new"]


# -- the README's receiver (tools/webhook_receiver.py) -------------------------------------------------

def load_receiver_tool():
    import importlib.util

    from conftest import PROJECT_DIR

    spec = importlib.util.spec_from_file_location("webhook_receiver", PROJECT_DIR / "tools" / "webhook_receiver.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def signed_delivery(secret, body=b'{"type":"order.paid"}', message_id="msg_1", timestamp=None):
    import time

    from signing import sign_webhook

    timestamp = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign_webhook(secret, message_id, timestamp, body)}, body


def test_the_receiver_tool_accepts_a_genuine_delivery_and_refuses_the_rest():
    import signing

    verify = load_receiver_tool().verify
    secret = signing.new_webhook_secret()
    headers, body = signed_delivery(secret)
    assert verify(secret, headers, body) is None
    assert verify(secret, headers, body + b" ") == "no signature matches"
    assert verify(signing.new_webhook_secret(), headers, body) == "no signature matches"
    assert verify(secret, dict(headers, **{"webhook-id": "msg_2"}), body) == "no signature matches"
    old_headers, _ = signed_delivery(secret, timestamp=int(headers["webhook-timestamp"]) - 301)
    assert verify(secret, old_headers, body) == "the timestamp is more than 5 minutes away"
    assert verify(secret, {}, body) == "missing webhook-id, webhook-timestamp or webhook-signature"
    rotating = dict(headers, **{"webhook-signature": "v1,b2xk " + headers["webhook-signature"]})
    assert verify(secret, rotating, body) is None


def test_an_answer_that_is_not_an_http_status_is_a_failure(seeded, users, settings):
    """http.client reads any three digits as a status; the log keeps only real ones."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def answer():
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 799 Odd\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    webhook, _ = subscribe(seeded, f"http://127.0.0.1:{listener.getsockname()[1]}/", ["order.created"])
    user = users.create()
    orders.place_order(seeded, user["id"], ONE_PEN)
    [job] = [job for job in jobs.claim(seeded, "worker-a", 5, lease_seconds=30) if job.kind == webhooks.DELIVER]
    with pytest.raises(webhooks.DeliveryFailed, match="HTTP 799: not a status"):
        webhooks.deliver(JobContext(allowing_private(settings), seeded, None), job)
    listener.close()
    [attempt] = deliveries(seeded, webhook["id"])
    assert (attempt["status_code"], attempt["error"]) == (None, "HTTP 799: not a status")
