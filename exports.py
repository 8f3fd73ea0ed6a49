"""CSV exports of orders, written by a background job, downloaded when done.

    POST /v1/reports/orders-export {"from": "2026-11-01", "to": "2026-11-30"}
        -> 202, Location: /v1/jobs/7     the job and its record, enqueued in one transaction
    GET /v1/jobs/7                        "status": "done", "links": {"download": "/v1/exports/7"}
    GET /v1/exports/7                     the file: text/csv, Content-Disposition: attachment

The file, one row per order line (an order of two items is two rows, its own columns
repeated), so that a spreadsheet can sum quantities and revenue per item as easily as per
order; RFC 4180 (commas, CRLF line ends, a cell quoted when it holds a comma, a quote or a
line break), UTF-8 without a byte-order mark, and a header row:

    order_id,created_at,status,user_id,total_cents,item_id,item_name,quantity,unit_price_cents,line_total_cents
    2,2026-11-28T09:39:19.102000Z,paid,2,2200,31,Walnut Desk Tidy,1,2200,2200

Choices:
- Personal data stays out: the customer is `user_id`, not an email or a name. A file leaves
  the shop's access control the moment it is downloaded (mailed around, left in Downloads);
  an admin who needs the person looks the id up through the API, which checks who asks.
- Money in integer cents, as everywhere in the API: exact, and read the same in every
  locale (22.00 is 22 in one spreadsheet and 2200 in one that writes 22,00).
- CSV injection (OWASP): a spreadsheet runs a cell that starts with =, +, -, @ (or a tab
  or carriage return before one) as a formula, and `=HYPERLINK(...)` in an item name would
  become a link in the admin's spreadsheet. Such a cell gets a leading single quote, which
  spreadsheets show as text (`csv_cell`). Numbers cannot start with "-": every money and
  quantity column has CHECK (>= 0) in the schema, so the rule only ever meets text; if a
  negative number did arise, it would be quoted like text: visibly odd, never a formula.

The job (`write_orders_export`) streams the rows from the database (db.Connection.stream:
a server-side cursor on PostgreSQL) into a temporary file in EXPORT_DIR, at most
EXPORT_MAX_ROWS rows and EXPORT_MAX_SECONDS, then renames it (os.replace: atomic) to its
final name: nobody ever sees, let alone downloads, half a file. Idempotent: each attempt
writes its own file (export-7-2.csv: job 7, attempt 2) and records it only while it still
holds the job (sql_exports.finish_export), so a rerun replaces the record, whole, and a
late worker changes nothing. Files no record names (a superseded attempt, an export whose
job was purged after JOB_RETENTION_SECONDS) are deleted by the worker's sweep.
"""

import csv
import datetime as dt
import json
import os
import re
import tempfile
import time
from pathlib import Path

import db
import jobs
import sql_exports
import sql_jobs

ORDERS_EXPORT = "orders.export"  # the job kind
# An export that failed three times (the database was down) is dead; one that is too large
# will be too large again, so more attempts would only redo the same work.
EXPORT_ATTEMPTS = 3
EXPORT_MAX_SECONDS = 600  # one attempt's time, from the first row to the rename
MAX_EXPORTS_IN_PROGRESS = 5  # queued or running at once, shop-wide: each may scan a year of orders
FETCH_BATCH_ROWS = 1000  # rows fetched from the database at a time
# Cells a spreadsheet would read as a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CONTENT_TYPE = "text/csv; charset=utf-8"  # RFC 4180 §3: the media type, and its charset parameter
FILE_NAME = re.compile(r"export-(?P<job_id>[0-9]{1,18})-[0-9]{1,3}\.csv")
TEMPORARY_NAME = re.compile(r"export-[0-9]{1,18}-[0-9]{1,3}\.csv\.[A-Za-z0-9_]+\.tmp")
# A file no record names yet, or a temporary one, is left alone this long: its attempt may
# still be writing it or about to record it.
UNRECORDED_GRACE_SECONDS = 2 * EXPORT_MAX_SECONDS
SWEEP_BATCH = 200  # files asked about in one query


