# make test   create .venv, install the pinned test requirements, run the whole suite
# make run    serve on http://127.0.0.1:8000 (SQLite under var/)
# make bench  load-test this project alone with wrk and print req/s and latency percentiles
# make clean  remove .venv and var/

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: test run bench clean

test: $(STAMP)
	$(VENV)/bin/python -m pytest

# Reinstall only when a requirements file changes.
$(STAMP): requirements.txt requirements-test.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt -c constraints.txt
	touch $(STAMP)

run:
	$(PYTHON) server.py

bench:
	bash bench/bench.sh

clean:
	rm -rf $(VENV) var
