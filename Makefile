# The README's commands. `make up` and `make test` work on a fresh machine with python3 (3.11+):
# they create .venv and install the pinned dependencies from pyproject.toml first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install up test test-unit test-integration test-outcomes test-e2e test-faults test-cluster test-deploy lint format docs bench bench-backtest profile test-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

## The embedded stack: NATS (JetStream) + four services + replayed market data, mock mode.
up: install
	$(BIN)/tranche up

## Every test ring, the lint, and the compose validation. Non-zero on any failure. Two pytest
## workers (pytest-xdist; a test file stays on one worker, so its module fixtures start once);
## TEST_WORKERS=0 runs them in one process. The 25 slowest tests are listed at the end. Tests
## marked serial (two of every service at once) then run alone: beside another worker they
## starve for CPU on two cores and time out.
TEST_WORKERS ?= 2
test: install test-deps lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --durations=25 -m 'not cluster and not serial'
	$(BIN)/pytest -m serial

test-unit: install
	$(BIN)/pytest tests/unit tests/docs

test-integration: install
	$(BIN)/pytest tests/integration

test-outcomes: install
	$(BIN)/pytest tests/outcomes

test-e2e: install
	$(BIN)/pytest tests/e2e

test-faults: install
	$(BIN)/pytest tests/faults

## Three NATS nodes (network namespaces as root), the workload, node loss, partitions, restarts.
test-cluster: install
	$(BIN)/pytest -m cluster tests/cluster

test-deploy: install test-deps
	$(BIN)/pytest tests/deploy

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Benchmarks (never part of make test): Tranche against a bare NATS relay; BENCH_ARGS=--quick for a subset.
bench: install
	$(BIN)/python -m bench.matrix $(BENCH_ARGS)

bench-backtest: install
	$(BIN)/python -m bench.backtest $(BENCH_ARGS)

## Flame graphs (pyinstrument, HTML) of the four services at 1 and 100 bots, SQLite, written to
## build/profiles/ (a build output, git-ignored): what each service's main thread spends per order.
PROFILE_ARGS ?= --bots 1 100 --storage sqlite --sync always --rounds 4
profile: install
	$(BIN)/python -m bench.matrix $(PROFILE_ARGS) --profile all --profile-dir build/profiles

## Regenerate docs/api (AsyncAPI from FastStream, OpenAPI from FastAPI).
docs: install
	$(BIN)/python -m tranche.apidocs

## System packages the tests use, from Debian's package registry: docker-compose validates the
## compose file offline, kubectl renders the Kubernetes manifests (kustomize), chromium runs the
## dashboard's browser test (Playwright drives Debian's build; no browser download).
TEST_PACKAGES := docker-compose kubectl chromium
test-deps:
	@missing=""; for tool in $(TEST_PACKAGES); do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing for the deployment tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing$$missing: those deployment tests skip here (and fail in CI)"; fi; \
	fi

clean:
	rm -rf var .pytest_cache
