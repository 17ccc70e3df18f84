# The two commands a newcomer needs: `make demo` and `make test`. Both set up what they
# need first (Debian packages, .venv with locked packages, Helm tooling) via scripts/setup.sh.
PY := .venv/bin/python
ARTIFACTS ?= artifacts
KEEP ?= 3
VERSIONS := $(PY) -m serving.versions_cli $(CONFIG_FLAG)
CONFIG ?=
CONFIG_FLAG := $(if $(CONFIG),--config $(CONFIG),)

.PHONY: help setup demo build repository serve perf perf-report perf-report-quick perf-tuning soak publish versions promote rollback prune test lint helm-lint helm-tools helm-test clean

help:
	@echo "make demo        end to end: data -> workflows -> training -> repository -> Triton -> queries"
	@echo "make test        the test suite (real tritonserver, NVTabular, Helm)"
	@echo "make setup       Debian packages, .venv (requirements.lock), Helm tooling"
	@echo "make repository  build artefacts and write model_repository/ (version 1)"
	@echo "make serve       start tritonserver on model_repository/ (127.0.0.1, explicit mode)"
	@echo "make perf        quick perf_analyzer concurrency sweep (starts its own server)"
	@echo "make perf-report full serving-efficiency report with baselines (perf-report-quick: ~3 min)"
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
	$(PY) -m recsys.demo $(CONFIG_FLAG)

build repository: setup
	$(PY) -m recsys.build $(CONFIG_FLAG)

serve: setup
	$(PY) -m serving.launcher $(CONFIG_FLAG)

perf: setup
	@test -d model_repository/recommender || $(PY) -m recsys.build $(CONFIG_FLAG)
	$(PY) -m perf_analyzer.sweep --quick

perf-report: setup
	@test -d model_repository/recommender || $(PY) -m recsys.build $(CONFIG_FLAG)
	$(PY) -m perf_analyzer.report $(CONFIG_FLAG)

perf-report-quick: setup
	@test -d model_repository/recommender || $(PY) -m recsys.build $(CONFIG_FLAG)
	$(PY) -m perf_analyzer.report --quick $(CONFIG_FLAG)

perf-tuning: setup
	@test -d artifacts/models || $(PY) -m recsys.build $(CONFIG_FLAG)
	$(PY) -m perf_analyzer.tuning

soak: setup
	@test -d model_repository/recommender || $(PY) -m recsys.build $(CONFIG_FLAG)
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
	rm -rf artifacts results
	find model_repository -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +

helm-tools:
	bash scripts/install_helm_tools.sh

helm-test: setup
	$(PY) -m pytest tests/test_helm.py
