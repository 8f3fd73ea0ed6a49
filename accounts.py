"""Accounts: the business rules of who someone is and what they may hold.

Registration, password login, access and refresh tokens, browser sessions, API keys and
roles. Each function runs its queries in one transaction and returns plain values or raises
one of the errors below; the handlers in api_auth.py and api_users.py turn those into HTTP.

The life of a login, as the tables see it:

    POST /v1/auth/login      users: verify the password      -> access JWT (15 min, not stored)
                             refresh_tokens: insert hash #1   -> refresh token #1 (30 days)
    POST /v1/auth/refresh    refresh_tokens: #1 used, #2 in the same family
    (#1 again, within 10 s)  refresh_tokens: #2 still unused  -> #2 again (another tab)
    (#1 again, later)        refresh_tokens: the family revoked: a stolen token is useless now
    (after 90 days)          no token of the family is valid: log in again

A browser session ends 7 days after login, or after 30 minutes unused (config.py's settings).
With Redis, its lookup is cached (session_user), and every change that ends a session or its
role invalidates that cache after the COMMIT: every process refuses it at once.

An access token is not stored, yet some events must end it at once. Each user has a token
epoch, which every access token carries (the "ep" claim); a password change and a logout
everywhere add one to it, and every request checks the token's epoch against the user's:

    users: id 7, role admin, token_epoch 3      token {"sub": "7", "role": "user", "ep": 3}
    PATCH /v1/users/7 {"role": "user"}          the next request is a user's: the role is read
                                                from the row, never from the token
    POST /v1/auth/logout-all (or new password)  token_epoch 4: the token above is a 401 now
"""

import hmac
import secrets
import threading
import time
from datetime import UTC, datetime

import auth
import db
import passwords
import signing
import sql_credentials
import sql_users

REFRESH_TOKEN_TTL_SECONDS = 30 * 24 * 3600  # each refresh, within the family's lifetime
SUCCESSOR_PURPOSE = "refresh-successor"  # the MAC purpose that derives a token's successor (signing.mac)
# last_used_at of an API key or a session is written at most this often: a busy key or
# browser must not turn every read into a write.
API_KEY_TOUCH_SECONDS = 60
SESSION_TOUCH_SECONDS = 60
# How long a process trusts its memory of a user's role and token epoch (UserStates). With
# several processes (gunicorn), a change made through one is seen by the others this much
# later at most; through the process that makes it, on the very next request.
USER_STATE_TTL_SECONDS = 1.0
USER_STATE_CACHE_SIZE = 10_000  # users remembered at most (a few MB); then the memory starts afresh


class EmailTaken(Exception):
    """Another account has this email."""


class InvalidCredentials(Exception):
    """A password, token or key that does not (or no longer) grant access."""


class LastAdmin(Exception):
    """The change would leave the shop without an admin."""


# -- passwords ---------------------------------------------------------------------------

def register(database, email, password, *, iterations, role="user"):
    """Create an account; return the user. Raises EmailTaken, or passwords.HashingBusy.

    The password hash is computed before the transaction opens: 600,000 PBKDF2 rounds take
    a tenth of a second, and no lock should be held meanwhile.
    """
    password_hash = passwords.hash_password(password, iterations)
    try:
        with database.transaction() as connection:
            return sql_users.insert_user(connection, email, password_hash, role, db.utc_now())
    except db.IntegrityError:
        raise EmailTaken(email) from None


def check_password(database, email, password, *, iterations):
    """The user {id, role} whose email and password these are, or None.

    An unknown email costs one PBKDF2 run, as a wrong password does, so the time of the
    answer does not tell which emails have accounts. A hash made with fewer iterations
    than the setting is replaced now, while the password is at hand. Raises
    passwords.HashingBusy when the hashing gate is full: nothing was checked.
    """
    with database.connection() as connection:
        login = sql_users.get_login(connection, email)
    if login is None:
        passwords.burn_password_check(password, iterations)
        return None
    if not passwords.verify_password(password, login["password_hash"]):
        return None
    if passwords.password_needs_rehash(login["password_hash"], iterations):
        _upgrade_password_hash(database, login["id"], password, iterations)
    return {"id": login["id"], "role": login["role"]}


