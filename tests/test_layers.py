"""The layering rules of the README's map, checked by reading every module's imports.

    HTTP toolkit (web, router, http11*, httpserver, ...)    knows nothing of the shop
      -> handlers (api_*.py)                                HTTP in, plain values out
      -> services (accounts, orders, idempotency, ...)      business rules, no HTTP objects
      -> SQL (sql_*.py)                                     one function per query
      -> db.py                                              connections, transactions, engines

A rule broken is reported as `file:line: imports X; rule`. Nothing is imported to check it:
`ast` reads the source, so a module that would fail to import is still judged, and an
import inside a function counts as much as one at the top.

Every module of the project must belong to a layer (LAYERS below): a new module is placed
on purpose, so its rules apply from its first line.
"""

import ast
import re
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent

TOOLKIT = frozenset({"web", "router", "http11", "http11_responses", "httpserver", "httpsockets", "httpthreads",
                     "httpworkers", "strictjson"})
SECRETS = frozenset({"auth", "passwords", "signing"})
# The services that exist and the ones the roadmap adds next: named now so that a new
# module with one of these names is held to the rules on its first commit.
SERVICES = frozenset({"accounts", "orders", "idempotency", "jobs", "worker", "mailer", "webhooks", "outbound",
                      "exports", "events"})
SQL_MAY_IMPORT = frozenset({"db", "sql_paging", "config"})
# Beside the handlers, the modules that know HTTP: what they raise and read are HTTP things.
HTTP_HELPERS = frozenset({"pagination", "validation", "cookies", "challenge", "schemas", "openapi"})
WIRING = frozenset({"server", "routes", "middleware"})
# Modules that are neither a prefix group nor one of the sets above, each with its layer.
OTHER_MODULES = {
    "server": "wiring",       # the WSGI app and the command line
    "routes": "wiring",       # the route table
    "middleware": "wiring",   # cross-cutting concerns in one ordered list
    "config": "wiring",       # the environment, read once
    "origins": "wiring",      # the check of CORS_ORIGINS, for config
    "cookies": "handlers",    # the cookie policy that handlers and middleware share
    "challenge": "handlers",  # the 401 and its WWW-Authenticate challenge, for both as well
    "pagination": "handlers",  # the HTTP side of lists
    "validation": "handlers",  # field rules for bodies and query values
    # What each handler answers, declared beside it (@describe), and the OpenAPI document made
    # from the route table and those declarations. Both are read by handlers (api_docs serves
    # the document), and neither may import the route table: server.py hands it the routes.
    "schemas": "handlers",
    "openapi": "handlers",
    "db": "database",
    "migrate": "database",    # the schema and its numbered migrations
    "deadlines": "database",  # the watchdog that ends a wait on a silent socket
    "redisconn": "database",  # the other store, optional: Redis, with a fallback when it is down
    "cache": "database",      # answers kept in front of the database, in memory or on Redis
    "pgnotify": "database",   # PostgreSQL LISTEN on a connection of its own: wakes the job workers
    "observe": "operations",  # logs
    "tracing": "operations",  # W3C Trace Context: ids, their headers, the trace of the work in hand
    # Counters for GET /metrics: the stdlib only, so that every layer may count into it (the
    # middleware its requests, a handler its cache hits, a service its webhook deliveries).
    "metrics": "operations",
    "ratelimit": "operations",  # budgets per caller, in memory or on Redis: no HTTP objects
    "seed": "operations",     # demo data
    "backup": "operations",   # backup and restore: SQLite's backup API, pg_dump and pg_restore
}
# SQL text: a statement's opening words, in the capitals every SQL string here uses.
SQL_TEXT = re.compile(r"\b(SELECT\s.+\sFROM|INSERT INTO|DELETE FROM|UPDATE\s+\w+\s+SET)\b", re.DOTALL)


def test_every_module_keeps_to_its_layer():
    broken = layer_violations(PROJECT_DIR)
    assert not broken, "layering rules broken (see tests/test_layers.py):\n" + "\n".join(broken)


def test_no_module_shadows_the_standard_library():
    broken = shadowing_modules(PROJECT_DIR)
    assert not broken, "\n".join(broken)


