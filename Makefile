# Everything a fresh machine needs: `make demo` runs the example, `make test` runs the whole suite.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench bench-all clean serve stop

setup: $(VENV)/.installed

# the example connector package too: tests/test_rest_destination.py uses its entry point
$(VENV)/.installed: pyproject.toml examples/rest-destination/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet -e examples/rest-destination
	touch $@

# The example end to end, as one Prefect flow: dry-run, a sample of 3 drafts, your approval, then
# the full run into the embedded SQLite CMS, examples/blog/cms.db. The 3 blocked items are left
# out (--allow-blocked). In a terminal it asks "Approve the sample? [y/N]"; `make demo YES=1`, or
# running it without a terminal, approves unattended.
demo: setup
	@yes=$(if $(YES),--yes,); [ -t 0 ] || yes=--yes; \
	  $(BIN)/batchgate pipeline --job examples/blog/job.yaml --allow-blocked $$yes

# The test files run side by side, one process per core, at most 4 (each starts Prefect servers
# and PostgreSQL connections of its own; TEST_WORKERS=0: one process); a file's
# tests stay together, in one process, since several share a stack started for the file.
TEST_WORKERS ?= auto
test: setup
	./scripts/ensure-postgres.sh
	./scripts/ensure-browser.sh
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile

lint: setup
	$(BIN)/ruff check batchgate blocks tasks flows deployments tests benchmarks examples
	$(BIN)/ruff format --check batchgate blocks tasks flows deployments tests benchmarks examples

# The local stack for the Prefect UI: server, work pool, blocks, deployments and a worker.
serve: setup
	./scripts/serve.sh

stop:
	./scripts/stop.sh

# The four speed figures (SQLite and PostgreSQL against a raw loop, Webflow against 100 x R,
# Notion requests against one read, a second dry-run's wall time), beside the main before them.
# `make bench QUICK=1` paces the fake Notion at 30 requests/s instead of Notion's 3.
bench: setup
	./scripts/ensure-postgres.sh
	$(BIN)/python benchmarks/speed.py $(if $(QUICK),--quick,)

# Every other benchmark: validation, rate, memory, Notion reading.
bench-all: bench
	$(BIN)/python benchmarks/validate_rows.py
	$(BIN)/python benchmarks/full_run.py rate
	$(BIN)/python benchmarks/full_run.py memory
	$(BIN)/python benchmarks/notion_read.py

clean:
	rm -rf $(VENV) .batchgate dry-run.json full.json examples/blog/cms.db*
