"""Operations endpoints: is the process alive, can it serve, and what has it done?

    GET /health  ->  200 {"status": "healthy", "version": "1.0.0"}
    GET /ready   ->  200 {"status": "ready", "checks": {"database": "ok", "migrations": "ok"}}
                 ->  503 problem when the database does not answer, or migrations are pending
    GET /metrics ->  200 the Prometheus text format (metrics.py), to METRICS_TOKEN's holder
                     or, without one, to loopback clients; 401 or 403 to anyone else

Liveness and readiness are different questions (the Kubernetes probes are named after
them): /health says the process runs and should not be restarted, so it touches nothing
outside the process; /ready says it can serve traffic now, so it asks the database, and a
load balancer stops sending requests while it answers 503. A database that answers but
lacks this release's tables is not ready either: every data request would fail. A database
that does not answer at all gets a 503 within READY_TIMEOUT_SECONDS, not a probe that hangs.
"""

import hashlib
import hmac
import ipaddress

import db
import jobs
import metrics
import migrate
from challenge import unauthorized
from schemas import describe
from web import Forbidden, Response, ServiceUnavailable

VERSION = "1.0.0"
# The longest /ready takes to answer (shorter when DATABASE_TIMEOUT_SECONDS is): a probe
# that waits on a database which stopped answering would itself time out, and tell the
# orchestrator nothing about which part failed.
READY_TIMEOUT_SECONDS = 3
HEALTH_BODY = {"status": "healthy", "version": VERSION}


@describe(response="Health")
def health(request):
    """GET /health: always 200 while the process runs."""
    return HEALTH_BODY


@describe(response="Ready", errors=(503,))
def ready(request):
    """GET /ready: 200 when the database answers and has every migration, else a 503 problem
    whose `checks` say which part is not ready; within READY_TIMEOUT_SECONDS either way."""
    database = request.services.database
    timeout_seconds = min(READY_TIMEOUT_SECONDS, request.services.settings.database_timeout_seconds)
    try:
        # One block answers both questions: does the database answer, and is it up to date?
        pending = migrate.pending_migrations(database, timeout_seconds=timeout_seconds)
    except db.DatabaseUnavailable:
        raise ServiceUnavailable(
            "the database is not answering", extra={"checks": {"database": "unavailable"}}
        ) from None
    if pending:
        versions = ", ".join(f"{version:04d}" for version in pending)
        raise ServiceUnavailable(
            f"migrations not applied: {versions}; run: python server.py migrate",
            extra={"checks": {"database": "ok", "migrations": f"{len(pending)} pending"}},
        )
    checks = {"database": "ok", "migrations": "ok"}
    redis_link = request.services.redis
    if redis_link is not None:
        # Requests are still served without Redis (from memory and the database), but the
        # limits and the cache are no longer shared: not ready, so that someone looks.
        if not redis_link.ping():
            raise ServiceUnavailable("redis is not answering", extra={"checks": {**checks, "redis": "unavailable"}})
        checks["redis"] = "ok"
    return {"status": "ready", "checks": checks}


@describe(response={"type": "string", "description": "the Prometheus text exposition format, version 0.0.4"},
          media_type="text/plain; version=0.0.4", errors=(403,))
def show_metrics(request):
    """GET /metrics: the server's counters, histograms and gauges for Prometheus (metrics.py),
    every process's when METRICS_DIR is shared. With METRICS_TOKEN set, only for
    `Authorization: Bearer <token>` (401 otherwise); without, only for loopback clients (403
    otherwise): the route names, the traffic and the queue are nobody else's business."""
    _check_scraper(request)
    services = request.services
    extra = []
    try:
        timeout_seconds = min(READY_TIMEOUT_SECONDS, services.settings.database_timeout_seconds)
        counts, waited = jobs.queue_stats(services.database, timeout_seconds=timeout_seconds)
    except db.DatabaseUnavailable:
        pass  # the rest of the scrape still says what the process knows; /ready tells why
    else:
        extra.append(("jobs", "gauge", "Jobs in the queue's table, by status and kind.",
                      [({"status": status, "kind": kind}, number)
                       for (status, kind), number in sorted(counts.items())]))
        extra.append(("jobs_oldest_queued_age_seconds", "gauge",
                      "How long the queued job due the longest has waited to be claimed; 0 when none waits.",
                      [({}, round(waited, 3))]))
    body = metrics.render(metrics.RECORDER.totals(), extra)
    return Response(body, 200, [("Content-Type", metrics.CONTENT_TYPE)])


def _check_scraper(request):
    """Raise unless the caller may read /metrics. A wrong token is a CredentialsRefused, which
    the rate limits count against its address like a wrong API key (guess after guess)."""
    token = request.services.settings.metrics_token
    if token is not None:
        scheme, _, sent = (request.header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not sent.strip():
            raise unauthorized("GET /metrics needs Authorization: Bearer <METRICS_TOKEN>")
        # Digests of equal length, compared in constant time: neither the token's bytes nor its
        # length can be found by timing the answer.
        if not hmac.compare_digest(hashlib.sha256(sent.strip().encode()).digest(),
                                   hashlib.sha256(token.encode()).digest()):
            raise unauthorized("the metrics token is not valid", "invalid_token")
        return
    if not _is_loopback(request.client):
        raise Forbidden("GET /metrics answers loopback clients only; set METRICS_TOKEN to scrape from elsewhere")


def _is_loopback(client):
    """True for 127.0.0.0/8 and ::1 (and ::ffff:127.x, IPv4 on an IPv6 socket); False for any
    other address, and for no address at all (a Unix socket): fail closed.

    >>> [_is_loopback(a) for a in ("127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1", "10.0.0.1", "")]
    [True, True, True, True, False, False]
    """
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback
