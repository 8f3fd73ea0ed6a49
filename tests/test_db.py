"""db.py: migrations, transactions, engine settings, and a database that is down.

Which index serves each query (EXPLAIN) is tested in test_query_plans.py.
"""

import sqlite3
import threading
import time
import uuid

import pytest
from conftest import TEST_SECRET_KEY, WSGIClient, postgres_admin, postgres_url_for_schema

import config
import db
import server
import sql_items

# -- migrations --------------------------------------------------------------------------

def test_migrate_records_the_baseline_once(database):
    assert db.applied_versions(database) == [1, 2, 3, 4, 5, 6]
    assert db.migrate(database) == []  # nothing left to apply
    assert db.applied_versions(database) == [1, 2, 3, 4, 5, 6]


def test_numbered_migrations_apply_in_order(settings, tmp_path):
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0003_notes_index.sql").write_text("CREATE INDEX notes_body ON notes (body);\n")
    (migrations / "0002_notes.sql").write_text(
        "-- a table with a ; inside a string\nCREATE TABLE notes (body TEXT NOT NULL DEFAULT ';');\n"
    )
    database = db.open_database(settings.database_url)
    try:
        assert db.migrate(database, migrations) == [1, 2, 3]
        assert db.applied_versions(database) == [1, 2, 3]
        assert db.migrate(database, migrations) == []
        with database.transaction() as connection:
            connection.execute("INSERT INTO notes DEFAULT VALUES")
    finally:
        database.close()


def test_a_failing_migration_leaves_nothing_behind(settings, tmp_path):
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0002_broken.sql").write_text(
        "CREATE TABLE half_done (id INTEGER);\nCREATE TABLE broken (;\n"
    )
    database = db.open_database(settings.database_url)
    try:
        with pytest.raises(syntax_error(database.engine), match="syntax error"):
            db.migrate(database, migrations)
        assert db.applied_versions(database) == [1]
        with database.connection() as connection:
            assert "half_done" not in table_names(connection)
    finally:
        database.close()


def syntax_error(engine):
    """What the driver raises for SQL it cannot parse (db.py passes it on untranslated)."""
    if engine == "sqlite":
        return sqlite3.OperationalError
    import psycopg

    return psycopg.errors.SyntaxError


def test_concurrent_migrations_do_not_collide(settings):
    database = db.open_database(settings.database_url)
    errors = []

    def run():
        try:
            db.migrate(database)
        except Exception as error:  # collected: the assertion below shows it
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert db.applied_versions(database) == [1, 2, 3, 4, 5, 6]
    finally:
        database.close()


def test_both_engines_end_with_the_same_tables_columns_and_indexes(tmp_path):
    sqlite_database = db.open_database(f"sqlite:///{tmp_path}/parity.db")
    schema = "parity_" + uuid.uuid4().hex[:10]
    with postgres_admin() as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    postgres_database = db.open_database(postgres_url_for_schema(schema))
    try:
        db.migrate(sqlite_database)
        db.migrate(postgres_database)
        sqlite_shape = describe_sqlite(sqlite_database)
        postgres_shape = describe_postgres(postgres_database, schema)
        assert sqlite_shape == postgres_shape
        assert set(sqlite_shape["tables"]) == {
            "users", "items", "orders", "order_items", "schema_migrations",
            "refresh_tokens", "sessions", "api_keys", "idempotency_keys",
        }
    finally:
        sqlite_database.close()
        postgres_database.close()
        with postgres_admin() as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def describe_sqlite(database):
    with database.connection() as connection:
        tables = {}
        for name in table_names(connection):
            columns = connection.fetch_all("SELECT name FROM pragma_table_info(:table)", {"table": name})
            tables[name] = sorted(column["name"] for column in columns)
        indexes = connection.fetch_all(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        )
    return {"tables": tables, "indexes": sorted(row["name"] for row in indexes)}


def describe_postgres(database, schema):
    with database.connection() as connection:
        tables = {}
        for name in table_names(connection):
            columns = connection.fetch_all(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = :schema AND table_name = :table",
                {"schema": schema, "table": name},
            )
            tables[name] = sorted(column["column_name"] for column in columns)
        indexes = connection.fetch_all(
            "SELECT indexname FROM pg_indexes WHERE schemaname = :schema"
            " AND indexname NOT LIKE '%\\_pkey' ESCAPE '\\' AND indexname NOT LIKE '%\\_key' ESCAPE '\\'"
            " AND indexname NOT LIKE '%\\_unique' ESCAPE '\\'",  # UNIQUE constraints' indexes
            {"schema": schema},
        )
    # Primary keys and UNIQUE constraints make indexes that SQLite names sqlite_autoindex_*
    # and hides above (sql IS NULL); leave PostgreSQL's out too and compare the CREATE INDEXes.
    return {"tables": tables, "indexes": sorted(row["indexname"] for row in indexes)}


def table_names(connection):
    if connection.engine == "sqlite":
        rows = connection.fetch_all(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        )
        return sorted(row["name"] for row in rows)
    rows = connection.fetch_all(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    )
    return sorted(row["table_name"] for row in rows)


# -- connections and transactions ---------------------------------------------------------

