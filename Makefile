# The two commands of the README: `make run` and `make test`. Each creates .venv when it is
# missing and installs what it needs, so both work on a fresh machine with only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test lint format bench bench-full bench-postgres bench-bus torture clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/celflow run

# pytest exits 5 when it collects no test; that is not a failure of the suite itself.
test: $(VENV)/.installed-test
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench tools app celflow.py
	$(BIN)/ruff format --check src tests bench tools app celflow.py
	$(BIN)/mypy
	cd src && PYTHONPATH=$(CURDIR)/tools $(CURDIR)/$(BIN)/lint-imports --no-cache $(CURDIR)/pyproject.toml

format: $(VENV)/.installed-test
	$(BIN)/ruff format src tests bench tools app celflow.py
	$(BIN)/ruff check --fix src tests bench tools app celflow.py

# bench: 200k events, 3 repeats, a few minutes. bench-full: 10M events streamed (long on 2 cores).
bench: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py

bench-full: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py --full

# bench-postgres: PostgreSQL beside SQLite (ingest, queries, migration), 200k events, on a running server
# (psycopg comes with the test extras); BENCH_PG_ARGS="--events 1000000 --repeats 1" for more.
BENCH_PG_ARGS ?=
bench-postgres: $(VENV)/.installed-bench $(VENV)/.installed-test
	$(BIN)/python bench/postgres.py $(BENCH_PG_ARGS)

# bench-bus: the NATS JetStream path end to end (BusPublisher, its own nats-server, ingest-worker -> SQLite /
# PostgreSQL), 200k events, 3 repeats (~4-6 min); BENCH_BUS_ARGS="--events 50000 --repeats 1" for a quick look.
BENCH_BUS_ARGS ?=
bench-bus: $(VENV)/.installed-bench $(VENV)/.installed-test
	$(BIN)/python bench/bus.py $(BENCH_BUS_ARGS)

# torture: the reliability suite (tests/reliability) at full counts, then its table.
TORTURE_REPORT ?= $(CURDIR)/.torture-report.jsonl
# The 1,000 SIGKILLs run beside the rest (one process each: two cores); both write the table's rows.
CRASH_TEST := tests/reliability/test_crash.py::test_random_sigkills_lose_no_acknowledged_event
TORTURE_ENV := CELFLOW_TORTURE=1 CELFLOW_TORTURE_REPORT=$(TORTURE_REPORT)
torture: $(VENV)/.installed-test
	rm -f $(TORTURE_REPORT)
	@$(TORTURE_ENV) $(BIN)/pytest $(CRASH_TEST) -q -p no:cacheprovider --timeout 3600 & crash=$$!; \
	$(TORTURE_ENV) $(BIN)/pytest tests/reliability --deselect $(CRASH_TEST) -q -p no:cacheprovider --timeout 3600; \
	rest=$$?; wait $$crash; crash_rc=$$?; \
	$(BIN)/python tests/reliability/report.py $(TORTURE_REPORT); \
	[ $$rest -eq 0 ] && [ $$crash_rc -eq 0 ]

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
