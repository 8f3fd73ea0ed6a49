"""The route table: every endpoint, who may call it, in one place.

The router reads this table, and so does the authentication middleware (`access`: "public",
"user" or "admin"); `summary` says in a few words what the endpoint does. One line per
endpoint is the whole list of what the API offers and to whom.
"""

import api_auth
import api_items
import api_ops
import api_orders
import api_reports
import api_users
from router import Router

#  method    path                      handler                    name              access    summary
ROUTES = [
    ("GET",    "/health",                api_ops.health,            "health",         "public", "Liveness: the process is up"),
    ("GET",    "/ready",                 api_ops.ready,             "ready",          "public", "Readiness: the database answers"),
    ("POST",   "/v1/auth/register",      api_auth.register,         "register",       "public", "Create an account"),
    ("POST",   "/v1/auth/login",         api_auth.login,            "login",          "public", "Get an access and a refresh token"),
    ("POST",   "/v1/auth/refresh",       api_auth.refresh,          "refresh",        "public", "Rotate a refresh token"),
    ("POST",   "/v1/auth/logout",        api_auth.logout,           "logout",         "public", "Revoke a refresh token"),
    ("POST",   "/v1/auth/logout-all",    api_auth.logout_all,       "logout_all",     "user",   "Log out everywhere: every token and session"),
    ("POST",   "/v1/auth/session",       api_auth.start_session,    "start_session",  "public", "Log a browser in (cookie)"),
    ("DELETE", "/v1/auth/session",       api_auth.end_session,      "end_session",    "user",   "Log a browser out"),
    ("GET",    "/v1/users/me",           api_users.get_me,          "get_me",         "user",   "Your account"),
    ("PATCH",  "/v1/users/me",           api_users.update_me,       "update_me",      "user",   "Change your email or password"),
    ("GET",    "/v1/users",              api_users.list_users,      "list_users",     "admin",  "List accounts"),
    ("PATCH",  "/v1/users/{id:int}",     api_users.update_user,     "update_user",    "admin",  "Change a role"),
    ("POST",   "/v1/api-keys",           api_auth.create_api_key,   "create_api_key", "user",   "Create an API key (shown once)"),
    ("GET",    "/v1/api-keys",           api_auth.list_api_keys,    "list_api_keys",  "user",   "List your API keys"),
    ("DELETE", "/v1/api-keys/{id:int}",  api_auth.revoke_api_key,   "revoke_api_key", "user",   "Revoke an API key"),
    ("GET",    "/v1/items",              api_items.list_items,      "list_items",     "public", "List the catalogue"),
    ("POST",   "/v1/items",              api_items.create_item,     "create_item",    "admin",  "Add an item"),
    ("GET",    "/v1/items/{id:int}",     api_items.get_item,        "get_item",       "public", "Read one item"),
    ("PATCH",  "/v1/items/{id:int}",     api_items.update_item,     "update_item",    "admin",  "Change an item (If-Match)"),
    ("DELETE", "/v1/items/{id:int}",     api_items.delete_item,     "delete_item",    "admin",  "Archive an item"),
    ("POST",   "/v1/orders",             api_orders.create_order,   "create_order",   "user",   "Place an order (Idempotency-Key)"),
    ("GET",    "/v1/orders",             api_orders.list_orders,    "list_orders",    "user",   "List your orders (an admin: all)"),
    ("GET",    "/v1/orders/{id:int}",    api_orders.get_order,      "get_order",      "user",   "Read one order"),
    ("PATCH",  "/v1/orders/{id:int}",    api_orders.update_order,   "update_order",   "admin",  "Move an order: paid, shipped, cancelled"),
    ("POST",   "/v1/orders/{id:int}/cancel", api_orders.cancel_order, "cancel_order", "user",   "Cancel your pending order"),
    ("GET",    "/v1/reports/sales",      api_reports.sales_report,  "sales_report",   "admin",  "Sales per day or per item"),
]


def build_router():
    router = Router()
    for method, pattern, handler, name, access, summary in ROUTES:
        router.add(method, pattern, handler, name=name, access=access, summary=summary)
    return router
