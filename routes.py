"""The route table: every endpoint, who may call it, in one place.

The router reads this table, and so does the authentication middleware (`access`: "public",
"user" or "admin"); `summary` says in a few words what the endpoint does. One line per
endpoint is the whole list of what the API offers and to whom.

`limit` is the route's rate-limit class (ratelimit.py, RATE_LIMITS): "auth" for the routes
that take a password or a refresh token, counted per client address and strictest;
"write" and "default" for the others, counted per caller. The probes have none: an
orchestrator refused its probe would take a healthy process for a dead one. Nor has
/metrics: a scrape refused is a gap in every graph, and only its token's holder (or, without
METRICS_TOKEN, a loopback client) gets past its check, which costs a hash. Its `access` is
"metrics": the handler checks METRICS_TOKEN itself (api_ops.py), since that token is no user's.

`hashes` marks the routes that run PBKDF2 (a password checked or set: passwords.py), each a
fifth of a second of a core. The server asks hashes_password(method, path) and runs those
requests on a few threads of their own, so that a burst of logins never keeps the others,
`/health` among them, waiting; tests/test_routes.py proves the marks right, route by route.
"""

import api_auth
import api_docs
import api_events
import api_exports
import api_items
import api_jobs
import api_ops
import api_orders
import api_reports
import api_users
import api_webhooks
from router import Router

