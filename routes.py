"""The route table: every endpoint, who may call it, in one place.

The router reads this table; so will the auth middleware (`access`) and the OpenAPI
document (`summary`). One line per endpoint is the whole list of what the API offers.
"""

import api_items
import api_ops
from web import Router

#  method  path                    handler                name          access    summary
ROUTES = [
    ("GET", "/health",             api_ops.health,        "health",     "public", "Liveness: the process is up"),
    ("GET", "/ready",              api_ops.ready,         "ready",      "public", "Readiness: the database answers"),
    ("GET", "/v1/items",           api_items.list_items,  "list_items", "public", "List the catalogue"),
    ("GET", "/v1/items/{id:int}",  api_items.get_item,    "get_item",   "public", "Read one item"),
]


def build_router():
    router = Router()
    for method, pattern, handler, name, access, summary in ROUTES:
        router.add(method, pattern, handler, name=name, access=access, summary=summary)
    return router
