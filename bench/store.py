"""Benchmark the embedded store's storage configurations: build, reopen, kNN and filtered latency, recall, memory.

Run:  python -m bench.store --points 100000 1000000 --data synthetic real --budget-s 900
Each configuration (CONFIGS: quantization, HNSW graph, placement) is built on the same points: upserted, optimized
(the HNSW and quantized segments), closed, then reopened in a fresh process that runs the queries and reports its
resident memory. Recall@10 is against exact search (numpy over the float vectors, with the same filter). Data:
`synthetic` is uniform random unit vectors (the worst case for a graph: no structure) with random queries; `real`
is the offline catalog's image and text vectors (512-d together) replicated with small noise, queried by a noisy
copy of an item, filtered by that item's gender and article type. A configuration whose build, scaled linearly
from the previous size, would pass the budget is not run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from jobs import cli
from retrieval.store.base import Point
from retrieval.store.factory import open_store
from retrieval.store.storage import storage_for
from schemas.collection import IMAGE_VECTOR, TEXT_VECTOR, CollectionSpec, StorageSpec
from schemas.jobs import StoreConfig
from schemas.settings import PROJECT_ROOT

COLLECTION = "bench"
ID_BASE = 100_000  # item ids are ID_BASE + row, so a hit maps back to its row
RECALL_AT = 10
# name -> (backend, storage, whether optimize() runs). "brute" is today's default below --optimize-above and the
# memory reference; "auto" is the size rule's choice (retrieval/store/storage.py).
CONFIGS: dict[str, tuple[str, StorageSpec | None, bool]] = {
    "brute": ("edge", StorageSpec(), False),
    "hnsw": ("edge", StorageSpec(hnsw_ef=128), True),
    "int8": ("edge", StorageSpec(quantization="int8", oversampling=2.0, hnsw_ef=128), True),
    "int8-disk": ("edge", StorageSpec(quantization="int8", oversampling=2.0, hnsw_ef=128, vectors_on_disk=True,
                                      graph_on_disk=True), True),
    "int8-scan": ("edge", StorageSpec(quantization="int8", oversampling=2.0, hnsw_m=0), True),
    "binary-scan": ("edge", StorageSpec(quantization="binary", oversampling=4.0, hnsw_m=0), True),
    "binary": ("edge", StorageSpec(quantization="binary", oversampling=4.0, hnsw_ef=128), True),
    "product": ("edge", StorageSpec(quantization="product", oversampling=4.0, hnsw_ef=128), True),
    "auto": ("edge", None, True),
    "local": ("local", None, False),
}
DEFAULT_CONFIGS = ("brute", "int8", "int8-disk", "int8-scan", "binary-scan", "auto")
# Cardinalities like the Fashion Product Images catalog (articleType is widened to 140 as in the full set).
CARDINALITIES = {"gender": 5, "masterCategory": 7, "subCategory": 45, "articleType": 140, "baseColour": 46,
                 "season": 4, "usage": 8}
FILTER_FIELDS = ("gender", "articleType")
REAL_NOISE = 0.15  # norm of the noise added to each copy of a real vector (cosine ~0.99 to the original)
REAL_CACHE = PROJECT_ROOT / "var" / "bench" / "real-image-text.npz"


@dataclass
class Dataset:
    """Unit vectors, their filter fields as integer codes, and queries with their filters (codes)."""

    name: str
    vectors: np.ndarray
    codes: dict[str, np.ndarray]
    queries: np.ndarray
    query_codes: dict[str, np.ndarray]

    def payload(self, row: int) -> dict[str, str]:
        return {field: f"{field}-{codes[row]}" for field, codes in self.codes.items()}

    def filters(self) -> list[dict[str, str]]:
        return [{f: f"{f}-{c[i]}" for f, c in self.query_codes.items()} for i in range(len(self.queries))]


@dataclass
class StoreBenchResult:
    config: str
    data: str
    points: int
    upsert_s: float
    optimize_s: float | None
    reopen_s: float
    knn_ms: tuple[float, float]
    filtered_ms: tuple[float, float]
    filtered_hits: float
    recall: float = float("nan")
    filtered_recall: float = float("nan")
    rss_mb: float = float("nan")
    load: str = ""


def zipf_choice(rng: np.random.Generator, n_values: int, size: int) -> np.ndarray:
    """Skewed like a real catalog: a few article types and colours dominate."""
    weights = 1.0 / np.arange(1, n_values + 1)
    return rng.choice(n_values, size=size, p=weights / weights.sum())


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def synthetic(n: int, dim: int, queries: int) -> Dataset:
    """Random points with zipf-distributed categories; random queries with shopper-style filters."""
    rng = np.random.default_rng(0)
    codes = {field: zipf_choice(rng, k, n) for field, k in CARDINALITIES.items() if field in FILTER_FIELDS}
    query_rng = np.random.default_rng(1)
    query_codes = {field: zipf_choice(query_rng, CARDINALITIES[field], queries) for field in FILTER_FIELDS}
    return Dataset("synthetic", unit_vectors(rng, n, dim), codes, unit_vectors(np.random.default_rng(2), queries, dim),
                   query_codes)


def replicated(base: np.ndarray, base_codes: dict[str, np.ndarray], n: int, queries: int) -> Dataset:
    """`n` noisy copies of the real vectors (each row's source is row % len(base)); queries are fresh noisy copies
    of random items, filtered by that item's own fields."""
    rng = np.random.default_rng(0)
    source = np.arange(n) % len(base)
    vectors = _normalised(base[source] + _noise(rng, n, base.shape[1]))
    picked = rng.choice(len(base), size=queries)
    query_vectors = _normalised(base[picked] + _noise(rng, queries, base.shape[1]))
    return Dataset("real", vectors, {f: c[source] for f, c in base_codes.items()}, query_vectors,
                   {f: c[picked] for f, c in base_codes.items()})


def _noise(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    return rng.normal(scale=REAL_NOISE / np.sqrt(dim), size=(n, dim)).astype(np.float32)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def real_base(store_path: Path, collection: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The offline catalog's image + text vectors (concatenated, unit length) and filter fields, from the project's
    own index (`make index`), cached under var/bench."""
    if not REAL_CACHE.is_file():
        _cache_real(store_path, collection)
    cached = np.load(REAL_CACHE)
    return cached["vectors"], {field: cached[field] for field in FILTER_FIELDS}


def _cache_real(store_path: Path, collection: str) -> None:
    vectors, fields = [], {field: [] for field in FILTER_FIELDS}
    with open_store(StoreConfig(path=store_path)) as store:
        for hit in _every_hit(store, collection):
            if hit.vectors and IMAGE_VECTOR in hit.vectors and TEXT_VECTOR in hit.vectors:
                vectors.append(np.concatenate([hit.vectors[IMAGE_VECTOR], hit.vectors[TEXT_VECTOR]]))
                for field in FILTER_FIELDS:
                    fields[field].append(str(hit.payload.get(field)))
    if not vectors:
        raise SystemExit(f"no indexed item with image and text vectors in {collection!r} at {store_path}: "
                         "run `make index` first (or give --real-store)")
    codes = {field: np.unique(values, return_inverse=True)[1] for field, values in fields.items()}
    REAL_CACHE.parent.mkdir(parents=True, exist_ok=True)
    np.savez(REAL_CACHE, vectors=_normalised(np.asarray(vectors, dtype=np.float32)), **codes)


def _every_hit(store: Any, collection: str) -> Iterator[Any]:
    offset = None
    while True:
        hits, offset = store.scroll(collection, 2048, offset, with_vectors=True)
        yield from hits
        if offset is None:
            return


def exact_top(data: Dataset, filtered: bool, k: int = RECALL_AT, chunk: int = 100_000) -> np.ndarray:
    """The rows of the exact top k of each query (cosine: dot of unit vectors), with or without its filter; -1
    where fewer points match."""
    best_scores = np.full((len(data.queries), k), -np.inf, dtype=np.float32)
    best_rows = np.full((len(data.queries), k), -1)
    for start in range(0, len(data.vectors), chunk):
        scores = data.queries @ data.vectors[start:start + chunk].T
        if filtered:
            scores[~_matches(data, start, start + chunk)] = -np.inf
        rows = np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)
        best_scores, best_rows = _keep_best(np.hstack([best_scores, scores]), np.hstack([best_rows, rows]), k)
    best_rows[np.isneginf(best_scores)] = -1
    return best_rows


def _matches(data: Dataset, start: int, stop: int) -> np.ndarray:
    mask = np.ones((len(data.queries), min(stop, len(data.vectors)) - start), dtype=bool)
    for field, codes in data.query_codes.items():
        mask &= codes[:, None] == data.codes[field][None, start:stop]
    return mask


def _keep_best(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(scores, top, 1), np.take_along_axis(rows, top, 1)


def recall(found: list[list[int]], exact: np.ndarray) -> float:
    """Mean share of each query's exact top k (those that exist) among the rows the store returned first; a query
    whose filter matches nothing has nothing to find and is left out."""
    shares = [len(set(rows[:RECALL_AT]) & set(truth[truth >= 0])) / int((truth >= 0).sum())
              for rows, truth in zip(found, exact) if (truth >= 0).any()]
    return float(np.mean(shares)) if shares else float("nan")


def points_of(data: Dataset, start: int, stop: int) -> list[Point]:
    return [Point(item_id=str(ID_BASE + row), vectors={IMAGE_VECTOR: data.vectors[row]}, payload=data.payload(row))
            for row in range(start, min(stop, len(data.vectors)))]


def spec_of(config: str, data: Dataset) -> CollectionSpec:
    _, storage, _ = CONFIGS[config]
    if config == "auto":
        storage = storage_for(len(data.vectors))
    return CollectionSpec(name=COLLECTION, model="bench", dim=data.vectors.shape[1], vectors=(IMAGE_VECTOR,),
                          filter_fields=tuple(data.codes), storage=storage)


def build(config: str, data: Dataset, folder: Path, chunk: int = 1024) -> tuple[float, float | None]:
    """Upsert every point (seconds), then optimize where the configuration does (seconds, or None)."""
    backend, _, optimized = CONFIGS[config]
    with open_store(StoreConfig(backend=backend, path=folder)) as store:
        store.create_collection(spec_of(config, data))
        started = time.perf_counter()
        for start in range(0, len(data.vectors), chunk):
            store.upsert(COLLECTION, points_of(data, start, start + chunk))
        upsert_s = time.perf_counter() - started
        if not optimized or (config == "auto" and len(data.vectors) <= 20_000):
            return upsert_s, None
        started = time.perf_counter()
        store.optimize(COLLECTION)
        return upsert_s, time.perf_counter() - started


def query_phase(backend: str, folder: Path, queries: np.ndarray, filters: list[dict], limit: int) -> dict:
    """In a fresh process: open the store, run every query unfiltered then filtered; latencies, rows, memory."""
    base_rss = _rss_mb()
    started = time.perf_counter()
    with open_store(StoreConfig(backend=backend, path=folder)) as store:
        store.count(COLLECTION)
        reopen_s = time.perf_counter() - started
        _run_queries(store, queries[:5], None, limit)  # warm-up: page cache, lazy structures
        knn = _run_queries(store, queries, None, limit)
        filtered = _run_queries(store, queries, filters, limit)
        return {"reopen_s": reopen_s, "knn": knn, "filtered": filtered, "rss_mb": _rss_mb() - base_rss}


def _run_queries(store: Any, queries: np.ndarray, filters: list[dict] | None, limit: int) -> dict:
    latencies, rows = [], []
    for i, query in enumerate(queries):
        started = time.perf_counter()
        hits = store.search(COLLECTION, IMAGE_VECTOR, query, limit, filters[i] if filters else None)
        latencies.append((time.perf_counter() - started) * 1000)
        rows.append([int(h.item_id) - ID_BASE for h in hits])
    return {"ms": (float(np.percentile(latencies, 50)), float(np.percentile(latencies, 95))), "rows": rows}


def _rss_mb() -> float:
    """This process's resident memory (VmRSS) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_one(config: str, data: Dataset, limit: int, exact: tuple[np.ndarray, np.ndarray]) -> StoreBenchResult:
    """One configuration on one dataset: build here, query in a fresh process (clean memory, a real reopen)."""
    folder = Path(tempfile.mkdtemp(prefix=f"bench-store-{config}-", dir=_scratch()))
    try:
        upsert_s, optimize_s = build(config, data, folder)
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            found = pool.apply(query_phase, (CONFIGS[config][0], folder, data.queries, data.filters(), limit))
        return StoreBenchResult(
            config, data.name, len(data.vectors), upsert_s, optimize_s, found["reopen_s"], found["knn"]["ms"],
            found["filtered"]["ms"], float(np.mean([len(r) for r in found["filtered"]["rows"]])),
            recall(found["knn"]["rows"], exact[0]), recall(found["filtered"]["rows"], exact[1]), found["rss_mb"],
            load_average())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _scratch() -> Path:
    folder = PROJECT_ROOT / "var" / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def markdown(results: list[StoreBenchResult], queries: int, limit: int) -> str:
    lines = [
        f"{queries} queries, top {limit}, {os.cpu_count()} CPUs; filter = gender + articleType; recall@{RECALL_AT} "
        "against exact search; RSS = the querying process's resident memory after opening the store and querying",
        "",
        "| config | data | points | upsert s | optimize s | reopen s | kNN p50 ms | kNN p95 ms | filtered p50 ms "
        "| filtered p95 ms | recall@10 | filtered recall@10 | RSS MB | load avg (1/5/15 min) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        optimize = "-" if r.optimize_s is None else f"{r.optimize_s:.1f}"
        lines.append(f"| {r.config} | {r.data} | {r.points} | {r.upsert_s:.1f} | {optimize} | {r.reopen_s:.2f} | "
                     f"{r.knn_ms[0]:.1f} | {r.knn_ms[1]:.1f} | {r.filtered_ms[0]:.1f} | {r.filtered_ms[1]:.1f} | "
                     f"{r.recall:.3f} | {r.filtered_recall:.3f} | {r.rss_mb:.0f} | {r.load} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[10_000])
    parser.add_argument("--data", nargs="+", default=["synthetic", "real"], choices=("synthetic", "real"))
    parser.add_argument("--dim", type=int, default=512, help="of the synthetic vectors (the real ones are 512-d)")
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--limit", type=int, default=RECALL_AT)
    parser.add_argument("--real-store", type=Path, default=PROJECT_ROOT / "var" / "qdrant",
                        help="the embedded store whose index gives the real vectors (cached in var/bench)")
    parser.add_argument("--real-collection", default="fashion")
    parser.add_argument("--budget-s", type=float, default=900,
                        help="skip a configuration at a size where its upsert + optimize would take longer, scaled "
                             "linearly from the previous size")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


def datasets(args: argparse.Namespace, n: int) -> Iterator[Dataset]:
    for name in args.data:
        if name == "synthetic":
            yield synthetic(n, args.dim, args.queries)
        else:
            yield replicated(*real_base(args.real_store, args.real_collection), n, args.queries)


@cli.entry
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results, skipped = [], []
    for n in sorted(args.points):
        for data in datasets(args, n):
            exact = exact_top(data, False), exact_top(data, True)
            for config in args.configs:
                predicted = predicted_build_s(results, config, data.name, n)
                if predicted is not None and predicted > args.budget_s:
                    skipped.append(f"{config} on {data.name} at {n} points: not run, ~{predicted:.0f} s to build "
                                   f"(budget {args.budget_s:.0f} s)")
                    print(skipped[-1], flush=True)
                    continue
                results.append(bench_one(config, data, args.limit, exact))
                print(markdown(results[-1:], args.queries, args.limit).splitlines()[-1], flush=True)
    print(markdown(results, args.queries, args.limit))
    print("\n".join(skipped))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))


def predicted_build_s(results: list[StoreBenchResult], config: str, data: str, n: int) -> float | None:
    """Upsert + optimize time at n points, scaled linearly from this configuration's largest measured size."""
    done = [r for r in results if r.config == config and r.data == data]
    if not done:
        return None
    last = max(done, key=lambda r: r.points)
    return (last.upsert_s + (last.optimize_s or 0.0)) * n / last.points


if __name__ == "__main__":
    raise SystemExit(main())
