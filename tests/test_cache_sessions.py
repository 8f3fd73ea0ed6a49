"""Browser sessions through the session cache (accounts.session_user, cache.py), on Redis.

With REDIS_URL, a session's lookup is cached; each change that ends sessions or changes
their role invalidates that cache after its COMMIT. A revoked session is refused on its very
next request, on both engines, by the process that revoked it and by another process that
shares the Redis (two apps here, like two gunicorn workers).
"""

import pytest
from conftest import (
    REDIS_TEST_URL,
    TEST_PASSWORD,
    WSGIClient,
    free_port,
    json_headers,
    start_session,
)

import sql_credentials

# Rate limits are another feature's: these tests log in and read more than a client would.
NEW_PASSWORD = "a brand new password for a brand new day"


@pytest.fixture
def on_redis(redis_prefix):
    return {"REDIS_URL": REDIS_TEST_URL, "REDIS_PREFIX": redis_prefix}


@pytest.fixture
def processes(make_app, on_redis):
    """Two apps on one database and one Redis: (the one that revokes, another one)."""
    return WSGIClient(make_app(**on_redis)), WSGIClient(make_app(**on_redis))


@pytest.fixture
def session_reads(monkeypatch):
    """Every session lookup that reaches the database."""
    reads, real = [], sql_credentials.get_session_user

    def counted(*args):
        reads.append(1)
        return real(*args)

    monkeypatch.setattr(sql_credentials, "get_session_user", counted)
    return reads


def me(client, cookie):
    return client.get("/v1/users/me", headers=cookie).status


def test_a_session_is_read_from_the_database_once_then_from_the_cache(processes, users, session_reads):
    one, other = processes
    users.create("ada@example.com")
    cookie, _ = start_session(one, "ada@example.com")
    assert [me(one, cookie), me(one, cookie), me(other, cookie)] == [200, 200, 200]
    assert len(session_reads) == 1


def revoke_by_logout(client, users, user, cookie, csrf_token):
    return client.request("DELETE", "/v1/auth/session", headers=dict(cookie, **{"X-CSRF-Token": csrf_token}))


def revoke_by_logout_everywhere(client, users, user, cookie, csrf_token):
    return client.post("/v1/auth/logout-all", headers=users.headers(user))


def revoke_by_password_change(client, users, user, cookie, csrf_token):
    """A new password set with another credential (a token): every session ends."""
    return client.request("PATCH", "/v1/users/me", json={"password": NEW_PASSWORD, "current_password": TEST_PASSWORD},
                          headers=json_headers(users.headers(user)))


@pytest.mark.parametrize("revoke", [revoke_by_logout, revoke_by_logout_everywhere, revoke_by_password_change])
def test_a_revoked_session_is_refused_at_once_by_every_process(processes, users, revoke):
    one, other = processes
    ada = users.create("ada@example.com")
    cookie, csrf_token = start_session(one, "ada@example.com")
    assert [me(one, cookie), me(other, cookie), me(one, cookie), me(other, cookie)] == [200] * 4  # both cached
    response = revoke(one, users, ada, cookie, csrf_token)
    assert response.status in (200, 204), response
    assert [me(one, cookie), me(other, cookie)] == [401, 401]


def test_a_demoted_admin_loses_admin_rights_at_once_in_every_process(processes, users):
    one, other = processes
    demoted, demoting = users.admin("first@example.com"), users.admin("second@example.com")
    cookie, _ = start_session(one, "first@example.com")
    assert [client.get("/v1/users", headers=cookie).status for client in (one, other, one, other)] == [200] * 4
    response = one.request("PATCH", f"/v1/users/{demoted['id']}", json={"role": "user"},
                           headers=json_headers(users.headers(demoting)))
    assert response.status == 200, response
    assert [client.get("/v1/users", headers=cookie).status for client in (one, other)] == [403, 403]
    assert [me(one, cookie), me(other, cookie)] == [200, 200]  # still logged in, as a user


def test_a_cached_session_is_still_touched_once_a_minute_and_still_expires(make_app, on_redis, users, database,
                                                                          session_reads):
    app = make_app(TEST_CLOCK_OFFSET_SECONDS="0", SESSION_TTL_SECONDS="120", SESSION_IDLE_SECONDS="120", **on_redis)
    client, clock = WSGIClient(app), app.services.settings.clock
    users.create("ada@example.com")
    cookie, _ = start_session(client, "ada@example.com")
    logged_in_at = last_used(database)
    assert me(client, cookie) == 200 and len(session_reads) == 1
    clock.advance(50)
    assert me(client, cookie) == 200 and len(session_reads) == 1  # from the cache
    clock.advance(50)  # the last use was written 100 s ago: a touch is due, so the database
    assert me(client, cookie) == 200 and len(session_reads) == 2
    assert last_used(database) > logged_in_at
    clock.advance(19)
    assert me(client, cookie) == 200 and len(session_reads) == 2  # cached again, touched
    clock.advance(2)  # 121 s after the login: past SESSION_TTL_SECONDS, however fresh the touch
    assert me(client, cookie) == 401


def last_used(database):
    with database.connection() as connection:
        return connection.fetch_value("SELECT last_used_at FROM sessions")


def test_without_redis_or_with_cache_off_no_session_is_cached(make_app, on_redis):
    assert make_app().services.session_cache is None  # memory: another process could not drop it
    assert make_app(CACHE="off", **on_redis).services.session_cache is None
    assert make_app(**on_redis).services.session_cache is not None


def test_with_redis_down_sessions_are_read_from_the_database_and_still_end(make_app, users, session_reads):
    client = WSGIClient(make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"))  # nothing listens there
    users.create("ada@example.com")
    cookie, csrf_token = start_session(client, "ada@example.com")
    assert [me(client, cookie), me(client, cookie)] == [200, 200] and len(session_reads) == 2
    logout = client.request("DELETE", "/v1/auth/session", headers=dict(cookie, **{"X-CSRF-Token": csrf_token}))
    assert logout.status == 204
    assert me(client, cookie) == 401
