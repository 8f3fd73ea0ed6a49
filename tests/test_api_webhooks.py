"""Tests for api_webhooks.py: admins subscribe, list, delete and read the delivery log; the
secret is shown once; bad bodies and refused URLs are 422s that send nothing anywhere; and
an order placed over HTTP reaches a real receiver, verified by the `standardwebhooks` package."""

import json

import pytest
from conftest import assert_problem, bodies_that_are_not_json, client_for, json_headers, running_worker, wait_for_jobs
from standardwebhooks import Webhook

import outbound
import webhooks

PUBLIC_URL = "https://93.184.215.14/hooks/shop"  # an address: subscribing needs no DNS, and sends nothing
SUBSCRIPTION = {"url": PUBLIC_URL, "event_types": ["order.created", "order.paid"]}


def create(client, admin, body=None):
    return client.post("/v1/webhooks", json=SUBSCRIPTION if body is None else body, headers=admin)


@pytest.fixture
def no_connection(monkeypatch):
    """Fail the test if a request handler lets anything reach the point of connecting out."""

    def connect(self):
        pytest.fail(f"a connection to {self.host}:{self.port} was attempted")

    monkeypatch.setattr(outbound._CheckedAddressConnection, "connect", connect)


# -- subscriptions ---------------------------------------------------------------------------------

def test_a_subscription_shows_its_secret_once(client, admin, logger, log_stream):
    response = create(client, admin)
    assert response.status == 201, response
    webhook = response.json()
    assert response.header("Location") == f"/v1/webhooks/{webhook['id']}"
    assert response.header("Cache-Control") == "no-store"  # no cache keeps the secret
    assert set(webhook) == {"id", "url", "event_types", "created_at", "secret"}
    assert (webhook["url"], webhook["event_types"]) == (PUBLIC_URL, ["order.created", "order.paid"])
    secret = webhook["secret"]
    assert secret.startswith("whsec_") and len(secret) == len("whsec_") + 32  # base64 of 24 bytes
    Webhook(secret)  # the independent implementation reads it
    for path in ("/v1/webhooks", f"/v1/webhooks/{webhook['id']}", f"/v1/webhooks/{webhook['id']}/deliveries"):
        later = client.get(path, headers=admin)
        assert later.status == 200, later
        assert b"secret" not in later.body and secret.encode() not in later.body
    assert client.get(f"/v1/webhooks/{webhook['id']}", headers=admin).json() == {
        name: value for name, value in webhook.items() if name != "secret"}
    logger.flush()
    assert "/v1/webhooks" in log_stream.getvalue() and secret not in log_stream.getvalue()  # the access log


def test_two_subscriptions_have_different_secrets(client, admin):
    assert create(client, admin).json()["secret"] != create(client, admin).json()["secret"]


def test_event_types_are_kept_in_a_fixed_order(client, admin):
    body = {"url": PUBLIC_URL, "event_types": ["order.cancelled", "order.created"]}
    assert create(client, admin, body).json()["event_types"] == ["order.created", "order.cancelled"]


def test_subscriptions_are_listed_by_id_and_paged_like_every_list(client, admin):
    ids = [create(client, admin).json()["id"] for _ in range(5)]
    seen, link = [], "/v1/webhooks?limit=2"
    while link:
        response = client.get(link, headers=admin)
        assert response.status == 200, response
        page = response.json()
        seen += [webhook["id"] for webhook in page["data"]]
        link = page["links"].get("next")
        assert (link is not None) == page["pagination"]["has_more"]
    assert seen == ids
    by_offset = client.get("/v1/webhooks?limit=2&offset=2&sort=-id", headers=admin).json()["data"]
    assert [webhook["id"] for webhook in by_offset] == ids[::-1][2:4]


def test_a_deleted_subscription_is_gone(client, admin):
    webhook_id = create(client, admin).json()["id"]
    response = client.request("DELETE", f"/v1/webhooks/{webhook_id}", headers=admin)
    assert (response.status, response.body) == (204, b"")
    assert client.get("/v1/webhooks", headers=admin).json()["data"] == []
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/deliveries")):
        assert_problem(client.request(method, f"/v1/webhooks/{webhook_id}{path}", headers=admin), 404,
                       f"webhook {webhook_id} does not exist")


def test_the_number_of_subscriptions_is_bounded(checker):
    made = []
    for _ in range(webhooks.MAX_WEBHOOKS):
        response = create(checker.client, checker.admin)
        assert response.status == 201
        made.append(response.json()["id"])
    try:
        assert_problem(create(checker.client, checker.admin), 409,
                       f"there are {webhooks.MAX_WEBHOOKS} webhooks already, the most there may be; delete one first")
    finally:
        for webhook_id in made:
            checker.client.request("DELETE", f"/v1/webhooks/{webhook_id}", headers=checker.admin)


