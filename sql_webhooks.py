"""SQL for webhooks (migrations/0008_webhooks.sql): subscriptions and their delivery log.

The rules (which URL may be subscribed, which events reach whom, what counts as delivered)
are in webhooks.py; these functions run one statement each, inside the caller's connection.
Only `get_signing_secret` reads a subscription's secret: every other query leaves it out,
so a list or a log can never show it by mistake.
"""

from sql_paging import page_sql

# What the admin API shows of a subscription: never the secret.
WEBHOOK_COLUMNS = "id, url, event_types, created_at"
DELIVERY_COLUMNS = ("id, webhook_id, message_id, event_type, attempt, status_code, duration_ms, error,"
                    " started_at, finished_at")
SORTABLE_COLUMNS = frozenset({"id"})


def insert_webhook(connection, url, event_types, secret, now):
    """A new subscription; the row (without its secret)."""
    return connection.fetch_one(
        "INSERT INTO webhooks (url, event_types, secret, created_at) VALUES (:url, :event_types, :secret, :now)"
        f" RETURNING {WEBHOOK_COLUMNS}",
        {"url": url, "event_types": event_types, "secret": secret, "now": now},
    )


def count_live_webhooks(connection):
    """How many subscriptions are not deleted (the partial index webhooks_live_id holds them)."""
    return connection.fetch_value("SELECT count(*) FROM webhooks WHERE deleted_at IS NULL")


def live_webhooks(connection):
    """Every subscription that is not deleted, by id (at most webhooks.MAX_WEBHOOKS rows)."""
    return connection.fetch_all(
        f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE deleted_at IS NULL ORDER BY id"
    )


def get_live_webhook(connection, webhook_id):
    """One subscription that is not deleted, or None."""
    return connection.fetch_one(
        f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = :webhook_id AND deleted_at IS NULL",
        {"webhook_id": webhook_id},
    )


def get_signing_secret(connection, webhook_id):
    """{url, secret} of a live subscription, for the delivery that signs with it; or None
    when it was deleted (the job then has nothing to do)."""
    return connection.fetch_one(
        "SELECT url, secret FROM webhooks WHERE id = :webhook_id AND deleted_at IS NULL",
        {"webhook_id": webhook_id},
    )


def list_webhooks(connection, *, sort, limit, offset=None, after=None):
    """A page of live subscriptions in `sort` order (by id), from webhooks_live_id."""
    sql, params = page_sql(f"SELECT {WEBHOOK_COLUMNS} FROM webhooks", ["deleted_at IS NULL"], {},
                           sort=sort, limit=limit, offset=offset, after=after)
    return connection.fetch_all(sql, params)


def delete_webhook(connection, webhook_id, now):
    """Mark a live subscription deleted and erase its secret; False when there was none."""
    cursor = connection.execute(
        "UPDATE webhooks SET deleted_at = :now, secret = NULL WHERE id = :webhook_id AND deleted_at IS NULL",
        {"webhook_id": webhook_id, "now": now},
    )
    return cursor.rowcount == 1


def insert_delivery(connection, delivery):
    """Record one attempt; `delivery` holds every column of DELIVERY_COLUMNS but the id."""
    connection.execute(
        "INSERT INTO webhook_deliveries (webhook_id, message_id, event_type, attempt, status_code, duration_ms,"
        " error, started_at, finished_at) VALUES (:webhook_id, :message_id, :event_type, :attempt, :status_code,"
        " :duration_ms, :error, :started_at, :finished_at)",
        delivery,
    )


def list_deliveries(connection, webhook_id, *, sort, limit, offset=None, after=None):
    """A page of one subscription's attempts in `sort` order (by id), from
    webhook_deliveries_webhook_id_id."""
    sql, params = page_sql(f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries", ["webhook_id = :webhook_id"],
                           {"webhook_id": webhook_id}, sort=sort, limit=limit, offset=offset, after=after)
    return connection.fetch_all(sql, params)


def delete_old_deliveries(connection, finished_before, limit):
    """Delete up to `limit` attempts that finished before `finished_before`, oldest first; how many."""
    cursor = connection.execute(
        "DELETE FROM webhook_deliveries WHERE id IN ("
        " SELECT id FROM webhook_deliveries WHERE finished_at < :finished_before ORDER BY finished_at LIMIT :limit)",
        {"finished_before": finished_before, "limit": limit},
    )
    return cursor.rowcount
