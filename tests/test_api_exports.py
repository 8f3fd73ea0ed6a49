"""The CSV export over HTTP, on both engines, in process and over a real socket:
POST /v1/reports/orders-export (202 and a Location), a worker runs the job, GET /v1/jobs/{id}
links to the file, GET /v1/exports/{id} downloads it, and the file says what the database
holds, neutralised against formulas. Also: who may ask, bad filters, a file not ready yet,
and one deleted with its job. The file's own rules are in tests/test_exports.py."""

import csv
import datetime as dt
import io
import os
import threading

import pytest
from conftest import assert_problem, bodies_that_are_not_json, insert_orders, make_item, running_worker, wait_for_jobs

import api_exports
import exports
import jobs
import sql_exports

EXPORT = "/v1/reports/orders-export"
INJECTIONS = ['=HYPERLINK("http://evil.example","click")', "+1+1", "-2+3", "@SUM(A1:A2)", "\t=1+1", "\r=1+1"]
DAY_RULE = "must be a day written YYYY-MM-DD, from 1000-01-01 to 9998-12-31"


def place_orders(database, customer_ids, names):
    """Items named `names`, each ordered once (with item 1) in January 2026, by the customers in
    turn, and two orders just outside January; the ids of the orders inside it."""
    items = [make_item(database, 10, name=name, price_cents=100 * (number + 1)) for number, name in enumerate(names)]
    inside = insert_orders(database, [
        (customer_ids[position % len(customer_ids)], f"2026-01-{1 + position * 4:02d}T12:00:00.000000Z",
         ("pending", "paid", "shipped", "cancelled")[position % 4], [(1, 1, 500), (item["id"], 2, item["price_cents"])])
        for position, item in enumerate(items)])
    insert_orders(database, [(customer_ids[0], "2025-12-31T23:59:59.999999Z", "paid", [(1, 1, 500)]),
                             (customer_ids[0], "2026-02-01T00:00:00.000000Z", "shipped", [(1, 1, 500)])])
    return inside


def export_and_wait(client, admin, database, settings, body=None):
    """POST an export, run it with a worker; (the 202 response, the finished job as GET shows it)."""
    posted = client.post(EXPORT, json=body, headers=admin) if body is not None else client.post(EXPORT, headers=admin)
    assert posted.status == 202, posted
    with running_worker(database, settings):
        wait_for_jobs(database, "status = 'done' AND id = :id", id=posted.json()["id"])
    job = client.get(posted.header("Location"), headers=admin)
    assert job.status == 200, job
    return posted, job.json()


def database_lines(database, order_ids):
    """The lines of these orders as the CSV should show them, read independently of the export."""
    with database.connection() as connection:
        rows = connection.fetch_all(
            "SELECT o.id, o.created_at, o.status, o.user_id, o.total_cents, l.item_id, l.item_name, l.quantity,"
            " l.unit_price_cents FROM orders o JOIN order_items l ON l.order_id = o.id"
            f" WHERE o.id IN ({', '.join(str(order_id) for order_id in order_ids)})"
            " ORDER BY o.created_at, o.id, l.item_id")
    lines = []
    for row in rows:
        name = row["item_name"]
        shown = "'" + name if name[:1] in ("=", "+", "-", "@", "\t", "\r") else name
        lines.append([str(row["id"]), row["created_at"], row["status"], str(row["user_id"]), str(row["total_cents"]),
                      str(row["item_id"]), shown, str(row["quantity"]), str(row["unit_price_cents"]),
                      str(row["quantity"] * row["unit_price_cents"])])
    return lines


