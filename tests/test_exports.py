"""Tests for exports.py and db.Connection.stream: the CSV an export job writes (RFC 4180,
UTF-8, cells neutralised against formulas), streamed from the database a batch at a time,
written whole or not at all, idempotent on rerun, limited, and swept when no record names
it. The same export over HTTP is in tests/test_api_exports.py."""

import csv
import dataclasses
import datetime as dt
import io
import os
import time
import tracemalloc

import pytest
from conftest import POLL_SECONDS, count_rows, make_item, running_worker

import exports
import jobs
import sql_exports
from worker import JobContext

HEADER = ("order_id,created_at,status,user_id,total_cents,item_id,item_name,quantity,unit_price_cents,"
          "line_total_cents")
JANUARY = (dt.date(2026, 1, 1), dt.date(2026, 1, 31))


def insert_lines(database, user_id, orders):
    """Orders written straight into the tables: [(created_at, status, [(item_id, quantity,
    unit_price_cents)])], the lines in one executemany per order; their ids."""
    order_ids = []
    with database.transaction() as connection:
        for created_at, status, lines in orders:
            order_ids.append(connection.fetch_value(
                "INSERT INTO orders (user_id, status, total_cents, created_at, updated_at)"
                " VALUES (:user_id, :status, :total_cents, :created_at, :created_at) RETURNING id",
                {"user_id": user_id, "status": status, "created_at": created_at,
                 "total_cents": sum(quantity * price for _, quantity, price in lines)}))
            connection.execute_many(
                "INSERT INTO order_items (order_id, item_id, item_name, quantity, unit_price_cents)"
                " VALUES (:order_id, :item_id, (SELECT name FROM items WHERE id = :item_id), :quantity, :price)",
                [{"order_id": order_ids[-1], "item_id": item_id, "quantity": quantity, "price": price}
                 for item_id, quantity, price in lines])
    return order_ids


def request_export(database, user_id, days=JANUARY):
    return exports.request_orders_export(database, user_id, *days)


def run_export_job(database, settings, now=None):
    """Claim the next job (an export) and run its handler, as a worker would; the Job."""
    [job] = jobs.claim(database, "worker-a", 1, lease_seconds=30, now=now)
    exports.write_orders_export(JobContext(settings, database, None), job)
    return job


def exported_file(settings, job):
    return settings.export_dir / f"export-{job.id}-{job.attempts}.csv"


def export_row(database, job_id):
    with database.connection() as connection:
        return sql_exports.get_export(connection, job_id)


# -- cells and the file ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, cell", [
    ("=HYPERLINK(\"http://evil.example\",\"click\")", "'=HYPERLINK(\"http://evil.example\",\"click\")"),
    ("+1+1", "'+1+1"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
    ("\t=1+1", "'\t=1+1"),
    ("\r=1+1", "'\r=1+1"),
    ("Teapot = fine", "Teapot = fine"),  # only the first character matters
    (" =1+1", " =1+1"),  # spreadsheets read a leading space as text
    ("Théière 鉄瓶", "Théière 鉄瓶"),
    (1250, "1250"),
    (0, "0"),
])
def test_cells_that_a_spreadsheet_would_run_get_a_leading_quote(value, cell):
    assert exports.csv_cell(value) == cell


def test_the_file_is_rfc_4180_utf_8_with_a_header_and_crlf_line_ends(tmp_path):
    path = tmp_path / "export-1-1.csv"
    rows = [{"name": 'Tea, "green"\nleaf', "price": 450}, {"name": "Théière 鉄瓶", "price": 0}]
    assert exports.write_csv(path, ("name", "price"), iter(rows), max_rows=10, deadline=time.monotonic() + 60) == 2
    raw = path.read_bytes()
    assert raw == 'name,price\r\n"Tea, ""green""\nleaf",450\r\nThéière 鉄瓶,0\r\n'.encode()
    assert list(csv.reader(io.StringIO(raw.decode("utf-8"), newline=""))) == [
        ["name", "price"], ['Tea, "green"\nleaf', "450"], ["Théière 鉄瓶", "0"]]
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # orders are nobody else's business on this machine
    assert os.listdir(tmp_path) == ["export-1-1.csv"]  # no temporary file left