@pytest.mark.parametrize("method, path", [
    ("POST", "/v1/webhooks"), ("GET", "/v1/webhooks"), ("GET", "/v1/webhooks/1"), ("DELETE", "/v1/webhooks/1"),
    ("GET", "/v1/webhooks/1/deliveries"),
])
def test_webhooks_are_for_admins_only(checker, method, path):
    body = json.dumps(SUBSCRIPTION).encode() if method == "POST" else None
    assert_problem(checker.client.request(method, path, body=body, headers=json_headers()), 401)
    assert_problem(checker.client.request(method, path, body=body, headers=json_headers(checker.customer)), 403)


# -- refused bodies and URLs ---------------------------------------------------------------------------

CHOICES = "order.created, order.paid, order.shipped, order.cancelled"
NOT_A_LIST = [{"field": "event_types", "message": f"must be a list of 1 to 4 of: {CHOICES}"}]
UNKNOWN_TYPE = [{"field": "event_types", "message": f"must hold only: {CHOICES}"}]


@pytest.mark.parametrize("body, errors", [
    ({}, [{"field": "url", "message": "is required"}, {"field": "event_types", "message": "is required"}]),
    ({"url": PUBLIC_URL, "event_types": ["order.paid"], "secret": "whsec_mine"},
     [{"field": "secret", "message": "is not a known field"}]),
    ({"url": 7, "event_types": "order.paid"},
     [{"field": "url", "message": "must be a string"}, *NOT_A_LIST]),
    ({"url": PUBLIC_URL, "event_types": []}, NOT_A_LIST),
    ({"url": PUBLIC_URL, "event_types": ["order.created"] * 5}, NOT_A_LIST),
    ({"url": PUBLIC_URL, "event_types": ["order.refunded"]}, UNKNOWN_TYPE),
    ({"url": PUBLIC_URL, "event_types": [1]}, UNKNOWN_TYPE),
    ({"url": PUBLIC_URL, "event_types": ["order.paid", "order.paid"]},
     [{"field": "event_types", "message": "must name each one once"}]),
    ({"url": "", "event_types": ["order.paid"]}, [{"field": "url", "message": "must be 1 to 2000 characters"}]),
    ({"url": "https://x.example/" + "a" * 2000, "event_types": ["order.paid"]},
     [{"field": "url", "message": "must be 1 to 2000 characters"}]),
    ({"url": "ftp://hooks.example/", "event_types": ["order.bogus"]},
     [{"field": "url", "message": "the URL must start with http:// or https://"},
      {"field": "event_types", "message": f"must hold only: {CHOICES}"}]),
    ({"url": "https://admin:hunter2@hooks.example/", "event_types": ["order.paid"]},
     [{"field": "url", "message": "the URL must not hold a user name or password"}]),
    ({"url": "https://hooks.example/\nHost: evil", "event_types": ["order.paid"]},
     [{"field": "url", "message": "the URL must not contain spaces or control characters"}]),
    ({"url": "https://no-such-host.invalid/", "event_types": ["order.paid"]},
     [{"field": "url", "message": "the host 'no-such-host.invalid' does not resolve"}]),
    ([SUBSCRIPTION], [{"field": "", "message": "the body must be a JSON object"}]),
])
def test_bad_subscriptions_are_422_naming_every_field(checker, no_connection, body, errors):
    assert_problem(create(checker.client, checker.admin, body), 422, errors=errors)


@pytest.mark.parametrize("body, content_type, status, detail",
                         bodies_that_are_not_json(json.dumps(SUBSCRIPTION).encode()))
def test_bodies_that_are_not_json_are_refused(checker, body, content_type, status, detail):
    headers = dict(checker.admin, **({"Content-Type": content_type} if content_type else {}))
    assert_problem(checker.client.request("POST", "/v1/webhooks", body=body, headers=headers), status, detail)


