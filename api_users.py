"""Handlers for accounts: your own profile, and the admin's list of users and their roles.

    $ curl localhost:8000/v1/users/me -H "Authorization: Bearer $TOKEN"
    {"id": 1, "email": "ada@example.com", "role": "user", "created_at": "...", "updated_at": "..."}
"""

import accounts
import auth
import pagination
import passwords
import sql_users
from schemas import describe, page_of
from validation import Field, query_names, validate
from web import Conflict, Forbidden, NotFound, Response, UnprocessableContent

PROFILE_CHANGES = [
    Field("email", "email", required=False),
    Field("password", "string", required=False, max_length=passwords.MAX_PASSWORD_CHARS,
          example="a kettle sings at dawn", checked_elsewhere={"minLength": passwords.MIN_PASSWORD_CHARS},
          description=f"the new one: at least {passwords.MIN_PASSWORD_CHARS} characters, not a common password"),
    Field("current_password", "string", required=False, max_length=passwords.MAX_PASSWORD_CHARS,
          description="required to change email or password"),
]
# What _profile_change_problems checks, for the document: email or password, and the current one.
PROFILE_CHANGE_RULES = {"required": ["current_password"],
                        "anyOf": [{"required": ["email"]}, {"required": ["password"]}]}
ROLE_CHANGE = [Field("role", "string", choices=auth.ROLES)]
LIST_QUERY = pagination.page_parameters(sql_users.SORTABLE_COLUMNS, "id")
LIST_PARAMETERS = query_names(LIST_QUERY)


@describe(response="User")
def get_me(request):
    """GET /v1/users/me: the caller's own account (never the password hash)."""
    with request.services.database.connection() as connection:
        user = sql_users.get_user(connection, request.user["id"])
    if user is None:  # the account was deleted while this request ran
        raise NotFound("this account no longer exists")
    return user


@describe(response="User", body=PROFILE_CHANGES, partial=True, errors=(409,), body_rules=PROFILE_CHANGE_RULES)
def update_me(request):
    """PATCH /v1/users/me: change email or password; either needs the current password.

    Every problem of the body is named in one 422 before the current password is checked
    (403). A new password ends every access token of the account (the caller's too: log in
    again with it), every refresh token and every other session.
    """
    changes = validate(request.json(), PROFILE_CHANGES, partial=True)
    problems = _profile_change_problems(changes)
    if problems:
        raise UnprocessableContent(problems)
    services = request.services
    user_id = request.user["id"]
    try:
        accounts.verify_current_password(services.database, user_id, changes["current_password"])
        accounts.change_profile(
            services.database, services.user_states, user_id,
            email=changes.get("email"), new_password=changes.get("password"),
            iterations=services.settings.pbkdf2_iterations, keep_session_id=request.user.get("session_id"),
            session_cache=services.session_cache,
        )
    except accounts.InvalidCredentials:
        raise Forbidden("the current password is wrong") from None
    except accounts.EmailTaken:
        raise Conflict("an account with this email exists") from None
    return get_me(request)


@describe(response=page_of("User"), query=LIST_QUERY, response_headers=("Link",))
def list_users(request):
    """GET /v1/users (admin): every account, paginated like the catalogue."""
    query = request.query
    pagination.reject_unknown_parameters(query, LIST_PARAMETERS)
    keys = request.services.settings.secret_keys
    page = pagination.parse_page(query, sortable=sql_users.SORTABLE_COLUMNS, default_sort="id", filters={}, keys=keys)
    with request.services.database.connection() as connection:
        rows = sql_users.list_users(
            connection, sort=page.sort, limit=page.limit + 1, offset=page.offset, after=page.after
        )
    body, link_header = pagination.envelope(rows, page, path=request.path, query_params={}, keys=keys)
    return Response.json(body, headers=[("Link", link_header)] if link_header else None)


@describe(response="User", body=ROLE_CHANGE, errors=(404, 409))
def update_user(request):
    """PATCH /v1/users/{id} (admin): change a role. 409 if it would leave no admin.
    The user's next request, with any credential, has the new role."""
    changes = validate(request.json(), ROLE_CHANGE)
    user_id = request.path_params["id"]
    services = request.services
    try:
        user = accounts.set_role(services.database, services.user_states, user_id, changes["role"],
                                 session_cache=services.session_cache)
    except accounts.LastAdmin:
        raise Conflict("the shop needs at least one admin") from None
    if user is None:
        raise NotFound(f"user {user_id} does not exist")
    return user


def _profile_change_problems(changes):
    """Every field error of a profile change (already shaped by PROFILE_CHANGES), at once."""
    if "email" not in changes and "password" not in changes:
        return [{"field": "", "message": "send email or password to change"}]
    problems = []
    if "current_password" not in changes:
        problems.append({"field": "current_password", "message": "is required to change email or password"})
    if "password" in changes:
        for message in passwords.password_problems(changes["password"]):
            problems.append({"field": "password", "message": message})
    return problems
