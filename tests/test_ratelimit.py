"""Tests for ratelimit.py and the rate-limit middleware, seen from the client.

Each class's quota exactly (the request after the last allowed one is a 429), the draft's
fields on every answer, Retry-After right to the second, callers (an address, a user, an
API key; X-Forwarded-For believed only from trusted proxies), the failed-login lock per
account across addresses and its lifting, memory (bounded, thread-safe) and Redis (one
round trip, keys that expire, shared by processes, a fallback when it is down), and the
two load tests of the issue: a flood of wrong passwords for one account, and two gunicorn
workers on one Redis.

Time is moved, never slept: the limiters, an app's included (`make_app`), run on a Clock
that stands still until the test moves it, so every count and every second is exact
however slow the machine. The `backend` fixture runs a test on memory and on Redis.
"""

import collections
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    PROJECT_DIR,
    REDIS_TEST_URL,
    TEST_ITERATIONS,
    TEST_PASSWORD,
    TEST_SECRET_KEY,
    client_for,
    free_port,
    http_request,
    json_headers,
    responses_at_once,
    running_server,
    server_env,
)

import accounts
import config
import ratelimit
import server
from redisconn import RedisLink

SMALL_QUOTAS = "auth=3/60,write=4/60,default=5/60"
QUOTAS = {"auth": 3, "write": 4, "default": 5}
WRONG_PASSWORD = "not the password, not even close"
# A request of each class that every app answers the same way, whatever its data.
CLASS_REQUESTS = {
    "auth": ("POST", "/v1/auth/refresh", {"refresh_token": "not-a-refresh-token"}, 401),
    "write": ("POST", "/v1/auth/logout", {"refresh_token": "not-a-refresh-token"}, 204),
    "default": ("GET", "/v1/items?limit=1", None, 200),
}
sqlite_only = pytest.mark.parametrize("engine", ["sqlite"])
# The quotas `make bench` runs with (bench/bench.sh): the limiter at work, never refusing.
BENCH_RATE_LIMITS = re.findall(r'RATE_LIMITS="([^"]+)"', (PROJECT_DIR / "bench" / "bench.sh").read_text())[0]


class Clock:
    """Unix time that a test moves."""

    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def make_app(database_url, database, logger, backend):
    """make_app(**settings): the shop on the test database with these settings on top of the
    test ones, on the backend of the run (memory, or Redis under a prefix of its own), its
    rate limiter on a Clock of the test's."""

    def make(**overrides):
        settings = config.load_settings({
            "APP_ENV": "test", "DATABASE_URL": database_url, "SECRET_KEY": TEST_SECRET_KEY,
            "PBKDF2_ITERATIONS": str(TEST_ITERATIONS), **backend, **overrides,
        })
        app = server.create_app(settings, database=database, logger=logger)
        app.services.rate_limiter.clock = Clock()  # in place of settings.clock: it stands still
        return app

    return make


@pytest.fixture
def limiter_for(backend):
    """limiter_for(rate_limits, clock): a RateLimiter on the backend of the run."""
    links = []

    def make(rate_limits, clock, **options):
        link = None
        if backend:
            link = RedisLink(backend["REDIS_URL"], prefix=backend["REDIS_PREFIX"])
            links.append(link)
        return ratelimit.RateLimiter(ratelimit.parse_rate_limits(rate_limits), redis=link, clock=clock, **options)

    yield make
    for link in links:
        link.close()


def send(client, rate_class, headers=None):
    method, path, body, _ = CLASS_REQUESTS[rate_class]
    return client.request(method, path, json=body, headers=headers)


def assert_quota_exceeded(response, policy, quota, window, retry_after, path):
    """A 429 problem of type quota-exceeded for `policy`, with every field the draft names."""
    assert response.status == 429, response
    assert response.header("Content-Type") == "application/problem+json"
    assert response.header("Retry-After") == str(retry_after)
    assert response.header("RateLimit-Policy") == f'"{policy}";q={quota};w={window}'
    assert response.header("RateLimit") == f'"{policy}";r=0;t={retry_after}'
    problem = response.json()
    assert problem == {
        "type": "https://iana.org/assignments/http-problem-types#quota-exceeded", "title": "Quota Exceeded",
        "status": 429, "detail": problem["detail"], "instance": path, "request_id": response.header("X-Request-ID"),
        "violated-policies": [policy],
    }
    assert "Retry-After says when to try again" in problem["detail"]
    return problem


