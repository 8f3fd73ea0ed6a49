"""Accounts: the business rules of who someone is and what they may hold.

Registration, password login, access and refresh tokens, browser sessions, API keys and
roles. Each function runs its queries in one transaction and returns plain values or raises
one of the errors below; the handlers in api_auth.py and api_users.py turn those into HTTP.

The life of a login, as the tables see it:

    POST /v1/auth/login      users: verify the password      -> access JWT (15 min, not stored)
                             refresh_tokens: insert hash #1   -> refresh token #1 (30 days)
    POST /v1/auth/refresh    refresh_tokens: #1 used, #2 in the same family
    (#1 sent again)          refresh_tokens: the family revoked: a stolen token is useless now
"""

import hmac
import secrets
import time
from datetime import UTC, datetime

import auth
import db
import sql_credentials
import sql_users

REFRESH_TOKEN_TTL_SECONDS = 30 * 24 * 3600
SESSION_TTL_SECONDS = 7 * 24 * 3600
# last_used_at of an API key is written at most this often: a busy key must not turn every
# read into a write.
API_KEY_TOUCH_SECONDS = 60


class EmailTaken(Exception):
    """Another account has this email."""


class InvalidCredentials(Exception):
    """A password, token or key that does not (or no longer) grant access."""


class LastAdmin(Exception):
    """The change would leave the shop without an admin."""


# -- passwords ---------------------------------------------------------------------------

def register(database, email, password, *, iterations, role="user"):
    """Create an account; return the user. Raises EmailTaken.

    The password hash is computed before the transaction opens: 600,000 PBKDF2 rounds take
    a tenth of a second, and no lock should be held meanwhile.
    """
    password_hash = auth.hash_password(password, iterations)
    try:
        with database.transaction() as connection:
            return sql_users.insert_user(connection, email, password_hash, role, db.utc_now())
    except db.IntegrityError:
        raise EmailTaken(email) from None


def check_password(database, email, password, *, iterations):
    """The user {id, role} whose email and password these are, or None.

    An unknown email costs one PBKDF2 run, as a wrong password does, so the time of the
    answer does not tell which emails have accounts. A hash made with fewer iterations
    than the setting is replaced now, while the password is at hand.
    """
    with database.connection() as connection:
        login = sql_users.get_login(connection, email)
    if login is None:
        auth.burn_password_check(password, iterations)
        return None
    if not auth.verify_password(password, login["password_hash"]):
        return None
    if auth.password_needs_rehash(login["password_hash"], iterations):
        new_hash = auth.hash_password(password, iterations)
        with database.transaction() as connection:
            sql_users.set_password_hash(connection, login["id"], new_hash, db.utc_now())
    return {"id": login["id"], "role": login["role"]}


def change_password(database, user_id, new_password, *, iterations, keep_session_id=None):
    """Set a new password; revoke every refresh token and every other session, so a thief
    holding one loses it. The caller has checked the current password (verify_current_password):
    checking it again here would cost a second PBKDF2 run for nothing."""
    new_hash = auth.hash_password(new_password, iterations)
    now = db.utc_now()
    keep = auth.hash_token(keep_session_id) if keep_session_id else None
    with database.transaction() as connection:
        sql_users.set_password_hash(connection, user_id, new_hash, now)
        sql_credentials.revoke_user_refresh_tokens(connection, user_id, now)
        sql_credentials.revoke_user_sessions(connection, user_id, now, keep_session_hash=keep)


def verify_current_password(database, user_id, password):
    with database.connection() as connection:
        password_hash = sql_users.get_password_hash(connection, user_id)
    if password_hash is None or not auth.verify_password(password, password_hash):
        raise InvalidCredentials("the current password is wrong")


def change_email(database, user_id, email):
    try:
        with database.transaction() as connection:
            return sql_users.set_email(connection, user_id, email, db.utc_now())
    except db.IntegrityError:
        raise EmailTaken(email) from None


def set_role(database, user_id, role):
    """Change a user's role; None when there is no such user. Raises LastAdmin.

    The count and the change happen in one write transaction, so two admins demoting each
    other at the same moment cannot both succeed.
    """
    with database.transaction() as connection:
        user = sql_users.get_user(connection, user_id)
        if user is None:
            return None
        if user["role"] == "admin" and role != "admin" and sql_users.count_admins(connection) <= 1:
            raise LastAdmin()
        return sql_users.set_role(connection, user_id, role, db.utc_now())


# -- access and refresh tokens -----------------------------------------------------------

def issue_tokens(database, keys, user, *, family_id=None, connection=None):
    """A new access token and refresh token for `user` {id, role}: the body of a login."""
    refresh_token = auth.new_refresh_token()
    now = time.time()
    row = {
        "user_id": user["id"],
        "token_hash": auth.hash_token(refresh_token),
        "family_id": family_id or secrets.token_hex(16),
        "now": _rfc3339(now),
        "expires_at": _rfc3339(now + REFRESH_TOKEN_TTL_SECONDS),
    }
    if connection is None:
        with database.transaction() as connection:
            sql_credentials.insert_refresh_token(connection, **row)
    else:
        sql_credentials.insert_refresh_token(connection, **row)
    return {
        "access_token": auth.issue_access_token(user["id"], user["role"], keys, now=now),
        "token_type": "bearer",
        "expires_in": auth.ACCESS_TOKEN_TTL_SECONDS,
        "refresh_token": refresh_token,
    }


