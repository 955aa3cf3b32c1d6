# meterwax — the verbs a developer needs. Each creates .venv itself when it is missing.
#
#   make demo   run the demo on the embedded default (file input, local lake, no broker)
#   make test   lint, then the whole test suite against a real Kafka broker it starts itself
#   make lint   ruff check + ruff format --check
#
# `make test` starts a private broker (scripts/kafka) unless METERWAX_KAFKA_BOOTSTRAP names
# one already running (e.g. `docker compose up -d kafka` → 127.0.0.1:9092), and always stops
# the broker it started, also when tests fail. Pass pytest arguments with PYTEST_ARGS="...";
# the suite runs on PYTEST_WORKERS=2 pytest-xdist workers (a test file stays on one worker).
#
#   make bench  meterwax bench (README "Benchmark"); arguments with BENCH_ARGS="..."

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2
BENCH_ARGS ?=

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/meterwax demo --lake demo-lake

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The S3 test server's first build (Go, a minute or two) starts in the background so that it
# overlaps the broker's start and the first tests; its fixture waits on the same build lock.
test: lint
	@(bash scripts/s3 build >/dev/null 2>&1 &)
	@PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/with-kafka \
		$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: $(STAMP)
	@PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/with-kafka $(BIN)/meterwax bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-quix demo-lake .pytest_cache .ruff_cache .hypothesis
