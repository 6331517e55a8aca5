# Two commands for a fresh machine: `make demo` and `make test`. Each creates .venv on first use and
# installs detzoo with the pinned, tested versions from constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint benchmark clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/detzoo demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks hubconf.py

benchmark: $(STAMP)
	$(BIN)/python benchmarks/bench_ssd.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
