# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck imports unit protos clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "katalyst-py needs Python 3.11 or newer; this $(PYTHON) is " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## demo: the standalone node for real: a latency-sensitive service, then batch jobs beside it
demo: $(STAMP)
	$(BIN)/katalyst node describe
	$(BIN)/python -m examples.standalone.demo

## test: ruff, mypy --strict, import-linter, then the whole pytest suite (kernel tests included)
test: lint typecheck imports
	KATALYST_RBAC_COVERAGE=1 $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

## protos: regenerate the committed gRPC/protobuf code from katalyst/api/**/*.proto
protos: $(STAMP)
	$(BIN)/python -m katalyst.api.generate

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache *.egg-info