#    method    path                          handler                   name              access    limit      hashes summary
ROUTES = [
    ("GET",    "/health",                    api_ops.health,           "health",         "public", None,      False, "Liveness: the process is up"),
    ("GET",    "/ready",                     api_ops.ready,            "ready",          "public", None,      False, "Readiness: the database answers"),
    ("GET",    "/metrics",                   api_ops.show_metrics,     "metrics",        "metrics", None,     False, "Counters for Prometheus"),
    ("GET",    "/openapi.json",              api_docs.openapi_document, "openapi",       "public", "default", False, "This API as an OpenAPI 3.1 document"),
    ("GET",    "/docs",                      api_docs.docs_page,       "docs",           "public", "default", False, "A page to read and try this API"),
    ("GET",    "/docs/{file}",               api_docs.docs_file,       "docs_file",      "public", "default", False, "The docs page's script, style and icon"),
    ("POST",   "/v1/auth/register",          api_auth.register,        "register",       "public", "auth",    True,  "Create an account"),
    ("POST",   "/v1/auth/login",             api_auth.login,           "login",          "public", "auth",    True,  "Get an access and a refresh token"),
    ("POST",   "/v1/auth/refresh",           api_auth.refresh,         "refresh",        "public", "auth",    False, "Rotate a refresh token"),
    ("POST",   "/v1/auth/logout",            api_auth.logout,          "logout",         "public", "write",   False, "Revoke a refresh token"),
    ("POST",   "/v1/auth/logout-all",        api_auth.logout_all,      "logout_all",     "user",   "write",   False, "Log out everywhere: every token and session"),
    ("POST",   "/v1/auth/session",           api_auth.start_session,   "start_session",  "public", "auth",    True,  "Log a browser in (cookie)"),
    ("DELETE", "/v1/auth/session",           api_auth.end_session,     "end_session",    "user",   "write",   False, "Log a browser out"),
    ("GET",    "/v1/users/me",               api_users.get_me,         "get_me",         "user",   "default", False, "Your account"),
    ("PATCH",  "/v1/users/me",               api_users.update_me,      "update_me",      "user",   "write",   True,  "Change your email or password"),
    ("GET",    "/v1/users",                  api_users.list_users,     "list_users",     "admin",  "default", False, "List accounts"),
    ("PATCH",  "/v1/users/{id:int}",         api_users.update_user,    "update_user",    "admin",  "write",   False, "Change a role"),
    ("POST",   "/v1/api-keys",               api_auth.create_api_key,  "create_api_key", "user",   "write",   False, "Create an API key (shown once)"),
    ("GET",    "/v1/api-keys",               api_auth.list_api_keys,   "list_api_keys",  "user",   "default", False, "List your API keys"),
    ("DELETE", "/v1/api-keys/{id:int}",      api_auth.revoke_api_key,  "revoke_api_key", "user",   "write",   False, "Revoke an API key"),
    ("GET",    "/v1/items",                  api_items.list_items,     "list_items",     "public", "default", False, "List the catalogue"),
    ("POST",   "/v1/items",                  api_items.create_item,    "create_item",    "admin",  "write",   False, "Add an item"),
    ("GET",    "/v1/items/{id:int}",         api_items.get_item,       "get_item",       "public", "default", False, "Read one item"),
    ("PATCH",  "/v1/items/{id:int}",         api_items.update_item,    "update_item",    "admin",  "write",   False, "Change an item (If-Match)"),
    ("DELETE", "/v1/items/{id:int}",         api_items.delete_item,    "delete_item",    "admin",  "write",   False, "Archive an item"),
    ("POST",   "/v1/orders",                 api_orders.create_order,  "create_order",   "user",   "write",   False, "Place an order (Idempotency-Key)"),
    ("GET",    "/v1/orders",                 api_orders.list_orders,   "list_orders",    "user",   "default", False, "List your orders (an admin: all)"),
    ("GET",    "/v1/orders/events",          api_events.stream_order_events, "order_events", "user", "default", False, "Live order events (server-sent events)"),
    ("GET",    "/v1/orders/{id:int}",        api_orders.get_order,     "get_order",      "user",   "default", False, "Read one order"),
    ("PATCH",  "/v1/orders/{id:int}",        api_orders.update_order,  "update_order",   "admin",  "write",   False, "Move an order: paid, shipped, cancelled"),
    ("POST",   "/v1/orders/{id:int}/cancel", api_orders.cancel_order,  "cancel_order",   "user",   "write",   False, "Cancel your pending order"),
    ("GET",    "/v1/reports/sales",          api_reports.sales_report, "sales_report",   "admin",  "default", False, "Sales per day or per item"),
    ("POST",   "/v1/reports/orders-export",  api_reports.orders_export, "orders_export", "admin", "write",   False, "Export orders as CSV (a job)"),
    ("GET",    "/v1/jobs",                   api_jobs.list_jobs,       "list_jobs",      "admin",  "default", False, "List background jobs (status, kind)"),
    ("GET",    "/v1/jobs/{id:int}",          api_jobs.get_job,         "get_job",        "admin",  "default", False, "Read one background job"),
    ("POST",   "/v1/jobs/{id:int}/retry",    api_jobs.retry_job,       "retry_job",      "admin",  "write",   False, "Queue a dead job again"),
    ("GET",    "/v1/exports/{id:int}",       api_exports.download_export, "download_export", "admin", "default", False, "Download a finished CSV export"),
    ("POST",   "/v1/webhooks",               api_webhooks.create_webhook, "create_webhook", "admin", "write", False, "Subscribe a URL to order events (secret shown once)"),
    ("GET",    "/v1/webhooks",               api_webhooks.list_webhooks, "list_webhooks", "admin",  "default", False, "List webhook subscriptions"),
    ("GET",    "/v1/webhooks/{id:int}",      api_webhooks.get_webhook, "get_webhook",    "admin",  "default", False, "Read one webhook subscription"),
    ("DELETE", "/v1/webhooks/{id:int}",      api_webhooks.delete_webhook, "delete_webhook", "admin", "write", False, "Delete a webhook subscription"),
    ("GET",    "/v1/webhooks/{id:int}/deliveries", api_webhooks.list_deliveries, "list_webhook_deliveries", "admin", "default", False, "A webhook's delivery attempts, newest first"),
]
# (method, path) of the routes marked `hashes`, for hashes_password.
_HASHING_REQUESTS = frozenset((method, pattern) for method, pattern, *_, hashes, _ in ROUTES if hashes)


def hashes_password(method: str, path: str) -> bool:
    """True when a request for this method and path runs PBKDF2 (its route is marked `hashes`).

    `path` is the path the router matches: percent-decoded, without the query string (the
    WSGI environ's PATH_INFO). The marked paths hold no parameters, so comparing exactly is
    matching, and cheap enough to ask before a request is handed to a worker. A request this
    answers wrongly for still cannot hash without bound: every PBKDF2 run of the process
    passes the hashing gate (passwords.HashingGate) whatever thread runs it.
    """
    return (method, path) in _HASHING_REQUESTS


def build_router():
    router = Router()
    for method, pattern, handler, name, access, limit, _, summary in ROUTES:
        router.add(method, pattern, handler, name=name, access=access, rate_limit=limit, summary=summary)
    return router

