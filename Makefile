# PTI Sync: `make run` runs the whole product on demo defaults; `make test` runs the whole suite.
# Both install what they need into .venv first; re-running is fast (the install is skipped when nothing changed).

PYTHON ?= $(shell for p in python3.12 python3.11 python3.13 python3; do $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && echo $$p && break; done)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-postgres test-chaos bench lint browser clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "PTI Sync needs Python 3.11 or newer on the PATH."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) scripts/run.py

browser:
	@scripts/ensure-chromium

test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

# The database tests again, on PostgreSQL (DATABASE_URL must point at an empty, reachable database).
test-postgres: install
	$(PY) -m pytest -m db $(PYTEST_ARGS)

# The chaos scenarios (tests/chaos): the real stack broken while it works; several minutes, so not in `make test`.
# They start their own Redis, simulators, gunicorn, workers and cron; one restarts a PostgreSQL of its own (initdb).
test-chaos: install
	$(PY) -m pytest -m chaos tests/chaos $(PYTEST_ARGS)

bench: install
	$(PY) -m bench

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache
