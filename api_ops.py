"""Operations endpoints: is the process alive, and can it serve?

    GET /health  ->  200 {"status": "healthy", "version": "1.0.0"}
    GET /ready   ->  200 {"status": "ready", "checks": {"database": "ok"}}
                 ->  503 problem when the database does not answer

Liveness and readiness are different questions (the Kubernetes probes are named after
them): /health says the process runs and should not be restarted, so it touches nothing
outside the process; /ready says it can serve traffic now, so it asks the database, and a
load balancer stops sending requests while it answers 503.
"""

import db
from web import ServiceUnavailable

VERSION = "1.0.0"
HEALTH_BODY = {"status": "healthy", "version": VERSION}


def health(request):
    """GET /health: always 200 while the process runs."""
    return HEALTH_BODY


def ready(request):
    """GET /ready: 200 when the database answers a query, else a 503 problem."""
    try:
        request.services.database.ping()
    except db.DatabaseUnavailable:
        raise ServiceUnavailable("the database is not answering", headers=[("Retry-After", "5")]) from None
    return {"status": "ready", "checks": {"database": "ok"}}