class TooManyInProgress(Exception):
    """MAX_EXPORTS_IN_PROGRESS exports are queued or running already."""


class ExportTooLarge(Exception):
    """The export would hold more than EXPORT_MAX_ROWS rows, or take over EXPORT_MAX_SECONDS."""


def request_orders_export(database, user_id, first_day, last_day):
    """Enqueue an export of the orders placed from `first_day` to `last_day` (dates, both
    included) with its record, in one transaction; return the job as `describe` shows it.

    Raises TooManyInProgress when MAX_EXPORTS_IN_PROGRESS exports are queued or running (a
    check before the insert: two requests at the same moment may both pass it).
    """
    payload = {"from": first_day.isoformat(), "to": last_day.isoformat()}
    with database.transaction() as connection:
        if sql_exports.exports_in_progress(connection, ORDERS_EXPORT) >= MAX_EXPORTS_IN_PROGRESS:
            raise TooManyInProgress
        job_id = jobs.enqueue(connection, ORDERS_EXPORT, payload, max_attempts=EXPORT_ATTEMPTS)
        sql_exports.insert_export(connection, job_id, user_id)
        job, export = sql_jobs.get_job(connection, job_id), sql_exports.get_export(connection, job_id)
    return describe(jobs.public_job(job), export)


def describe(job, export):
    """A job as GET /v1/jobs/{id} shows it; an export's job also says what the file holds
    and, once it is written, where to download it."""
    if job["kind"] != ORDERS_EXPORT or export is None:
        return job
    described = dict(job, export={"rows": export["row_count"], "bytes": export["byte_count"]})
    described["links"] = {"download": f"/v1/exports/{job['id']}"} if export["finished_at"] else {}
    return described


def describe_job(database, job):
    """`describe` for a job read by the admin API (one more read, for an export's job only)."""
    if job["kind"] != ORDERS_EXPORT:
        return job
    with database.connection() as connection:
        return describe(job, sql_exports.get_export(connection, job["id"]))


def find_export(database, export_id):
    """The export `export_id` with its job's status and payload (decoded), or None."""
    with database.connection() as connection:
        export = sql_exports.get_export(connection, export_id)
    return None if export is None else dict(export, payload=json.loads(export["payload"]))


def download_name(payload):
    """The name a browser saves the file under, from the export's filters.

    >>> download_name({"from": "2026-11-01", "to": "2026-11-30"})
    'orders-2026-11-01-to-2026-11-30.csv'
    """
    return f"orders-{payload['from']}-to-{payload['to']}.csv"


