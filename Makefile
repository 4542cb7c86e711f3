# Fashion search: `make help` lists the targets. Everything runs inside .venv, created on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RAY_ADDRESS ?= http://127.0.0.1:8265
STORE := $(abspath var/qdrant)
CATALOG ?= $(abspath ../shared/datasets/myntra-fashion-small)
LUMA ?= $(abspath ../shared/datasets/luma-sample)
MODEL ?= local-dir:$(abspath ../shared/models/fashion-clip-mini)
SPLIT ?= $(abspath ../shared/models/fashion-clip-mini/split.json)
PYTEST_ARGS ?=
METRICS_PORT ?= 8080
# One encoder actor using every core indexes fastest on a small machine (docs/performance.md).
ENCODE_THREADS ?= $(shell nproc)

# Offline by default (hub lookups fail fast instead of retrying); Ray's token auth stays off on one machine.
export HF_HUB_OFFLINE ?= 1
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
# Ray Serve's fast path: gRPC between replicas, HAProxy (bundled with ray[serve]) in front of the ingress (serve/runtime.py).
export RAY_SERVE_THROUGHPUT_OPTIMIZED ?= 1
export RAY_SERVE_ENABLE_HA_PROXY ?= 1
export RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S ?= 2
# HAProxy drops a client idle for 30 s, headers included (Ray's default is 3,600 s; docs/operations.md).
export RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S ?= 30
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help venv demo test test-fast lint index query submit serve inspect eval finetune eval-models bench bench-serve \
	bench-idle-floor bench-store bench-scale bench-memory bench-driver-memory bench-resume bench-slow-clients bench-finetune clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# Exact pins: a looser torch spec can pull a multi-GB CUDA build instead of the local wheels.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install everything (once)

demo: $(STAMP) ## index the offline catalog into the embedded store, then run example queries
	$(BIN)/python -m jobs.demo --catalog $(CATALOG) --model $(MODEL)

test: $(STAMP) ## run the whole test suite (unit, ray, e2e)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## unit tests only (no Ray, no HTTP)
	$(BIN)/python -m pytest -m "not ray and not e2e and not slow" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff with the rules in pyproject.toml (fix what it can: make lint ARGS=--fix)
	$(BIN)/ruff check $(ARGS) .

index: $(STAMP) ## index CATALOG with MODEL (add ARGS="--rebuild" for a new generation)
	$(BIN)/python -m jobs.index --catalog $(CATALOG) --model $(MODEL) --encode-threads $(ENCODE_THREADS) $(ARGS)

query: $(STAMP) ## search: make query ARGS='--text "blue jeans"'
	$(BIN)/python -m jobs.query --model $(MODEL) $(ARGS)

submit: $(STAMP) ## reindex through `ray job submit` against a running `ray start --head`
	$(BIN)/ray job submit --address $(RAY_ADDRESS) --working-dir . -- \
	  python -m jobs.index --catalog $(CATALOG) --model $(MODEL) --store-path $(STORE) $(ARGS)

serve: $(STAMP) ## run the search service on http://127.0.0.1:8000 (page at /, API docs at /docs, metrics on METRICS_PORT)
	$(BIN)/python -m serve.run cluster/serve-config.yaml --metrics-port $(METRICS_PORT)

inspect: $(STAMP) ## what the store holds: make inspect ARGS="--collection fashion" (or --item ID, --json, --url URL)
	$(BIN)/python -m jobs.inspect $(ARGS)

eval: $(STAMP) ## retrieval quality on held-out dev queries of CATALOG, then LUMA: every strategy x weight x depth, then recommendations (docs/evaluation.md)
	$(BIN)/python -m jobs.make_queries --catalog $(CATALOG) --split-file $(SPLIT) --out var/eval/queries-dev.jsonl
	$(BIN)/python -m jobs.evaluate --catalog $(CATALOG) --model $(MODEL) --queries var/eval/queries-dev.jsonl --out-dir var/eval $(ARGS)
	$(BIN)/python -m jobs.make_queries --catalog $(LUMA) --out var/eval/luma/queries-dev.jsonl
	$(BIN)/python -m jobs.evaluate --catalog $(LUMA) --model $(MODEL) --queries var/eval/luma/queries-dev.jsonl --out-dir var/eval/luma $(ARGS)
	$(BIN)/python -m jobs.make_queries --catalog $(CATALOG) --split-file $(SPLIT) --recommend --out var/eval/queries-recommend.jsonl
	$(BIN)/python -m jobs.evaluate_recommend --catalog $(CATALOG) --model $(MODEL) --queries var/eval/queries-recommend.jsonl --out-dir var/eval
	$(BIN)/python -m jobs.make_queries --catalog $(LUMA) --recommend --out var/eval/luma/queries-recommend.jsonl
	$(BIN)/python -m jobs.evaluate_recommend --catalog $(LUMA) --model $(MODEL) --queries var/eval/luma/queries-recommend.jsonl --out-dir var/eval/luma