def test_an_export_from_202_to_the_downloaded_file(client, admin, database, settings, users):
    customers = [users.create()["id"], users.create()["id"]]
    order_ids = place_orders(database, customers, ["Théière en fonte 鉄瓶", 'Tea, "green"\nleaf', *INJECTIONS])
    posted, job = export_and_wait(client, admin, database, settings, {"from": "2026-01-01", "to": "2026-01-31"})

    queued = posted.json()
    assert posted.header("Location") == f"/v1/jobs/{queued['id']}"
    assert (queued["kind"], queued["status"], queued["attempts"]) == ("orders.export", "queued", 0)
    assert queued["payload"] == {"from": "2026-01-01", "to": "2026-01-31"}
    assert queued["export"] == {"rows": None, "bytes": None}
    assert queued["links"] == {}

    assert job["status"] == "done"
    assert job["links"] == {"download": f"/v1/exports/{queued['id']}"}
    download = client.get(job["links"]["download"], headers=admin)
    assert download.status == 200, download
    assert download.header("Content-Type") == "text/csv; charset=utf-8"
    assert download.header("Content-Disposition") == 'attachment; filename="orders-2026-01-01-to-2026-01-31.csv"'
    assert download.header("Cache-Control") == "no-store"
    on_disk = (settings.export_dir / f"export-{queued['id']}-1.csv").read_bytes()
    assert download.body == on_disk  # exactly the bytes the job wrote
    assert int(download.header("Content-Length")) == len(on_disk) == job["export"]["bytes"]

    rows = list(csv.reader(io.StringIO(download.body.decode("utf-8"), newline="")))
    assert rows[0] == ["order_id", "created_at", "status", "user_id", "total_cents", "item_id", "item_name",
                       "quantity", "unit_price_cents", "line_total_cents"]
    assert rows[1:] == database_lines(database, order_ids)
    assert job["export"]["rows"] == len(rows) - 1 == 2 * len(order_ids)
    names = {row[6] for row in rows[1:]}
    assert {"Théière en fonte 鉄瓶", 'Tea, "green"\nleaf'} <= names
    assert {"'" + injection for injection in INJECTIONS} <= names
    assert not [name for name in names if name[:1] in "=+-@\t\r"]  # no cell a spreadsheet would run
    assert download.body.count(b"\r\n") >= len(rows)  # CRLF after every record


def test_without_filters_an_export_covers_the_last_30_days(client, admin, database, settings):
    posted, job = export_and_wait(client, admin, database, settings)
    first, last = job["payload"]["from"], job["payload"]["to"]
    assert posted.json()["payload"] == job["payload"]
    assert (dt.date.fromisoformat(last) - dt.date.fromisoformat(first)).days == 29
    assert last == dt.datetime.now(dt.UTC).date().isoformat()
    assert job["export"]["rows"] == 0


def test_head_answers_the_headers_of_the_download_without_its_body(client, admin, database, settings):
    _, job = export_and_wait(client, admin, database, settings, {})
    head = client.head(job["links"]["download"], headers=admin)
    assert head.status == 200 and head.body == b""
    assert int(head.header("Content-Length")) == job["export"]["bytes"]


def test_an_export_not_written_yet_is_a_409_that_says_when_to_come_back(client, admin):
    job_id = client.post(EXPORT, json={}, headers=admin).json()["id"]  # no worker runs
    problem = assert_problem(client.get(f"/v1/exports/{job_id}", headers=admin), 409,
                             f"export {job_id} is not ready: its job is queued")
    assert (problem["job_status"], problem["job"]) == ("queued", f"/v1/jobs/{job_id}")
    job = client.get(f"/v1/jobs/{job_id}", headers=admin).json()
    assert job["links"] == {} and job["export"]["rows"] is None


def test_an_export_deleted_with_its_job_is_a_404(client, admin, database, settings):
    _, job = export_and_wait(client, admin, database, settings, {})
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=settings.job_retention_seconds + 1)
    jobs.purge_finished(database, retention_seconds=settings.job_retention_seconds, now=later)
    assert_problem(client.get(job["links"]["download"], headers=admin), 404, f"export {job['id']} does not exist")


