# The shop as a container image: the same WSGI app under gunicorn, on PostgreSQL and Redis.
#
#   docker build -t shop .
#   docker run --env-file .env -p 127.0.0.1:8000:8000 shop                          the web server
#   docker run --env-file .env shop python server.py migrate                        the release step
#   docker run --env-file .env shop python server.py worker                         the job worker
#
# compose.yaml runs all three beside PostgreSQL, Redis and an SMTP catcher; docs/deploy.md
# puts it behind a TLS proxy. Two stages: the first installs the packages, the second keeps
# only what runs. Nothing secret is in any layer: SECRET_KEY, DATABASE_URL and the others
# come from the environment when a container starts (config.py refuses to start in
# production without SECRET_KEY).

# One base for both stages: the virtual environment built in the first one points at the
# interpreter of this image, so the second must have the very same one.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- 1. builder: the runtime packages, into a virtual environment -------------------------
FROM ${PYTHON_IMAGE} AS builder

# No pip cache in the layer, no version check against the network.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
# Only the requirements first: this layer is rebuilt when they change, not when the code does.
# requirements.txt names the runtime packages (psycopg, psycopg_pool, redis, gunicorn), all
# shipped as wheels, so no compiler is needed even here; constraints.txt pins each version.
COPY requirements.txt constraints.txt /tmp/
RUN /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt -c /tmp/constraints.txt

# -- 2. the image that runs: the slim base, the environment, the code -----------------------
FROM ${PYTHON_IMAGE}

# PYTHONUNBUFFERED: every JSON log line reaches `docker logs` at once. No .pyc files written
# at run time (the code is read-only to the user that runs it). APP_ENV=production: no
# migration on start (`python server.py migrate` is the release step) and no generated secret.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APP_ENV=production \
    WEB_CONCURRENCY=2 \
    MAX_EVENT_STREAMS=4

# A user of its own with no login and no home: a flaw in the app cannot write its code,
# and it is not root in the container.
RUN groupadd --system --gid 10001 shop \
    && useradd --system --uid 10001 --gid shop --no-create-home --shell /usr/sbin/nologin shop

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# The code belongs to root and is only read; .dockerignore keeps .venv, var/, .git, the
# tests and any .env out. var/ is the one place the app writes: the emails when no
# SMTP_URL is set, and the CSV exports (compose mounts a volume there, shared by the web
# processes and the worker; a new volume takes this directory's owner).
COPY . .
RUN mkdir -p var/exports var/outbox && chown -R shop:shop var

# By number: a host or an orchestrator (Kubernetes' runAsNonRoot) can tell 10001 is not root
# without looking inside the image's /etc/passwd.
USER 10001:10001
EXPOSE 8000

# Liveness, with what the slim image has: Python's urllib (there is no curl). urlopen raises
# on anything but a 2xx answer or on no answer within 2 s, and the exit status is not 0.
# Containers of this image that serve no HTTP (the worker, migrate) turn it off: compose.yaml.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]

# Exec form: gunicorn is process 1 and receives the SIGTERM of `docker stop` itself (a shell
# in between would not pass it on). gunicorn then stops accepting and gives its workers
# --graceful-timeout to finish the requests in hand, the same 30 s as the app's own server
# (httpserver.SHUTDOWN_DEADLINE_SECONDS); compose waits longer than that before SIGKILL.
# Workers: gunicorn reads WEB_CONCURRENCY (about one per core; set it when running), each
# with 8 threads (gthread), not gunicorn's default of one request at a time: a live order
# event stream (GET /v1/orders/events) holds a thread for as long as it is open, and on a
# sync worker it would hold the whole process (and be killed at gunicorn's 30 s timeout).
# MAX_EVENT_STREAMS=4 (above) leaves at least 4 threads of each process to other requests.
# No --access-logfile: the app writes one JSON line per request itself (observe.py).
# --no-control-socket: gunicorn would otherwise open a control socket no one here uses.
STOPSIGNAL SIGTERM
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--worker-class", "gthread", "--threads", "8", \
     "--graceful-timeout", "30", "--no-control-socket", "server:app"]
