"""/health and /ready, on both engines, in-process and over a socket."""

import dataclasses

import pytest
from conftest import REDIS_TEST_URL, client_for, free_port

import db
import migrate
import server


def test_health_is_exactly_the_documented_body(client):
    response = client.get("/health")
    assert response.status == 200
    assert response.header("Content-Type") == "application/json"
    assert response.json() == {"status": "healthy", "version": "1.0.0"}


def test_ready_checks_the_database(client):
    response = client.get("/ready")
    assert response.status == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "migrations": "ok"}}


def test_ready_is_a_503_problem_when_the_database_fails(client, app, monkeypatch):
    def refuse(**options):
        raise db.DatabaseUnavailable("down for the test")

    monkeypatch.setattr(app.services.database, "connection", refuse)
    response = client.get("/ready")
    assert response.status == 503
    assert response.header("Content-Type") == "application/problem+json"
    assert response.header("Retry-After") == "5"
    problem = response.json()
    assert problem["detail"] == "the database is not answering"
    assert problem["checks"] == {"database": "unavailable"}
    assert "down for the test" not in response.body.decode()  # internals stay in the log


@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_operations_endpoints_carry_request_id_and_security_headers(client, path):
    response = client.get(path, headers={"X-Request-ID": "probe-42"})
    assert response.header("X-Request-ID") == "probe-42"
    assert response.header("X-Content-Type-Options") == "nosniff"
    assert response.header("Cache-Control") == "no-store"


def test_ready_is_a_503_naming_the_migrations_a_database_lacks(client, app):
    """gunicorn started on a database nobody migrated must not take traffic: every data
    request would fail with "no such table"."""
    with app.services.database.transaction() as connection:
        connection.execute("DELETE FROM schema_migrations WHERE version IN (2, 3)")
    response = client.get("/ready")
    assert response.status == 503
    assert response.header("Retry-After") == "5"
    problem = response.json()
    assert problem["detail"] == "migrations not applied: 0002, 0003; run: python server.py migrate"
    assert problem["checks"] == {"database": "ok", "migrations": "2 pending"}


def test_a_database_never_migrated_has_every_migration_pending(database_url):
    numbered = sorted(int(path.name[:4]) for path in migrate.MIGRATIONS_DIR.glob("[0-9]*.sql"))
    known = [migrate.BASELINE_VERSION, *numbered]
    database = db.open_database(database_url)
    try:
        assert migrate.applied_versions(database) == []
        assert migrate.pending_migrations(database) == known
        assert migrate.migrate(database) == known
        assert migrate.applied_versions(database) == known
        assert migrate.pending_migrations(database) == []
    finally:
        database.close()


def test_ready_checks_redis_when_it_is_configured(settings, database, logger, redis_prefix):
    redis_settings = dataclasses.replace(settings, redis_url=REDIS_TEST_URL, redis_prefix=redis_prefix)
    with client_for(server.create_app(redis_settings, database=database, logger=logger), "live") as client:
        response = client.get("/ready")
    assert response.status == 200
    assert response.json()["checks"] == {"database": "ok", "migrations": "ok", "redis": "ok"}


def test_ready_is_a_503_naming_redis_when_it_does_not_answer(settings, database, logger):
    silent = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    app = server.create_app(silent, database=database, logger=logger)
    with client_for(app, "live") as client:
        response = client.get("/ready")
        assert response.status == 503 and response.header("Retry-After") == "5"
        assert response.json()["detail"] == "redis is not answering"
        assert response.json()["checks"] == {"database": "ok", "migrations": "ok", "redis": "unavailable"}
        assert client.get("/v1/items").status == 200   # still serving, from the database
