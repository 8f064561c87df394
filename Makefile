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

# The optional compiled fast path of `classify` (native/, Rust via PyO3; needs cargo):
# rebuilt in release mode whenever its sources change.
NATIVE_SOURCES := $(wildcard native/src/*.rs) native/Cargo.toml native/pyproject.toml

$(VENV)/.native-installed: $(BIN)/bounce-consumer $(NATIVE_SOURCES)
	$(BIN)/pip install -q ./native
	touch $@

install: $(BIN)/bounce-consumer $(VENV)/.native-installed

# Lint, types, then the whole test suite.  .ci/run calls exactly this.
test: install
	$(BIN)/ruff check consumer tests bench
	$(BIN)/mypy
	$(BIN)/pytest

# The whole job on a real broker: start the local Kafka broker unless
# KAFKA_BOOTSTRAP_SERVERS names one, feed every bundled sample payload through the
# worker, show the outputs and bounce rates.  `deploy/kafka/local-kafka stop` ends it.
demo: install
	@bootstrap="$${KAFKA_BOOTSTRAP_SERVERS:-$$(deploy/kafka/local-kafka start)}" && \
	$(BIN)/bounce-consumer demo --bootstrap "$$bootstrap" --samples tests/fixtures

bench: install
	bench/classify.sh 200000
