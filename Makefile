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

# The dry-run of examples/blog: exits 2 by design (3 items are blocked), which is not a failure here.
demo: setup
	@$(BIN)/batchgate dry-run --job examples/blog/job.yaml --json out.json; \
	  code=$$?; [ $$code -eq 0 ] || [ $$code -eq 2 ] || exit $$code; \
	  echo "(exit code $$code: 2 means some items are blocked; the JSON report is in out.json)"

test: setup
	./scripts/ensure-postgres.sh
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check batchgate blocks tasks flows deployments tests benchmarks examples
	$(BIN)/ruff format --check batchgate blocks tasks flows deployments tests benchmarks examples

bench: setup
	$(BIN)/python benchmarks/validate_rows.py

clean:
	rm -rf $(VENV) .batchgate out.json
