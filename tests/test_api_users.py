"""Accounts over HTTP: your own profile, the admin's list of users and roles, and create-admin.

Every API test runs on both engines, in-process and over a socket (the `client` fixture).
The create-admin tests run `python server.py create-admin EMAIL` as an operator does, with
the password on stdin, then log the new admin in through the API.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    PROJECT_DIR,
    TEST_PASSWORD,
    TEST_SECRET_KEY,
    WSGIClient,
    assert_problem,
    bearer,
    follow_next_links,
    json_headers,
    login,
    send_at_once,
    start_session,
)

import auth
import config
import passwords
import server

USER_FIELDS = {"id", "email", "role", "created_at", "updated_at"}
NEW_PASSWORD = "a kettle sings by the window at dawn"
WWW_AUTHENTICATE = 'Bearer realm="shop"'


# -- helpers -----------------------------------------------------------------------------

def patch(client, path, body, headers=None):
    return client.request("PATCH", path, json=body, headers=headers)


def role_in_database(client, user, users):
    return client.get("/v1/users/me", headers=users.headers(user)).json()["role"]


# -- GET /v1/users/me --------------------------------------------------------------------

def test_me_is_exactly_the_public_profile(client, users):
    user = users.create("ada@example.com")
    response = client.get("/v1/users/me", headers=users.headers(user))
    assert response.status == 200
    assert response.header("Content-Type") == "application/json"
    assert response.header("Cache-Control") == "no-store"
    profile = response.json()
    assert set(profile) == USER_FIELDS
    assert profile == user
    assert profile["email"] == "ada@example.com" and profile["role"] == "user"


def test_me_without_credentials_is_401(client):
    response = client.get("/v1/users/me")
    assert_problem(response, 401, "this endpoint needs credentials")
    assert response.header("WWW-Authenticate") == WWW_AUTHENTICATE


def test_me_with_a_bad_token_is_401(client):
    response = client.get("/v1/users/me", headers={"Authorization": "Bearer not-a-jwt"})
    assert_problem(response, 401)
    assert response.header("WWW-Authenticate") == WWW_AUTHENTICATE + ', error="invalid_token"'


# -- PATCH /v1/users/me: password --------------------------------------------------------

def test_a_password_change_needs_the_current_password(client, users):
    user = users.create()
    response = patch(client, "/v1/users/me", {"password": NEW_PASSWORD}, users.headers(user))
    assert_problem(response, 422, errors=[
        {"field": "current_password", "message": "is required to change email or password"},
    ])
    assert login(client, user["email"]).status == 200


def test_a_wrong_current_password_is_403(client, users):
    user = users.create()
    body = {"password": NEW_PASSWORD, "current_password": "not my password at all, sorry"}
    assert_problem(patch(client, "/v1/users/me", body, users.headers(user)), 403, "the current password is wrong")
    assert login(client, user["email"]).status == 200
    assert login(client, user["email"], NEW_PASSWORD).status == 401


@pytest.mark.parametrize("password, message", [
    ("a" * 14, "is too short: at least 15 characters"),
    ("correct horse battery staple", "is a commonly used password"),
    ("", "must be 1 to 1024 characters"),
    ("a" * 1025, "must be 1 to 1024 characters"),
    (12345678901234567, "must be a string"),
])
def test_a_new_password_follows_the_rules(client, users, password, message):
    user = users.create()
    body = {"password": password, "current_password": TEST_PASSWORD}
    response = patch(client, "/v1/users/me", body, users.headers(user))
    assert_problem(response, 422, errors=[{"field": "password", "message": message}])
    assert login(client, user["email"]).status == 200


def test_every_problem_of_a_password_change_is_named_at_once(client, users):
    user = users.create()
    response = patch(client, "/v1/users/me", {"password": "short"}, users.headers(user))
    problem = assert_problem(response, 422)
    assert sorted(error["field"] for error in problem["errors"]) == ["current_password", "password"]


def test_after_a_password_change_only_the_new_password_logs_in(client, users):
    user = users.create()
    body = {"password": NEW_PASSWORD, "current_password": TEST_PASSWORD}
    response = patch(client, "/v1/users/me", body, users.headers(user))
    assert response.status == 200, response
    assert set(response.json()) == USER_FIELDS
    assert response.json()["updated_at"] > user["updated_at"]
    assert_problem(login(client, user["email"]), 401, "the email or password is wrong")
    assert login(client, user["email"], NEW_PASSWORD).status == 200


def test_a_password_change_revokes_every_refresh_token(client, users):
    user = users.create()
    first, second = login(client, user["email"]).json(), login(client, user["email"]).json()
    body = {"password": NEW_PASSWORD, "current_password": TEST_PASSWORD}
    assert patch(client, "/v1/users/me", body, bearer(first["access_token"])).status == 200
    for tokens in (first, second):
        response = client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert_problem(response, 401, "the refresh token is not valid")
    fresh = login(client, user["email"], NEW_PASSWORD).json()
    assert client.post("/v1/auth/refresh", json={"refresh_token": fresh["refresh_token"]}).status == 200


def test_a_password_change_keeps_only_the_session_that_made_it(client, users):
    user = users.create()
    session_a, csrf_a = start_session(client, user["email"])
    session_b, _ = start_session(client, user["email"])
    body = {"password": NEW_PASSWORD, "current_password": TEST_PASSWORD}
    response = patch(client, "/v1/users/me", body, dict(session_a, **{"X-CSRF-Token": csrf_a}))
    assert response.status == 200, response
    assert client.get("/v1/users/me", headers=session_a).status == 200
    assert_problem(client.get("/v1/users/me", headers=session_b), 401)


def test_a_session_password_change_needs_the_csrf_token(client, users):
    user = users.create()
    session, _ = start_session(client, user["email"])
    body = {"password": NEW_PASSWORD, "current_password": TEST_PASSWORD}
    assert_problem(patch(client, "/v1/users/me", body, session), 403, "a missing or wrong X-CSRF-Token header")
    assert login(client, user["email"]).status == 200


# -- PATCH /v1/users/me: email and the body's shape ---------------------------------------

def test_an_email_change_needs_the_current_password_and_is_lower_cased(client, users):
    user = users.create()
    headers = users.headers(user)
    response = patch(client, "/v1/users/me", {"email": "Grace@Example.COM"}, headers)
    assert_problem(response, 422, errors=[
        {"field": "current_password", "message": "is required to change email or password"},
    ])
    body = {"email": " Grace@Example.COM ", "current_password": TEST_PASSWORD}
    response = patch(client, "/v1/users/me", body, headers)
    assert response.status == 200, response
    assert response.json()["email"] == "grace@example.com"
    assert client.get("/v1/users/me", headers=headers).json()["email"] == "grace@example.com"
    assert login(client, "grace@example.com").status == 200
    assert login(client, user["email"]).status == 401


def test_an_email_change_with_a_wrong_password_is_403(client, users):
    user = users.create()
    body = {"email": "grace@example.com", "current_password": "not my password at all, sorry"}
    assert_problem(patch(client, "/v1/users/me", body, users.headers(user)), 403)
    assert client.get("/v1/users/me", headers=users.headers(user)).json()["email"] == user["email"]


def test_a_taken_email_is_409_whatever_its_case(client, users):
    users.create("taken@example.com")
    user = users.create()
    body = {"email": "TAKEN@example.com", "current_password": TEST_PASSWORD}
    assert_problem(patch(client, "/v1/users/me", body, users.headers(user)), 409, "an account with this email exists")
    assert client.get("/v1/users/me", headers=users.headers(user)).json()["email"] == user["email"]


def test_a_409_on_the_email_leaves_the_password_unchanged(client, users):
    users.create("taken@example.com")
    user = users.create()
    body = {"email": "taken@example.com", "password": NEW_PASSWORD, "current_password": TEST_PASSWORD}
    assert_problem(patch(client, "/v1/users/me", body, users.headers(user)), 409)
    assert login(client, user["email"]).status == 200
    assert login(client, user["email"], NEW_PASSWORD).status == 401


def test_a_busy_hashing_gate_changes_neither_the_email_nor_the_password(client, users, monkeypatch):
    # The current password is checked; then hashing the new one finds the gate full. The new
    # email must not have been written meanwhile: both changes are made together, or neither.
    def busy(password, iterations):
        raise passwords.HashingBusy("every password hashing slot is taken")

    user = users.create()
    monkeypatch.setattr(passwords, "hash_password", busy)
    body = {"email": "new@example.com", "password": NEW_PASSWORD, "current_password": TEST_PASSWORD}
    response = patch(client, "/v1/users/me", body, users.headers(user))
    assert_problem(response, 503, "too many passwords are being checked right now; try again shortly")
    assert response.header("Retry-After") == "1"
    assert client.get("/v1/users/me", headers=users.headers(user)).json()["email"] == user["email"]
    assert login(client, user["email"]).status == 200


@pytest.mark.parametrize("body, errors", [
    ({}, [{"field": "", "message": "send at least one of: email, password, current_password"}]),
    ({"current_password": TEST_PASSWORD}, [{"field": "", "message": "send email or password to change"}]),
    ([], [{"field": "", "message": "the body must be a JSON object"}]),
    ({"role": "admin"}, [{"field": "role", "message": "is not a known field"}]),
    ({"role": "admin", "current_password": TEST_PASSWORD}, [{"field": "role", "message": "is not a known field"}]),
    ({"id": 1, "email": "new@example.com", "current_password": TEST_PASSWORD},
     [{"field": "id", "message": "is not a known field"}]),
    ({"email": "not an email", "current_password": TEST_PASSWORD},
     [{"field": "email", "message": "must be an email address"}]),
    ({"email": "ada\u0000@example.com", "current_password": TEST_PASSWORD},
     [{"field": "email", "message": "must not contain the NUL character"}]),
])
def test_bad_profile_changes_are_422_and_change_nothing(client, users, body, errors):
    user = users.create()
    headers = users.headers(user)
    assert_problem(patch(client, "/v1/users/me", body, headers), 422, errors=errors)
    assert client.get("/v1/users/me", headers=headers).json() == user


def test_profile_changes_need_json_and_credentials(client, users):
    user = users.create()
    response = client.request("PATCH", "/v1/users/me", body=b"{}", headers=dict(
        users.headers(user), **{"Content-Type": "text/plain"}))
    assert_problem(response, 415)
    response = client.request("PATCH", "/v1/users/me", body=b"{not json", headers=dict(
        users.headers(user), **{"Content-Type": "application/json"}))
    assert_problem(response, 400)
    assert_problem(patch(client, "/v1/users/me", {"email": "x@example.com"}), 401)


# -- GET /v1/users (admin) ----------------------------------------------------------------

# Distinct first letters: the order is the same in every collation.
NAMES = ["bea", "cal", "dov", "eve", "fay", "gus", "hal", "ivy", "jon", "kit", "lou", "max"]


@pytest.fixture
def many_users(users):
    """An admin and 12 users (13 accounts): (admin, every account in id order)."""
    admin = users.admin("admin@example.com")
    return admin, [admin] + [users.create(f"{name}@example.com") for name in NAMES]


def test_the_user_list_is_a_paginated_envelope(client, users, many_users):
    admin, accounts = many_users
    response = client.get("/v1/users?limit=5", headers=users.headers(admin))
    assert response.status == 200
    body = response.json()
    assert set(body) == {"data", "pagination", "links"}
    assert body["data"] == accounts[:5]
    assert body["pagination"]["limit"] == 5 and body["pagination"]["has_more"] is True
    assert response.header("Link") == (
        f'<{body["links"]["first"]}>; rel="first", <{body["links"]["next"]}>; rel="next"'
    )
    assert "password" not in response.body.decode()


@pytest.mark.parametrize("sort", ["id", "email", "-email", "created_at", "-created_at"])
@pytest.mark.parametrize("mode", ["cursor", "offset"])
def test_following_next_links_visits_every_user_once_in_order(client, users, many_users, sort, mode):
    admin, accounts = many_users
    url = f"/v1/users?limit=5&sort={sort}" + ("&offset=0" if mode == "offset" else "")
    rows = [row for page in follow_next_links(client, url, users.headers(admin)) for row in page["data"]]
    assert all(set(row) == USER_FIELDS for row in rows)
    ids = [row["id"] for row in rows]
    column, descending = sort.lstrip("-"), sort.startswith("-")
    # Accounts made one after another: created_at grows with id, ties broken by id.
    expected = sorted(accounts, key=lambda user: (user[column], user["id"]), reverse=descending)
    assert ids == [user["id"] for user in expected]


@pytest.mark.parametrize("query, detail", [
    ("sort=password_hash", "cannot sort by 'password_hash'; choose from created_at, email, id"),
    ("sort=-password_hash", "cannot sort by 'password_hash'; choose from created_at, email, id"),
    ("sort=id,password_hash", "cannot sort by 'password_hash'; choose from created_at, email, id"),
    ("sort=role", "cannot sort by 'role'; choose from created_at, email, id"),
    ("role=admin", "unknown query parameter(s): role"),
    ("limit=101", "'limit' must be a whole number from 1 to 100"),
    ("cursor=abc", "the cursor is invalid, or was made for another sort or filter"),
])
def test_bad_user_list_parameters_are_400(client, users, query, detail):
    admin = users.admin()
    assert_problem(client.get("/v1/users?" + query, headers=users.headers(admin)), 400, detail)


def test_the_user_list_is_for_admins_only(client, users):
    user = users.create()
    assert_problem(client.get("/v1/users", headers=users.headers(user)), 403, "this endpoint is for admins")
    response = client.get("/v1/users")
    assert_problem(response, 401)
    assert response.header("WWW-Authenticate") == WWW_AUTHENTICATE


# -- PATCH /v1/users/{id} (admin) ----------------------------------------------------------

def test_an_admin_promotes_a_user_and_back(client, users):
    admin, user = users.admin(), users.create()
    headers = users.headers(admin)
    response = patch(client, f"/v1/users/{user['id']}", {"role": "admin"}, headers)
    assert response.status == 200, response
    assert set(response.json()) == USER_FIELDS
    assert response.json()["role"] == "admin" and response.json()["id"] == user["id"]
    response = patch(client, f"/v1/users/{user['id']}", {"role": "user"}, headers)
    assert response.status == 200
    assert response.json()["role"] == "user"
    assert role_in_database(client, user, users) == "user"


@pytest.mark.parametrize("body, errors", [
    ({"role": "superuser"}, [{"field": "role", "message": "must be one of: user, admin"}]),
    ({"role": "ADMIN"}, [{"field": "role", "message": "must be one of: user, admin"}]),
    ({"role": 1}, [{"field": "role", "message": "must be a string"}]),
    ({}, [{"field": "role", "message": "is required"}]),
    ({"role": "admin", "email": "x@example.com"}, [{"field": "email", "message": "is not a known field"}]),
])
def test_bad_role_changes_are_422(client, users, body, errors):
    admin, user = users.admin(), users.create()
    assert_problem(patch(client, f"/v1/users/{user['id']}", body, users.headers(admin)), 422, errors=errors)
    assert role_in_database(client, user, users) == "user"


def test_an_unknown_user_is_404(client, users):
    admin = users.admin()
    assert_problem(patch(client, "/v1/users/999999", {"role": "admin"}, users.headers(admin)), 404,
                   "user 999999 does not exist")


def test_the_last_admin_cannot_be_demoted(client, users):
    admin = users.admin()
    response = patch(client, f"/v1/users/{admin['id']}", {"role": "user"}, users.headers(admin))
    assert_problem(response, 409, "the shop needs at least one admin")
    assert role_in_database(client, admin, users) == "admin"
    # Setting the role it already has is no loss.
    assert patch(client, f"/v1/users/{admin['id']}", {"role": "admin"}, users.headers(admin)).status == 200


def test_with_two_admins_one_can_demote_the_other(client, users):
    first, second = users.admin(), users.admin()
    response = patch(client, f"/v1/users/{second['id']}", {"role": "user"}, users.headers(first))
    assert response.status == 200 and response.json()["role"] == "user"
    # Now `first` is the last admin, even for itself.
    assert_problem(patch(client, f"/v1/users/{first['id']}", {"role": "user"}, users.headers(first)), 409)


def test_an_admin_may_demote_itself_while_another_admin_remains(client, users):
    first, second = users.admin(), users.admin()
    response = patch(client, f"/v1/users/{first['id']}", {"role": "user"}, users.headers(first))
    assert response.status == 200
    assert role_in_database(client, first, users) == "user"
    assert role_in_database(client, second, users) == "admin"


DEMOTION_ROUNDS = 10


def test_two_admins_demoting_each_other_at_once_leave_one_admin(live_server, app, users, database):
    """The count of admins and the demotion are one unit: of two racing demotions one is
    refused: a 409 when both were admins as they were authenticated, or a 403 when the
    winner's demotion committed before the loser was authenticated (the role is read then)."""
    first, second = users.admin(), users.admin()
    for _ in range(DEMOTION_ROUNDS):
        demote = json.dumps({"role": "user"}).encode()
        statuses = send_at_once(live_server, [
            ("PATCH", f"/v1/users/{first['id']}", json_headers(users.headers(second)), demote),
            ("PATCH", f"/v1/users/{second['id']}", json_headers(users.headers(first)), demote),
        ])
        assert sorted(statuses) in ([200, 403], [200, 409]), statuses
        with database.transaction() as connection:
            assert connection.fetch_value("SELECT count(*) FROM users WHERE role = 'admin'") == 1
            connection.execute("UPDATE users SET role = 'admin'")
        for user in (first, second):  # the server must read the roles this test set behind its back
            app.services.user_states.forget(user["id"])


