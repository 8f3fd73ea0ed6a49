"""SQL for CSV exports (migrations/0010_exports.sql): one function per query.

An export is a job (sql_jobs.py) plus its record in `exports`, keyed by the job's id. The
rules (who may ask, the limits, the file) are in exports.py; these functions run the
statements. The one query of any size, `order_lines`, is streamed (db.Connection.stream):
its rows go to the CSV file a batch at a time and are never all in memory.
"""

from sql_paging import in_list

# The columns of the CSV, in order: one row per order line (exports.py says why).
LINE_COLUMNS = ("order_id", "created_at", "status", "user_id", "total_cents", "item_id", "item_name", "quantity",
                "unit_price_cents", "line_total_cents")


def insert_export(connection, job_id, created_by):
    """The record of a new export, in the transaction that enqueued its job."""
    connection.execute("INSERT INTO exports (job_id, created_by) VALUES (:job_id, :created_by)",
                       {"job_id": job_id, "created_by": created_by})


def get_export(connection, job_id):
    """An export with its job's status, kind and payload (JSON text), or None. Both by primary key."""
    return connection.fetch_one(
        "SELECT exports.job_id, exports.created_by, exports.file_name, exports.row_count, exports.byte_count,"
        " exports.finished_at, jobs.kind, jobs.status, jobs.payload"
        " FROM exports JOIN jobs ON jobs.id = exports.job_id WHERE exports.job_id = :job_id",
        {"job_id": job_id},
    )


def exports_in_progress(connection, kind):
    """How many jobs of `kind` are queued or running: exports being made right now.

    Index: jobs_status_id (few jobs wait or run in a healthy queue) or jobs_kind_id (the
    exports kept until JOB_RETENTION_SECONDS): the planner picks, EXPLAIN accepts either.
    """
    return connection.fetch_value(
        "SELECT count(*) FROM jobs WHERE kind = :kind AND status IN ('queued', 'running')", {"kind": kind})


def order_lines(connection, start, end, *, batch_size):
    """Every line of the orders placed in [start, end) (RFC 3339 text), oldest order first,
    each order's lines by item id; a generator of dict rows named as LINE_COLUMNS.

    Every status is included: an admin's spreadsheet filters on the `status` column. The
    index orders_created_at_id finds the range in order, and each order's lines come by
    order_items' primary key (order_id, item_id): nothing waits for the whole range to be
    sorted, so the first rows arrive before the last are read (PostgreSQL may sort each
    order's few lines by item: an Incremental Sort). `item_name` is the name when ordered.
    """
    return connection.stream(
        "SELECT orders.id AS order_id, orders.created_at, orders.status, orders.user_id, orders.total_cents,"
        " order_items.item_id, order_items.item_name, order_items.quantity, order_items.unit_price_cents,"
        " order_items.quantity * order_items.unit_price_cents AS line_total_cents"
        " FROM orders JOIN order_items ON order_items.order_id = orders.id"
        " WHERE orders.created_at >= :start AND orders.created_at < :end"
        " ORDER BY orders.created_at, orders.id, order_items.item_id",
        {"start": start, "end": end},
        batch_size=batch_size,
    )


def finish_export(connection, job_id, attempts, file_name, row_count, byte_count, now):
    """Record the file an attempt wrote; False when that attempt no longer holds the job.

    The job's claim fences the write, as in sql_jobs (`attempts = :attempts`): a worker
    that lost its lease and finished late cannot put its file in place of the newer one.
    """
    cursor = connection.execute(
        "UPDATE exports SET file_name = :file_name, row_count = :row_count, byte_count = :byte_count,"
        " finished_at = :now WHERE job_id = :job_id AND EXISTS ("
        " SELECT 1 FROM jobs WHERE jobs.id = :job_id AND jobs.status = 'running' AND jobs.attempts = :attempts)",
        {"job_id": job_id, "attempts": attempts, "file_name": file_name, "row_count": row_count,
         "byte_count": byte_count, "now": now},
    )
    return cursor.rowcount == 1


def recorded_file_names(connection, job_ids):
    """{job id: file name} of the exports among `job_ids` that exist (file name None until
    finished). By primary key; the sweep asks about the files it finds, a batch at a time."""
    placeholders, params = in_list("job", job_ids)
    rows = connection.fetch_all(f"SELECT job_id, file_name FROM exports WHERE job_id IN {placeholders}", params)
    return {row["job_id"]: row["file_name"] for row in rows}