def test_the_final_name_holds_a_whole_file_or_the_previous_one_never_half_of_one(tmp_path):
    path = tmp_path / "export-1-1.csv"
    exports.write_csv(path, ("n",), iter([{"n": 1}]), max_rows=10, deadline=time.monotonic() + 60)
    before = path.read_bytes()
    seen_while_writing = []

    def rows():
        for number in range(5):
            # Mid-write: the final name still holds the earlier, whole file; the new rows go elsewhere.
            seen_while_writing.append((path.read_bytes(), sorted(os.listdir(tmp_path))))
            yield {"n": number}

    exports.write_csv(path, ("n",), rows(), max_rows=10, deadline=time.monotonic() + 60)
    assert all(content == before for content, _ in seen_while_writing)
    assert all(len(names) == 2 and names[0] == "export-1-1.csv" and names[1].endswith(".tmp")
               for _, names in seen_while_writing)
    assert path.read_bytes() == b"n\r\n0\r\n1\r\n2\r\n3\r\n4\r\n"
    assert os.listdir(tmp_path) == ["export-1-1.csv"]


@pytest.mark.parametrize("max_rows, deadline, message", [
    (3, 60, "the export would hold over 3 rows: ask for fewer days"),
    (100, -1, f"the export took over {exports.EXPORT_MAX_SECONDS} s: ask for fewer days"),
])
def test_past_a_limit_nothing_is_written(tmp_path, max_rows, deadline, message):
    path = tmp_path / "export-1-1.csv"
    with pytest.raises(exports.ExportTooLarge, match=message):
        exports.write_csv(path, ("n",), iter([{"n": n} for n in range(5)]), max_rows=max_rows,
                          deadline=time.monotonic() + deadline)
    assert os.listdir(tmp_path) == []


# -- the job ------------------------------------------------------------------------------------

def test_the_job_writes_every_line_of_the_range_and_records_the_file(seeded, users, settings):
    user = users.create()
    teapot = make_item(seeded, 5, name="=HYPERLINK(\"http://evil.example\",\"click\")", price_cents=1250)
    order_ids = insert_lines(seeded, user["id"], [
        ("2025-12-31T23:59:59.999999Z", "paid", [(1, 1, 100)]),  # the day before: left out
        ("2026-01-01T00:00:00.000000Z", "pending", [(teapot["id"], 2, 1250), (3, 1, 300)]),
        ("2026-01-31T23:59:59.999999Z", "cancelled", [(2, 1, 200)]),
        ("2026-02-01T00:00:00.000000Z", "paid", [(1, 1, 100)]),  # the day after: left out
    ])
    admin = users.admin()
    job_id = request_export(seeded, admin["id"])["id"]
    job = run_export_job(seeded, settings)
    assert job.id == job_id
    raw = exported_file(settings, job).read_bytes()
    first, second = order_ids[1], order_ids[2]
    assert raw.decode("utf-8").split("\r\n") == [
        HEADER,
        f'{first},2026-01-01T00:00:00.000000Z,pending,{user["id"]},2800,3,{_name(seeded, 3)},1,300,300',
        f'{first},2026-01-01T00:00:00.000000Z,pending,{user["id"]},2800,{teapot["id"]},'
        '"\'=HYPERLINK(""http://evil.example"",""click"")",2,1250,2500',
        f'{second},2026-01-31T23:59:59.999999Z,cancelled,{user["id"]},200,2,{_name(seeded, 2)},1,200,200',
        "",
    ]
    export = export_row(seeded, job_id)
    assert (export["file_name"], export["row_count"], export["byte_count"]) == (f"export-{job_id}-1.csv", 3, len(raw))
    assert export["created_by"] == admin["id"]


