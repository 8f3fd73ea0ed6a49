# make test   create .venv, install the pinned test requirements, run the whole suite
#             (about eleven minutes; the slowest tests are listed at the end)
# make run    serve on http://127.0.0.1:8000 (SQLite under var/)
# make bench  load-test this project alone and print req/s and latency percentiles;
#             needs wrk, an HTTP load generator (apt-get install wrk, or brew install wrk)
# make fuzz   a longer schemathesis campaign than `make test` runs: every check, FUZZ_EXAMPLES
#             (default 100) examples per operation, as a customer and as an admin, on SQLite and,
#             where it answers, PostgreSQL (tests/test_schemathesis.py); several minutes
# make lint   ruff (style, bugs, security rules) and mypy (types), as configured in pyproject.toml
# make mutate mutation testing of the modules that guard security and money (tools/mutate.py;
#             MODULES="auth pagination" for some of them); slow, not part of CI
# make reset  start over: remove the data (var/: database, development secret, cookie jar), keep .venv
# make clean  remove .venv and var/

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# How many of the slowest tests `make test` lists, so a test that grows slow is noticed.
SLOWEST_TESTS := 15
# Examples per operation and phase in `make fuzz` (`make test` runs 8).
FUZZ_EXAMPLES ?= 100

.PHONY: test fuzz lint mutate run bench reset clean

test: $(STAMP)
	$(VENV)/bin/python -m pytest --durations=$(SLOWEST_TESTS)

fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV)/bin/python -m pytest tests/test_schemathesis.py --durations=4

# Reinstall only when a requirements file changes.
$(STAMP): requirements.txt requirements-test.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt -c constraints.txt
	touch $(STAMP)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

mutate: $(DEV_STAMP)
	$(VENV)/bin/python tools/mutate.py $(MODULES)

# The developer tools on top of the test requirements, again only when their file changes.
$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	touch $(DEV_STAMP)

run:
	$(PYTHON) server.py

bench:
	bash bench/bench.sh

reset:
	rm -rf var

clean: reset
	rm -rf $(VENV)
