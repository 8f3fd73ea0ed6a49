"""Tests for routes.py: the marks of the route table are true.

The `hashes` column says which routes run PBKDF2, and the server runs those on threads of
their own (routes.hashes_password). A route marked wrongly would either let logins queue in
front of everything else, or send ordinary requests to the few hashing threads. So every
route of the table is called here, successfully, with PBKDF2 watched: it must have run
exactly for the marked routes. A route added to the table without a request here fails the
test, so the proof cannot quietly become partial.
"""

from datetime import UTC, datetime, timedelta

import pytest
from conftest import TEST_PASSWORD, start_session

import jobs
import routes

OTHER_PASSWORD = "a kettle sings by the window at dawn"


def every_route():
    return {(method, pattern) for method, pattern, *_ in routes.ROUTES}


class WatchedCalls:
    """Call the app and note, per route, whether PBKDF2 ran while it answered."""

    def __init__(self, client, pbkdf2_calls):
        self.client, self.pbkdf2_calls = client, pbkdf2_calls
        self.ran = {}  # (method, pattern) -> (the path requested, whether PBKDF2 ran)

    def __call__(self, method, pattern, status, *, path=None, json=None, headers=None):
        path = path or pattern
        before = len(self.pbkdf2_calls)
        response = self.client.request(method, path, json=json, headers=headers)
        assert response.status == status, (method, path, response)
        self.ran[(method, pattern)] = (path, len(self.pbkdf2_calls) > before)
        return response


