"""Handlers for signing up and signing in: tokens, browser sessions and API keys.

    $ curl -X POST localhost:8000/v1/auth/login -H 'Content-Type: application/json' \\
        -d '{"email": "ada@example.com", "password": "correct horse battery staple"}'
    {"access_token": "eyJhbGciOiJIUzI1NiIs...", "token_type": "bearer",
     "expires_in": 900, "refresh_token": "kZ3l..."}

A wrong password and an unknown email get the same 401, in the same time (accounts.py).
"""

import accounts
import cookies
import pagination
import passwords
import signing
import sql_credentials
from challenge import unauthorized
from schemas import describe, page_of
from validation import Field, query_names, validate
from web import Conflict, NotFound, Response, UnprocessableContent

CREDENTIALS = [
    Field("email", "email"),
    Field("password", "string", max_length=passwords.MAX_PASSWORD_CHARS, example="a kettle sings at dawn"),
]
# A registration's: the same fields, and the document says the new password's minimum length,
# which _new_credentials checks (passwords.password_problems) with the messages of its own.
NEW_CREDENTIALS = [
    CREDENTIALS[0],
    Field("password", "string", max_length=passwords.MAX_PASSWORD_CHARS, example="a kettle sings at dawn",
          checked_elsewhere={"minLength": passwords.MIN_PASSWORD_CHARS},
          description=f"at least {passwords.MIN_PASSWORD_CHARS} characters, not a common password"),
]
REFRESH = [Field("refresh_token", "string", max_length=200)]
API_KEY = [Field("name", "string", max_length=100, example="reporting script")]
API_KEY_LIST_QUERY = pagination.page_parameters(sql_credentials.API_KEY_SORTABLE_COLUMNS, "id")
API_KEY_LIST_PARAMETERS = query_names(API_KEY_LIST_QUERY)
BAD_LOGIN = "the email or password is wrong"


@describe(response="User", status=201, body=NEW_CREDENTIALS, errors=(409,))
def register(request):
    """POST /v1/auth/register: a new account with the `user` role. 409 if the email is taken."""
    body = _new_credentials(request.json())
    services = request.services
    try:
        user = accounts.register(services.database, body["email"], body["password"],
                                 iterations=services.settings.pbkdf2_iterations)
    except accounts.EmailTaken:
        raise Conflict("an account with this email exists") from None
    return Response.json(user, status=201)


@describe(response="Tokens", body=CREDENTIALS)
def login(request):
    """POST /v1/auth/login: an access token and a refresh token."""
    user = _check_login(request)
    services = request.services
    return accounts.issue_tokens(services.database, services.settings, user)


@describe(response="Tokens", body=REFRESH)
def refresh(request):
    """POST /v1/auth/refresh: trade a refresh token for a new pair; the old one is spent (sent
    again within REFRESH_REUSE_SECONDS, it gets the same new refresh token: accounts.py)."""
    body = validate(request.json(), REFRESH)
    services = request.services
    try:
        return accounts.refresh_tokens(services.database, services.settings, body["refresh_token"])
    except accounts.InvalidCredentials as error:
        raise unauthorized(str(error)) from None


@describe(status=204, body=REFRESH)
def logout(request):
    """POST /v1/auth/logout: revoke the refresh token and every token rotated from its login."""
    body = validate(request.json(), REFRESH)
    accounts.revoke_refresh_token(request.services.database, body["refresh_token"])
    return Response(status=204)


@describe(status=204)
def logout_all(request):
    """POST /v1/auth/logout-all: log the caller out everywhere. Every access token, refresh
    token and session of the account stops working on its next request; API keys stay."""
    services = request.services
    accounts.log_out_everywhere(services.database, services.user_states, request.user["id"],
                                session_cache=services.session_cache)
    # A browser that asked through its session cookie holds a dead one now: clear it.
    headers = cookies.clear_session_cookies(request) if request.user["via"] == "session" else None
    return Response(status=204, headers=headers)


