"""SQL for accounts: one function per query, plain values in, dict rows out.

`USER_COLUMNS` is what the API may show; the password hash is read only by the functions
that need it (login, a password change) and never leaves the services layer, and the token
epoch (migration 0006) only by the services that check and end access tokens.
"""

from sql_paging import page_sql

USER_COLUMNS = "id, email, role, created_at, updated_at"
SORTABLE_COLUMNS = frozenset({"id", "email", "created_at"})


def insert_user(connection, email, password_hash, role, now):
    """Create a user; a taken email raises db.IntegrityError (the UNIQUE constraint decides,
    so two registrations racing for one address cannot both succeed)."""
    return connection.fetch_one(
        "INSERT INTO users (email, password_hash, role, created_at, updated_at)"
        " VALUES (:email, :password_hash, :role, :now, :now)"
        f" RETURNING {USER_COLUMNS}",
        {"email": email, "password_hash": password_hash, "role": role, "now": now},
    )


def get_user(connection, user_id):
    """A user by id (without the password hash), or None."""
    return connection.fetch_one(f"SELECT {USER_COLUMNS} FROM users WHERE id = :user_id", {"user_id": user_id})


def get_login(connection, email):
    """The id, role and password hash for an email (served by the UNIQUE index), or None."""
    return connection.fetch_one(
        "SELECT id, role, password_hash FROM users WHERE email = :email", {"email": email}
    )


def get_token_state(connection, user_id):
    """What decides, on every request, what an access token may do: the user's role and
    token epoch (by the primary key), or None when there is no such user."""
    return connection.fetch_one(
        "SELECT role, token_epoch FROM users WHERE id = :user_id", {"user_id": user_id}
    )


def bump_token_epoch(connection, user_id):
    """End every access token made so far for the user: each carries an older epoch now.
    updated_at is left alone: it dates the profile, and the profile did not change."""
    connection.execute(
        "UPDATE users SET token_epoch = token_epoch + 1 WHERE id = :user_id", {"user_id": user_id}
    )


def get_password_hash(connection, user_id):
    return connection.fetch_value("SELECT password_hash FROM users WHERE id = :user_id", {"user_id": user_id})


def set_password_hash(connection, user_id, password_hash, now):
    connection.execute(
        "UPDATE users SET password_hash = :password_hash, updated_at = :now WHERE id = :user_id",
        {"user_id": user_id, "password_hash": password_hash, "now": now},
    )


def set_email(connection, user_id, email, now):
    """Change a user's email; a taken one raises db.IntegrityError. Returns the user."""
    return connection.fetch_one(
        f"UPDATE users SET email = :email, updated_at = :now WHERE id = :user_id RETURNING {USER_COLUMNS}",
        {"user_id": user_id, "email": email, "now": now},
    )


def set_role(connection, user_id, role, now):
    """Change a user's role; returns the user, or None when there is no such user."""
    return connection.fetch_one(
        f"UPDATE users SET role = :role, updated_at = :now WHERE id = :user_id RETURNING {USER_COLUMNS}",
        {"user_id": user_id, "role": role, "now": now},
    )


def count_admins(connection):
    """How many admins exist (the partial index users_admins holds exactly them).

    Inside a transaction, the count holds until it ends: no other transaction can demote an
    admin meanwhile. Two admins demoting each other at once must not both see "2 admins".
    """
    # The admin rows are locked (connection.for_update), in id order so that two transactions
    # queue instead of deadlocking; on PostgreSQL a row demoted meanwhile is re-read when its
    # lock is released and drops out of the count.
    return connection.fetch_value(
        "SELECT count(*) AS admins FROM (SELECT id FROM users WHERE role = 'admin' ORDER BY id"
        f"{connection.for_update}) AS admin_rows"
    )


def list_users(connection, *, sort, limit, offset=None, after=None):
    """Up to `limit` users in `sort` order (from pagination.parse_sort over SORTABLE_COLUMNS)."""
    sql, params = page_sql(
        f"SELECT {USER_COLUMNS} FROM users", [], {}, sort=sort, limit=limit, offset=offset, after=after
    )
    return connection.fetch_all(sql, params)
