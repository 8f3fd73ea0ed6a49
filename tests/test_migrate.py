"""migrate.py: numbered migrations applied in order, once, each in its own transaction, and
the same tables, columns and indexes on both engines."""

import sqlite3
import threading
import uuid

import pytest
from conftest import postgres_admin, postgres_url_for_schema

import db
import jobs
import migrate
import sql_items


def test_migrate_records_the_baseline_once(database):
    assert migrate.applied_versions(database) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    assert migrate.migrate(database) == []  # nothing left to apply
    assert migrate.applied_versions(database) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]


def test_0011_only_expands_so_the_previous_release_keeps_writing_items(database):
    """0011 adds items.sku while the previous release still serves (expand, then contract:
    docs/deploy.md). That release inserts items naming no SKU, as today's sql_items does: it
    must go on working, for any number of items (NULLs never collide), while the new UNIQUE
    index and CHECK already hold for the SKUs the next release writes."""
    now = "2026-11-29T12:00:00.000000Z"
    fields = {"description": "", "price_cents": 100, "stock": 1}
    with database.transaction() as connection:
        ids = [sql_items.insert_item(connection, dict(fields, name=name), now)["id"] for name in ("One", "Two")]
        rows = connection.fetch_all("SELECT sku FROM items ORDER BY id")
    assert [row["sku"] for row in rows] == [None, None]
    with database.transaction() as connection:
        connection.execute("UPDATE items SET sku = 'DESK-TIDY-WAL' WHERE id = :id", {"id": ids[0]})
    for refused_sku in ("DESK-TIDY-WAL", "", "X" * 65):  # taken, empty, too long
        with pytest.raises(db.IntegrityError), database.transaction() as connection:
            connection.execute("UPDATE items SET sku = :sku WHERE id = :id", {"sku": refused_sku, "id": ids[1]})


def test_0013_only_expands_so_the_previous_release_keeps_enqueueing_jobs(database):
    """0013 adds jobs.traceparent and jobs.tracestate. The previous release enqueues naming
    neither: its jobs have no trace, and this release's worker claims them all the same
    (tracing.continue_trace gives them a new one); the CHECKs hold for what this release writes."""
    now = "2026-11-29T12:00:00.000000Z"
    with database.transaction() as connection:
        connection.execute(
            "INSERT INTO jobs (kind, payload, max_attempts, run_at, unique_key, created_at, updated_at)"
            " VALUES ('noop', '{}', 3, :now, NULL, :now, :now)", {"now": now})
    [job] = jobs.claim(database, "worker-a", 5, lease_seconds=30)
    assert (job.kind, job.traceparent, job.tracestate) == ("noop", None, None)
    for column, refused in (("traceparent", "00-too-short"), ("tracestate", ""), ("tracestate", "k=" + "v" * 511)):
        with pytest.raises(db.IntegrityError), database.transaction() as connection:
            connection.execute(f"UPDATE jobs SET {column} = :value WHERE id = :id", {"value": refused, "id": job.id})


def test_numbered_migrations_apply_in_order(settings, tmp_path):
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0003_notes_index.sql").write_text("CREATE INDEX notes_body ON notes (body);\n")
    (migrations / "0002_notes.sql").write_text(
        "-- a table with a ; inside a string\nCREATE TABLE notes (body TEXT NOT NULL DEFAULT ';');\n"
    )
    database = db.open_database(settings.database_url)
    try:
        assert migrate.migrate(database, migrations) == [1, 2, 3]
        assert migrate.applied_versions(database) == [1, 2, 3]
        assert migrate.migrate(database, migrations) == []
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
            migrate.migrate(database, migrations)
        assert migrate.applied_versions(database) == [1]
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


def migrate_from_threads(database, threads=4):
    """migrate.migrate(database) from `threads` threads at once: the errors they met."""
    errors = []

    def run():
        try:
            migrate.migrate(database)
        except Exception as error:  # collected: the caller's assertion shows it
            errors.append(error)

    started = [threading.Thread(target=run) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    return errors


def test_concurrent_migrations_do_not_collide(settings):
    database = db.open_database(settings.database_url)
    errors = migrate_from_threads(database)
    try:
        assert errors == []
        assert migrate.applied_versions(database) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    finally:
        database.close()


def test_both_engines_end_with_the_same_tables_columns_and_indexes(tmp_path):
    sqlite_database = db.open_database(f"sqlite:///{tmp_path}/parity.db")
    schema = "parity_" + uuid.uuid4().hex[:10]
    with postgres_admin() as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    postgres_database = db.open_database(postgres_url_for_schema(schema))
    try:
        migrate.migrate(sqlite_database)
        migrate.migrate(postgres_database)
        sqlite_shape = describe_sqlite(sqlite_database)
        postgres_shape = describe_postgres(postgres_database, schema)
        assert sqlite_shape == postgres_shape
        assert set(sqlite_shape["tables"]) == {
            "users", "items", "orders", "order_items", "schema_migrations",
            "refresh_tokens", "sessions", "api_keys", "idempotency_keys", "jobs", "exports", "order_events",
            "webhooks", "webhook_deliveries",
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