def _name(database, item_id):
    with database.connection() as connection:
        return connection.fetch_value("SELECT name FROM items WHERE id = :id", {"id": item_id})


def test_an_empty_range_is_a_header_alone(database, users, settings):
    job_id = request_export(database, users.admin()["id"])["id"]
    job = run_export_job(database, settings)
    assert exported_file(settings, job).read_bytes() == HEADER.encode() + b"\r\n"
    assert export_row(database, job_id)["row_count"] == 0


def test_a_rerun_writes_a_file_of_its_own_and_the_sweep_removes_the_earlier_one(seeded, users, settings):
    user = users.create()
    insert_lines(seeded, user["id"], [("2026-01-10T10:00:00.000000Z", "paid", [(1, 1, 100)])])
    job_id = request_export(seeded, user["id"])["id"]
    first = run_export_job(seeded, settings)
    # The worker died before recording the outcome: the lease expires and the job runs again.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=31)
    jobs.requeue_expired(seeded, now=later)
    second = run_export_job(seeded, settings, now=later)
    assert (first.attempts, second.attempts) == (1, 2)
    assert exported_file(settings, first).read_bytes() == exported_file(settings, second).read_bytes()
    assert export_row(seeded, job_id)["file_name"] == f"export-{job_id}-2.csv"
    # Just written, the earlier file may still be about to be recorded: the sweep waits.
    assert exports.sweep(seeded, settings.export_dir) == []
    assert exports.sweep(seeded, settings.export_dir, now=time.time() + exports.UNRECORDED_GRACE_SECONDS + 1) == [
        f"export-{job_id}-1.csv"]
    assert sorted(os.listdir(settings.export_dir)) == [f"export-{job_id}-2.csv"]


def test_an_attempt_that_lost_its_job_records_nothing_and_leaves_no_file(seeded, users, settings):
    user = users.create()
    insert_lines(seeded, user["id"], [("2026-01-10T10:00:00.000000Z", "paid", [(1, 1, 100)])])
    job_id = request_export(seeded, user["id"])["id"]
    [stale] = jobs.claim(seeded, "worker-a", 1, lease_seconds=30)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=31)
    jobs.requeue_expired(seeded, now=later)
    current = run_export_job(seeded, settings, now=later)  # attempt 2 finishes first
    exports.write_orders_export(JobContext(settings, seeded, None), stale)  # attempt 1, late
    assert export_row(seeded, job_id)["file_name"] == f"export-{job_id}-{current.attempts}.csv"
    assert os.listdir(settings.export_dir) == [f"export-{job_id}-2.csv"]


def test_an_export_over_the_row_limit_fails_and_leaves_nothing(seeded, users, settings):
    user = users.create()
    insert_lines(seeded, user["id"], [("2026-01-10T10:00:00.000000Z", "paid", [(1, 1, 100), (2, 1, 100),
                                                                               (3, 1, 100)])])
    job_id = request_export(seeded, user["id"])["id"]
    with pytest.raises(exports.ExportTooLarge):
        run_export_job(seeded, dataclasses.replace(settings, export_max_rows=2))
    assert os.listdir(settings.export_dir) == []
    assert export_row(seeded, job_id)["finished_at"] is None


def test_the_files_of_purged_jobs_are_swept_and_other_files_left_alone(seeded, users, settings):
    user = users.create()
    job_id = request_export(seeded, user["id"])["id"]
    job = run_export_job(seeded, settings)
    assert jobs.complete(seeded, job)
    (settings.export_dir / "notes.txt").write_text("not an export")
    abandoned = settings.export_dir / "export-99-1.csv.abc123.tmp"  # a worker died mid-write
    abandoned.write_text("order_id,")
    assert exports.sweep(seeded, settings.export_dir) == []  # everything recorded, or too recent
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=settings.job_retention_seconds + 1)
    assert jobs.purge_finished(seeded, retention_seconds=settings.job_retention_seconds, now=later) == 1
    assert count_rows(seeded, "exports") == 0  # gone with its job (ON DELETE CASCADE)
    swept = exports.sweep(seeded, settings.export_dir, now=later.timestamp() + exports.UNRECORDED_GRACE_SECONDS)
    assert sorted(swept) == sorted([f"export-{job_id}-1.csv", abandoned.name])
    assert os.listdir(settings.export_dir) == ["notes.txt"]


