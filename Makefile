# The README's two commands: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,kafka,bench]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/flowsql demo

lint: $(STAMP)
	$(BIN)/ruff check flowsql tests
	$(BIN)/ruff format --check flowsql tests

typecheck: $(STAMP)
	$(BIN)/mypy flowsql

# On every core; the Kafka tests share one worker and so one broker (loadgroup).
pytest: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadgroup

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/flowsql bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
