"""What tracing costs a request: the WSGI app called in process, with and without the
trace_context layer, in alternating rounds (so that a machine busy with something else
slows both alike), for GET /health and GET /v1/items/1, with and without a traceparent.

    python bench/tracing_cost.py            (taskset -c 1 python ... pins it to one core)

Prints the median and the fastest round, in microseconds per request. The access log is
on, written to a stream that discards it: its trace_id field is part of the cost. The
cache is off, so the item is read from a SQLite database in a temporary folder.
"""

import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import config  # after the path is set: the modules are in the parent folder
import db
import middleware
import migrate
import seed
import server
from observe import JSONLogger

REQUESTS_PER_ROUND = 10_000
ROUNDS = 12
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Discard(io.TextIOBase):
    def write(self, text):
        return len(text)


def build_app(settings, database, *, traced):
    """The app as server.py builds it, or with the trace_context layer passing straight through."""
    layer = middleware.trace_context
    if not traced:
        middleware.trace_context = lambda request, call_next: call_next(request)
    try:
        return server.create_app(settings, database=database, logger=JSONLogger(stream=Discard()))
    finally:
        middleware.trace_context = layer


def environ(path, traceparent):
    base = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "bench",
            "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "bench",
            "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr}
    return dict(base, HTTP_TRACEPARENT=traceparent) if traceparent else base


def microseconds_per_request(app, path, traceparent):
    def start_response(status, headers, exc_info=None):
        pass

    started = time.perf_counter()
    for _ in range(REQUESTS_PER_ROUND):
        b"".join(app(environ(path, traceparent), start_response))
    return (time.perf_counter() - started) / REQUESTS_PER_ROUND * 1e6


def main():
    folder = tempfile.mkdtemp()
    settings = config.load_settings({"DATABASE_URL": f"sqlite:///{folder}/bench.db", "SECRET_KEY": "b" * 40,
                                     "CACHE": "off", "CORS_ORIGINS": "https://shop.example",
                                     "RATE_LIMITS": "default=1000000/1,write=1000000/1,auth=1000000/1"})
    database = db.open_database(settings.database_url)
    migrate.migrate(database)
    seed.seed_items(database, 30)
    apps = {"on": build_app(settings, database, traced=True), "off": build_app(settings, database, traced=False)}
    print(f"{'request':36} {'tracing':8} {'median µs':>10} {'fastest µs':>11}")
    for path in ("/health", "/v1/items/1"):
        for traceparent in (None, TRACEPARENT):
            timings = {"on": [], "off": []}
            for round_number in range(ROUNDS):
                for name in ("on", "off") if round_number % 2 else ("off", "on"):
                    timings[name].append(microseconds_per_request(apps[name], path, traceparent))
            label = f"GET {path}" + (" with traceparent" if traceparent else "")
            for name in ("off", "on"):
                print(f"{label:36} {name:8} {statistics.median(timings[name]):10.2f} {min(timings[name]):11.2f}")
    database.close()


if __name__ == "__main__":
    main()
