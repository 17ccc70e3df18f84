# The two commands a newcomer needs: `make demo` and `make test`. Both set up what they
# need first (Debian packages, .venv with locked packages, Helm tooling) via scripts/setup.sh.
# CONFIG=path.yaml swaps the configuration, SCHEMA=name (config/schemas/<name>.yaml) the
# feature schema, DATA_DIR=dir reads your data in the layout that schema declares.
PY := .venv/bin/python
ARTIFACTS ?= artifacts
KEEP ?= 3
CONFIG ?=
SCHEMA ?=
DATA_DIR ?=
CONFIG_FLAG := $(if $(CONFIG),--config $(CONFIG),)
SCHEMA_FLAG := $(if $(SCHEMA),--schema $(SCHEMA),)
DATA_FLAG := $(if $(DATA_DIR),--data-dir $(DATA_DIR),)
VERSIONS := $(PY) -m serving.versions_cli $(CONFIG_FLAG)
BUILD := $(PY) -m pipeline.build $(CONFIG_FLAG) $(SCHEMA_FLAG) $(DATA_FLAG)

.PHONY: help setup demo movielens evaluate evaluate-sweep build repository serve perf perf-report perf-report-quick perf-tuning soak publish versions promote rollback prune test lint helm-lint helm-tools helm-test clean

help:
	@echo "make demo        end to end: data -> workflows -> training -> repository -> Triton -> queries"
	@echo "make test        the test suite (real tritonserver, NVTabular, Helm)"
	@echo "make setup       Debian packages, .venv (requirements.lock), Helm tooling"
	@echo "make movielens   real MovieLens-100k into datasets/ml-100k (GroupLens layout)"
	@echo "make evaluate    quality on real MovieLens-100k vs most-popular and ALS, served through"
	@echo "                 Triton: results/evaluation/report.md (evaluate-sweep: + a settings sweep)"
	@echo "make repository  build artefacts and write model_repository/ (version 1)"
	@echo "                 [SCHEMA=movielens DATA_DIR=/path/to/ml-100k]: your data, your schema"
	@echo "make serve       start tritonserver on model_repository/ (127.0.0.1, explicit mode)"
	@echo "make perf        quick perf_analyzer concurrency sweep (starts its own server)"
	@echo "make perf-report full serving-efficiency report with baselines and merlin-systems'"
	@echo "                 export of the same pipeline as the peer (perf-report-quick: ~6 min)"
	@echo "make perf-tuning dynamic-batching delay / instance-count sweep"
	@echo "make soak        drive ~70% of measured saturation for DURATION s (default 600): errors, RSS growth"
	@echo "make publish     publish ARTIFACTS=dir (default artifacts) as the next model set version"
	@echo "make versions    list versions with status, metrics and provenance"
	@echo "make promote     VERSION=N [TOLERANCE=0.01]: gate and switch the running server (needs TRITON_ADMIN_KEY)"
	@echo "make rollback    switch the running server back to the previous version"
	@echo "make prune       keep the KEEP (default 3) newest versions plus serving and previous"
	@echo "make lint        ruff"
	@echo "make clean       remove generated artefacts"

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m pipeline.demo $(CONFIG_FLAG) $(SCHEMA_FLAG) $(DATA_FLAG)

# Real MovieLens-100k (from the pinned recbole wheel on PyPI) in GroupLens' ml-100k layout.
movielens: setup
	$(PY) -m pipeline.fetch_movielens --out datasets/ml-100k

# Defaults to the movielens schema on datasets/ml-100k (fetched when absent);
# SCHEMA=/DATA_DIR= evaluate another real data set.
EVALUATE := $(PY) -m pipeline.evaluate $(CONFIG_FLAG) $(SCHEMA_FLAG) $(DATA_FLAG)
evaluate: setup
	$(EVALUATE)

evaluate-sweep: setup
	$(EVALUATE) --sweep

build repository: setup
	$(BUILD)

serve: setup
	$(PY) -m serving.launcher $(CONFIG_FLAG) $(SCHEMA_FLAG)

perf: setup
	@test -d model_repository/recommender || $(BUILD)
	$(PY) -m perf_analyzer.sweep --quick $(CONFIG_FLAG)

perf-report: setup
	@test -d model_repository/recommender || $(BUILD)
	$(PY) -m perf_analyzer.report $(CONFIG_FLAG)

perf-report-quick: setup
	@test -d model_repository/recommender || $(BUILD)
	$(PY) -m perf_analyzer.report --quick $(CONFIG_FLAG)

perf-tuning: setup
	@test -d artifacts/models || $(BUILD)
	$(PY) -m perf_analyzer.tuning $(CONFIG_FLAG)

soak: setup
	@test -d model_repository/recommender || $(BUILD)
	$(PY) -m serving.soak --duration $(or $(DURATION),600) $(CONFIG_FLAG)

publish: setup
	$(VERSIONS) publish --artifacts $(ARTIFACTS)

versions: setup
	$(VERSIONS) list

promote: setup
	@test -n "$(VERSION)" || { echo "usage: make promote VERSION=N [TOLERANCE=0.01]"; exit 2; }
	$(VERSIONS) promote $(VERSION) $(if $(TOLERANCE),--tolerance $(TOLERANCE),)

rollback: setup
	$(VERSIONS) rollback

prune: setup
	$(VERSIONS) prune --keep $(KEEP)

test: setup
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

helm-lint: setup
	.tools/bin/helm lint --strict helm/recsys-triton
	for f in helm/recsys-triton/examples/*.yaml; do .tools/bin/helm lint --strict helm/recsys-triton -f $$f || exit 1; done

clean:
	rm -rf artifacts results datasets
	find model_repository -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +

helm-tools:
	bash scripts/install_helm_tools.sh

helm-test: setup
	$(PY) -m pytest tests/test_helm.py