def test_a_route_runs_pbkdf2_exactly_when_the_table_marks_it(wsgi_client, users, seeded, pbkdf2_calls):
    admin = users.headers(users.admin())
    alice = users.create("alice@example.com")
    customer = users.headers(alice)
    bob = users.create("bob@example.com")
    call = WatchedCalls(wsgi_client, pbkdf2_calls)
    job_id = dead_job(seeded)  # first, while it is the only job in the queue
    credentials = {"email": "alice@example.com", "password": TEST_PASSWORD}

    call("GET", "/health", 200)
    call("GET", "/ready", 200)
    call("GET", "/metrics", 200)
    call("POST", "/v1/auth/register", 201, json={"email": "carol@example.com", "password": OTHER_PASSWORD})
    refresh_token = call("POST", "/v1/auth/login", 200, json=credentials).json()["refresh_token"]
    refreshed = call("POST", "/v1/auth/refresh", 200, json={"refresh_token": refresh_token}).json()
    call("POST", "/v1/auth/logout", 204, json={"refresh_token": refreshed["refresh_token"]})
    call("POST", "/v1/auth/session", 200, json=credentials)
    session_headers, csrf_token = start_session(wsgi_client, "alice@example.com")
    call("DELETE", "/v1/auth/session", 204, headers={**session_headers, "X-CSRF-Token": csrf_token})

    call("GET", "/v1/users/me", 200, headers=customer)
    call("PATCH", "/v1/users/me", 200, headers=customer,
         json={"email": "alice@example.org", "current_password": TEST_PASSWORD})
    call("GET", "/v1/users", 200, headers=admin)
    call("PATCH", "/v1/users/{id:int}", 200, path=f"/v1/users/{bob['id']}", headers=admin, json={"role": "admin"})

    key_id = call("POST", "/v1/api-keys", 201, headers=customer, json={"name": "laptop"}).json()["id"]
    call("GET", "/v1/api-keys", 200, headers=customer)
    call("DELETE", "/v1/api-keys/{id:int}", 204, path=f"/v1/api-keys/{key_id}", headers=customer)

    call("GET", "/openapi.json", 200)
    call("GET", "/docs", 200)
    call("GET", "/docs/{file}", 200, path="/docs/script.js")
    call("GET", "/v1/items", 200)
    call("POST", "/v1/items", 201, headers=admin, json={"name": "Teacup", "price_cents": 450, "stock": 3})
    call("GET", "/v1/items/{id:int}", 200, path="/v1/items/1")
    call("PATCH", "/v1/items/{id:int}", 200, path="/v1/items/1", headers={**admin, "If-Match": "*"},
         json={"price_cents": 999})
    call("DELETE", "/v1/items/{id:int}", 204, path="/v1/items/2", headers=admin)

    one_teapot = {"lines": [{"item_id": 3, "quantity": 1}]}
    order_id = call("POST", "/v1/orders", 201, headers=customer, json=one_teapot).json()["id"]
    call("GET", "/v1/orders", 200, headers=customer)
    call("GET", "/v1/orders/{id:int}", 200, path=f"/v1/orders/{order_id}", headers=customer)
    call("POST", "/v1/orders/{id:int}/cancel", 200, path=f"/v1/orders/{order_id}/cancel", headers=customer)
    other_order = wsgi_client.post("/v1/orders", json=one_teapot, headers=customer).json()["id"]
    call("PATCH", "/v1/orders/{id:int}", 200, path=f"/v1/orders/{other_order}", headers=admin,
         json={"status": "paid"})
    # A stream never ends, and this client reads bodies whole: a bad Last-Event-ID is answered at once.
    call("GET", "/v1/orders/events", 400, headers={**customer, "Last-Event-ID": "not-an-id"})
    call("GET", "/v1/reports/sales", 200, headers=admin)
    export_id = call("POST", "/v1/reports/orders-export", 202, headers=admin).json()["id"]
    call("GET", "/v1/exports/{id:int}", 409, path=f"/v1/exports/{export_id}", headers=admin)  # no worker: not ready

    call("GET", "/v1/jobs", 200, headers=admin)
    call("GET", "/v1/jobs/{id:int}", 200, path=f"/v1/jobs/{job_id}", headers=admin)
    call("POST", "/v1/jobs/{id:int}/retry", 200, path=f"/v1/jobs/{job_id}/retry", headers=admin)
    subscription = {"url": "https://93.184.215.14/hooks", "event_types": ["order.paid"]}  # an address: no DNS
    webhook_id = call("POST", "/v1/webhooks", 201, headers=admin, json=subscription).json()["id"]
    call("GET", "/v1/webhooks", 200, headers=admin)
    call("GET", "/v1/webhooks/{id:int}", 200, path=f"/v1/webhooks/{webhook_id}", headers=admin)
    call("GET", "/v1/webhooks/{id:int}/deliveries", 200, path=f"/v1/webhooks/{webhook_id}/deliveries", headers=admin)
    call("DELETE", "/v1/webhooks/{id:int}", 204, path=f"/v1/webhooks/{webhook_id}", headers=admin)
    # Last: it ends every token of the account, the customer's headers included.
    call("POST", "/v1/auth/logout-all", 204, headers=customer)

    assert set(call.ran) == every_route(), "a route of the table has no request in this test"
    wrong = {route: ran for route, (path, ran) in call.ran.items() if ran != routes.hashes_password(route[0], path)}
    assert not wrong, f"ran PBKDF2 (True) or not (False), against its mark in routes.ROUTES: {wrong}"


def dead_job(database):
    """A job that failed its only attempt, for the retry route; its id."""
    with database.transaction() as connection:
        job_id = jobs.enqueue(connection, "noop", {}, max_attempts=1)
    [job] = jobs.claim(database, "worker", 1, lease_seconds=30, now=datetime.now(UTC) + timedelta(seconds=1))
    jobs.fail(database, job, "failed on purpose", backoff_base_seconds=1, backoff_cap_seconds=1)
    return job_id


def test_every_marked_route_has_a_fixed_path():
    # hashes_password compares paths exactly: a marked pattern with {id} would never match.
    marked = [pattern for _, pattern, *_, hashes, _ in routes.ROUTES if hashes]
    assert marked and not any("{" in pattern for pattern in marked)


@pytest.mark.parametrize("method, path, expected", [
    ("POST", "/v1/auth/login", True),
    ("POST", "/v1/auth/register", True),
    ("POST", "/v1/auth/session", True),
    ("PATCH", "/v1/users/me", True),
    ("DELETE", "/v1/auth/session", False),
    ("GET", "/v1/users/me", False),
    ("GET", "/v1/auth/login", False),
    ("POST", "/v1/auth/login/", False),
    ("POST", "/v1/auth/refresh", False),
    ("GET", "/health", False),
    ("GET", "/v1/items/1", False),
])
def test_hashes_password(method, path, expected):
    assert routes.hashes_password(method, path) is expected