# The catalog to fine-tune on, and the model folder written (then compared with MODEL by `make eval-models`).
TUNE_CATALOG ?= $(LUMA)
TUNED ?= $(abspath var/models/$(notdir $(TUNE_CATALOG))-ft)
# The offline catalog holds out what the offline model held out (its split file); another, by product group hash.
TUNE_SPLIT := $(if $(filter $(CATALOG),$(TUNE_CATALOG)),--split-file $(SPLIT),)

finetune: $(STAMP) ## fine-tune MODEL on TUNE_CATALOG's training split (Ray Train) into TUNED (docs/finetune.md)
	$(BIN)/python -m jobs.finetune --catalog $(TUNE_CATALOG) --model $(MODEL) --out $(TUNED) $(TUNE_SPLIT) $(ARGS)

eval-models: $(STAMP) ## TUNED against MODEL on TUNE_CATALOG's dev queries: nDCG@10 per mode with intervals
	$(BIN)/python -m jobs.make_queries --catalog $(TUNE_CATALOG) $(TUNE_SPLIT) --out var/eval/$(notdir $(TUNE_CATALOG))/queries-dev.jsonl
	$(BIN)/python -m jobs.compare_models --catalog $(TUNE_CATALOG) --queries var/eval/$(notdir $(TUNE_CATALOG))/queries-dev.jsonl \
	  --base $(MODEL) --tuned local-dir:$(TUNED) --out-dir var/eval/$(notdir $(TUNE_CATALOG))/compare

bench: $(STAMP) ## index throughput: model-only ceiling vs Ray pipeline vs naive loop (two models, two sizes)
	$(BIN)/python -m bench.indexing $(ARGS)

bench-serve: $(STAMP) ## HTTP latency p50/p95/p99 and throughput at concurrency 1 and 8 (searches, recommendations), against in-process search; shopper words at 16 clients (Zipf-headed, all new) with the query cache's hit rate
	$(BIN)/python -m bench.serving $(ARGS)

bench-idle-floor: $(STAMP) ## the time outside a handler that only waits 0, 3 or 10 ms, plain uvicorn against Ray Serve: the machine's floor under the serving overhead (~1 min)
	$(BIN)/python -m bench.idle_floor $(ARGS)

bench-scale: $(STAMP) ## index time and query latency at 1k, 2.5k, 5k items and the whole catalog
	$(BIN)/python -m bench.scale $(ARGS)

bench-store: $(STAMP) ## store configurations (quantization, HNSW, disk): build, latency, recall@10, memory; synthetic and real vectors
	$(BIN)/python -m bench.store --points 10000 100000 $(ARGS)

bench-memory: $(STAMP) ## peak memory of the search handlers under 16 concurrent maximum-size photos
	$(BIN)/python -m bench.query_memory $(ARGS)

bench-driver-memory: $(STAMP) ## the index job's driver peak RSS at 10k and 1M catalog rows (encoder stood in; ~40 min)
	$(BIN)/python -m bench.driver_memory $(ARGS)

bench-resume: $(STAMP) ## a full-catalog index run killed at 25 %, then resumed: what is kept, what is redone
	$(BIN)/python -m bench.resume $(ARGS)

bench-finetune: $(STAMP) ## fine-tune pairs/s: the Ray Train job's epoch against the bare training step, and a whole run's cost
	$(BIN)/python -m bench.finetune $(ARGS)

bench-slow-clients: $(STAMP) ## 200 stalled uploads while 4 clients search for 60 s: their errors and p95, how long each stall lasts
	$(BIN)/python -m bench.slow_clients $(ARGS)

clean: ## remove the embedded store and artifacts (keeps .venv)
	rm -rf var artifacts