def test_role_changes_are_for_admins_only(client, users):
    user, other = users.create(), users.create()
    response = patch(client, f"/v1/users/{other['id']}", {"role": "admin"}, users.headers(user))
    assert_problem(response, 403, "this endpoint is for admins")
    response = patch(client, f"/v1/users/{user['id']}", {"role": "admin"}, users.headers(user))
    assert_problem(response, 403)
    assert_problem(patch(client, f"/v1/users/{user['id']}", {"role": "admin"}), 401)
    assert role_in_database(client, user, users) == "user"


def test_a_new_role_holds_for_new_tokens_and_old_ones_at_once(client, users):
    admin, user = users.admin(), users.create()
    old_tokens = login(client, user["email"]).json()
    assert client.get("/v1/users", headers=bearer(old_tokens["access_token"])).status == 403
    assert patch(client, f"/v1/users/{user['id']}", {"role": "admin"}, users.headers(admin)).status == 200
    new_tokens = login(client, user["email"]).json()
    assert client.get("/v1/users", headers=bearer(new_tokens["access_token"])).status == 200
    # The old access token still says "user", but the role is read from the users row on
    # every request (accounts.token_user): the promotion holds for it too, at once.
    assert client.get("/v1/users", headers=bearer(old_tokens["access_token"])).status == 200


