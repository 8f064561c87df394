# The two commands of the README.  Both install what they need into .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test demo bench

$(BIN)/bounce-consumer: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/bounce-consumer

# Lint, types, then the whole test suite.  .ci/run calls exactly this.
test: install
	$(BIN)/ruff check consumer tests bench
	$(BIN)/mypy
	$(BIN)/pytest

# Classify every bundled sample payload (all eight formats) and show the outputs.
demo: install
	@for f in tests/fixtures/*/*.json; do $(BIN)/python -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))" $$f; done > $(VENV)/demo.jsonl
	$(BIN)/bounce-consumer classify $(VENV)/demo.jsonl --suppressions $(VENV)/demo-suppressions.jsonl --errors $(VENV)/demo-errors.jsonl
	@echo "--- suppression updates:"; cat $(VENV)/demo-suppressions.jsonl
	@echo "--- dead letters:"; cat $(VENV)/demo-errors.jsonl

bench: install
	bench/classify.sh 200000
