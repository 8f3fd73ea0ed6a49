"""SQL for the live order events (migrations/0009_order_events.sql): one function per query.

events.py decides what an event says and who may see it; these functions write and read
the rows. The one engine difference is how event ids are made to commit in order
(`lock_event_ids`): PostgreSQL needs a lock, SQLite has one writer already.
"""

# The PostgreSQL LISTEN/NOTIFY channel that wakes the streams of every process (events.py).
CHANNEL = "shop_order_events"
# A number that tells this advisory lock from the others (migrate.py uses 7_240_001).
EVENT_IDS_LOCK_ID = 7_240_009
EVENT_COLUMNS = "id, order_id, user_id, type, data, created_at"


def lock_event_ids(connection):
    """Make the event this transaction inserts next commit in id order; call it just before.

    PostgreSQL hands out identity values when a row is inserted, not when it commits. Two
    transactions A and B: A inserts event 41, B inserts event 42, B commits, a stream reads
    "events after 40" and sends 42, then A commits. The stream now waits for events after
    42: 41 is never sent. So every transaction that adds an event first takes this
    transaction-level advisory lock, and keeps it until COMMIT: the next one gets its id
    only after this one has committed, and ids become visible in the order they were made.
    The cost: transactions that add an event commit one at a time from here on, which is
    why the insert is the last statement of its transaction. (A NOTIFY serialises
    committing transactions on a lock of its own anyway, and these send one.)

    SQLite needs nothing: BEGIN IMMEDIATE lets one writer at a time in, so the ids of
    committed events always grow.
    """
    if connection.engine == "postgresql":
        connection.execute("SELECT pg_advisory_xact_lock(:lock_id)", {"lock_id": EVENT_IDS_LOCK_ID})


def insert_event(connection, order_id, user_id, event_type, data, now):
    """A new event; its id."""
    return connection.fetch_value(
        "INSERT INTO order_events (order_id, user_id, type, data, created_at)"
        " VALUES (:order_id, :user_id, :type, :data, :now) RETURNING id",
        {"order_id": order_id, "user_id": user_id, "type": event_type, "data": data, "now": now},
    )


def notify_streams(connection):
    """Wake the event streams of every process when this transaction commits (PostgreSQL
    delivers a NOTIFY at COMMIT, never after a ROLLBACK; see sql_jobs.notify_workers).
    SQLite has no such thing: events.py wakes this process's streams itself."""
    if connection.engine == "postgresql":
        connection.execute(f"NOTIFY {CHANNEL}")


def events_after(connection, after_id, limit, *, user_id=None, up_to=None):
    """Up to `limit` events with an id above `after_id` (and at most `up_to`, when given),
    in id order; only `user_id`'s when given. The primary key serves every event, the
    (user_id, id) index one user's."""
    conditions, params = ["id > :after_id"], {"after_id": after_id, "limit": limit}
    if up_to is not None:
        conditions.append("id <= :up_to")
        params["up_to"] = up_to
    if user_id is not None:
        conditions.append("user_id = :user_id")
        params["user_id"] = user_id
    return connection.fetch_all(
        f"SELECT {EVENT_COLUMNS} FROM order_events WHERE {' AND '.join(conditions)} ORDER BY id LIMIT :limit",
        params,
    )


def latest_event_id(connection):
    """The highest event id there is, or 0 when there is none (the primary key's last entry)."""
    return connection.fetch_value("SELECT coalesce(max(id), 0) AS latest FROM order_events")


def delete_events_before(connection, cutoff, limit):
    """Delete up to `limit` events created before `cutoff`, oldest first; how many."""
    cursor = connection.execute(
        "DELETE FROM order_events WHERE id IN"
        " (SELECT id FROM order_events WHERE created_at < :cutoff ORDER BY created_at LIMIT :limit)",
        {"cutoff": cutoff, "limit": limit},
    )
    return cursor.rowcount