# -- python server.py create-admin EMAIL ---------------------------------------------------

CLI_TIMEOUT_SECONDS = 30
ADMIN_PASSWORD = "an owl keeps the ledger after dark"


@pytest.fixture
def cli_database_url(tmp_path):
    return f"sqlite:///{tmp_path}/shop.db"


def create_admin(database_url, *arguments, stdin=ADMIN_PASSWORD + "\n"):
    """Run `python server.py create-admin ...` with `stdin`; the CompletedProcess."""
    env = {
        "PATH": "/usr/bin:/bin",
        "APP_ENV": "test",
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "PBKDF2_ITERATIONS": "1000",
    }
    return subprocess.run([sys.executable, "server.py", "create-admin", *arguments], input=stdin, env=env,
                          cwd=PROJECT_DIR, capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS, check=False)


def api_client(database_url):
    settings = config.load_settings({
        "APP_ENV": "test", "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET_KEY, "PBKDF2_ITERATIONS": "1000",
    })
    app = server.create_app(settings)
    return WSGIClient(app), app.services.database


def test_create_admin_makes_an_admin_who_logs_in(cli_database_url):
    done = create_admin(cli_database_url, "Root@Example.com")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "created admin root@example.com (id 1)\n"
    assert ADMIN_PASSWORD not in done.stdout + done.stderr
    client, database = api_client(cli_database_url)
    try:
        response = login(client, "root@example.com", ADMIN_PASSWORD)
        assert response.status == 200, response
        headers = bearer(response.json()["access_token"])
        me = client.get("/v1/users/me", headers=headers).json()
        assert me["role"] == "admin" and me["email"] == "root@example.com"
        assert client.get("/v1/users", headers=headers).status == 200
    finally:
        database.close()


