# Everything a fresh machine needs: `make demo` runs the example, `make test` runs the whole suite.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The example end to end: dry-run (exit 2 by design: 3 items are blocked, which is not a failure
# here), then the full run of the 49 others into the embedded SQLite CMS, examples/blog/cms.db.
demo: setup
	@$(BIN)/batchgate dry-run --job examples/blog/job.yaml --json dry-run.json; \
	  code=$$?; [ $$code -eq 0 ] || [ $$code -eq 2 ] || exit $$code; \
	  echo "(dry-run exit code $$code: 2 means some items are blocked and will be skipped)"; echo
	$(BIN)/batchgate full --job examples/blog/job.yaml --json full.json

test: setup
	./scripts/ensure-postgres.sh
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check batchgate blocks tasks flows deployments tests benchmarks examples
	$(BIN)/ruff format --check batchgate blocks tasks flows deployments tests benchmarks examples

bench: setup
	$(BIN)/python benchmarks/validate_rows.py
	$(BIN)/python benchmarks/full_run.py all

clean:
	rm -rf $(VENV) .batchgate dry-run.json full.json examples/blog/cms.db*