def test_a_transaction_commits_or_rolls_back_as_a_whole(database):
    now = db.utc_now()
    item = {"name": "Kettle", "description": "", "price_cents": 100, "stock": 1}
    with pytest.raises(RuntimeError), database.transaction() as connection:
        sql_items.insert_items(connection, [item], now)
        raise RuntimeError("change of plan")
    with database.connection() as connection:
        assert sql_items.count_items(connection) == 0
    with database.transaction() as connection:
        sql_items.insert_items(connection, [item], now)
    with database.connection() as connection:
        assert sql_items.count_items(connection) == 1


@pytest.mark.parametrize("bad_item", [
    {"name": "Negative", "description": "", "price_cents": -1, "stock": 1},
    {"name": "", "description": "", "price_cents": 1, "stock": 1},
    {"name": "Oversold", "description": "", "price_cents": 1, "stock": -1},
])
def test_check_constraints_raise_integrity_error_and_keep_the_data(database, bad_item):
    with pytest.raises(db.IntegrityError), database.transaction() as connection:
        sql_items.insert_items(connection, [bad_item], db.utc_now())
    with database.connection() as connection:
        assert sql_items.count_items(connection) == 0


def test_foreign_keys_are_enforced(database):
    with pytest.raises(db.IntegrityError), database.transaction() as connection:
        connection.execute(
            "INSERT INTO orders (user_id, total_cents, created_at, updated_at) VALUES (:user_id, 0, :now, :now)",
            {"user_id": 12345, "now": db.utc_now()},
        )


def test_sqlite_runs_in_wal_with_full_sync_foreign_keys_and_a_busy_timeout(tmp_path):
    database = db.open_database(f"sqlite:///{tmp_path}/pragmas.db", timeout_seconds=3)
    try:
        with database.connection() as connection:
            assert connection.fetch_value("PRAGMA journal_mode") == "wal"
            assert connection.fetch_value("PRAGMA synchronous") == 2  # FULL
            assert connection.fetch_value("PRAGMA foreign_keys") == 1
            assert connection.fetch_value("PRAGMA busy_timeout") == 3000
    finally:
        database.close()


def test_sqlite_keeps_one_connection_per_thread(tmp_path):
    database = db.open_database(f"sqlite:///{tmp_path}/threads.db")
    seen = []

    def grab():
        with database.connection() as first, database.connection() as second:
            seen.append((first._raw, second._raw))

    try:
        threads = [threading.Thread(target=grab) for _ in range(2)]
        for thread in threads:
            thread.start()
            thread.join()
        (first_a, first_b), (second_a, second_b) = seen
        assert first_a is first_b and second_a is second_b  # reused within a thread
        assert first_a is not second_a                    # never shared between threads
    finally:
        database.close()


@pytest.mark.parametrize("url, expected", [
    ("sqlite:////srv/shop/shop.db", "/srv/shop/shop.db"),
    ("sqlite:///relative/shop.db", "relative/shop.db"),
])
def test_sqlite_urls(url, expected):
    assert str(db.sqlite_path(url)) == expected


def test_an_unknown_database_url_scheme_is_refused():
    with pytest.raises(ValueError):
        db.open_database("mysql://localhost/shop")


# -- a database that is down --------------------------------------------------------------

# The lowest DATABASE_TIMEOUT_SECONDS config accepts: PostgreSQL's pool waits that long for
# a connection before the 503, so the bound below is five times what a request waits.
UNREACHABLE_TIMEOUT_SECONDS = 1
UNREACHABLE_BOUND_SECONDS = 5.0


def unreachable_app(database_url):
    settings = config.load_settings({
        "APP_ENV": "test", "DATABASE_URL": database_url, "SECRET_KEY": TEST_SECRET_KEY, "ACCESS_LOG": "0",
        "DATABASE_TIMEOUT_SECONDS": str(UNREACHABLE_TIMEOUT_SECONDS),
    })
    return server.create_app(settings)


@pytest.mark.parametrize("database_url", [
    "postgresql://postgres@127.0.0.1:1/test",              # nothing listens on port 1
    "sqlite:////proc/no-such-directory/shop.db",           # a file that cannot be created
])
@pytest.mark.parametrize("path", ["/v1/items", "/v1/items/1", "/ready"])
def test_an_unreachable_database_gives_a_503_problem_within_5_seconds(database_url, path):
    if database_url.startswith("postgresql"):
        pytest.importorskip("psycopg")
    app = unreachable_app(database_url)
    client = WSGIClient(app)
    started = time.monotonic()
    response = client.get(path)
    elapsed = time.monotonic() - started
    app.services.database.close()
    assert response.status == 503, response
    assert response.header("Content-Type") == "application/problem+json"
    assert response.header("Retry-After") == "5"
    assert response.json()["status"] == 503
    assert response.json()["detail"].startswith("the database is not answering")
    assert elapsed < UNREACHABLE_BOUND_SECONDS


def test_health_stays_up_while_the_database_is_down():
    pytest.importorskip("psycopg")
    app = unreachable_app("postgresql://postgres@127.0.0.1:1/test")
    try:
        assert WSGIClient(app).get("/health").status == 200
    finally:
        app.services.database.close()