def verify_current_password(database, user_id, password):
    """Raise InvalidCredentials unless `password` is the user's current one."""
    with database.connection() as connection:
        password_hash = sql_users.get_password_hash(connection, user_id)
    if password_hash is None or not passwords.verify_password(password, password_hash):
        raise InvalidCredentials("the current password is wrong")


def change_profile(database, user_states, user_id, *, email=None, new_password=None, iterations,
                   keep_session_id=None, session_cache=None):
    """Change the email, the password or both, in one transaction. Raises EmailTaken.

    A new password ends every access token (the caller's too), every refresh token and
    every other session but `keep_session_id`, so a thief holding one loses it. The caller
    has checked the current password (verify_current_password): checking it again would
    cost a second PBKDF2 run. The new hash is made before anything is written, so a taken
    email (EmailTaken) and a full hashing gate (passwords.HashingBusy) both change nothing.
    """
    new_hash = None if new_password is None else passwords.hash_password(new_password, iterations)
    now = db.utc_now()
    try:
        with database.transaction() as connection:
            if email is not None:
                sql_users.set_email(connection, user_id, email, now)
            if new_hash is not None:
                _replace_password_hash(connection, user_id, new_hash, keep_session_id, now)
    except db.IntegrityError:
        raise EmailTaken(email) from None
    if new_hash is not None:
        user_states.forget(user_id)  # its token epoch has moved on
        _sessions_changed(session_cache)


def set_role(database, user_states, user_id, role, *, session_cache=None):
    """Change a user's role; None when there is no such user. Raises LastAdmin.

    The count and the change happen in one write transaction, so two admins demoting each
    other at the same moment cannot both succeed. The user's tokens, keys and sessions stay
    valid and carry the new role from the very next request: each request reads the role
    from the users row (token_user, api_key_user, session_user), so nobody must log in again.
    """
    with database.transaction() as connection:
        user = sql_users.get_user(connection, user_id)
        if user is None:
            return None
        if user["role"] == "admin" and role != "admin" and sql_users.count_admins(connection) <= 1:
            raise LastAdmin()
        changed = sql_users.set_role(connection, user_id, role, db.utc_now())
    user_states.forget(user_id)
    _sessions_changed(session_cache)  # a cached session holds the role it was read with
    return changed


# -- access and refresh tokens -----------------------------------------------------------

def issue_tokens(database, settings, user):
    """A new access token and refresh token for `user` {id, ...}: the body of a login.
    The refresh token starts a new family, which lives REFRESH_FAMILY_MAX_SECONDS at most."""
    refresh_token = auth.new_refresh_token()
    now = settings.clock()
    with database.transaction() as connection:
        _insert_refresh_token(connection, settings, user["id"], refresh_token,
                              family_id=secrets.token_hex(16), family_started_at=_rfc3339(now), now=now)
        return _token_pair(connection, settings, user["id"], refresh_token)