def test_create_admin_has_no_password_argument(cli_database_url):
    done = create_admin(cli_database_url, "root@example.com", "--password", ADMIN_PASSWORD)
    assert done.returncode == 2
    assert "unrecognized arguments" in done.stderr
    assert not Path(cli_database_url.removeprefix("sqlite:///")).exists()


@pytest.mark.parametrize("stdin, message", [
    ("a" * 14 + "\n", "create-admin: the password is too short: at least 15 characters"),
    ("\n", "create-admin: the password is too short: at least 15 characters"),
    ("", "create-admin: the password is too short: at least 15 characters"),
    ("correct horse battery staple\n", "create-admin: the password is a commonly used password"),
])
def test_create_admin_refuses_a_weak_password(cli_database_url, stdin, message):
    done = create_admin(cli_database_url, "root@example.com", stdin=stdin)
    assert done.returncode == 2
    assert done.stderr == message + "\n"
    assert done.stdout == ""


def test_create_admin_refuses_an_existing_email(cli_database_url):
    assert create_admin(cli_database_url, "root@example.com").returncode == 0
    done = create_admin(cli_database_url, "ROOT@example.com", stdin="another long passphrase for me\n")
    assert done.returncode == 1
    assert done.stderr == "create-admin: an account with the email root@example.com exists\n"
    client, database = api_client(cli_database_url)
    try:
        assert login(client, "root@example.com", ADMIN_PASSWORD).status == 200
    finally:
        database.close()


