# The two commands README.md promises: `make demo` (set up, run the job on the embedded default)
# and `make test` (set up, lint, type-check, run every test). Both build .venv on first use.
# No target needs an activated .venv: each calls the venv's own programs.
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.demo/dagster_home
PORT ?= 8765
UI_PORT ?= 3000

.PHONY: setup demo ui test lint dagster-home

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

dagster-home:
	mkdir -p "$(DAGSTER_HOME)" && cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"

demo: setup dagster-home
	$(BIN)/sync-pipeline demo --port $(PORT)

ui: setup dagster-home
	$(BIN)/sync-pipeline ui --port $(PORT) --ui-port $(UI_PORT)

lint: setup
	$(BIN)/ruff check sync_pipeline sync_pipeline_tests
	$(BIN)/ruff format --check sync_pipeline sync_pipeline_tests
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# `make bench`: the product's `users` sync as users run it (`dg launch --assets users`, process
# start to exit, and the engine alone) against a lean hand-written baseline on the local
# PostgreSQL, one table of figures (sync_pipeline_tests/benchmarks/run.py). Other sizes or
# cases: make bench BENCH_ARGS="--rows 100000 --cases empty,half --repeat 3".
BENCH_ARGS ?= --rows 100000 --rows 1000000

.PHONY: bench
bench: setup
	$(BIN)/pip install --quiet -r sync_pipeline_tests/benchmarks/requirements.txt
	$(BIN)/python -m sync_pipeline_tests.benchmarks.run $(BENCH_ARGS)

# `make bench-pull`: the Zuora workflows pull of one customer, the product's (declared in YAML, run as
# its own process) against a lean hand-written pull and a dlt rest_api pipeline (dlt in its own
# virtualenv, $(DLT_VENV)), from a static local Zuora into the local PostgreSQL: first load, unchanged
# and older pages, one table (sync_pipeline_tests/benchmarks/zuora_pull.py). Other sizes or a profile:
# make bench-pull BENCH_PULL_ARGS="--records 100000 --page-size 500 --py-spy /tmp/profile.txt".
DLT_VENV ?= .venv-dlt
BENCH_PULL_ARGS ?= --records 100000 --records 1000000

.PHONY: bench-pull
bench-pull: setup
	$(BIN)/pip install --quiet -r sync_pipeline_tests/benchmarks/requirements.txt
	test -x $(DLT_VENV)/bin/python || python3 -m venv $(DLT_VENV)
	$(DLT_VENV)/bin/pip install --quiet -r sync_pipeline_tests/benchmarks/requirements-dlt.txt
	$(BIN)/python -m sync_pipeline_tests.benchmarks.zuora_pull --dlt-python $(DLT_VENV)/bin/python $(BENCH_PULL_ARGS)
