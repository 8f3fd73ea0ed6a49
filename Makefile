# make test   create .venv, install the pinned test requirements, run the whole suite
#             (a few minutes; the slowest tests are listed at the end)
# make run    serve on http://127.0.0.1:8000 (SQLite under var/)
# make bench  load-test this project alone and print req/s and latency percentiles;
#             needs wrk, an HTTP load generator (apt-get install wrk, or brew install wrk)
# make reset  start over: remove the data (var/: database, development secret, cookie jar), keep .venv
# make clean  remove .venv and var/

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# How many of the slowest tests `make test` lists, so a test that grows slow is noticed.
SLOWEST_TESTS := 15

.PHONY: test run bench reset clean

test: $(STAMP)
	$(VENV)/bin/python -m pytest --durations=$(SLOWEST_TESTS)

# Reinstall only when a requirements file changes.
$(STAMP): requirements.txt requirements-test.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt -c constraints.txt
	touch $(STAMP)

run:
	$(PYTHON) server.py

bench:
	bash bench/bench.sh

reset:
	rm -rf var

clean: reset
	rm -rf $(VENV)
