"""SQL for the secrets users hold: refresh tokens, browser sessions and API keys.

Every lookup is by the SHA-256 of the secret (or an API key's public prefix) through a
UNIQUE index; the secrets themselves are never stored. Revocation sets `revoked_at` rather
than deleting, so a replayed token can be told apart from one that never existed.
"""

from sql_paging import page_sql

# -- refresh tokens ----------------------------------------------------------------------

def insert_refresh_token(connection, *, user_id, token_hash, family_id, family_started_at, now, expires_at):
    connection.execute(
        "INSERT INTO refresh_tokens (user_id, token_hash, family_id, family_started_at, created_at, expires_at)"
        " VALUES (:user_id, :token_hash, :family_id, :family_started_at, :now, :expires_at)",
        {"user_id": user_id, "token_hash": token_hash, "family_id": family_id,
         "family_started_at": family_started_at, "now": now, "expires_at": expires_at},
    )


def get_refresh_token(connection, token_hash):
    """The token row with its user's current role, or None. Also finds a token's successor."""
    return connection.fetch_one(
        "SELECT refresh_tokens.id, refresh_tokens.user_id, refresh_tokens.family_id,"
        " refresh_tokens.family_started_at, refresh_tokens.expires_at, refresh_tokens.used_at,"
        " refresh_tokens.revoked_at, users.role"
        " FROM refresh_tokens JOIN users ON users.id = refresh_tokens.user_id"
        " WHERE refresh_tokens.token_hash = :token_hash",
        {"token_hash": token_hash},
    )


def mark_refresh_token_used(connection, token_id, now):
    """Mark a token used, if nobody did first. True for the one caller that wins.

    Two requests racing with the same token both read it unused; this conditional UPDATE
    lets exactly one of them through, and the other is a repeat (accounts.refresh_tokens).
    """
    cursor = connection.execute(
        "UPDATE refresh_tokens SET used_at = :now"
        " WHERE id = :token_id AND used_at IS NULL AND revoked_at IS NULL",
        {"token_id": token_id, "now": now},
    )
    return cursor.rowcount == 1


def revoke_refresh_family(connection, family_id, now):
    connection.execute(
        "UPDATE refresh_tokens SET revoked_at = :now WHERE family_id = :family_id AND revoked_at IS NULL",
        {"family_id": family_id, "now": now},
    )


def revoke_user_refresh_tokens(connection, user_id, now):
    connection.execute(
        "UPDATE refresh_tokens SET revoked_at = :now WHERE user_id = :user_id AND revoked_at IS NULL",
        {"user_id": user_id, "now": now},
    )


# -- sessions ------------------------------------------------------------------------------

def insert_session(connection, *, user_id, session_hash, now, expires_at):
    connection.execute(
        "INSERT INTO sessions (user_id, session_hash, created_at, last_used_at, expires_at)"
        " VALUES (:user_id, :session_hash, :now, :now, :expires_at)",
        {"user_id": user_id, "session_hash": session_hash, "now": now, "expires_at": expires_at},
    )


def get_session_user(connection, session_hash, now, idle_since):
    """The user (id, role) of a live session, with the session's id, last use and expiry; or
    None for an unknown or revoked one, one past its absolute expiry, or one unused since
    `idle_since`."""
    return connection.fetch_one(
        "SELECT users.id, users.role, sessions.id AS session_row_id, sessions.last_used_at, sessions.expires_at"
        " FROM sessions JOIN users ON users.id = sessions.user_id"
        " WHERE sessions.session_hash = :session_hash AND sessions.revoked_at IS NULL"
        " AND sessions.expires_at > :now AND sessions.last_used_at > :idle_since",
        {"session_hash": session_hash, "now": now, "idle_since": idle_since},
    )


def touch_session(connection, session_row_id, now):
    connection.execute(
        "UPDATE sessions SET last_used_at = :now WHERE id = :session_row_id",
        {"session_row_id": session_row_id, "now": now},
    )


def revoke_session(connection, session_hash, now):
    connection.execute(
        "UPDATE sessions SET revoked_at = :now WHERE session_hash = :session_hash AND revoked_at IS NULL",
        {"session_hash": session_hash, "now": now},
    )


def revoke_user_sessions(connection, user_id, now, *, keep_session_hash=None):
    """Revoke a user's sessions, except the one making the request (if any)."""
    connection.execute(
        "UPDATE sessions SET revoked_at = :now"
        " WHERE user_id = :user_id AND revoked_at IS NULL AND session_hash <> :keep",
        {"user_id": user_id, "now": now, "keep": keep_session_hash or ""},
    )


# -- API keys ----------------------------------------------------------------------------

API_KEY_COLUMNS = "id, name, prefix, created_at, last_used_at"
API_KEY_SORTABLE_COLUMNS = frozenset({"id", "created_at"})


def insert_api_key(connection, *, user_id, name, prefix, key_hash, now):
    return connection.fetch_one(
        "INSERT INTO api_keys (user_id, name, prefix, key_hash, created_at)"
        " VALUES (:user_id, :name, :prefix, :key_hash, :now)"
        f" RETURNING {API_KEY_COLUMNS}",
        {"user_id": user_id, "name": name, "prefix": prefix, "key_hash": key_hash, "now": now},
    )


def list_api_keys(connection, user_id, *, sort, limit, offset=None, after=None):
    """Up to `limit` of a user's live keys in `sort` order (pagination.parse_sort over
    API_KEY_SORTABLE_COLUMNS); never the hashes.

    Served by the index on (user_id, id), or on (user_id, created_at, id) when sorted by
    creation: the rows of one user, already in order, a cursor starting the scan.
    """
    sql, params = page_sql(
        f"SELECT {API_KEY_COLUMNS} FROM api_keys", ["user_id = :user_id", "revoked_at IS NULL"],
        {"user_id": user_id}, sort=sort, limit=limit, offset=offset, after=after,
    )
    return connection.fetch_all(sql, params)


def revoke_api_key(connection, user_id, key_id, now):
    """Revoke one of the user's own keys. False when there is no such live key of theirs."""
    cursor = connection.execute(
        "UPDATE api_keys SET revoked_at = :now"
        " WHERE id = :key_id AND user_id = :user_id AND revoked_at IS NULL",
        {"key_id": key_id, "user_id": user_id, "now": now},
    )
    return cursor.rowcount == 1


def get_api_key_owner(connection, prefix):
    """The key's hash, state and its user's id and role, by the key's public prefix; or None."""
    return connection.fetch_one(
        "SELECT api_keys.id, api_keys.key_hash, api_keys.revoked_at, api_keys.last_used_at,"
        " users.id AS user_id, users.role"
        " FROM api_keys JOIN users ON users.id = api_keys.user_id WHERE api_keys.prefix = :prefix",
        {"prefix": prefix},
    )


def touch_api_key(connection, key_id, now):
    connection.execute(
        "UPDATE api_keys SET last_used_at = :now WHERE id = :key_id", {"key_id": key_id, "now": now}
    )