@describe(response="Session", body=CREDENTIALS, response_headers=("Set-Cookie",))
def start_session(request):
    """POST /v1/auth/session: log a browser in with an HttpOnly session cookie.

    The answer also carries the session's CSRF token, in the body and in a cookie that
    page scripts can read: unsafe requests must send it back in X-CSRF-Token.
    """
    user = _check_login(request)
    services = request.services
    session_id = accounts.start_session(services.database, services.settings, user)
    csrf_token = signing.csrf_token_for(session_id, services.settings.secret_keys)
    headers = cookies.set_session_cookies(request, session_id, csrf_token, services.settings.session_ttl_seconds)
    return Response.json({"user_id": user["id"], "role": user["role"], "csrf_token": csrf_token},
                         headers=headers)


@describe(status=204, response_headers=("Set-Cookie",))
def end_session(request):
    """DELETE /v1/auth/session: log the browser out and clear its cookies."""
    session_id = request.user.get("session_id")
    if session_id is None:
        raise unauthorized("this request is not authenticated by a session cookie")
    accounts.end_session(request.services.database, session_id, session_cache=request.services.session_cache)
    return Response(status=204, headers=cookies.clear_session_cookies(request))


@describe(response="NewApiKey", status=201, body=API_KEY, response_headers=("Location",))
def create_api_key(request):
    """POST /v1/api-keys: a new key. Its secret is in this answer and never again."""
    body = validate(request.json(), API_KEY)
    try:
        row, key = accounts.create_api_key(request.services.database, request.user["id"], body["name"])
    except accounts.InvalidCredentials as error:
        raise unauthorized(str(error), "invalid_token") from None
    return Response.json(dict(row, key=key), status=201, headers=[("Location", f"/v1/api-keys/{row['id']}")])


@describe(response=page_of("ApiKey"), query=API_KEY_LIST_QUERY, response_headers=("Link",))
def list_api_keys(request):
    """GET /v1/api-keys: the caller's live keys (name, prefix, created and last used),
    paginated like every list: limit with offset or cursor, sort by id or created_at."""
    query = request.query
    pagination.reject_unknown_parameters(query, API_KEY_LIST_PARAMETERS)
    keys = request.services.settings.secret_keys
    page = pagination.parse_page(query, sortable=sql_credentials.API_KEY_SORTABLE_COLUMNS, default_sort="id",
                                 filters={}, keys=keys)
    rows = accounts.list_api_keys(request.services.database, request.user["id"],
                                  sort=page.sort, limit=page.limit + 1, offset=page.offset, after=page.after)
    body, link_header = pagination.envelope(rows, page, path=request.path, query_params={}, keys=keys)
    return Response.json(body, headers=[("Link", link_header)] if link_header else None)


@describe(status=204, errors=(404,))
def revoke_api_key(request):
    """DELETE /v1/api-keys/{id}: revoke one of the caller's keys; another user's key is a 404."""
    key_id = request.path_params["id"]
    if not accounts.revoke_api_key(request.services.database, request.user["id"], key_id):
        raise NotFound(f"API key {key_id} does not exist")
    return Response(status=204)


def _new_credentials(document):
    """The email and password of a registration; one 422 names every problem of both.

    The password rules (length, common passwords) are checked even when another field is
    wrong, so a client learns everything it must fix in one round trip.
    """
    try:
        body, errors = validate(document, NEW_CREDENTIALS), []
    except UnprocessableContent as error:
        body, errors = None, error.errors
    password = document.get("password") if isinstance(document, dict) else None
    if isinstance(password, str) and not any(problem["field"] == "password" for problem in errors):
        problems = passwords.password_problems(password)
        errors = errors + [{"field": "password", "message": message} for message in problems]
    if errors:
        raise UnprocessableContent(errors)
    return body


def _check_login(request):
    """The user whose email and password the body holds; 401 if they are wrong.

    Each check spends a try from the account's budget of failed logins first (ratelimit.py:
    5 in 15 minutes, whatever address they come from), and gives it back when the password
    is right. Once the budget is spent the answer is a 429, before any hash is computed.
    """
    body = validate(request.json(), CREDENTIALS)
    services = request.services
    with services.rate_limiter.login_try(body["email"]) as attempt:
        user = accounts.check_password(services.database, body["email"], body["password"],
                                       iterations=services.settings.pbkdf2_iterations)
        attempt.failed = user is None
    if user is None:
        raise unauthorized(BAD_LOGIN)
    return user