def refresh_tokens(database, keys, refresh_token):
    """Trade a refresh token for a new pair (rotation). Raises InvalidCredentials.

    A token that was already used means two parties hold it, the user and a thief, and we
    cannot tell which is which: the whole family is revoked, and both must log in again.
    """
    now = db.utc_now()
    replayed = False
    with database.transaction() as connection:
        token = sql_credentials.get_refresh_token(connection, auth.hash_token(refresh_token))
        if token is None or token["revoked_at"] is not None or token["expires_at"] <= now:
            raise InvalidCredentials("the refresh token is not valid")
        if sql_credentials.mark_refresh_token_used(connection, token["id"], now):
            user = {"id": token["user_id"], "role": token["role"]}
            return issue_tokens(database, keys, user, family_id=token["family_id"], connection=connection)
        sql_credentials.revoke_refresh_family(connection, token["family_id"], now)
        replayed = True
    # Raised after the transaction commits, so the revocation is kept.
    if replayed:
        raise InvalidCredentials("the refresh token was already used; log in again")


def revoke_refresh_token(database, refresh_token):
    """Log out: revoke the token's whole family. Unknown tokens are ignored (nothing to do)."""
    now = db.utc_now()
    with database.transaction() as connection:
        token = sql_credentials.get_refresh_token(connection, auth.hash_token(refresh_token))
        if token is not None:
            sql_credentials.revoke_refresh_family(connection, token["family_id"], now)


def token_user(keys, token):
    """The user {id, role} an access token speaks for. Raises auth.TokenError."""
    claims = auth.decode_token(token, keys)
    return {"id": int(claims["sub"]), "role": claims["role"]}


# -- browser sessions --------------------------------------------------------------------

def start_session(database, user):
    """A new session for `user`; returns the session id for the cookie (a new value each login)."""
    session_id = auth.new_session_id()
    now = time.time()
    with database.transaction() as connection:
        sql_credentials.insert_session(
            connection, user_id=user["id"], session_hash=auth.hash_token(session_id),
            now=_rfc3339(now), expires_at=_rfc3339(now + SESSION_TTL_SECONDS),
        )
    return session_id


def session_user(database, session_id):
    """The user {id, role} of a live session, or None."""
    with database.connection() as connection:
        return sql_credentials.get_session_user(connection, auth.hash_token(session_id), db.utc_now())


def end_session(database, session_id):
    with database.transaction() as connection:
        sql_credentials.revoke_session(connection, auth.hash_token(session_id), db.utc_now())


# -- API keys ----------------------------------------------------------------------------

def create_api_key(database, user_id, name):
    """A new key for the user: (its row, the full key). The key is shown this once.

    Raises InvalidCredentials when the account no longer exists: an access token outlives
    its account by up to 15 minutes, and the foreign key refuses a key for nobody.
    """
    key, prefix = auth.new_api_key()
    try:
        with database.transaction() as connection:
            row = sql_credentials.insert_api_key(
                connection, user_id=user_id, name=name, prefix=prefix,
                key_hash=auth.hash_token(key), now=db.utc_now(),
            )
    except db.IntegrityError:
        with database.connection() as connection:
            if sql_users.get_user(connection, user_id) is not None:
                raise  # the account exists: the random prefix was taken, once in 2**40 keys
        raise InvalidCredentials("this account no longer exists") from None
    return row, key


def list_api_keys(database, user_id, *, sort, limit, offset=None, after=None):
    """A page of the user's live keys (see sql_credentials.list_api_keys)."""
    with database.connection() as connection:
        return sql_credentials.list_api_keys(connection, user_id, sort=sort, limit=limit, offset=offset, after=after)


def revoke_api_key(database, user_id, key_id):
    """Revoke one of the user's keys. False when the user has no such live key."""
    with database.transaction() as connection:
        return sql_credentials.revoke_api_key(connection, user_id, key_id, db.utc_now())


def api_key_user(database, key):
    """The user {id, role} who owns a live API key, or None. Fails closed on any oddity."""
    prefix = auth.api_key_prefix(key)
    if prefix is None:
        return None
    with database.connection() as connection:
        owner = sql_credentials.get_api_key_owner(connection, prefix)
    if owner is None or owner["revoked_at"] is not None:
        return None
    if not hmac.compare_digest(auth.hash_token(key), owner["key_hash"]):
        return None
    last_used = owner["last_used_at"]
    if last_used is None or last_used < db.utc_now(-API_KEY_TOUCH_SECONDS):
        with database.transaction() as connection:
            sql_credentials.touch_api_key(connection, owner["id"], db.utc_now())
    return {"id": owner["user_id"], "role": owner["role"]}


def _rfc3339(unix_time):
    """A Unix time as the fixed-width text every timestamp is stored in (db.utc_text)."""
    return db.utc_text(datetime.fromtimestamp(unix_time, UTC))