def log_records(logger, log_stream, event):
    logger.flush()
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    return [line for line in lines if line["event"] == event]


# -- quotas and fields, over HTTP ------------------------------------------------------------

@sqlite_only
@pytest.mark.parametrize("kind", ["wsgi", "live"])
@pytest.mark.parametrize("rate_class", ["auth", "write", "default"])
def test_each_class_serves_its_quota_exactly_then_answers_429(make_app, kind, rate_class):
    app = make_app(RATE_LIMITS=SMALL_QUOTAS, CORS_ORIGINS="https://shop.example")
    quota, interval = QUOTAS[rate_class], 60 // QUOTAS[rate_class]
    _, path, _, status = CLASS_REQUESTS[rate_class]
    with client_for(app, kind) as client:
        for sent in range(1, quota + 1):
            response = send(client, rate_class)
            assert response.status == status, response
            assert response.header("RateLimit-Policy") == f'"{rate_class}";q={quota};w=60'
            assert response.header("RateLimit") == f'"{rate_class}";r={quota - sent};t={interval}'
        refused = send(client, rate_class, headers={"Origin": "https://shop.example"})
    assert_quota_exceeded(refused, rate_class, quota, 60, retry_after=interval, path=path.split("?")[0])
    # A page on an allowed origin can read the 429 and its fields (the limit sits inside CORS).
    assert refused.header("Access-Control-Allow-Origin") == "https://shop.example"
    assert "RateLimit" in refused.header("Access-Control-Expose-Headers")


@sqlite_only
@pytest.mark.parametrize("rate_class, quota, interval", [("auth", 10, 6), ("write", 60, 1), ("default", 300, 1)])
def test_the_shipped_quotas(make_app, rate_class, quota, interval):
    with client_for(make_app(), "wsgi") as client:
        statuses = collections.Counter(send(client, rate_class).status for _ in range(quota))
        refused = send(client, rate_class)
    assert statuses == {CLASS_REQUESTS[rate_class][3]: quota}
    path = CLASS_REQUESTS[rate_class][1]
    assert_quota_exceeded(refused, rate_class, quota, 60, retry_after=interval, path=path.split("?")[0])


@sqlite_only
def test_retry_after_is_right_to_the_second(make_app):
    app = make_app(RATE_LIMITS=SMALL_QUOTAS)
    clock = app.services.rate_limiter.clock
    with client_for(app, "wsgi") as client:
        for _ in range(3):
            send(client, "auth")
        assert send(client, "auth").header("Retry-After") == "20"
        clock.now += 19                        # one second short: still refused, and it says so
        early = send(client, "auth")
        assert (early.status, early.header("Retry-After"), early.header("RateLimit")) == (429, "1", '"auth";r=0;t=1')
        clock.now += 1                         # one token is back: one request, then 20 s again
        assert (send(client, "auth").status, send(client, "auth").header("Retry-After")) == (401, "20")
        clock.now += 60                        # the whole window: the whole quota
        answers = [send(client, "auth") for _ in range(4)]
    assert [answer.header("RateLimit") for answer in answers[:3]] == [
        '"auth";r=2;t=20', '"auth";r=1;t=20', '"auth";r=0;t=20']
    assert answers[3].status == 429


@sqlite_only
def test_errors_and_unknown_paths_count_and_carry_the_fields_while_probes_do_not(make_app):
    with client_for(make_app(RATE_LIMITS=SMALL_QUOTAS), "wsgi") as client:
        missing = client.get("/v1/items/999")
        assert (missing.status, missing.header("RateLimit")) == (404, '"default";r=4;t=12')
        nowhere = client.get("/no/such/path")
        assert (nowhere.status, nowhere.header("RateLimit")) == (404, '"default";r=3;t=12')
        unsafe = client.request("DELETE", "/no/such/path")
        assert (unsafe.status, unsafe.header("RateLimit")) == (404, '"write";r=3;t=15')
        # An orchestrator's probes are never limited: a 429 would get a healthy process restarted.
        probes = [client.get(path) for path in ["/health", "/ready"] * 10]
    assert {probe.status for probe in probes} == {200}
    assert {probe.header("RateLimit") for probe in probes} == {None}


@sqlite_only
def test_rate_limits_off_adds_no_fields_and_refuses_nothing(make_app):
    with client_for(make_app(RATE_LIMITS="off"), "wsgi") as client:
        answers = [send(client, "auth") for _ in range(30)]
    assert {(answer.status, answer.header("RateLimit")) for answer in answers} == {(401, None)}


