"""Tests for api_jobs.py: the job queue seen by an admin. Lists page and filter like every
other list, one job shows its payload and error, and a dead job can be queued again."""

from datetime import UTC, datetime, timedelta

import pytest
from conftest import assert_problem

import jobs

BACKOFF = {"backoff_base_seconds": 1, "backoff_cap_seconds": 1}


def enqueue(database, kind, payload, **options):
    with database.transaction() as connection:
        return jobs.enqueue(connection, kind, payload, **options)


def make_dead(database, kind="email.order", error="SMTPConnectError: connection refused"):
    """A job that failed its only attempt; its id."""
    job_id = enqueue(database, kind, {"order_id": 4, "event": "paid"}, max_attempts=1)
    [job] = jobs.claim(database, "worker-a", 1, lease_seconds=30, now=datetime.now(UTC) + timedelta(seconds=1))
    assert jobs.fail(database, job, error, **BACKOFF) == "dead"
    return job_id


@pytest.fixture
def queue(database):
    """Six jobs: emails and no-ops, the two oldest dead. Returns {name: id}."""
    ids = {"dead email": make_dead(database), "dead noop": make_dead(database, "noop", "RuntimeError: boom")}
    ids["email 1"] = enqueue(database, "email.order", {"order_id": 1, "event": "created"})
    ids["noop 1"] = enqueue(database, "noop", {})
    ids["email 2"] = enqueue(database, "email.order", {"order_id": 2, "event": "created"})
    ids["noop 2"] = enqueue(database, "noop", {})
    return ids


def listed(client, admin, query=""):
    response = client.get(f"/v1/jobs{query}", headers=admin)
    assert response.status == 200, response
    return response.json()


def test_jobs_are_listed_newest_first_with_their_payloads(client, admin, queue):
    body = listed(client, admin)
    assert [job["id"] for job in body["data"]] == sorted(queue.values(), reverse=True)
    newest = body["data"][0]
    assert (newest["kind"], newest["status"], newest["payload"]) == ("noop", "queued", {})
    assert set(newest) == {"id", "kind", "payload", "status", "attempts", "max_attempts", "run_at", "locked_until",
                           "locked_by", "last_error", "unique_key", "created_at", "updated_at", "started_at",
                           "finished_at", "traceparent", "tracestate"}
    email = next(job for job in body["data"] if job["id"] == queue["email 1"])
    assert email["payload"] == {"order_id": 1, "event": "created"}  # JSON, not a string of it
    assert body["pagination"] == {"limit": 20, "has_more": False, "next_cursor": None}


@pytest.mark.parametrize("query, names", [
    ("?status=dead", ["dead noop", "dead email"]),
    ("?kind=email.order", ["email 2", "email 1", "dead email"]),
    ("?kind=noop&status=queued", ["noop 2", "noop 1"]),
    ("?status=done", []),
    ("?kind=report.export", []),
])
def test_jobs_filter_by_status_and_kind(client, admin, queue, query, names):
    assert [job["id"] for job in listed(client, admin, query)["data"]] == [queue[name] for name in names]


def test_following_next_links_visits_every_job_once_and_keeps_the_filter(client, admin, queue):
    seen, link = [], "/v1/jobs?kind=email.order&limit=2"
    while link:
        body = listed(client, admin, link.removeprefix("/v1/jobs"))
        seen += [job["id"] for job in body["data"]]
        link = body["links"].get("next")
        assert link is None or "kind=email.order" in link
    assert seen == [queue["email 2"], queue["email 1"], queue["dead email"]]
    by_offset = listed(client, admin, "?limit=2&offset=2&sort=id")["data"]
    assert [job["id"] for job in by_offset] == sorted(queue.values())[2:4]


@pytest.mark.parametrize("query, detail", [
    ("?status=lost", "'status' must be one of: queued, running, done, dead"),
    ("?kind=Email", "'kind' must be a job kind, such as email.order"),
    ("?kind=" + "a" * 101, "'kind' must be a job kind, such as email.order"),
    ("?sort=kind", "cannot sort by 'kind'; choose from id"),
    ("?state=dead", "unknown query parameter(s): state"),
])
def test_bad_list_parameters_are_400(checker, query, detail):
    assert_problem(checker.client.get(f"/v1/jobs{query}", headers=checker.admin), 400, detail)


def test_one_job(client, admin, queue):
    response = client.get(f"/v1/jobs/{queue['dead email']}", headers=admin)
    assert response.status == 200
    job = response.json()
    assert (job["status"], job["attempts"], job["max_attempts"]) == ("dead", 1, 1)
    assert job["last_error"] == "SMTPConnectError: connection refused"
    assert job["finished_at"] is not None and job["locked_by"] == "worker-a"  # who ran it last
    assert_problem(client.get("/v1/jobs/999", headers=admin), 404, "job 999 does not exist")


def test_a_dead_job_is_queued_again_with_all_its_attempts(client, admin, queue, database):
    response = client.post(f"/v1/jobs/{queue['dead email']}/retry", headers=admin)
    assert response.status == 200, response
    job = response.json()
    assert (job["id"], job["status"], job["attempts"], job["finished_at"]) == (queue["dead email"], "queued", 0, None)
    assert [job["id"] for job in listed(client, admin, "?status=dead")["data"]] == [queue["dead noop"]]
    claimed = jobs.claim(database, "worker-b", 10, lease_seconds=30, now=datetime.now(UTC) + timedelta(seconds=60))
    # Due now, after the four that waited: it joins the end of the queue, with its first attempt.
    assert [(job.id, job.attempts) for job in claimed][-1] == (queue["dead email"], 1)


@pytest.mark.parametrize("name, status", [("email 1", "queued"), ("noop 1", "done")])
def test_only_a_dead_job_can_be_retried(client, admin, queue, database, name, status):
    if status == "done":
        [job] = jobs.claim(database, "worker-a", 1, lease_seconds=30, now=datetime.now(UTC) + timedelta(seconds=1))
        jobs.complete(database, job)
        name = next(name for name, job_id in queue.items() if job_id == job.id)
    response = client.post(f"/v1/jobs/{queue[name]}/retry", headers=admin)
    assert_problem(response, 409, f"job {queue[name]} is {status}; only a dead job can be retried")
    assert response.json()["current_status"] == status
    assert_problem(client.post("/v1/jobs/999/retry", headers=admin), 404, "job 999 does not exist")


@pytest.mark.parametrize("method, path", [("GET", "/v1/jobs"), ("GET", "/v1/jobs/1"), ("POST", "/v1/jobs/1/retry")])
def test_the_queue_is_for_admins_only(checker, method, path):
    assert checker.client.request(method, path).status == 401
    assert_problem(checker.client.request(method, path, headers=checker.customer), 403)