@pytest.mark.parametrize("email", ["not-an-email", "root@localhost", "a b@example.com", ""],
                         ids=["no-at", "no-dot", "a-space", "empty"])
def test_create_admin_refuses_a_bad_email(cli_database_url, email):
    done = create_admin(cli_database_url, email)
    assert done.returncode == 2
    assert done.stderr == "create-admin: that is not an email address\n"


# -- changes that take effect on the very next request (token epochs, accounts.py) -------------

REVOKED_TOKEN = "the access token was revoked by a password change or a logout everywhere; log in again"


def every_credential(client, user):
    """{kind: headers} for a real access token, an API key and a session (CSRF token included)."""
    access_token = login(client, user["email"]).json()["access_token"]
    key = client.post("/v1/api-keys", json={"name": "ci"}, headers=bearer(access_token))
    assert key.status == 201, key
    session, csrf_token = start_session(client, user["email"])
    return {"token": bearer(access_token), "api key": {"X-API-Key": key.json()["key"]},
            "session": dict(session, **{"X-CSRF-Token": csrf_token})}


def assert_revoked(response):
    assert_problem(response, 401, REVOKED_TOKEN)
    assert response.header("WWW-Authenticate") == WWW_AUTHENTICATE + ', error="invalid_token"'


def test_a_demoted_admin_loses_admin_rights_at_once_with_every_credential(client, users):
    first, second = users.admin(), users.admin()
    credentials = every_credential(client, second)
    for headers in credentials.values():
        assert client.get("/v1/users", headers=headers).status == 200
    assert patch(client, f"/v1/users/{second['id']}", {"role": "user"}, users.headers(first)).status == 200
    for kind, headers in credentials.items():
        response = client.get("/v1/users", headers=headers)
        assert_problem(response, 403, "this endpoint is for admins")
        assert client.get("/v1/users/me", headers=headers).json()["role"] == "user", kind  # still logged in