def test_at_most_so_many_exports_are_in_progress_at_once(database, users):
    admin = users.admin()
    for _ in range(exports.MAX_EXPORTS_IN_PROGRESS):
        request_export(database, admin["id"])
    with pytest.raises(exports.TooManyInProgress):
        request_export(database, admin["id"])
    assert count_rows(database, "exports") == exports.MAX_EXPORTS_IN_PROGRESS  # the refused one left nothing


# -- streaming from the database ---------------------------------------------------------------------

def test_on_postgresql_the_rows_come_through_a_server_side_cursor(seeded, users, engine):
    if engine != "postgresql":
        pytest.skip("SQLite has no server-side cursors: it computes rows as they are asked for")
    insert_lines(seeded, users.create()["id"], [("2026-01-10T10:00:00.000000Z", "paid", [(1, 1, 100), (2, 1, 100)])])
    with seeded.connection() as connection:
        rows = sql_exports.order_lines(connection, *exports.day_range_text(*JANUARY), batch_size=1)
        first = next(rows)
        cursors = connection.fetch_all("SELECT name, statement FROM pg_cursors")
        rest = list(rows)
    assert [cursor["name"].startswith("stream_") for cursor in cursors] == [True]
    assert "FROM orders JOIN order_items" in cursors[0]["statement"]
    assert [row["item_id"] for row in [first, *rest]] == [1, 2]


def test_a_large_export_never_holds_its_rows_in_memory(seeded, users, settings, monkeypatch):
    """10,000 lines (about 800 KB of CSV), written with at most a fraction of that allocated
    at once: the rows go from the database to the file a batch at a time. Reading them all
    first (fetchall) would hold every row as a dict: several MB."""
    user = users.create()
    insert_lines(seeded, user["id"], [(f"2026-01-{1 + number % 28:02d}T10:00:00.{number:06d}Z", "paid",
                                       [(item_id, 1, 1000 + number) for item_id in range(1, 6)])
                                      for number in range(2000)])
    request_export(seeded, user["id"])
    monkeypatch.setattr(exports, "FETCH_BATCH_ROWS", 100)
    [job] = jobs.claim(seeded, "worker-a", 1, lease_seconds=30)
    tracemalloc.start()
    try:
        exports.write_orders_export(JobContext(settings, seeded, None), job)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = exported_file(settings, job).stat().st_size
    assert size > 700_000
    assert peak < size / 2, (peak, size)
    with open(exported_file(settings, job), newline="", encoding="utf-8") as exported:
        assert sum(1 for _ in csv.reader(exported)) == 10_001


def test_a_worker_deletes_the_files_of_the_exports_it_purges(database, users, settings):
    """The wiring: a worker's housekeeping purges old jobs, then sweeps their files (at its start)."""
    job_id = request_export(database, users.admin()["id"])["id"]
    job = run_export_job(database, settings)
    assert jobs.complete(database, job)
    with database.transaction() as connection:  # finished long before the retention period
        connection.execute("UPDATE jobs SET finished_at = '2020-01-01T00:00:00.000000Z' WHERE id = :id", {"id": job_id})
    assert os.listdir(settings.export_dir) == [f"export-{job_id}-1.csv"]
    with running_worker(database, settings):
        deadline = time.monotonic() + 10
        while os.listdir(settings.export_dir) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
    assert os.listdir(settings.export_dir) == []
    assert count_rows(database, "exports") == 0