def test_an_unknown_export_and_a_job_that_is_no_export_are_404s(checker):
    assert_problem(checker.client.get("/v1/exports/999999", headers=checker.admin), 404, "export 999999 does not exist")
    with checker.database.transaction() as connection:
        job_id = jobs.enqueue(connection, "noop", {})
    assert_problem(checker.client.get(f"/v1/exports/{job_id}", headers=checker.admin), 404,
                   f"export {job_id} does not exist")


def test_a_recorded_file_missing_from_the_directory_is_a_404(client, admin, database, settings):
    _, job = export_and_wait(client, admin, database, settings, {})
    (settings.export_dir / f"export-{job['id']}-1.csv").unlink()  # EXPORT_DIR not shared, say
    assert_problem(client.get(job["links"]["download"], headers=admin), 404,
                   f"the file of export {job['id']} is not in the export directory")


def test_too_many_exports_in_progress_is_a_429(checker):
    with checker.database.transaction() as connection:
        connection.execute("DELETE FROM exports")
        connection.execute("DELETE FROM jobs")
    for _ in range(exports.MAX_EXPORTS_IN_PROGRESS):
        assert checker.client.post(EXPORT, headers=checker.admin).status == 202
    refused = checker.client.post(EXPORT, headers=checker.admin)
    assert_problem(refused, 429, f"{exports.MAX_EXPORTS_IN_PROGRESS} exports are being made already;"
                                 " try again when one is done")
    assert refused.header("Retry-After") == "30"


# -- who may, and what is refused ------------------------------------------------------------------

@pytest.mark.parametrize("method, path", [("POST", EXPORT), ("GET", "/v1/exports/1"), ("HEAD", "/v1/exports/1")])
def test_exports_are_for_admins_only(checker, method, path):
    assert checker.client.request(method, path, headers=checker.customer).status == 403
    anonymous = checker.client.request(method, path)
    assert anonymous.status == 401 and anonymous.header("WWW-Authenticate").startswith("Bearer")


@pytest.mark.parametrize("body, errors", [
    ({"from": "2026-13-01"}, [{"field": "from", "message": DAY_RULE}]),
    ({"to": "2026-02-30"}, [{"field": "to", "message": DAY_RULE}]),
    ({"from": "2026-W01-1"}, [{"field": "from", "message": DAY_RULE}]),
    ({"from": "0999-12-31"}, [{"field": "from", "message": DAY_RULE}]),
    ({"to": 20260101}, [{"field": "to", "message": DAY_RULE}]),
    ({"from": "x", "to": "y"}, [{"field": "to", "message": DAY_RULE}, {"field": "from", "message": DAY_RULE}]),
    ({"from": "2026-02-01", "to": "2026-01-31"}, [{"field": "from", "message": "is after 'to'"}]),
    ({"from": "2024-01-01", "to": "2025-01-01"}, [{"field": "", "message": "the range may cover at most 366 days"}]),
    ({"format": "xlsx", "from": "bad"}, [{"field": "format", "message": "is not a known field"},
                                         {"field": "from", "message": DAY_RULE}]),
    ([], [{"field": "", "message": "the body must be a JSON object"}]),
])
def test_bad_filters_are_a_422_naming_each_field(checker, body, errors):
    response = checker.client.post(EXPORT, json=body, headers=checker.admin)
    assert_problem(response, 422, errors=errors)


@pytest.mark.parametrize("body, content_type, status, detail", [
    # (An empty body is no body: the default days.)
    case for case in bodies_that_are_not_json(b'{"from": "2026-01-01"}') if case.values[0]])
def test_a_body_that_is_not_json_is_refused_before_any_filter(checker, body, content_type, status, detail):
    headers = dict(checker.admin, **({"Content-Type": content_type} if content_type else {}))
    assert_problem(checker.client.post(EXPORT, body=body, headers=headers), status, detail)


