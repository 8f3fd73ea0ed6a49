"""SQL for the sales reports: joins, GROUP BY and window functions, one text for both engines.

A sale is an order that was paid (status paid or shipped); pending orders may still be
cancelled, and cancelled ones returned their stock. Each report counts the lines of the
sales placed in [start, end), a range of RFC 3339 text. An index finds that range:
orders_status_created_at (status, created_at, id) once per status, or orders_created_at_id
with the status checked row by row; the planner picks by the data (tests/test_api_orders.py
accepts either), and the lines of each order come by order_items' primary key.

Two dialect points, handled in the SQL itself rather than in db.py:
- PostgreSQL's SUM of a BIGINT is a NUMERIC (it cannot overflow), which psycopg reads as a
  Python Decimal; CAST(... AS BIGINT) brings it back to an integer, as SQLite returns.
- `substr(created_at, 1, 10)` is the day on both engines, because timestamps are
  fixed-width text (schema.sql); no date function, whose names differ, is needed.
"""

def sales_by_day(connection, start, end):
    """One row per day with sales: day, orders, items_sold, revenue_cents, and
    running_revenue_cents, the revenue of that day and every day before it in the range."""
    return connection.fetch_all(
        """
        SELECT day, orders, items_sold, revenue_cents,
               CAST(SUM(revenue_cents) OVER (ORDER BY day) AS BIGINT) AS running_revenue_cents
        FROM (
            SELECT substr(orders.created_at, 1, 10) AS day,
                   COUNT(DISTINCT orders.id) AS orders,
                   CAST(SUM(order_items.quantity) AS BIGINT) AS items_sold,
                   CAST(SUM(order_items.quantity * order_items.unit_price_cents) AS BIGINT) AS revenue_cents
            FROM orders
            JOIN order_items ON order_items.order_id = orders.id
            WHERE orders.status IN ('paid', 'shipped')
              AND orders.created_at >= :start AND orders.created_at < :end
            GROUP BY substr(orders.created_at, 1, 10)
        ) AS daily
        ORDER BY day
        """,
        {"start": start, "end": end},
    )


def sales_by_item(connection, start, end, limit):
    """The best-selling items, most revenue first (ties: lower item id first): item_id, name,
    quantity, revenue_cents, revenue_rank (RANK: equal revenue, equal rank, then a gap), and
    running_revenue_cents down the ranking, which shows how few items make most sales."""
    return connection.fetch_all(
        """
        SELECT item_id, name, quantity, revenue_cents,
               RANK() OVER (ORDER BY revenue_cents DESC) AS revenue_rank,
               CAST(SUM(revenue_cents) OVER (
                   ORDER BY revenue_cents DESC, item_id ROWS UNBOUNDED PRECEDING
               ) AS BIGINT) AS running_revenue_cents
        FROM (
            SELECT order_items.item_id, items.name,
                   CAST(SUM(order_items.quantity) AS BIGINT) AS quantity,
                   CAST(SUM(order_items.quantity * order_items.unit_price_cents) AS BIGINT) AS revenue_cents
            FROM orders
            JOIN order_items ON order_items.order_id = orders.id
            JOIN items ON items.id = order_items.item_id
            WHERE orders.status IN ('paid', 'shipped')
              AND orders.created_at >= :start AND orders.created_at < :end
            GROUP BY order_items.item_id, items.name
        ) AS per_item
        ORDER BY revenue_cents DESC, item_id
        LIMIT :limit
        """,
        {"start": start, "end": end, "limit": limit},
    )
