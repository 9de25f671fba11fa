# The two commands of the README (`make run`, `make test`) set themselves up: they create .venv
# when missing and install the project into it.

PYTHON ?= python3
VENV   ?= .venv
PORT   ?= 5000
PREFECT_PORT ?= 4200
RUN    ?=
NET    ?=
RATE   ?=
SWEEP  ?=
WORKERS ?=
BIN    := $(abspath $(VENV))/bin

export PATH := $(BIN):$(PATH)
export PYSPARK_PYTHON := $(BIN)/python
export SPARK_LOCAL_IP := 127.0.0.1
export PREFECT_HOME := $(abspath .prefect)
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1

.PHONY: install run test test-fast ui report serve push pull lint clean cluster-up cluster-down bench plan

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $@

install: $(VENV)/.installed ## create .venv and install the project

run: install ## run the whole pipeline on the embedded data (dvc repro), then print the results
	python -m flows.with_prefect_server dvc repro
	python -m pipeline.report

test: install ## the whole test suite, slow end-to-end cases included, on two workers (one file each)
	python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=25

test-fast: install ## the tests that start no Spark, Prefect or DVC pipeline
	python -m pytest -m 'not slow'

ui: install ## the MLflow UI over the project's store, on 127.0.0.1:$(PORT)
	python -m pipeline.ui --port $(PORT)

cluster-up: install ## a Spark standalone cluster (params.yaml `cluster`); NET=1gbit: emulated network (root)
	python -m pipeline.cluster up $(if $(NET),--net $(NET)) $(if $(WORKERS),--workers $(WORKERS))

cluster-down: ## stop the cluster started by cluster-up
	python -m pipeline.cluster down

plan: install ## predicted step time, bytes, memory of every scheme; RATE=100mbit, SWEEP=1: over rates
	python -m pipeline.plan $(if $(RATE),--rate $(RATE)) $(if $(SWEEP),--sweep)

bench: install ## run the benchmarks, write benchmarks/results/*.json, *.png and report.md
	python -m benchmarks.report

report: install ## the comparison table of the latest pipeline run (RUN=<parent run id>: that one)
	python -m pipeline.report $(if $(RUN),--run $(RUN))

serve: install ## Prefect server on 127.0.0.1:$(PREFECT_PORT), deploy prefect.yaml, run a worker
	python -m flows.serve --port $(PREFECT_PORT)

push: install ## push DVC-tracked data and models to the DVC remote (default: ./dvc-remote)
	dvc push

pull: install ## fetch DVC-tracked data and models from the DVC remote
	dvc pull

lint: install ## ruff over the code and tests, then mypy (strict on pipeline/; config in pyproject.toml)
	python -m ruff check pipeline flows tests benchmarks
	python -m mypy

clean: ## remove pipeline outputs and local stores (keeps .venv)
	rm -rf data/raw data/prepared models metrics reports checkpoints mlflow.db mlruns mlartifacts .prefect