def refresh_tokens(database, settings, refresh_token):
    """Trade a refresh token for a new pair (rotation). Raises InvalidCredentials.

    The successor is not random: it is derived from the token presented,
    base64url(HMAC-SHA256(keys[0], "refresh-successor:" + token)), 256 bits nobody without the
    key can compute. Only its hash is stored, yet the server can make it again: the same
    token presented again within REFRESH_REUSE_SECONDS of its rotation (two tabs refreshing
    together, a retry after a lost answer) gets the same successor, provided that successor
    is still unused, so both callers end up holding the family's one live token.

    Any other reuse means two parties hold the token, the user and a thief, and we cannot
    tell which is which: the whole family is revoked, and both must log in again. So is a
    repeat after a key rotation, whose successor cannot be made again: a rare, safe refusal.
    """
    now = settings.clock()
    successor = _successor(refresh_token, settings.secret_keys[0])
    replayed = False
    with database.transaction() as connection:
        token = sql_credentials.get_refresh_token(connection, auth.hash_token(refresh_token))
        if token is None or token["revoked_at"] is not None or not _is_live(token, settings, now):
            raise InvalidCredentials("the refresh token is not valid")
        user_id = token["user_id"]
        # Of requests racing with one token, this conditional UPDATE lets exactly one rotate.
        # On PostgreSQL the others wait on its row lock until it commits, so they find its
        # successor below; on SQLite, BEGIN IMMEDIATE runs them one after the other anyway.
        if sql_credentials.mark_refresh_token_used(connection, token["id"], _rfc3339(now)):
            _insert_refresh_token(connection, settings, user_id, successor, family_id=token["family_id"],
                                  family_started_at=token["family_started_at"], now=now)
            return _token_pair(connection, settings, user_id, successor)
        if _is_repeat_within_interval(connection, token, successor, settings, now):
            return _token_pair(connection, settings, user_id, successor)
        sql_credentials.revoke_refresh_family(connection, token["family_id"], _rfc3339(now))
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


def log_out_everywhere(database, user_states, user_id, *, session_cache=None):
    """End every access token, refresh token and session of the user, on every device.
    API keys stay: they are not logins, and each is revoked on its own (revoke_api_key)."""
    now = db.utc_now()
    with database.transaction() as connection:
        sql_users.bump_token_epoch(connection, user_id)
        sql_credentials.revoke_user_refresh_tokens(connection, user_id, now)
        sql_credentials.revoke_user_sessions(connection, user_id, now)
    user_states.forget(user_id)
    _sessions_changed(session_cache)


def token_user(database, user_states, keys, token):
    """The user {id, role} an access token speaks for, with the role the users row has now.

    Raises auth.TokenError for a token that is not valid (signature, expiry, ...), and
    InvalidCredentials for a valid one whose account is gone or whose epoch has passed. The
    token's own `role` claim is never trusted: it was true when the token was made, and an
    admin demoted since must lose admin rights at once. A token made before epochs existed
    has no "ep" claim; it is from epoch 0, every account's first (migration 0006).
    """
    claims = auth.decode_token(token, keys)
    user_id = int(claims["sub"])
    state = user_states.get(database, user_id)
    if state is None:
        raise InvalidCredentials("this account no longer exists")
    if claims.get("ep", 0) < state["token_epoch"]:
        raise InvalidCredentials("the access token was revoked by a password change or a logout everywhere;"
                                 " log in again")
    return {"id": user_id, "role": state["role"]}


class UserStates:
    """Each user's role and token epoch, as this process read them less than
    USER_STATE_TTL_SECONDS ago: what token_user needs on every request, without a query.

    The process that changes a user forgets it right after the commit (forget), so its next
    request reads the row again. Other processes (gunicorn runs several) keep their memory
    until it is USER_STATE_TTL_SECONDS old: they see a demotion or a revoked token that much
    later at most. A cache shared through Redis would close that gap; until then it is the
    price of a token check that costs a dictionary lookup.
    """

    def __init__(self, ttl_seconds=USER_STATE_TTL_SECONDS):
        self.ttl_seconds = ttl_seconds
        self._states = {}  # user id -> (the row {role, token_epoch} or None, monotonic time read)
        self._forgets = 0  # how many forget() calls so far
        self._lock = threading.Lock()

    def get(self, database, user_id):
        """{role, token_epoch} of the user, or None when there is no such user."""
        remembered = self._states.get(user_id)
        now = time.monotonic()
        if remembered is not None and now - remembered[1] < self.ttl_seconds:
            return remembered[0]
        forgets_before = self._forgets
        with database.connection() as connection:
            state = sql_users.get_token_state(connection, user_id)
        with self._lock:
            # A change committed while we read may have been forgotten already: what we read
            # may be from before it, so it is used for this request and not remembered.
            if self._forgets == forgets_before:
                if len(self._states) >= USER_STATE_CACHE_SIZE:
                    self._states.clear()
                self._states[user_id] = (state, now)
        return state

    def forget(self, user_id):
        """Read the user afresh on the next request: call it after a change has committed."""
        with self._lock:
            self._states.pop(user_id, None)
            self._forgets += 1


