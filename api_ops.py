"""Operations endpoints: is the process alive, and can it serve?

    GET /health  ->  200 {"status": "healthy", "version": "1.0.0"}
    GET /ready   ->  200 {"status": "ready", "checks": {"database": "ok", "migrations": "ok"}}
                 ->  503 problem when the database does not answer, or migrations are pending

Liveness and readiness are different questions (the Kubernetes probes are named after
them): /health says the process runs and should not be restarted, so it touches nothing
outside the process; /ready says it can serve traffic now, so it asks the database, and a
load balancer stops sending requests while it answers 503. A database that answers but
lacks this release's tables is not ready either: every data request would fail. A database
that does not answer at all gets a 503 within READY_TIMEOUT_SECONDS, not a probe that hangs.
"""

import db
import migrate
from schemas import describe
from web import ServiceUnavailable

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