def layer_violations(project_dir):
    """Every broken rule among the project's top-level modules, as readable lines."""
    modules = {path.stem: path for path in sorted(project_dir.glob("*.py"))}
    broken = []
    for name, path in modules.items():
        layer = layer_of(name)
        if layer is None:
            broken.append(f"{path.name}: belongs to no layer; add it to tests/test_layers.py (and the README's map)")
            continue
        for imported, line in imports_of(path):
            rule = _rule_broken(name, imported, modules)
            if rule:
                broken.append(f"{path.name}:{line}: imports {imported}; {rule}")
        if name.startswith("api_"):
            for line in sql_text_lines(path):
                broken.append(
                    f"{path.name}:{line}: holds SQL text; handlers never contain SQL (it belongs in sql_*.py)")
    return broken


def shadowing_modules(project_dir):
    """Project modules (top level and tests) named like a standard-library module: with
    `pythonpath = .` a file email.py would be imported in place of the real `email`."""
    paths = sorted(project_dir.glob("*.py")) + sorted(project_dir.glob("tests/*.py"))
    return [
        f"{path.relative_to(project_dir)}: shadows the standard-library module '{path.stem}'; rename it"
        for path in paths if path.stem in sys.stdlib_module_names
    ]


def layer_of(name):
    if name.startswith("sql_"):
        return "sql"
    if name.startswith("api_"):
        return "handlers"
    if name in TOOLKIT:
        return "toolkit"
    if name in SECRETS:
        return "secrets"
    if name in SERVICES:
        return "services"
    return OTHER_MODULES.get(name)


def imports_of(path):
    """(top-level module name, line) of every import in a file; relative imports are none here."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name.split(".")[0], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module.split(".")[0], node.lineno))
    return sorted(found, key=lambda pair: pair[1])


def sql_text_lines(path):
    """Lines of string constants that read as SQL statements (docstrings are prose, not SQL)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.lineno for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in docstrings and SQL_TEXT.search(node.value)
    ]


def _rule_broken(importer, imported, modules):
    """The rule `importer` breaks by importing `imported`, or None."""
    is_shop = imported in modules
    is_stdlib = imported in sys.stdlib_module_names
    if imported == "server" and importer != "server":
        return "nothing imports server: it is the top, where the pieces are wired together"
    if importer.startswith("sql_") and is_shop and imported not in SQL_MAY_IMPORT:
        return "sql_* modules import nothing of the shop but db, sql_paging and config"
    if importer == "db" and is_shop and imported not in {"config", "deadlines"}:
        return "db imports nothing of the shop but config and deadlines"
    if importer == "deadlines" and not is_stdlib:
        return "deadlines imports only the standard library"
    if importer == "migrate" and is_shop and imported not in {"db", "config"}:
        return "migrate imports nothing of the shop but db and config"
    if importer in SERVICES and _is_http_side(imported):
        return ("services never import the HTTP side (the toolkit, middleware, routes, api_*, pagination,"
                " validation, cookies, challenge): no HTTP objects below the handlers")
    if importer.startswith("api_") and (imported in WIRING or imported.startswith("api_")):
        return "api_* never import middleware, routes, server or each other"
    if importer in HTTP_HELPERS and (imported in WIRING or imported.startswith("api_")):
        return ("pagination, validation, cookies, challenge, schemas and openapi never import middleware, routes,"
                " server or api_*")
    if importer in TOOLKIT and imported not in TOOLKIT and not is_stdlib:
        return ("the HTTP toolkit (web, router, http11*, httpserver, httpthreads, httpworkers, strictjson) imports only"
                " the standard library and itself")
    if importer in SECRETS and imported not in SECRETS | {"strictjson"} and not is_stdlib:
        return "auth, passwords and signing import only the standard library, strictjson and each other"
    return None


def _is_http_side(name):
    return name in TOOLKIT or name in HTTP_HELPERS or name in WIRING or name.startswith("api_")


# -- the rules' own tests: a fabricated project in a temporary directory -------------------

def make_project(tmp_path, files):
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return tmp_path


CLEAN_PROJECT = {
    "db.py": "import sqlite3\nimport config\nfrom deadlines import Watchdog\n",
    "deadlines.py": "import socket\n",
    "migrate.py": "import db\nfrom config import PROJECT_DIR\n",
    "config.py": "import os\n",
    "web.py": "import json\nimport strictjson\n",
    "strictjson.py": "import json\n",
    "auth.py": "import hmac\nimport signing\nimport strictjson\n",
    "passwords.py": "import hashlib\nimport threading\n",
    "signing.py": "import hmac\n",
    "sql_items.py": "import db\nfrom sql_paging import page_sql\n\nSQL = 'SELECT id FROM items'\n",
    "sql_paging.py": "",
    "pagination.py": "import web\n",
    "orders.py": "import db\nimport sql_items\n",
    "api_items.py": '"""SELECT nothing FROM here: a docstring is prose."""\nimport orders\nfrom web import Response\n',
    "validation.py": "import web\n",
    "challenge.py": "from web import Unauthorized\n",
    "accounts.py": "import auth\nimport db\nimport passwords\n",
    "middleware.py": "import accounts\nimport challenge\nimport web\n",
    "routes.py": "import api_items\nfrom router import Router\n",
    "router.py": "import web\n",
    "server.py": "import config\nimport middleware\nimport routes\n",
}