# -- browser sessions --------------------------------------------------------------------

def start_session(database, settings, user):
    """A new session for `user`; returns the session id for the cookie (a new value each login)."""
    session_id = auth.new_session_id()
    now = settings.clock()
    with database.transaction() as connection:
        sql_credentials.insert_session(
            connection, user_id=user["id"], session_hash=auth.hash_token(session_id),
            now=_rfc3339(now), expires_at=_rfc3339(now + settings.session_ttl_seconds),
        )
    return session_id


def session_user(database, settings, session_id, session_cache=None):
    """The user {id, role} of a live session, or None: unknown, revoked, past its absolute
    expiry (SESSION_TTL_SECONDS after login), or idle (unused for SESSION_IDLE_SECONDS).

    Each use pushes the idle deadline back. Its time is written at most once a minute, as an
    API key's is, so a session idles out between one minute early and on time.

    With `session_cache` (cache.py, on Redis), cache-aside: the session as last read, keyed
    by its hash (never the id, a credential), answers alone while no write is due. It is saved
    under the generation looked up before the read: a revocation meanwhile leaves it unseen.
    """
    now = settings.clock()
    session_hash = auth.hash_token(session_id)
    generation = None
    if session_cache is not None:
        generation, cached = session_cache.lookup(session_hash)
        if _answers_alone(cached, now):
            return {"id": cached["id"], "role": cached["role"]}
    with database.connection() as connection:
        session = sql_credentials.get_session_user(connection, session_hash, _rfc3339(now),
                                                   _rfc3339(now - settings.session_idle_seconds))
    if session is None:
        return None
    if session["last_used_at"] < _rfc3339(now - SESSION_TOUCH_SECONDS):
        with database.transaction() as connection:
            sql_credentials.touch_session(connection, session["session_row_id"], _rfc3339(now))
        session["last_used_at"] = _rfc3339(now)
    if session_cache is not None:
        session_cache.save(session_hash, generation, session)
    return {"id": session["id"], "role": session["role"]}


def end_session(database, session_id, *, session_cache=None):
    with database.transaction() as connection:
        sql_credentials.revoke_session(connection, auth.hash_token(session_id), db.utc_now())
    _sessions_changed(session_cache)


# -- API keys ----------------------------------------------------------------------------

def create_api_key(database, user_id, name):
    """A new key for the user: (its row, the full key). The key is shown this once.

    Raises InvalidCredentials when the account no longer exists: it may be deleted while the
    request runs, or up to USER_STATE_TTL_SECONDS earlier through another process (UserStates),
    and the foreign key refuses a key for nobody.
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
    """The user {id, role, api_key_id} who owns a live API key, or None. Fails closed on any
    oddity. The key's own id lets each key have a rate limit of its own (ratelimit.py)."""
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
    return {"id": owner["user_id"], "role": owner["role"], "api_key_id": owner["id"]}


def _answers_alone(cached, now):
    """May a cached session answer alone? While its expiry is ahead and its last use was written
    under SESSION_TOUCH_SECONDS ago: no touch is due, nor is it idle (config.MIN_SESSION_SECONDS).
    (cache.decode_session has checked every field's type.)"""
    return (cached is not None and cached["expires_at"] > _rfc3339(now)
            and cached["last_used_at"] > _rfc3339(now - SESSION_TOUCH_SECONDS))


def _sessions_changed(session_cache):
    """After a COMMIT that ends sessions or changes their role: every cached session is read
    again (one generation for all: the cache cannot find a user's sessions; these are rare)."""
    if session_cache is not None:
        session_cache.invalidate()


def _upgrade_password_hash(database, user_id, password, iterations):
    """Store a hash of the password with today's iterations and salt length.

    Skipped when the hashing gate is full: the login has succeeded already, and a 503 now
    would refuse a right password for a chore that the next login can do as well.
    """
    try:
        new_hash = passwords.hash_password(password, iterations)
    except passwords.HashingBusy:
        return
    with database.transaction() as connection:
        sql_users.set_password_hash(connection, user_id, new_hash, db.utc_now())


