"""Identity over HTTP: register, login, refresh, logout, sessions with CSRF, API keys, roles.

Every test runs on both engines, in-process and over a socket (the `client` fixture).
"""

import base64
import json
import statistics
import time

import jwt
import pytest

import auth
import config
import db
import routes
import server
from conftest import TEST_PASSWORD, TEST_SECRET_KEY, WSGIClient, send_at_once

NEW_PASSWORD = "a brand new and rather long passphrase"
# The forged-token table signs one token with HS512 on purpose; PyJWT warns about its key.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


def post_json(client, path, body, headers=None):
    return client.post(path, json=body, headers=headers)


def login(client, email, password=TEST_PASSWORD):
    response = post_json(client, "/v1/auth/login", {"email": email, "password": password})
    assert response.status == 200, response
    return response.json()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def without_ids(problem):
    return {key: value for key, value in problem.items() if key not in ("request_id", "instance")}


def b64(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# -- register ------------------------------------------------------------------------------

def test_register_answers_201_with_the_user_and_never_the_hash(client):
    response = post_json(client, "/v1/auth/register", {"email": "  Ada@Example.COM ", "password": TEST_PASSWORD})
    assert response.status == 201
    user = response.json()
    assert set(user) == {"id", "email", "role", "created_at", "updated_at"}
    assert (user["email"], user["role"]) == ("ada@example.com", "user")
    assert b"pbkdf2" not in response.body and TEST_PASSWORD.encode() not in response.body


def test_a_taken_email_is_409_in_any_case(client):
    assert post_json(client, "/v1/auth/register", {"email": "ada@example.com", "password": TEST_PASSWORD}).status == 201
    again = post_json(client, "/v1/auth/register", {"email": "ADA@example.com", "password": NEW_PASSWORD})
    assert again.status == 409
    assert again.json()["detail"] == "an account with this email exists"
    login(client, "ada@example.com")  # the first account is untouched


def test_mass_assignment_is_refused_and_creates_nothing(client):
    body = {"email": "eve@example.com", "password": TEST_PASSWORD, "role": "admin", "id": 1}
    response = post_json(client, "/v1/auth/register", body)
    assert response.status == 422
    assert response.json()["errors"] == [
        {"field": "role", "message": "is not a known field"},
        {"field": "id", "message": "is not a known field"},
    ]
    assert post_json(client, "/v1/auth/login", {"email": "eve@example.com", "password": TEST_PASSWORD}).status == 401


@pytest.mark.parametrize("password, message", [
    ("a" * 14, "is too short: at least 15 characters"),
    ("a" * 1025, "must be 1 to 1024 characters"),
    ("correct horse battery staple", "is a commonly used password"),
])
def test_password_rules(client, password, message):
    response = post_json(client, "/v1/auth/register", {"email": "bob@example.com", "password": password})
    assert response.status == 422
    assert {"field": "password", "message": message} in response.json()["errors"]


def test_fifteen_characters_without_composition_rules_are_enough(client):
    body = {"email": "bob@example.com", "password": "qwzkvbnmtrplxsd"}
    assert post_json(client, "/v1/auth/register", body).status == 201


def test_concurrent_registrations_of_one_email_make_one_account(live_server):
    body = json.dumps({"email": "race@example.com", "password": TEST_PASSWORD}).encode()
    headers = {"Content-Type": "application/json"}
    statuses = send_at_once(live_server, [("POST", "/v1/auth/register", headers, body)] * 10)
    assert sorted(statuses) == [201] + [409] * 9


# -- login, tokens -------------------------------------------------------------------------

def test_login_gives_a_bearer_token_pair_that_works(client, users):
    user = users.create("ada@example.com")
    tokens = login(client, "ada@example.com")
    assert set(tokens) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert (tokens["token_type"], tokens["expires_in"]) == ("bearer", 900)
    me = client.get("/v1/users/me", headers=bearer(tokens["access_token"]))
    assert me.status == 200 and me.json()["id"] == user["id"]


def test_pyjwt_verifies_our_access_token_with_the_same_secret(client, users):
    users.create("ada@example.com")
    token = login(client, "ada@example.com")["access_token"]
    claims = jwt.decode(token, TEST_SECRET_KEY, algorithms=["HS256"])
    assert set(claims) == {"sub", "role", "iat", "exp", "jti"}
    assert jwt.get_unverified_header(token)["kid"] == auth.key_id(TEST_SECRET_KEY.encode())


def test_a_wrong_password_and_an_unknown_email_look_the_same(client, users):
    users.create("ada@example.com")
    wrong = post_json(client, "/v1/auth/login", {"email": "ada@example.com", "password": NEW_PASSWORD})
    unknown = post_json(client, "/v1/auth/login", {"email": "nobody@example.com", "password": NEW_PASSWORD})
    assert wrong.status == unknown.status == 401
    assert wrong.header("WWW-Authenticate") == unknown.header("WWW-Authenticate") == 'Bearer realm="shop"'
    assert without_ids(wrong.json()) == without_ids(unknown.json())


@pytest.fixture
def realistic_app(database_url):
    """The app with a realistic PBKDF2 cost, so the hash dominates a login's time."""
    settings = config.load_settings({"APP_ENV": "test", "DATABASE_URL": database_url,
                                     "SECRET_KEY": TEST_SECRET_KEY, "PBKDF2_ITERATIONS": "100000",
                                     "ACCESS_LOG": "0"})
    app = server.create_app(settings)
    db.migrate(app.services.database)
    yield app
    app.services.database.close()


def test_an_unknown_email_costs_as_long_as_a_wrong_password(realistic_app):
    client = WSGIClient(realistic_app)
    assert post_json(client, "/v1/auth/register", {"email": "ada@example.com", "password": TEST_PASSWORD}).status == 201
    times = {"ada@example.com": [], "nobody@example.com": []}
    for _ in range(15):
        for email in times:  # interleaved, so a busy moment of the machine hits both alike
            started = time.process_time()  # CPU time: what the attacker's clock would measure
            assert post_json(client, "/v1/auth/login", {"email": email, "password": NEW_PASSWORD}).status == 401
            times[email].append(time.process_time() - started)
    wrong_password, unknown_email = (statistics.median(samples) for samples in times.values())
    assert abs(wrong_password - unknown_email) / max(wrong_password, unknown_email) < 0.25


# -- refresh and logout --------------------------------------------------------------------

def refresh(client, refresh_token):
    return post_json(client, "/v1/auth/refresh", {"refresh_token": refresh_token})


def test_refresh_rotates_and_a_replay_revokes_the_whole_family(client, users):
    users.create("ada@example.com")
    first = login(client, "ada@example.com")
    second = refresh(client, first["refresh_token"])
    assert second.status == 200
    second = second.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert client.get("/v1/users/me", headers=bearer(second["access_token"])).status == 200
    replay = refresh(client, first["refresh_token"])  # stolen, or sent twice
    assert replay.status == 401
    assert replay.json()["detail"] == "the refresh token was already used; log in again"
    assert refresh(client, second["refresh_token"]).status == 401  # the family is revoked
    other_login = login(client, "ada@example.com")  # another login is another family
    assert refresh(client, other_login["refresh_token"]).status == 200


def test_logout_revokes_and_is_204_even_for_an_unknown_token(client, users):
    users.create("ada@example.com")
    tokens = login(client, "ada@example.com")
    assert post_json(client, "/v1/auth/logout", {"refresh_token": tokens["refresh_token"]}).status == 204
    assert refresh(client, tokens["refresh_token"]).status == 401
    assert post_json(client, "/v1/auth/logout", {"refresh_token": "never-issued"}).status == 204


def test_an_expired_refresh_token_is_refused(client, users, database):
    users.create("ada@example.com")
    tokens = login(client, "ada@example.com")
    with database.transaction() as connection:
        connection.execute("UPDATE refresh_tokens SET expires_at = '2000-01-01T00:00:00.000000Z'")
    assert refresh(client, tokens["refresh_token"]).status == 401


def test_twenty_concurrent_refreshes_with_one_token_give_one_new_pair(live_server, users, live_client):
    users.create("ada@example.com")
    tokens = login(live_client, "ada@example.com")
    body = json.dumps({"refresh_token": tokens["refresh_token"]}).encode()
    statuses = send_at_once(live_server, [("POST", "/v1/auth/refresh", {"Content-Type": "application/json"}, body)] * 20)
    assert sorted(statuses) == [200] + [401] * 19


# -- bad access tokens ---------------------------------------------------------------------

def forged_tokens(user_id):
    now = int(time.time())
    claims = {"sub": str(user_id), "role": "user", "iat": now, "exp": now + 600, "jti": "x"}
    keys = (TEST_SECRET_KEY.encode(),)
    kid = auth.key_id(keys[0])
    good = auth.encode_token(claims, keys)
    header, payload, signature = good.split(".")
    return {
        "another secret": auth.encode_token(claims, (b"another-secret-that-is-32-bytes-long!",)),
        "alg none": b64({"alg": "none", "typ": "JWT", "kid": kid}) + "." + payload + ".",
        "alg HS512": jwt.encode(claims, TEST_SECRET_KEY, algorithm="HS512", headers={"kid": kid}),
        "role changed, signature kept": header + "." + b64(dict(claims, role="admin")) + "." + signature,
        "expired": auth.encode_token(dict(claims, iat=now - 3600, exp=now - 120), keys),
        "not yet valid": auth.encode_token(dict(claims, nbf=now + 600), keys),
        "no exp": auth.encode_token({key: value for key, value in claims.items() if key != "exp"}, keys),
        "garbage": "not.a.token",
        "refresh token": auth.new_refresh_token(),
    }


FORGED = ["another secret", "alg none", "alg HS512", "role changed, signature kept", "expired",
          "not yet valid", "no exp", "garbage", "refresh token"]


@pytest.mark.parametrize("case", FORGED)
def test_bad_access_tokens_are_401_invalid_token(client, users, case):
    user = users.create("ada@example.com")
    response = client.get("/v1/users/me", headers=bearer(forged_tokens(user["id"])[case]))
    assert response.status == 401, response
    assert response.header("WWW-Authenticate") == 'Bearer realm="shop", error="invalid_token"'


@pytest.mark.parametrize("authorization", ["Basic YWRhOnB3", "Bearer", "Bearer "])
def test_other_authorization_shapes_are_401_invalid_request(client, authorization):
    response = client.get("/v1/users/me", headers={"Authorization": authorization})
    assert response.status == 401
    assert response.header("WWW-Authenticate") == 'Bearer realm="shop", error="invalid_request"'


def test_a_user_token_on_an_admin_route_is_403(client, users):
    response = client.get("/v1/users", headers=users.headers(users.create()))
    assert response.status == 403


# -- cookie sessions and CSRF --------------------------------------------------------------

def start_session(client, email="ada@example.com"):
    response = post_json(client, "/v1/auth/session", {"email": email, "password": TEST_PASSWORD})
    assert response.status == 200, response
    cookies = [value for name, value in response.headers if name.lower() == "set-cookie"]
    jar = "; ".join(cookie.split(";")[0] for cookie in cookies)
    return cookies, {"Cookie": jar}, response.json()["csrf_token"]


def test_a_session_sets_an_httponly_lax_cookie_and_a_readable_csrf_cookie(client, users):
    users.create("ada@example.com")
    cookies, jar, csrf = start_session(client)
    session_cookie = next(cookie for cookie in cookies if cookie.startswith("session="))
    csrf_cookie = next(cookie for cookie in cookies if cookie.startswith("csrf_token="))
    assert session_cookie.endswith("; Path=/; Max-Age=604800; SameSite=Lax; HttpOnly")
    assert "HttpOnly" not in csrf_cookie and csrf_cookie.startswith(f"csrf_token={csrf};")
    session_id = session_cookie.split(";")[0].split("=", 1)[1]
    assert len(session_id) >= 43  # 256 random bits in base64url
    assert start_session(client)[1] != jar  # a new value at every login
    assert client.get("/v1/users/me", headers=jar).status == 200


@pytest.mark.parametrize("extra_headers", [
    {},
    {"X-CSRF-Token": "wrong"},
    {"X-CSRF-Token": "CSRF", "Origin": "https://evil.example"},
    {"X-CSRF-Token": "CSRF", "Sec-Fetch-Site": "cross-site"},
], ids=["no token", "wrong token", "cross-origin", "cross-site"])
def test_unsafe_session_requests_without_a_good_csrf_token_are_403(client, users, extra_headers):
    users.create("ada@example.com")
    _, jar, csrf = start_session(client)
    headers = dict(jar, **{name: csrf if value == "CSRF" else value for name, value in extra_headers.items()})
    response = client.request("DELETE", "/v1/auth/session", headers=headers)
    assert response.status == 403
    assert client.get("/v1/users/me", headers=jar).status == 200  # still logged in


def test_another_sessions_csrf_token_does_not_work(client, users):
    users.create("ada@example.com")
    _, jar, _ = start_session(client)
    _, _, other_csrf = start_session(client)
    assert client.request("DELETE", "/v1/auth/session", headers=dict(jar, **{"X-CSRF-Token": other_csrf})).status == 403


def test_logout_with_the_csrf_token_clears_the_cookies(client, users):
    users.create("ada@example.com")
    _, jar, csrf = start_session(client)
    response = client.request("DELETE", "/v1/auth/session", headers=dict(jar, **{"X-CSRF-Token": csrf}))
    assert response.status == 204
    cleared = [value for name, value in response.headers if name.lower() == "set-cookie"]
    assert sorted(cookie.split(";")[0] for cookie in cleared) == ["csrf_token=", "session="]
    assert all("Max-Age=0" in cookie for cookie in cleared)
    assert client.get("/v1/users/me", headers=jar).status == 401


def test_secure_cookies_get_the_host_prefix(database_url, database):
    settings = config.load_settings({"APP_ENV": "test", "DATABASE_URL": database_url, "SECRET_KEY": TEST_SECRET_KEY,
                                     "PBKDF2_ITERATIONS": "1000", "SESSION_COOKIE_SECURE": "1"})
    client = WSGIClient(server.create_app(settings, database=database))
    post_json(client, "/v1/auth/register", {"email": "ada@example.com", "password": TEST_PASSWORD})
    cookies, jar, _ = start_session(client)
    assert all(cookie.startswith("__Host-") and "; Secure" in cookie for cookie in cookies)
    assert client.get("/v1/users/me", headers=jar).status == 200


def test_bearer_requests_need_no_csrf_token(client, users):
    response = post_json(client, "/v1/api-keys", {"name": "ci"}, headers=users.headers(users.create()))
    assert response.status == 201


# -- API keys ------------------------------------------------------------------------------

def test_an_api_key_is_shown_once_stored_hashed_and_works_in_its_header(client, users, database):
    headers = users.headers(users.create())
    created = post_json(client, "/v1/api-keys", {"name": "laptop"}, headers=headers)
    assert created.status == 201
    key = created.json()["key"]
    assert created.header("Location") == f"/v1/api-keys/{created.json()['id']}"
    assert key.startswith("shop_") and auth.api_key_prefix(key) == created.json()["prefix"]
    with database.connection() as connection:
        stored = connection.fetch_all("SELECT prefix, key_hash FROM api_keys")
    assert key not in json.dumps(stored) and stored[0]["key_hash"] == auth.hash_token(key)
    listed = client.get("/v1/api-keys", headers=headers).json()["data"]
    assert [set(row) for row in listed] == [{"id", "name", "prefix", "created_at", "last_used_at"}]
    assert client.get("/v1/users/me", headers={"X-API-Key": key}).status == 200
    assert client.get("/v1/api-keys", headers=headers).json()["data"][0]["last_used_at"] is not None
    assert client.get(f"/v1/users/me?api_key={key}").status == 401  # never from the URL


def test_a_revoked_or_malformed_key_is_401_and_another_users_key_is_404(client, users):
    owner, stranger = users.create(), users.create()
    created = post_json(client, "/v1/api-keys", {"name": "old"}, headers=users.headers(owner)).json()
    assert client.request("DELETE", f"/v1/api-keys/{created['id']}", headers=users.headers(stranger)).status == 404
    assert client.request("DELETE", f"/v1/api-keys/{created['id']}", headers=users.headers(owner)).status == 204
    assert client.get("/v1/users/me", headers={"X-API-Key": created["key"]}).status == 401
    assert client.get("/v1/users/me", headers={"X-API-Key": "shop_nope"}).status == 401


def test_an_admins_key_reaches_admin_routes_and_a_users_key_does_not(client, users):
    admin_key = post_json(client, "/v1/api-keys", {"name": "a"}, headers=users.headers(users.admin())).json()["key"]
    user_key = post_json(client, "/v1/api-keys", {"name": "u"}, headers=users.headers(users.create())).json()["key"]
    assert client.get("/v1/users", headers={"X-API-Key": admin_key}).status == 200
    assert client.get("/v1/users", headers={"X-API-Key": user_key}).status == 403


# -- every protected route -----------------------------------------------------------------

PROTECTED = [(method, pattern.replace("{id:int}", "1")) for method, pattern, _, _, access, _ in routes.ROUTES
             if access != "public"]


@pytest.mark.parametrize("method, path", PROTECTED)
def test_every_protected_route_is_401_without_credentials(client, method, path):
    body = {} if method in ("POST", "PATCH") else None
    response = client.request(method, path, json=body)
    assert response.status == 401, response
    assert response.header("WWW-Authenticate") == 'Bearer realm="shop"'
