"""Handlers for reports (admin): sales per day or per item over a range of days, and the
CSV export of the orders of such a range (made by a background job: exports.py).

    $ curl 'localhost:8000/v1/reports/sales?from=2026-11-01&to=2026-11-30&group_by=day' \\
        -H "Authorization: Bearer $ADMIN_TOKEN"
    {"from": "2026-11-01", "to": "2026-11-30", "group_by": "day",
     "data": [{"day": "2026-11-27", "orders": 3, "items_sold": 7, "revenue_cents": 10450,
               "running_revenue_cents": 10450}, ...]}

    $ curl -i -X POST localhost:8000/v1/reports/orders-export -H "Authorization: Bearer $ADMIN_TOKEN" \\
        -H 'Content-Type: application/json' -d '{"from": "2026-11-01", "to": "2026-11-30"}'
    HTTP/1.1 202 Accepted
    Location: /v1/jobs/7

`from` and `to` are UTC days, both included; without them the report covers the last
DEFAULT_DAYS days up to today. The same rules hold for both, in the query string of the
report (a bad value is a 400, as for any query parameter) and in the JSON body of the
export (422 naming each bad field; no body at all asks for the default days). The SQL, and
what counts as a sale, is in sql_reports.py.
"""

import datetime as dt

import db
import exports
import pagination
import sql_reports
from schemas import describe
from validation import Field, Query, parse_date, query_names
from web import BadRequest, Response, TooManyRequests, UnprocessableContent

GROUPINGS = ("day", "item")
GROUP_BY = Query("group_by", "choice", choices=GROUPINGS, default="day")
# Days a report may name: the range before them, and the day after them, must exist.
FIRST_DAY, LAST_DAY = dt.date(1000, 1, 1), dt.date(9998, 12, 31)
# The years from FIRST_DAY's to LAST_DAY's, for the document (_day checks the days themselves).
IN_RANGE = {"pattern": "^(?:[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-"}
REPORT_QUERY = [
    Query("from", "date", checked_elsewhere=IN_RANGE,
          description=f"the first day (UTC), {FIRST_DAY} to {LAST_DAY}; default: 29 days before `to`"),
    Query("to", "date", checked_elsewhere=IN_RANGE, description="the last day (UTC); default: today"),
    GROUP_BY,
    pagination.LIMIT,  # the number of items, with group_by=item only
]
REPORT_PARAMETERS = query_names(REPORT_QUERY)
DEFAULT_DAYS = 30
# A year of days at most: the day report is one row per day, and the scan grows with the range.
MAX_DAYS = 366
# The export's body, both optional; its days are checked by _day_range, as the report's are.
EXPORT_BODY = [
    Field("from", "date", required=False, checked_elsewhere=IN_RANGE,
          description=f"the first day (UTC), {FIRST_DAY} to {LAST_DAY}; default: 29 days before `to`"),
    Field("to", "date", required=False, checked_elsewhere=IN_RANGE, description="the last day (UTC); default: today"),
]
EXPORT_FIELDS = tuple(field.name for field in EXPORT_BODY)
# With MAX_EXPORTS_IN_PROGRESS being made, come back in about the time a large one takes.
EXPORTS_BUSY_RETRY_AFTER_SECONDS = 30


@describe(response="SalesReport", query=REPORT_QUERY)
def sales_report(request):
    """GET /v1/reports/sales?from=&to=&group_by=day|item[&limit=] (admin)."""
    query = request.query
    pagination.reject_unknown_parameters(query, REPORT_PARAMETERS)
    group_by = GROUP_BY.read(query)
    if group_by != "item" and "limit" in query:
        raise BadRequest("'limit' applies to group_by=item only")
    limit = pagination.parse_limit(query)
    first_day, last_day, errors = _day_range(request.query_value("from"), request.query_value("to"))
    if errors:
        field, message = errors[0]["field"], errors[0]["message"]
        raise BadRequest(f"'{field}' {message}" if field else message)
    # The range as stored text: from the first day's midnight to the midnight after the last.
    start = db.utc_text(dt.datetime.combine(first_day, dt.time(), dt.UTC))
    end = db.utc_text(dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(), dt.UTC))
    with request.services.database.connection() as connection:
        if group_by == "day":
            rows = sql_reports.sales_by_day(connection, start, end)
        else:
            rows = sql_reports.sales_by_item(connection, start, end, limit)
    return {"from": first_day.isoformat(), "to": last_day.isoformat(), "group_by": group_by, "data": rows}


@describe(response="Job", status=202, body=EXPORT_BODY, body_required=False, response_headers=("Location",))
def orders_export(request):
    """POST /v1/reports/orders-export (admin): 202 with the export's job, and its Location.

    The body is optional: {"from": "YYYY-MM-DD", "to": "YYYY-MM-DD"}, either or both; no
    body at all means the last DEFAULT_DAYS days. The job and the export's record are
    committed together before the answer; the file comes later (GET the Location).
    """
    document = {} if request.header("Content-Length") in (None, "", "0") else request.json()
    if not isinstance(document, dict):
        raise UnprocessableContent([{"field": "", "message": "the body must be a JSON object"}])
    unknown = [{"field": name, "message": "is not a known field"} for name in document if name not in EXPORT_FIELDS]
    first_day, last_day, errors = _day_range(document.get("from"), document.get("to"))
    if unknown or errors:
        raise UnprocessableContent(unknown + errors)
    try:
        job = exports.request_orders_export(request.services.database, request.user["id"], first_day, last_day)
    except exports.TooManyInProgress:
        raise TooManyRequests(
            f"{exports.MAX_EXPORTS_IN_PROGRESS} exports are being made already; try again when one is done",
            headers=[("Retry-After", str(EXPORTS_BUSY_RETRY_AFTER_SECONDS))]) from None
    return Response.json(job, 202, [("Location", f"/v1/jobs/{job['id']}")])


def _day_range(from_text, to_text):
    """(first day, last day, errors) from the texts of `from` and `to` (None: absent).

    Each error is {"field", "message"}; "field" is "" for the range as a whole. The caller
    answers them as it answers bad input: a 400 for a query string, a 422 for a body.
    """
    errors = []
    last_day = _day("to", to_text, errors)
    first_day = _day("from", from_text, errors)
    if errors:
        return None, None, errors
    last_day = last_day or dt.datetime.now(dt.UTC).date()
    first_day = first_day or last_day - dt.timedelta(days=DEFAULT_DAYS - 1)
    if first_day > last_day:
        errors.append({"field": "from", "message": "is after 'to'"})
    elif (last_day - first_day).days + 1 > MAX_DAYS:
        errors.append({"field": "", "message": f"the range may cover at most {MAX_DAYS} days"})
    return first_day, last_day, errors


def _day(name, text, errors):
    """The day `text` names, or None when it is absent; an error unless YYYY-MM-DD in range."""
    if text is None:
        return None
    day = parse_date(text) if isinstance(text, str) else None  # a JSON body may hold anything
    if day is None or not FIRST_DAY <= day <= LAST_DAY:
        errors.append({"field": name, "message": f"must be a day written YYYY-MM-DD, from {FIRST_DAY} to {LAST_DAY}"})
    return day
