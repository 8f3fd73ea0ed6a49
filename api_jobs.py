"""Handlers for the job queue as an admin sees it: what ran, what failed, and a second chance.

    $ curl 'localhost:8000/v1/jobs?status=dead' -H "Authorization: Bearer $ADMIN_TOKEN"
    {"data": [{"id": 12, "kind": "email.order", "payload": {"order_id": 4, "event": "paid"},
               "status": "dead", "attempts": 10, "max_attempts": 10,
               "last_error": "SMTPConnectError: ...", ...}],
     "pagination": {...}, "links": {...}}

    $ curl -X POST localhost:8000/v1/jobs/12/retry -H "Authorization: Bearer $ADMIN_TOKEN"
    {"id": 12, "status": "queued", "attempts": 0, ...}

Lists page like every other list (pagination.py), newest first by default.
"""


import exports
import jobs
import pagination
import sql_jobs
from schemas import describe, page_of
from validation import Query, query_names
from web import Conflict, NotFound, Response

FILTERS = [
    Query("status", "choice", choices=jobs.STATUSES),
    # Kinds are names such as "email.order"; anything else cannot match a job, so it is a 400.
    Query("kind", "string", pattern=r"[a-z][a-z0-9_.]{0,99}", example="email.order",
          message="'kind' must be a job kind, such as email.order"),
]
LIST_QUERY = pagination.page_parameters(sql_jobs.SORTABLE_COLUMNS, "-id") + FILTERS
LIST_PARAMETERS = query_names(LIST_QUERY)


@describe(response=page_of("Job"), query=LIST_QUERY, response_headers=("Link",))
def list_jobs(request):
    """GET /v1/jobs (admin): jobs newest first, filtered by `status` and `kind`."""
    query = request.query
    pagination.reject_unknown_parameters(query, LIST_PARAMETERS)
    filters = _job_filters(request)
    keys = request.services.settings.secret_keys
    page = pagination.parse_page(query, sortable=sql_jobs.SORTABLE_COLUMNS, default_sort="-id", filters=filters,
                                 keys=keys)
    found = jobs.list_jobs(request.services.database, sort=page.sort, limit=page.limit + 1, offset=page.offset,
                           after=page.after, **filters)
    body, link_header = pagination.envelope(found, page, path=request.path, query_params=filters, keys=keys)
    return Response.json(body, headers=[("Link", link_header)] if link_header else None)


@describe(response="Job", errors=(404,))
def get_job(request):
    """GET /v1/jobs/{id} (admin): one job, its payload, attempts and last error; for a CSV
    export, what the file holds and, once written, `links.download`."""
    job_id = request.path_params["id"]
    database = request.services.database
    job = jobs.get_job(database, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return exports.describe_job(database, job)  # an export's job links to its file when done


@describe(response="Job", errors=(404, 409))
def retry_job(request):
    """POST /v1/jobs/{id}/retry (admin): queue a dead job again with all its attempts; 409
    for a job that is not dead (it is still waiting or running, or it succeeded)."""
    job_id = request.path_params["id"]
    try:
        job = jobs.retry(request.services.database, job_id)
    except jobs.NotDead as refused:
        raise Conflict(f"job {job_id} is {refused.status}; only a dead job can be retried",
                       extra={"current_status": refused.status}) from None
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job


def _job_filters(request):
    """The FILTERS the request sets, each read (and checked) by its spec."""
    filters = {}
    for spec in FILTERS:
        value = spec.read(request.query)
        if value is not None:
            filters[spec.name] = value
    return filters
