"""Cross-cutting concerns, in one ordered list: what every request passes through.

A middleware is a function `(request, call_next) -> Response`. It may look at the request,
call the next layer, and look at or change the response on the way back:

    request_id -> access_log -> security_headers -> problems -> router and handler

`build_middleware()` returns that list, outermost first; `web.Application` chains it once.
The order matters: the request id must exist before anything logs, the access log must
see the final status (so it sits outside the layer that turns errors into problems), and
the security headers go on every response, error responses included.
"""

import os
import re
import time
import traceback

import db
from web import HTTPError, InternalServerError, ServiceUnavailable, problem_response

# A client-sent X-Request-ID is kept only if it is short and plain: it goes into logs,
# and a value with newlines or quotes could forge log lines.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # used with fullmatch: no trailing newline
DATABASE_RETRY_AFTER_SECONDS = 5

# The API serves JSON only, so the browser may load nothing from it (CSP), must not sniff
# a JSON body into HTML (nosniff), frame it, or leak URLs in the Referer header.
API_SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)


def build_middleware(logger):
    """The middleware list, outermost first."""
    return [request_id, access_log(logger), security_headers, problems(logger)]


def request_id(request, call_next):
    """Accept a sane X-Request-ID from the client or make one; echo it on the response."""
    sent = request.header("X-Request-ID")
    request.request_id = sent if sent and SANE_REQUEST_ID.fullmatch(sent) else os.urandom(16).hex()
    response = call_next(request)
    response.headers.append(("X-Request-ID", request.request_id))
    return response


def access_log(logger):
    """One JSON line per request: what happened, to whom, how long it took. Never secrets."""

    def log_request(request, call_next):
        started = time.perf_counter()
        response = call_next(request)
        user = request.user
        logger.info(
            "request",
            request_id=request.request_id,
            method=request.method,
            route=request.route.pattern if request.route else None,
            status=response.status,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            user_id=user["id"] if user else None,
            client=request.environ.get("REMOTE_ADDR"),
        )
        return response

    return log_request


def security_headers(request, call_next):
    response = call_next(request)
    response.headers.extend(API_SECURITY_HEADERS)
    if response.header("Cache-Control") is None:
        # Responses may carry private data: no cache keeps them unless a handler says so.
        response.headers.append(("Cache-Control", "no-store"))
    return response


def problems(logger):
    """Turn every exception into a problem response; an unexpected one becomes a logged 500."""

    def render_problems(request, call_next):
        try:
            return call_next(request)
        except HTTPError as error:
            return problem_response(error, request)
        except db.DatabaseUnavailable as error:
            logger.error("database unavailable", request_id=request.request_id, error=str(error))
            unavailable = ServiceUnavailable(
                "the database is not answering; try again shortly",
                headers=[("Retry-After", str(DATABASE_RETRY_AFTER_SECONDS))],
            )
            return problem_response(unavailable, request)
        except Exception:
            # The client learns only that it failed and the request id to quote; the trace
            # goes to the log, where an operator finds it by that id.
            logger.error("unhandled exception", request_id=request.request_id, traceback=traceback.format_exc())
            return problem_response(InternalServerError("an unexpected error occurred"), request)

    return render_problems