def _replace_password_hash(connection, user_id, new_hash, keep_session_id, now):
    """A new password: every access token, refresh token and session ends, but the one kept."""
    keep = auth.hash_token(keep_session_id) if keep_session_id else None
    sql_users.set_password_hash(connection, user_id, new_hash, now)
    sql_users.bump_token_epoch(connection, user_id)
    sql_credentials.revoke_user_refresh_tokens(connection, user_id, now)
    sql_credentials.revoke_user_sessions(connection, user_id, now, keep_session_hash=keep)


def _token_pair(connection, settings, user_id, refresh_token):
    """The body of a login or refresh; the access token carries the role and epoch the users
    row has now, read in the transaction that stores the refresh token."""
    state = sql_users.get_token_state(connection, user_id)
    # The access token keeps the wall clock: auth.decode_token checks it against time.time().
    return {
        "access_token": auth.issue_access_token(user_id, state["role"], settings.secret_keys,
                                                epoch=state["token_epoch"]),
        "token_type": "bearer",
        "expires_in": auth.ACCESS_TOKEN_TTL_SECONDS,
        "refresh_token": refresh_token,
    }


def _insert_refresh_token(connection, settings, user_id, refresh_token, *, family_id, family_started_at, now):
    """Store a token's hash; it expires in 30 days, or when its family does if that is sooner."""
    family_ends = _unix_time(family_started_at) + settings.refresh_family_max_seconds
    sql_credentials.insert_refresh_token(
        connection, user_id=user_id, token_hash=auth.hash_token(refresh_token), family_id=family_id,
        family_started_at=family_started_at, now=_rfc3339(now),
        expires_at=_rfc3339(min(now + REFRESH_TOKEN_TTL_SECONDS, family_ends)),
    )


def _is_live(token, settings, now):
    # The family's age is checked here too, not only through expires_at, so that lowering
    # REFRESH_FAMILY_MAX_SECONDS applies at once to tokens made under the old value.
    return (token["expires_at"] > _rfc3339(now)
            and token["family_started_at"] > _rfc3339(now - settings.refresh_family_max_seconds))


def _is_repeat_within_interval(connection, token, successor, settings, now):
    """True if `token` was rotated less than REFRESH_REUSE_SECONDS ago into `successor`, and
    that successor is still the family's unused, unrevoked newest token."""
    # No interval: every repeat is a replay. Said outright, since the comparison below cannot:
    # `now` was read before this transaction waited for its lock, so the rotation made by a
    # racing request that got the lock first can be stamped later than `now`.
    if settings.refresh_reuse_seconds == 0:
        return False
    # None: another request rotated it between our read and our UPDATE, that is, just now.
    used_at = token["used_at"] or _rfc3339(now)
    if used_at <= _rfc3339(now - settings.refresh_reuse_seconds):
        return False
    # Not found when it was made under a key that has since been rotated out of first place.
    newest = sql_credentials.get_refresh_token(connection, auth.hash_token(successor))
    return (newest is not None and newest["family_id"] == token["family_id"]
            and newest["used_at"] is None and newest["revoked_at"] is None)


def _successor(refresh_token, key):
    """The token that replaces `refresh_token`: the same 43 base64url characters as a random one."""
    # A lone surrogate cannot be UTF-8; such a token was never issued and finds no row anyway.
    message = refresh_token.encode("utf-8", "surrogatepass")
    return signing.b64url_encode(signing.mac(key, SUCCESSOR_PURPOSE, message))


def _unix_time(rfc3339_text):
    return datetime.fromisoformat(rfc3339_text).timestamp()


def _rfc3339(unix_time):
    """A Unix time as the fixed-width text every timestamp is stored in (db.utc_text)."""
    return db.utc_text(datetime.fromtimestamp(unix_time, UTC))
