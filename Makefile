# forkcast: the front door. Logic lives in the Python CLIs; each target is one line of intent.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.SHELLFLAGS := -eu -o pipefail -c

UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
BIN := $(VENV)/bin
# Never let uv fetch its own Python (no internet here): use the system's 3.11.
export UV_PYTHON := python3.11
export UV_PYTHON_DOWNLOADS := never
export OPENBLAS_NUM_THREADS ?= 1
DATA ?= data
PACKAGES = $(wildcard */src */*/src)

.PHONY: help setup system-packages demo up down status logs test lint format typecheck pytest full-data bench-data bench-features bench-train bench-train-distributed bench-serve bench-gateway bench-monitoring bench-lake-datasets manifests-check workflows dashboards dashboards-png rollout-drill faults load drill drills audit

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(UV):
	@scripts/bootstrap-uv.sh $(UV_VERSION)

setup: $(UV) ## create .venv/ with every workspace member installed from uv.lock
	@.tools/bin/python scripts/torch_wheel.py
	@$(UV) sync --all-packages --all-extras --locked --quiet
	@echo "venv ready: $(VENV) ($$($(BIN)/python --version))"

system-packages: ## apt-get install the Debian packages the tests and the local platform need
	@scripts/install-system-packages.sh

demo: setup system-packages ## the main job: data, train, publish, promote, features, platform up, real requests
	$(BIN)/forkcast-local demo --data $(DATA)/small --preset small

up: setup system-packages ## start the local platform (every real component on 127.0.0.1, state under .local/)
	$(BIN)/forkcast-local up

down: setup ## stop exactly what `make up` started
	$(BIN)/forkcast-local down

status: setup ## each local component: URL, PID, liveness, readiness
	$(BIN)/forkcast-local status

logs: setup ## the last lines of every local component's log
	$(BIN)/forkcast-local logs

test: setup system-packages lint typecheck pytest ## everything CI runs: lint, format check, type check, tests

lint: setup ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: setup ## mypy --strict on every package
	$(BIN)/mypy $(PACKAGES)

# Three workers, each test file whole on one of them (pytest-xdist --dist loadfile: a file's module fixtures and its
# servers stay together): most of the suite waits on real servers, deadlines and drills; with three workers
# a fresh-clone `.ci/run` (setup + lint + types + 1,548 tests on three workers) took 13 min 17 s on the 2-core VM
# (2026-12-05; 17 min 4 s with a busy loop beside it, at 1,507 tests). Files go to the workers in collection order, long ones first (--no-loadscope-reorder and
# forkcast_devservers.pytest_kinds.longest_first: e2e, then files with a `slow` test). PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 3
pytest: setup ## the test suite (fails when no test ran: pytest exits 5)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

bench-data: setup ## generator benchmark: full preset, against the original row-at-a-time process
	$(BIN)/python datagen/benchmarks/bench_generate.py --out $(DATA)/bench-full

full-data: setup ## the full-size dataset in $(DATA)/full (idempotent: nothing to do when complete)
	$(BIN)/forkcast-data generate --preset full --out $(DATA)/full --no-progress

bench-features: full-data system-packages ## feature store: load 1M+100k, fetch designs, distance filters, Cluster tags
	$(BIN)/python featurestore/benchmarks/bench_features.py load --data $(DATA)/full --no-progress
	$(BIN)/python featurestore/benchmarks/bench_features.py fetch --data $(DATA)/full
	$(BIN)/python featurestore/benchmarks/bench_features.py cluster --data $(DATA)/full

manifests-check: setup ## render every overlay, validate it (strict core kinds, CRD schemas) and check its wiring
	if [ -x ../shared/tools/validate-manifests ]; then \
	  for kustomization in manifests/overlays/*/ manifests/observability/ workflows/; do \
	    $(BIN)/kubectl kustomize "$$kustomization" | $(BIN)/python ../shared/tools/validate-manifests - ; \
	  done; \
	  $(BIN)/python ../shared/tools/validate-manifests deploy/; \
	else \
	  echo "manifests-check: ../shared/tools/validate-manifests is absent here: schema validation SKIPPED"; \
	fi
	$(BIN)/forkcast-manifests check
	$(BIN)/pytest tests/delivery delivery/tests -q

bench-train: full-data ## trainer: fast path vs plain autograd, 5-epoch runs of both recipes, then one epoch interleaved with step-only segments (epoch ÷ step-only ratio) on full data (5-epoch runs ~12 min; the interleaved part took 4-11 min at load 6-10, 2026-12-05)
	$(BIN)/python pipelines/retrain/benchmarks/bench_train.py --data $(DATA)/full --out runs/bench --json runs/bench.json

bench-train-distributed: setup ## data-parallel training: 2 processes (torchrun, gloo) vs 1, same threads in total, small data (~4 min)
	test -f $(DATA)/small/dataset.json || $(BIN)/forkcast-data generate --preset small --out $(DATA)/small --no-progress
	$(BIN)/python pipelines/retrain/benchmarks/bench_distributed.py --data $(DATA)/small --out runs/bench-distributed --json runs/bench-distributed.json

# A model version's files for the serving benchmarks (a RankNet trained one epoch on the small preset; its size
# and cost are those of any RankNet).
BENCH_MODEL := runs/bench-model
$(BENCH_MODEL)/probe.npz:
	$(BIN)/forkcast-data generate --preset small --out $(DATA)/small --no-progress
	$(BIN)/forkcast-retrain all --data $(DATA)/small --out runs/bench-model-run --epochs 1 --no-progress
	$(BIN)/forkcast-retrain export --out runs/bench-model-run --to $(BENCH_MODEL)

bench-serve: full-data system-packages $(BENCH_MODEL)/probe.npz ## inference: open loop 30 req/s, closed loop to saturation, vs a naive FastAPI+torch baseline (~7 min)
	$(BIN)/python services/inference/benchmarks/bench_serve.py --data $(DATA)/full --model-dir $(BENCH_MODEL)

bench-gateway: full-data system-packages $(BENCH_MODEL)/probe.npz ## gateway + inference end to end vs inference direct and a floor server (floor ratio, CPU µs/request)
	$(BIN)/python services/gateway/benchmarks/bench_gateway.py --data $(DATA)/full --model-dir $(BENCH_MODEL)
	$(BIN)/python services/gateway/benchmarks/bench_header_bounds.py
	$(BIN)/python services/gateway/benchmarks/bench_upstream_client.py

bench-monitoring: setup system-packages ## online-AUC job: CPU per prediction and memory at 2,000 predictions/s vs a naive join, real answer sizes (~3 min)
	test -f $(DATA)/small/dataset.json || $(BIN)/forkcast-data generate --preset small --out $(DATA)/small --no-progress
	$(BIN)/python monitoring/benchmarks/bench_online_auc.py --predictions 20000 --data $(DATA)/small

bench-lake-datasets: setup system-packages ## lake: dataset snapshot read (s3 vs local dir: time, peak RSS) and Delta vs Iceberg commits (~3 min)
	test -f $(DATA)/small/dataset.json || $(BIN)/forkcast-data generate --preset small --out $(DATA)/small --no-progress
	$(BIN)/python lake/benchmarks/bench_snapshot_read.py --data $(DATA)/small
	$(BIN)/python lake/benchmarks/bench_formats.py

.PHONY: bench-lake
bench-lake: setup system-packages $(BENCH_MODEL)/probe.npz ## lake: served-log compaction events/s and CPU µs/event vs XRANGE+decode alone, while gateway + inference serve 30 req/s (p95, failures) (~2 min)
	test -f $(DATA)/small/dataset.json || $(BIN)/forkcast-data generate --preset small --out $(DATA)/small --no-progress
	OPENBLAS_NUM_THREADS=1 $(BIN)/python lake/benchmarks/bench_compact.py --predictions 20000 --data $(DATA)/small --model-dir $(BENCH_MODEL)

.PHONY: bench-lake-training
bench-lake-training: setup ## lake: point-in-time training table (CPU per served pair vs reading the tables) and maintain (bytes per prediction)
	$(BIN)/python lake/benchmarks/bench_training_table.py --predictions 50000

workflows: setup ## regenerate the Argo WorkflowTemplate (workflows/, the cluster's training executor) from the retrain step definitions
	$(BIN)/python -m forkcast_retrain.workflow render workflows

dashboards: setup ## regenerate the Grafana dashboard JSON (and its kustomize copy) from the metric-name contract
	$(BIN)/python -m forkcast_monitoring.dashboards --out monitoring/dashboards/ --out manifests/observability/dashboards/

dashboards-png: setup system-packages ## render every dashboard panel from a real Prometheus into docs/dashboards/
	$(BIN)/python -m forkcast_monitoring.render_png --out docs/dashboards/

rollout-drill: setup system-packages ## the canary rehearsal of the rendered Rollout: good promoted, worse model and never-ready aborted (and reverted), low traffic paused
	for name in canary-good canary-worse-model canary-never-ready canary-low-traffic; do \
	  $(MAKE) --no-print-directory drill NAME=$$name || exit 1; \
	done

faults: setup system-packages ## fault drills on the platform's pods under load: Redis killed, inference killed, S3 down at a pod's start, MLflow down
	$(MAKE) --no-print-directory drill NAME=faults

load: demo ## locust through the gateway of the demo platform: 30 req/s for 60 s (p95 ≤ 100 ms), then a step test to saturation; docs/load/
	$(BIN)/python -m forkcast_local.load --data $(DATA)/small --out docs/load

NAME ?= end-to-end
drill: setup system-packages ## one drill: make drill NAME=<name> (default end-to-end: drift, alert, retrain, canary, AUC recovers; report in docs/drill/); names: forkcast-local drill --list
ifeq ($(NAME),end-to-end)
	$(BIN)/forkcast-local drill end-to-end --data $(DATA)/small --preset small --drift 1 --work runs/drill --cache runs/drills/cache --report docs/drill/report
else
	$(BIN)/forkcast-local drill $(NAME) --work runs/drills/$(NAME) --cache runs/drills/cache
endif

drills: setup system-packages ## every drill of forkcast-local drill --list, one after the other (stops at the first failure)
	for name in $$($(BIN)/forkcast-local drill --list | awk 'NR > 2 {print $$1}'); do \
	  $(MAKE) --no-print-directory drill NAME=$$name || exit 1; \
	done

audit: setup ## pip-audit the locked dependencies (needs the network; says "audit skipped" with the reason when offline)
	$(BIN)/python scripts/audit_deps.py --uv $(UV)