@pytest.mark.parametrize("host, problem", [
    ("127.0.0.1", "127.0.0.1, a loopback address"),
    ("localhost", "127.0.0.1, a loopback address"),
    ("127.1", "127.0.0.1, a loopback address"),
    ("2130706433", "127.0.0.1, a loopback address"),
    ("0x7f.0.0.1", "127.0.0.1, a loopback address"),
    ("0177.0.0.1", "127.0.0.1, a loopback address"),
    ("[::1]", "::1, a loopback address"),
    ("[::ffff:127.0.0.1]", "::ffff:7f00:1, an IPv6 address that carries 127.0.0.1, a loopback address"),
    ("0.0.0.0", "0.0.0.0, the unspecified address"),  # noqa: S104 - refused, never bound
    ("169.254.169.254", "169.254.169.254, a link-local address (cloud metadata services live here)"),
    ("10.0.0.8", "10.0.0.8, a private address"),
    ("192.168.0.1", "192.168.0.1, a private address"),
    ("100.100.100.200", "100.100.100.200, a carrier-grade NAT address"),
    ("[fd00::1]", "fd00::1, a private address"),
])
def test_urls_that_reach_inside_are_refused_and_nothing_is_sent(checker, no_connection, silent_listener, host,
                                                               problem):
    port, assert_untouched = silent_listener
    name = host.strip("[]")
    response = create(checker.client, checker.admin, {"url": f"http://{host}:{port}/hook",
                                                       "event_types": ["order.paid"]})
    assert_problem(response, 422, errors=[{"field": "url", "message": f"the host {name!r} resolves to {problem}"}])
    assert_untouched()
    assert checker.client.get("/v1/webhooks", headers=checker.admin).json()["data"] == []


# -- the whole way: a subscription, an order over HTTP, a worker, a receiver, the log ------------------------

@pytest.mark.parametrize("kind", ["wsgi", "live"])
def test_an_order_placed_over_http_is_delivered_verified_and_logged(make_app, database, settings, admin, customer,
                                                                   webhook_receiver, kind):
    app = make_app(WEBHOOK_ALLOW_PRIVATE="1", WEBHOOK_TIMEOUT_SECONDS="2")
    with client_for(app, kind) as client:
        created = client.post("/v1/webhooks", headers=admin, json={
            "url": webhook_receiver.url + "/hooks/shop", "event_types": ["order.created", "order.paid"]})
        assert created.status == 201, created
        webhook_id, secret = created.json()["id"], created.json()["secret"]
        webhook_receiver.statuses = [503]  # the first attempt fails; the retry succeeds
        with running_worker(database, app.services.settings, jitter=lambda: 0):
            placed = client.post("/v1/orders", json={"lines": [{"item_id": 3, "quantity": 2}]},
                                 headers=json_headers(customer))
            assert placed.status == 201, placed
            refused = client.post("/v1/orders", json={"lines": [{"item_id": 3, "quantity": 1000}]},
                                  headers=json_headers(customer))
            assert refused.status == 409  # rolled back: no event
            received = webhook_receiver.wait_for(2)
            wait_for_jobs(database, "kind = :kind AND status = 'done'", kind=webhooks.DELIVER)
        log = client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=admin)
    assert log.status == 200, log
    [(first_path, first_headers, _), (_, headers, body)] = received
    assert first_path == "/hooks/shop" and first_headers["webhook-id"] == headers["webhook-id"]
    event = Webhook(secret).verify(body, headers)
    assert event["type"] == "order.created" and event["data"] == {
        name: value for name, value in placed.json().items()}
    newest_first = log.json()["data"]
    assert [(row["attempt"], row["status_code"], row["error"]) for row in newest_first] == [
        (2, 204, None), (1, 503, "HTTP 503")]
    assert {row["message_id"] for row in newest_first} == {headers["webhook-id"]}
    assert set(newest_first[0]) == {"id", "webhook_id", "message_id", "event_type", "attempt", "status_code",
                                    "duration_ms", "error", "started_at", "finished_at"}
    assert secret.encode() not in log.body


def test_the_delivery_log_pages_newest_first(client, admin, database):
    webhook_id = create(client, admin).json()["id"]
    for attempt in range(1, 6):
        webhooks.record_delivery(database, {
            "webhook_id": webhook_id, "message_id": "msg_x", "event_type": "order.paid", "attempt": attempt,
            "status_code": 500, "duration_ms": 4, "error": "HTTP 500", "started_at": "2026-11-28T00:00:00.000000Z",
            "finished_at": "2026-11-28T00:00:00.000000Z"})
    seen, link = [], f"/v1/webhooks/{webhook_id}/deliveries?limit=2"
    while link:
        page = client.get(link, headers=admin).json()
        seen += [row["attempt"] for row in page["data"]]
        link = page["links"].get("next")
    assert seen == [5, 4, 3, 2, 1]
    assert_problem(client.get(f"/v1/webhooks/{webhook_id}/deliveries?sort=status_code", headers=admin), 400,
                   "cannot sort by 'status_code'; choose from id")