# -- callers ---------------------------------------------------------------------------------

def test_users_and_api_keys_have_budgets_of_their_own(make_app, users):
    app = make_app(RATE_LIMITS="default=2/60")
    ada, bob = users.create(), users.create()
    with client_for(app, "wsgi") as client:
        key = client.post("/v1/api-keys", json={"name": "script"}, headers=users.headers(ada)).json()["key"]
        ada_answers = [client.get("/v1/users/me", headers=users.headers(ada)).status for _ in range(3)]
        by_key = client.get("/v1/users/me", headers={"X-API-Key": key})
        by_bob = client.get("/v1/users/me", headers=users.headers(bob))
        anonymous = client.get("/v1/items")
    assert ada_answers == [200, 200, 429]
    # Ada's API key, Bob and an anonymous client at the same address each start afresh.
    assert [answer.header("RateLimit") for answer in (by_key, by_bob, anonymous)] == ['"default";r=1;t=30'] * 3


@sqlite_only
def test_x_forwarded_for_is_ignored_without_trusted_proxies(make_app):
    with client_for(make_app(RATE_LIMITS=SMALL_QUOTAS), "wsgi") as client:
        answers = [send(client, "auth", headers={"X-Forwarded-For": f"198.51.100.{n}"}) for n in range(4)]
    assert [answer.status for answer in answers] == [401, 401, 401, 429]


@sqlite_only
def test_x_forwarded_for_is_ignored_when_the_peer_is_not_a_trusted_proxy(make_app):
    with client_for(make_app(RATE_LIMITS=SMALL_QUOTAS, TRUSTED_PROXIES="10.0.0.0/8"), "wsgi") as client:
        answers = [send(client, "auth", headers={"X-Forwarded-For": f"198.51.100.{n}"}) for n in range(4)]
    assert [answer.status for answer in answers] == [401, 401, 401, 429]