def test_the_role_claim_of_a_token_is_not_trusted(client, users, settings):
    user = users.create()
    # Signed with the server's own key, so only the users row can tell the claim is false.
    token = auth.issue_access_token(user["id"], "admin", settings.secret_keys)
    assert_problem(client.get("/v1/users", headers=bearer(token)), 403, "this endpoint is for admins")
    assert client.get("/v1/users/me", headers=bearer(token)).json()["role"] == "user"


def test_after_a_password_change_every_old_access_token_is_401(client, users):
    user, other = users.create(), users.create()
    first, second = login(client, user["email"]).json(), login(client, user["email"]).json()
    others = users.headers(other)
    body = {"password": NEW_PASSWORD, "current_password": TEST_PASSWORD}
    assert patch(client, "/v1/users/me", body, bearer(first["access_token"])).status == 200
    for tokens in (first, second):  # the token that made the change too
        assert_revoked(client.get("/v1/users/me", headers=bearer(tokens["access_token"])))
    assert_revoked(client.get("/v1/items/1", headers=bearer(first["access_token"])))  # public routes too
    fresh = login(client, user["email"], NEW_PASSWORD).json()
    assert client.get("/v1/users/me", headers=bearer(fresh["access_token"])).status == 200
    assert client.get("/v1/users/me", headers=others).status == 200  # nobody else's