def write_orders_export(context, job):
    """The "orders.export" job: write the CSV of the payload's days, then record the file.

    Idempotent (see the module docstring): a rerun writes a file of its own and records it
    in place of any earlier one. Raises ExportTooLarge past EXPORT_MAX_ROWS or
    EXPORT_MAX_SECONDS; the temporary file is removed, and the job fails.
    """
    settings, database = context.settings, context.database
    start, end = day_range_text(dt.date.fromisoformat(job.payload["from"]), dt.date.fromisoformat(job.payload["to"]))
    export_dir = Path(settings.export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    path = export_dir / f"export-{job.id}-{job.attempts}.csv"
    # A connection of its own, whose deadline (on PostgreSQL) is the export's, not a request's.
    with database.connection(timeout_seconds=EXPORT_MAX_SECONDS) as connection:
        rows = sql_exports.order_lines(connection, start, end, batch_size=FETCH_BATCH_ROWS)
        try:
            row_count = write_csv(path, sql_exports.LINE_COLUMNS, rows, max_rows=settings.export_max_rows,
                                  deadline=time.monotonic() + EXPORT_MAX_SECONDS)
        finally:
            rows.close()  # ends the cursor (and its transaction) even when the file was refused
    with database.transaction() as connection:
        recorded = sql_exports.finish_export(connection, job.id, job.attempts, path.name, row_count,
                                             path.stat().st_size, db.utc_now())
    if not recorded:  # another attempt holds the job now: this file is nobody's
        path.unlink(missing_ok=True)


def write_csv(path, header, rows, *, max_rows, deadline):
    """Write `header` and then each row (a dict with those keys) as CSV at `path`, through a
    temporary file renamed when complete; returns the number of rows (the header aside).

    Raises ExportTooLarge after `max_rows` rows or past `deadline` (time.monotonic()); then,
    as after any error, the temporary file is removed and `path` is left as it was.
    """
    # mkstemp: a new file only the shop's user can read (0600), in the same directory, so
    # that os.replace is a rename within one file system: atomic.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    row_count = 0
    try:
        # newline="": the csv module writes its own line ends, CRLF as RFC 4180 asks.
        with open(descriptor, "w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, lineterminator="\r\n")
            writer.writerow(header)
            for row in rows:
                row_count += 1
                if row_count > max_rows:
                    raise ExportTooLarge(f"the export would hold over {max_rows} rows: ask for fewer days")
                if time.monotonic() > deadline:
                    raise ExportTooLarge(f"the export took over {EXPORT_MAX_SECONDS} s: ask for fewer days")
                writer.writerow([csv_cell(row[column]) for column in header])
            out.flush()
            # On disk before the rename: after a crash, the final name holds the whole file,
            # never an empty one whose data was still in the page cache.
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return row_count


def csv_cell(value):
    """A value as the text of a CSV cell, neutralised against formulas (CSV injection).

    >>> [csv_cell(value) for value in (42, "Teapot", "=HYPERLINK(\\"http://x\\")", "-2", "@SUM(A1)", None)]
    ['42', 'Teapot', '\\'=HYPERLINK("http://x")', "'-2", "'@SUM(A1)", '']
    """
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def day_range_text(first_day, last_day):
    """Two UTC days (both included) as the stored-text range [start, end) they cover.

    >>> day_range_text(dt.date(2026, 11, 1), dt.date(2026, 11, 30))
    ('2026-11-01T00:00:00.000000Z', '2026-12-01T00:00:00.000000Z')
    """
    start = dt.datetime.combine(first_day, dt.time(), dt.UTC)
    return db.utc_text(start), db.utc_text(dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(), dt.UTC))


def sweep(database, export_dir, *, now=None):
    """Delete the files in `export_dir` that no export records: superseded attempts, exports
    whose job was purged, and temporary files left by a worker that died. Files that are not
    an export's (by their name) are left alone. Returns the names deleted.

    A file no record names yet is deleted only after UNRECORDED_GRACE_SECONDS (its attempt
    may be about to record it); a file whose export no longer exists, at once.
    """
    now = time.time() if now is None else now
    try:
        entries = [entry for entry in os.scandir(export_dir) if entry.is_file()]
    except FileNotFoundError:
        return []
    old = {entry.name for entry in entries if now - entry.stat().st_mtime > UNRECORDED_GRACE_SECONDS}
    doomed = [entry.name for entry in entries if entry.name in old and TEMPORARY_NAME.fullmatch(entry.name)]
    files = {entry.name: int(match["job_id"]) for entry in entries if (match := FILE_NAME.fullmatch(entry.name))}
    names = sorted(files)
    for batch_start in range(0, len(names), SWEEP_BATCH):
        batch = names[batch_start:batch_start + SWEEP_BATCH]
        with database.connection() as connection:
            recorded = sql_exports.recorded_file_names(connection, sorted({files[name] for name in batch}))
        for name in batch:
            job_id = files[name]
            if job_id not in recorded or (recorded[job_id] != name and name in old):
                doomed.append(name)
    for name in doomed:
        Path(export_dir, name).unlink(missing_ok=True)
    return doomed