def test_a_clean_fabricated_project_breaks_no_rule(tmp_path):
    project = make_project(tmp_path, CLEAN_PROJECT)
    assert layer_violations(project) == []
    assert shadowing_modules(project) == []


@pytest.mark.parametrize("file_name, source, expected", [
    ("sql_items.py", "import db\nimport pagination\n",
     "sql_items.py:2: imports pagination; sql_* modules import nothing of the shop but db, sql_paging and config"),
    ("orders.py", "import db\nfrom web import NotFound\n",
     "orders.py:2: imports web; services never import the HTTP side"),
    ("jobs.py", "import api_items\n",
     "jobs.py:1: imports api_items; services never import the HTTP side"),
    ("orders.py", "import validation\n",
     "orders.py:1: imports validation; services never import the HTTP side"),
    ("accounts.py", "from challenge import unauthorized\n",
     "accounts.py:1: imports challenge; services never import the HTTP side"),
    ("db.py", "import config\nimport web\n",
     "db.py:2: imports web; db imports nothing of the shop but config and deadlines"),
    ("deadlines.py", "import socket\nimport config\n",
     "deadlines.py:2: imports config; deadlines imports only the standard library"),
    ("migrate.py", "import db\nimport sql_items\n",
     "migrate.py:2: imports sql_items; migrate imports nothing of the shop but db and config"),
    ("pagination.py", "import middleware\n",
     "pagination.py:1: imports middleware; pagination, validation, cookies, challenge, schemas and openapi"
     " never import"),
    ("routes.py", "import server\n",
     "routes.py:1: imports server; nothing imports server"),
    ("api_items.py", "import middleware\n",
     "api_items.py:1: imports middleware; api_* never import middleware, routes, server or each other"),
    ("api_orders.py", "def handler():\n    import api_items\n",
     "api_orders.py:2: imports api_items; api_* never import middleware, routes, server or each other"),
    ("api_orders.py", "import db\n\nQUERY = (\n    'SELECT id'\n    ' FROM orders'\n)\n",
     "api_orders.py:4: holds SQL text; handlers never contain SQL"),
    ("api_orders.py", "def f(c):\n    c.execute(f'UPDATE orders SET status = {1}')\n",
     "api_orders.py:2: holds SQL text; handlers never contain SQL"),
    ("web.py", "import json\nimport auth\n",
     "web.py:2: imports auth; the HTTP toolkit (web, router, http11*, httpserver, httpthreads, httpworkers,"),
    ("http11.py", "import psycopg\n",
     "http11.py:1: imports psycopg; the HTTP toolkit (web, router, http11*, httpserver, httpthreads, httpworkers,"),
    ("signing.py", "import config\n",
     "signing.py:1: imports config; auth, passwords and signing import only the standard library, strictjson"),
    ("auth.py", "from db import utc_now\n",
     "auth.py:1: imports db; auth, passwords and signing import only the standard library, strictjson"),
    ("passwords.py", "import config\n",
     "passwords.py:1: imports config; auth, passwords and signing import only the standard library, strictjson"),
    ("helpers.py", "import json\n",
     "helpers.py: belongs to no layer; add it to tests/test_layers.py"),
])
def test_each_rule_reports_file_line_import_and_rule(tmp_path, file_name, source, expected):
    project = make_project(tmp_path, dict(CLEAN_PROJECT, **{file_name: source}))
    broken = layer_violations(project)
    assert len(broken) == 1 and broken[0].startswith(expected), broken


@pytest.mark.parametrize("path", ["email.py", "queue.py", "csv.py", "ssl.py", "tests/secrets.py"])
def test_a_module_named_like_the_standard_library_is_reported(tmp_path, path):
    project = make_project(tmp_path, dict(CLEAN_PROJECT, **{path: ""}))
    assert shadowing_modules(project) == [
        f"{path}: shadows the standard-library module '{Path(path).stem}'; rename it"
    ]
