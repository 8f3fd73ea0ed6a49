"""Handlers for reports (admin): sales per day or per item over a range of days.

    $ curl 'localhost:8000/v1/reports/sales?from=2026-11-01&to=2026-11-30&group_by=day' \\
        -H "Authorization: Bearer $ADMIN_TOKEN"
    {"from": "2026-11-01", "to": "2026-11-30", "group_by": "day",
     "data": [{"day": "2026-11-27", "orders": 3, "items_sold": 7, "revenue_cents": 10450,
               "running_revenue_cents": 10450}, ...]}

`from` and `to` are UTC days, both included; without them the report covers the last
DEFAULT_DAYS days up to today. The SQL, and what counts as a sale, is in sql_reports.py.
"""

import datetime as dt

import db
import pagination
import sql_reports
from schemas import describe
from validation import Query, parse_date, query_names
from web import BadRequest

GROUPINGS = ("day", "item")
GROUP_BY = Query("group_by", "choice", choices=GROUPINGS, default="day")
REPORT_QUERY = [
    Query("from", "date", description="the first day (UTC); default: 29 days before `to`"),
    Query("to", "date", description="the last day (UTC); default: today"),
    GROUP_BY,
    pagination.LIMIT,  # the number of items, with group_by=item only
]
REPORT_PARAMETERS = query_names(REPORT_QUERY)
DEFAULT_DAYS = 30
# A year of days at most: the day report is one row per day, and the scan grows with the range.
MAX_DAYS = 366
# Days a report may name: the range before them, and the day after them, must exist.
FIRST_DAY, LAST_DAY = dt.date(1000, 1, 1), dt.date(9998, 12, 31)


@describe(response="SalesReport", query=REPORT_QUERY)
def sales_report(request):
    """GET /v1/reports/sales?from=&to=&group_by=day|item[&limit=] (admin)."""
    query = request.query
    pagination.reject_unknown_parameters(query, REPORT_PARAMETERS)
    group_by = GROUP_BY.read(query)
    if group_by != "item" and "limit" in query:
        raise BadRequest("'limit' applies to group_by=item only")
    limit = pagination.parse_limit(query)
    first_day, last_day = _day_range(request)
    # The range as stored text: from the first day's midnight to the midnight after the last.
    start = db.utc_text(dt.datetime.combine(first_day, dt.time(), dt.UTC))
    end = db.utc_text(dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(), dt.UTC))
    with request.services.database.connection() as connection:
        if group_by == "day":
            rows = sql_reports.sales_by_day(connection, start, end)
        else:
            rows = sql_reports.sales_by_item(connection, start, end, limit)
    return {"from": first_day.isoformat(), "to": last_day.isoformat(), "group_by": group_by, "data": rows}


def _day_range(request):
    last_day = _day(request, "to") or dt.datetime.now(dt.UTC).date()
    first_day = _day(request, "from") or last_day - dt.timedelta(days=DEFAULT_DAYS - 1)
    if first_day > last_day:
        raise BadRequest("'from' is after 'to'")
    if (last_day - first_day).days + 1 > MAX_DAYS:
        raise BadRequest(f"the range may cover at most {MAX_DAYS} days")
    return first_day, last_day


def _day(request, name):
    """The day a parameter names, or None when it is absent; 400 unless YYYY-MM-DD in range."""
    text = request.query_value(name)
    if text is None:
        return None
    day = parse_date(text)
    if day is None or not FIRST_DAY <= day <= LAST_DAY:
        raise BadRequest(f"'{name}' must be a day written YYYY-MM-DD, from {FIRST_DAY} to {LAST_DAY}")
    return day
