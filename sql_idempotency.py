"""SQL for the idempotency_keys table (migrations/0003_orders.sql).

The rules of taking, finishing and releasing a key are in idempotency.py; these functions
only run the statements, each inside the caller's transaction.
"""

KEY_COLUMNS = (
    "user_id, idempotency_key, request_hash, locked_at, response_status,"
    " response_headers, response_body, created_at, expires_at"
)


def insert_key(connection, user_id, key, request_hash, now, expires_at):
    """Take a key nobody holds; True if this call inserted it, False if the row exists.

    `ON CONFLICT DO NOTHING` is spelled the same on both engines (SQLite 3.24+): a second
    request with the key inserts nothing instead of failing, and then reads the row.
    """
    cursor = connection.execute(
        "INSERT INTO idempotency_keys"
        " (user_id, idempotency_key, request_hash, locked_at, created_at, expires_at)"
        " VALUES (:user_id, :key, :request_hash, :now, :now, :expires_at)"
        " ON CONFLICT (user_id, idempotency_key) DO NOTHING",
        {"user_id": user_id, "key": key, "request_hash": request_hash, "now": now, "expires_at": expires_at},
    )
    return cursor.rowcount == 1


def get_key(connection, user_id, key):
    """The key's row, locked until COMMIT on PostgreSQL (see db.Connection.for_update), or None."""
    return connection.fetch_one(
        f"SELECT {KEY_COLUMNS} FROM idempotency_keys"
        f" WHERE user_id = :user_id AND idempotency_key = :key{connection.for_update}",
        {"user_id": user_id, "key": key},
    )


def retake_key(connection, user_id, key, request_hash, now, expires_at):
    """Start the key afresh (it expired, or its request died): a new request, no response."""
    connection.execute(
        "UPDATE idempotency_keys SET request_hash = :request_hash, locked_at = :now,"
        " response_status = NULL, response_headers = NULL, response_body = NULL,"
        " created_at = :now, expires_at = :expires_at"
        " WHERE user_id = :user_id AND idempotency_key = :key",
        {"user_id": user_id, "key": key, "request_hash": request_hash, "now": now, "expires_at": expires_at},
    )


def save_response(connection, user_id, key, locked_at, status, headers_json, body_text):
    """Record the response of the request that holds the key; False if it no longer holds it.

    `locked_at` identifies the holder: if the key was taken over meanwhile (this request
    ran past the lease), the row has another locked_at and nothing is written.
    """
    cursor = connection.execute(
        "UPDATE idempotency_keys SET response_status = :status, response_headers = :headers,"
        " response_body = :body"
        " WHERE user_id = :user_id AND idempotency_key = :key AND locked_at = :locked_at"
        " AND response_status IS NULL",
        {"user_id": user_id, "key": key, "locked_at": locked_at, "status": status,
         "headers": headers_json, "body": body_text},
    )
    return cursor.rowcount == 1


def delete_key(connection, user_id, key, locked_at):
    """Give a key back (its request failed in a way worth retrying), if still held by it."""
    connection.execute(
        "DELETE FROM idempotency_keys"
        " WHERE user_id = :user_id AND idempotency_key = :key AND locked_at = :locked_at"
        " AND response_status IS NULL",
        {"user_id": user_id, "key": key, "locked_at": locked_at},
    )


def delete_expired(connection, now):
    """Remove every expired key (served by idempotency_keys_expires_at); returns how many."""
    cursor = connection.execute("DELETE FROM idempotency_keys WHERE expires_at < :now", {"now": now})
    return cursor.rowcount