def test_a_refused_password_change_ends_no_token(client, users):
    user = users.create()
    headers = bearer(login(client, user["email"]).json()["access_token"])
    body = {"password": NEW_PASSWORD, "current_password": "not my password at all, sorry"}
    assert_problem(patch(client, "/v1/users/me", body, headers), 403)
    assert client.get("/v1/users/me", headers=headers).status == 200


def test_a_token_of_a_deleted_account_is_401(client, users, database):
    user = users.create()
    headers = users.headers(user)
    with database.transaction() as connection:
        connection.execute("DELETE FROM users WHERE id = :id", {"id": user["id"]})
    response = client.get("/v1/users/me", headers=headers)
    assert_problem(response, 401, "this account no longer exists")
    assert response.header("WWW-Authenticate") == WWW_AUTHENTICATE + ', error="invalid_token"'


def test_another_process_sees_a_demotion_within_the_ttl(app, settings, database, logger, users):
    """Each process remembers roles for USER_STATE_TTL_SECONDS: here a second app on the same
    database plays the second gunicorn process. No sleep: the test ages its memory instead."""
    first, second = users.admin(), users.admin()
    other_app = server.create_app(settings, database=database, logger=logger)
    this_process, other_process = WSGIClient(app), WSGIClient(other_app)
    headers = users.headers(second)
    assert other_process.get("/v1/users", headers=headers).status == 200  # remembered there now
    assert patch(this_process, f"/v1/users/{second['id']}", {"role": "user"}, users.headers(first)).status == 200
    assert this_process.get("/v1/users", headers=headers).status == 403
    assert other_process.get("/v1/users", headers=headers).status == 200  # the documented lag (< 1 s)
    other_app.services.user_states.ttl_seconds = 0  # as if USER_STATE_TTL_SECONDS had passed
    assert other_process.get("/v1/users", headers=headers).status == 403