@sqlite_only
def test_behind_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client(make_app):
    app = make_app(RATE_LIMITS=SMALL_QUOTAS, TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8")
    with client_for(app, "wsgi") as client:
        # What the client wrote itself (the left part) changes every time: one client still.
        spoofed = [send(client, "auth", headers={"X-Forwarded-For": f"6.6.6.{n}, 203.0.113.7, 10.1.2.3"})
                   for n in range(4)]
        other = send(client, "auth", headers={"X-Forwarded-For": "203.0.113.8"})
        no_header = send(client, "auth")       # the proxy itself, or a client on its machine
    assert [answer.status for answer in spoofed] == [401, 401, 401, 429]
    assert other.header("RateLimit") == '"auth";r=2;t=20'
    assert no_header.header("RateLimit") == '"auth";r=2;t=20'


@pytest.mark.parametrize("peer, forwarded_for, client", [
    ("203.0.113.7", "6.6.6.6", "203.0.113.7"),                     # not from a proxy: the peer
    ("10.0.0.2", "6.6.6.6, 203.0.113.7", "203.0.113.7"),           # the last hop the proxy saw
    ("10.0.0.2", "203.0.113.7, 10.0.0.1", "203.0.113.7"),          # two proxies
    ("10.0.0.2", "10.0.0.9, 10.0.0.1", "10.0.0.9"),                # all trusted: the first of them
    ("10.0.0.2", None, "10.0.0.2"),                                # no header: the proxy itself
    ("10.0.0.2", "203.0.113.7, garbage", "10.0.0.2"),              # not an address: stop there
    ("10.0.0.2", "garbage, 203.0.113.7", "203.0.113.7"),
    ("10.0.0.2", " 2001:db8::1 ", "2001:db8::1"),
    ("::ffff:10.0.0.2", "203.0.113.7", "203.0.113.7"),             # IPv4 written as IPv6
])
def test_client_address(peer, forwarded_for, client):
    trusted = config.load_settings({"APP_ENV": "test", "SECRET_KEY": TEST_SECRET_KEY,
                                    "TRUSTED_PROXIES": "10.0.0.0/8"}).trusted_proxies
    assert ratelimit.client_address(peer, forwarded_for, trusted) == client


@pytest.mark.parametrize("address, caller", [
    ("203.0.113.7", "ip:203.0.113.7"),
    ("2001:db8:7:1::1", "ip:2001:db8:7:1::/64"),
    ("2001:db8:7:1:ffff:ffff:ffff:ffff", "ip:2001:db8:7:1::/64"),   # the same /64: the same caller
    ("::ffff:203.0.113.7", "ip:203.0.113.7"),
    ("", "ip:"),
])
def test_an_ipv6_client_counts_per_64(address, caller):
    assert ratelimit.address_caller(address) == caller


# -- the failed-login lock -------------------------------------------------------------------

def login_from(client, address, email, password):
    return client.post("/v1/auth/login", json={"email": email, "password": password},
                       headers={"X-Forwarded-For": address})


# -- refused credentials, per address -------------------------------------------------------

@pytest.fixture
def api_key_lookups(monkeypatch):
    """The API-key look-ups the app makes (each one a database read), counted."""
    calls = []
    real = accounts.api_key_user

    def counted(database, key):
        calls.append(key)
        return real(database, key)

    monkeypatch.setattr(accounts, "api_key_user", counted)
    return calls


@pytest.mark.parametrize("kind", ["wsgi", "live"])
def test_made_up_api_keys_spend_the_address_budget_then_cost_no_database_read(
        make_app, users, api_key_lookups, kind, logger, log_stream):
    app = make_app(RATE_LIMITS="bad_credentials=3/60", TRUSTED_PROXIES="127.0.0.1")
    clock = app.services.rate_limiter.clock
    ada = users.create()
    made_up = {"X-API-Key": "sk_live_made_up_0123456789abcdef", "X-Forwarded-For": "203.0.113.7"}
    with client_for(app, kind) as client:
        key = client.post("/v1/api-keys", json={"name": "script"}, headers=users.headers(ada)).json()["key"]
        del api_key_lookups[:]
        guesses = [client.get("/v1/users/me", headers=made_up) for _ in range(10)]
        lookups_while_refused = len(api_key_lookups)
        # A good key from the same address waits too; another address does not.
        same_address = client.get("/v1/users/me", headers={"X-API-Key": key, "X-Forwarded-For": "203.0.113.7"})
        other_address = client.get("/v1/users/me", headers={"X-API-Key": key, "X-Forwarded-For": "203.0.113.8"})
        # Requests without credentials are not concerned: the route's own budget counts them.
        anonymous = client.get("/v1/items?limit=1", headers={"X-Forwarded-For": "203.0.113.7"})
        clock.now += 20                          # one try back (3 per 60 s): the good key passes
        later = client.get("/v1/users/me", headers={"X-API-Key": key, "X-Forwarded-For": "203.0.113.7"})
    assert [guess.status for guess in guesses] == [401, 401, 401] + [429] * 7
    assert guesses[0].header("WWW-Authenticate") == 'Bearer realm="shop", error="invalid_token"'
    # Three refused keys, and the fourth found the budget spent: no read after that.
    assert lookups_while_refused == 4
    for refused in guesses[3:]:
        problem = assert_quota_exceeded(refused, "bad_credentials", 3, 60, retry_after=20, path="/v1/users/me")
        assert problem["detail"].startswith("too many refused tokens or API keys from this address (at most 3 in 60 s)")
    assert same_address.status == 429 and same_address.header("Retry-After") == "20"
    assert (other_address.status, anonymous.status, later.status) == (200, 200, 200)
    records = log_records(logger, log_stream, "credentials shut out")
    assert [(record["client"], record["retry_after_seconds"]) for record in records] == [("ip:203.0.113.7", 20)]


@sqlite_only
def test_forged_tokens_count_too_while_missing_credentials_and_stale_cookies_do_not(make_app, users):
    app = make_app(RATE_LIMITS="bad_credentials=2/60")
    with client_for(app, "wsgi") as client:
        needs_login = [client.get("/v1/users/me").status for _ in range(5)]
        stale_cookie = [client.get("/v1/items?limit=1", headers={"Cookie": "session=stale"}).status
                        for _ in range(5)]
        forged = [client.get("/v1/items?limit=1", headers={"Authorization": f"Bearer not.a.token{n}"}).status
                  for n in range(3)]
        not_bearer = client.get("/v1/items?limit=1", headers={"Authorization": "Basic YTpi"})
    assert needs_login == [401] * 5 and stale_cookie == [200] * 5
    assert forged == [401, 401, 429]
    assert not_bearer.status == 429  # shut out: not even looked at


@sqlite_only
def test_rate_limits_off_leaves_refused_credentials_uncounted(make_app):
    with client_for(make_app(RATE_LIMITS="off"), "wsgi") as client:
        answers = [client.get("/v1/users/me", headers={"X-API-Key": "sk_made_up"}).status for _ in range(50)]
    assert answers == [401] * 50


def test_the_shut_out_list_is_bounded(limiter_for, monkeypatch):
    monkeypatch.setattr(ratelimit, "MAX_SHUT_OUT", 5)
    limiter = limiter_for("bad_credentials=1/60", Clock())
    for n in range(20):
        limiter.credentials_failed(f"ip:198.51.100.{n}")
        limiter.credentials_failed(f"ip:198.51.100.{n}")      # the second is refused: shut out
    assert len(limiter._shut_out) == 5
    assert limiter.shut_out("ip:198.51.100.19") is not None   # the latest are kept
    assert limiter.shut_out("ip:198.51.100.0") is None        # dropped: found out again, at one check's cost
    assert limiter.credentials_failed("ip:198.51.100.0").allowed is False


@sqlite_only
@pytest.mark.parametrize("trusted, client", [("", "127.0.0.1"), ("127.0.0.1", "203.0.113.7")])
def test_the_access_log_names_the_client_found_behind_trusted_proxies(make_app, logger, log_stream, trusted, client):
    app = make_app(TRUSTED_PROXIES=trusted)
    with client_for(app, "wsgi") as wsgi_client:
        wsgi_client.get("/v1/items?limit=1", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.7"})
    assert [record["client"] for record in log_records(logger, log_stream, "request")] == [client]


def test_five_failed_logins_lock_the_account_whatever_address_they_come_from(
        make_app, users, logger, log_stream, pbkdf2_calls):
    app = make_app(TRUSTED_PROXIES="127.0.0.1")
    ada = users.create("ada@example.com")
    with client_for(app, "wsgi") as client:
        key = client.post("/v1/api-keys", json={"name": "laptop"}, headers=users.headers(ada)).json()["key"]
        failures = [login_from(client, f"198.51.100.{n}", "ada@example.com", WRONG_PASSWORD) for n in range(5)]
        hashes = len(pbkdf2_calls)
        locked = login_from(client, "203.0.113.99", "Ada@Example.com", TEST_PASSWORD)   # even the right one
        session = client.post("/v1/auth/session", json={"email": "ada@example.com", "password": TEST_PASSWORD},
                              headers={"X-Forwarded-For": "203.0.113.98"})
        hashes_while_locked = len(pbkdf2_calls) - hashes
        # What the owner still has: access tokens, API keys (and sessions, refresh tokens).
        by_token = client.get("/v1/users/me", headers=users.headers(ada))
        by_key = client.get("/v1/users/me", headers={"X-API-Key": key})
        bob = login_from(client, "198.51.100.1", users.create("bob@example.com")["email"], TEST_PASSWORD)
    assert [answer.status for answer in failures] == [401] * 5
    assert hashes_while_locked == 0, "a locked login ran PBKDF2"
    for refused, path in ((locked, "/v1/auth/login"), (session, "/v1/auth/session")):
        problem = assert_quota_exceeded(refused, "login_failures", 5, 900, retry_after=180, path=path)
        assert problem["detail"].startswith("too many failed logins for this account (at most 5 in 900 s)")
    assert (by_token.status, by_key.status, bob.status) == (200, 200, 200)
    records = log_records(logger, log_stream, "login locked")
    assert [(record["level"], record["retry_after_seconds"]) for record in records] == [("warning", 180)]
    assert records[0]["account"] == app.services.rate_limiter.account_key("ada@example.com")
    assert "ada@example.com" not in log_stream.getvalue() and WRONG_PASSWORD not in log_stream.getvalue()


def test_the_lock_lifts_one_try_every_three_minutes_and_wholly_after_the_window(make_app, users):
    app = make_app(TRUSTED_PROXIES="127.0.0.1")
    clock = app.services.rate_limiter.clock
    users.create("ada@example.com")

    addresses = (f"198.51.100.{n}" for n in range(1, 255))   # each attempt from a new one

    def ada_logs_in(password):
        return login_from(client, next(addresses), "ada@example.com", password).status

    with client_for(app, "wsgi") as client:
        assert [ada_logs_in(WRONG_PASSWORD) for _ in range(6)] == [401] * 5 + [429]
        clock.now += 179
        assert ada_logs_in(TEST_PASSWORD) == 429
        clock.now += 1                          # one try came back; a right password gives it back
        assert [ada_logs_in(TEST_PASSWORD), ada_logs_in(TEST_PASSWORD)] == [200, 200]
        assert [ada_logs_in(WRONG_PASSWORD), ada_logs_in(TEST_PASSWORD)] == [401, 429]
        clock.now += 900
        assert [ada_logs_in(WRONG_PASSWORD) for _ in range(6)] == [401] * 5 + [429]


def test_right_passwords_never_lock_and_unknown_emails_lock_like_accounts(make_app, users):
    app = make_app(TRUSTED_PROXIES="127.0.0.1")
    users.create("ada@example.com")
    with client_for(app, "wsgi") as client:
        rights = [login_from(client, f"198.51.100.{n}", "ada@example.com", TEST_PASSWORD).status for n in range(12)]
        # An unknown email answers as an account does, lock included: nothing tells them apart.
        unknown = [login_from(client, f"198.51.101.{n}", "nobody@example.com", WRONG_PASSWORD) for n in range(6)]
    assert rights == [200] * 12
    assert [answer.status for answer in unknown] == [401] * 5 + [429]
    assert unknown[5].header("RateLimit") == '"login_failures";r=0;t=180'


def test_a_login_the_hashing_gate_refuses_gives_its_try_back(make_app, users, monkeypatch):
    import passwords

    app = make_app(TRUSTED_PROXIES="127.0.0.1")
    users.create("ada@example.com")

    def busy(*args, **kwargs):
        raise passwords.HashingBusy

    with client_for(app, "wsgi") as client:
        monkeypatch.setattr(passwords, "verify_password", busy)
        assert {login_from(client, f"198.51.100.{n}", "ada@example.com", TEST_PASSWORD).status
                for n in range(8)} == {503}
        monkeypatch.undo()
        assert login_from(client, "198.51.100.99", "ada@example.com", TEST_PASSWORD).status == 200


# -- the limiter alone: the algorithm, memory and Redis -------------------------------------

def test_the_docstring_example_on_both_backends(limiter_for):
    clock = Clock()
    limiter = limiter_for("auth=10/60", clock)
    decisions = [limiter.take("auth", "ip:203.0.113.7") for _ in range(11)]
    assert [(d.allowed, d.remaining, d.reset_seconds) for d in decisions] == [
        *((True, left, 6) for left in range(9, -1, -1)), (False, 0, 6)]
    clock.now += 30
    later = limiter.take("auth", "ip:203.0.113.7")
    assert (later.allowed, later.remaining) == (True, 4)
    assert limiter.take("auth", "ip:203.0.113.8").remaining == 9    # another caller, another bucket


def test_giving_back_undoes_a_take(limiter_for):
    clock = Clock()
    limiter = limiter_for("default=3/60", clock)
    for _ in range(3):
        limiter.take("default", "user:1")
    limiter.give_back("default", "user:1")
    assert limiter.take("default", "user:1").allowed
    assert not limiter.take("default", "user:1").allowed
    for _ in range(5):                      # never below an empty bucket
        limiter.give_back("default", "user:1")
    assert limiter.take("default", "user:1").remaining == 2


def test_concurrent_takes_allow_exactly_the_quota(limiter_for):
    limiter = limiter_for("default=500/60", Clock())
    allowed = []
    barrier = threading.Barrier(20)

    def take_forty():
        barrier.wait(timeout=10)
        allowed.append(sum(limiter.take("default", "ip:203.0.113.7").allowed for _ in range(40)))

    threads = [threading.Thread(target=take_forty) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(allowed) == 500


def test_memory_holds_at_most_max_buckets_and_keeps_the_recent_ones():
    clock = Clock()
    limiter = ratelimit.RateLimiter(ratelimit.parse_rate_limits("auth=2/60"), clock=clock, max_buckets=100)
    for _ in range(2):
        limiter.take("auth", "ip:203.0.113.7")
    for n in range(10_000):                 # a flood of addresses, each seen once
        limiter.take("auth", f"ip:10.{n // 256}.{n % 256}.1")
        if n % 50 == 0:                     # a caller refused now and then is not one long gone
            assert not limiter.take("auth", "ip:203.0.113.7").allowed
    assert len(limiter.memory) == 100
    assert not limiter.take("auth", "ip:203.0.113.7").allowed


@sqlite_only
@pytest.mark.parametrize("backend", [{}], ids=["memory"])
def test_a_flood_of_addresses_through_the_app_keeps_memory_bounded(make_app):
    app = make_app(RATE_LIMITS=SMALL_QUOTAS, TRUSTED_PROXIES="127.0.0.1")
    app.services.rate_limiter.memory.max_buckets = 50
    with client_for(app, "wsgi") as client:
        statuses = {send(client, "default", headers={"X-Forwarded-For": f"198.51.{n // 256}.{n % 256}"}).status
                    for n in range(1000)}
    assert statuses == {200}
    assert len(app.services.rate_limiter.memory) == 50


def test_on_redis_a_check_is_one_round_trip_and_the_key_expires(redis_prefix, monkeypatch):
    link = RedisLink(REDIS_TEST_URL, prefix=redis_prefix)
    limiter = ratelimit.RateLimiter(ratelimit.parse_rate_limits("auth=10/60"), redis=link)
    limiter.take("auth", "ip:203.0.113.7")   # the first call loads the script into Redis
    commands = []
    execute = link.client.execute_command
    monkeypatch.setattr(link.client, "execute_command", lambda *args, **options: (
        commands.append(args[0]), execute(*args, **options))[1])
    assert limiter.take("auth", "ip:203.0.113.7").remaining == 8
    assert commands == ["EVALSHA"]
    key = f"{redis_prefix}ratelimit:auth:ip:203.0.113.7"
    ttl = link.client.pttl(key)
    assert 11_000 < ttl <= 12_000           # two tokens out: paid back within 12 s, then gone
    for _ in range(2):
        limiter.give_back("auth", "ip:203.0.113.7")
    assert not link.client.exists(key)
    link.close()


def test_processes_on_one_redis_share_one_budget(redis_prefix):
    links = [RedisLink(REDIS_TEST_URL, prefix=redis_prefix) for _ in range(2)]
    limiters = [ratelimit.RateLimiter(ratelimit.parse_rate_limits("auth=10/60"), redis=link) for link in links]
    decisions = [limiters[n % 2].take("auth", "ip:203.0.113.7") for n in range(12)]
    assert [decision.allowed for decision in decisions] == [True] * 10 + [False] * 2
    for link in links:
        link.close()


def test_when_redis_is_down_memory_takes_over_and_warns_once_per_ten_seconds():
    records = []

    class Recorder:
        def warning(self, event, **fields):
            records.append(event)

    redis_clock = Clock()
    link = RedisLink(f"redis://127.0.0.1:{free_port()}/0", logger=Recorder(), clock=redis_clock)
    limiter = ratelimit.RateLimiter(ratelimit.parse_rate_limits("auth=3/60"), redis=link, clock=Clock())
    decisions = []
    for _ in range(2):
        decisions += [limiter.take("auth", "ip:203.0.113.7").allowed for _ in range(2)]
        redis_clock.now += 2                # past the back-off: Redis is tried again, and fails
    assert decisions == [True, True, True, False]
    assert records == ["redis unavailable; using the fallback"]
    redis_clock.now += 10
    limiter.take("auth", "ip:203.0.113.7")
    assert records == ["redis unavailable; using the fallback"] * 2


@sqlite_only
def test_an_app_whose_redis_is_down_serves_and_limits_from_memory(make_app, logger, log_stream):
    app = make_app(RATE_LIMITS=SMALL_QUOTAS, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    with client_for(app, "wsgi") as client:
        answers = [send(client, "default") for _ in range(6)]
        ready = client.get("/ready")
    assert [answer.status for answer in answers] == [200] * 5 + [429]
    assert answers[0].header("RateLimit") == '"default";r=4;t=12'
    assert (ready.status, ready.json()["checks"]["redis"]) == (503, "unavailable")
    assert len(log_records(logger, log_stream, "redis unavailable; using the fallback")) == 1


def test_the_bench_value_never_refuses_at_a_rate_no_server_reaches():
    assert f"`{BENCH_RATE_LIMITS}`" in (PROJECT_DIR / "README.md").read_text()
    assert f'RATE_LIMITS="{BENCH_RATE_LIMITS}"' in (PROJECT_DIR / "bench" / "orders.sh").read_text()
    limiter = ratelimit.RateLimiter(ratelimit.parse_rate_limits(BENCH_RATE_LIMITS), clock=Clock())
    for rate_class in ("default", "write"):
        assert all(limiter.take(rate_class, "ip:127.0.0.1").allowed for _ in range(50_000))



# -- the load tests -----------------------------------------------------------------

@sqlite_only
def test_fifty_wrong_password_logins_at_once_run_at_most_five_hashes_and_health_stays_fast(
        make_app, database, pbkdf2_calls):
    """50 clients, each from its own address (behind a trusted proxy, so the per-address quota
    does not stop them), log in to one account with a wrong password, again and again for 3 s,
    while a probe asks /health. The server is set up as `python server.py` sets itself up:
    lanes, and PBKDF2 at its production cost."""
    app = make_app(PBKDF2_ITERATIONS=str(config.DEFAULT_PBKDF2_ITERATIONS), TRUSTED_PROXIES="127.0.0.1")
    accounts.register(database, "target@example.com", TEST_PASSWORD, iterations=config.DEFAULT_PBKDF2_ITERATIONS)
    hashes_before = len(pbkdf2_calls)
    settings = app.services.settings
    body = json.dumps({"email": "target@example.com", "password": WRONG_PASSWORD}).encode()
    statuses, probe_seconds = collections.Counter(), []
    with running_server(app, max_workers=2, lanes=server.server_lanes(settings), lane_for=server.lane_for) as url:
        port = int(url.rsplit(":", 1)[1])
        stop_at = time.monotonic() + 3

        def attacker(n):
            headers = json_headers({"X-Forwarded-For": f"198.51.100.{n}"})
            while time.monotonic() < stop_at:
                statuses[http_request(port, "/v1/auth/login", method="POST", headers=headers, body=body)[0]] += 1

        def probe():
            while time.monotonic() < stop_at:
                started = time.monotonic()
                assert http_request(port, "/health")[0] == 200
                probe_seconds.append(time.monotonic() - started)
                time.sleep(0.05)

        threads = [threading.Thread(target=attacker, args=(n,)) for n in range(50)] + [threading.Thread(target=probe)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    hashes = len(pbkdf2_calls) - hashes_before
    assert set(statuses) <= {401, 429, 503}, statuses
    assert 1 <= statuses[401] == hashes <= 5, (statuses, hashes)
    assert statuses[429] > 50, statuses
    assert len(probe_seconds) > 20 and max(probe_seconds) < 0.5, sorted(probe_seconds)[-5:]


GUNICORN = Path(sys.executable).with_name("gunicorn")


def test_two_gunicorn_workers_on_one_redis_give_the_quota_once_in_total(tmp_path, redis_prefix, start_program):
    """40 logins at once to `gunicorn --workers 2` on one Redis, with an auth quota of 20:
    20 answered, 20 refused, whichever worker took them. Each login hashes its password
    (a tenth of a second at these iterations), which keeps one worker busy while the
    other accepts: gunicorn's access log, with each line's process id, shows both worked."""
    env = server_env(f"sqlite:///{tmp_path}/shop.db", REDIS_URL=REDIS_TEST_URL, REDIS_PREFIX=redis_prefix,
                     RATE_LIMITS="auth=20/600", PBKDF2_ITERATIONS="200000", ACCESS_LOG="0")
    admin = subprocess.run([sys.executable, "server.py", "create-admin", "admin@example.com"], cwd=PROJECT_DIR,
                           env=env, input=TEST_PASSWORD + "\n", capture_output=True, text=True, timeout=60, check=False)
    assert admin.returncode == 0, admin.stderr
    port = free_port()
    access_log = tmp_path / "gunicorn-access.log"
    command = [str(GUNICORN), "--workers", "2", "--bind", f"127.0.0.1:{port}", "--no-control-socket",
               "--access-logfile", str(access_log), "--access-logformat", "%(p)s %(s)s", "server:app"]
    gunicorn = start_program(command, env).wait_until_accepting(port)
    body = json.dumps({"email": "admin@example.com", "password": TEST_PASSWORD}).encode()
    answers = responses_at_once(f"http://127.0.0.1:{port}", [("POST", "/v1/auth/login", json_headers(), body)] * 40)
    gunicorn.send_signal(signal.SIGTERM)
    assert gunicorn.wait(30) == 0
    assert collections.Counter(answer.status for answer in answers) == {200: 20, 429: 20}
    # Every remaining count from 19 down to 0 was handed out once: one budget, not one per worker.
    remaining = [int(re.findall(r";r=(\d+);", answer.header("RateLimit"))[0]) for answer in answers
                 if answer.status == 200]
    assert sorted(remaining) == list(range(20))
    workers = {line.split()[0] for line in access_log.read_text().splitlines()}
    assert len(workers) == 2, "one worker took every request; the test proved nothing"