def test_a_refused_export_leaves_no_job_and_no_record(checker):
    with checker.database.connection() as connection:
        before = connection.fetch_value("SELECT count(*) FROM jobs")
    checker.client.post(EXPORT, json={"from": "2026-02-01", "to": "2026-01-31"}, headers=checker.admin)
    with checker.database.connection() as connection:
        assert connection.fetch_value("SELECT count(*) FROM jobs") == before


def test_the_sales_report_keeps_its_400s_for_the_same_rules(checker):
    response = checker.client.get("/v1/reports/sales?from=2026-02-01&to=2026-01-31", headers=checker.admin)
    assert_problem(response, 400, "'from' is after 'to'")
    response = checker.client.get("/v1/reports/sales?to=nope", headers=checker.admin)
    assert_problem(response, 400, f"'to' {DAY_RULE}")


def test_a_file_larger_than_the_servers_outbox_arrives_whole(client, admin, database, settings):
    """3 MB, three times what a worker may leave for the event loop (httpworkers.OUTBOX_BYTES):
    sent a chunk at a time, and exactly the bytes on disk, in process and over a socket."""
    _, job = export_and_wait(client, admin, database, settings, {})
    path = settings.export_dir / f"export-{job['id']}-1.csv"
    path.write_bytes(path.read_bytes() + b"".join(f"{number},{'x' * 90}\r\n".encode() for number in range(32_000)))
    download = client.get(job["links"]["download"], headers=admin)
    assert download.status == 200
    assert download.body == path.read_bytes() and len(download.body) > 3_000_000
    assert int(download.header("Content-Length")) == len(download.body)


def test_the_file_is_read_a_chunk_at_a_time_and_never_past_its_length(tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes(b"a" * (2 * api_exports.CHUNK_BYTES + 10))
    with open(path, "rb") as opened:
        body = api_exports.FileBody(opened)
        path.write_bytes(b"a" * (3 * api_exports.CHUNK_BYTES))  # (a file is never changed in place; if it were)
        chunks = list(body)
        body.close()
        assert opened.closed
    assert len(body) == 2 * api_exports.CHUNK_BYTES + 10
    assert [len(chunk) for chunk in chunks] == [api_exports.CHUNK_BYTES, api_exports.CHUNK_BYTES, 10]


def test_while_the_file_is_being_written_nothing_is_served(client, admin, database, settings, users, monkeypatch):
    """The job holds after its first row: the download is a 409 ("running"), and the export
    directory holds only the temporary file. Released, the job ends and the file is served."""
    insert_orders(database, [(users.create()["id"], "2026-01-10T10:00:00.000000Z", "paid", [(1, 1, 500), (2, 1, 700)])])
    first_row_written, release = threading.Event(), threading.Event()
    real_order_lines = sql_exports.order_lines

    def held_order_lines(*args, **kwargs):
        for number, row in enumerate(real_order_lines(*args, **kwargs)):
            if number == 1:  # the first row is in the file (or its buffer): hold the second
                first_row_written.set()
                assert release.wait(10)
            yield row

    monkeypatch.setattr(sql_exports, "order_lines", held_order_lines)
    job_id = client.post(EXPORT, json={"from": "2026-01-01", "to": "2026-01-31"}, headers=admin).json()["id"]
    with running_worker(database, settings):
        try:
            assert first_row_written.wait(10)
            assert_problem(client.get(f"/v1/exports/{job_id}", headers=admin), 409,
                           f"export {job_id} is not ready: its job is running")
            [temporary] = os.listdir(settings.export_dir)
            assert temporary.startswith(f"export-{job_id}-1.csv.") and temporary.endswith(".tmp")
        finally:
            release.set()
        wait_for_jobs(database, "status = 'done' AND id = :id", id=job_id)
    download = client.get(f"/v1/exports/{job_id}", headers=admin)
    assert download.status == 200 and download.body.count(b"\r\n") == 3
    assert os.listdir(settings.export_dir) == [f"export-{job_id}-1.csv"]
