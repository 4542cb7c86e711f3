"""Benchmark the embedded store backends: upsert time and kNN latency (with and without a payload filter).

Run:  python -m bench.store --points 100000 1000000 --dim 512 --budget-s 900
A backend whose time at a smaller size, scaled linearly, would pass the budget at the next size is not run there:
the table says so, which is where that backend stops being adequate.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobs import cli
from retrieval.store.base import Point
from retrieval.store.factory import open_store
from schemas.collection import IMAGE_VECTOR, CollectionSpec
from schemas.jobs import StoreConfig
from schemas.settings import PROJECT_ROOT

VARIANTS = ("edge", "edge+hnsw", "local")
COLLECTION = "bench"
# Cardinalities like the Fashion Product Images catalog (articleType is widened to 140 as in the full set).
CARDINALITIES = {"gender": 5, "masterCategory": 7, "subCategory": 45, "articleType": 140, "baseColour": 46,
                 "season": 4, "usage": 8}


@dataclass
class StoreBenchResult:
    backend: str
    points: int
    upsert_s: float
    optimize_s: float | None
    reopen_s: float
    knn_ms: tuple[float, float]
    filtered_ms: tuple[float, float]
    filtered_hits: float


def zipf_choice(rng: np.random.Generator, n_values: int, size: int) -> np.ndarray:
    """Skewed like a real catalog: a few article types and colours dominate."""
    weights = 1.0 / np.arange(1, n_values + 1)
    return rng.choice(n_values, size=size, p=weights / weights.sum())


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_points(n: int, dim: int, seed: int = 0) -> list[Point]:
    rng = np.random.default_rng(seed)
    vectors = unit_vectors(rng, n, dim)
    columns = {field: zipf_choice(rng, k, n) for field, k in CARDINALITIES.items()}
    return [Point(item_id=str(100_000 + i), vectors={IMAGE_VECTOR: vectors[i]}, payload={
        **{field: f"{field}-{columns[field][i]}" for field in CARDINALITIES},
        "productDisplayName": f"Brand {i % 997} product {i} in colour {columns['baseColour'][i]}",
    }) for i in range(n)]


def make_filters(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """Shopper-style filters: one gender and one article type, drawn as often as they occur."""
    rng = np.random.default_rng(seed)
    genders, types = zipf_choice(rng, 5, n), zipf_choice(rng, 140, n)
    return [{"gender": f"gender-{g}", "articleType": f"articleType-{t}"} for g, t in zip(genders, types)]


def time_upsert(store: Any, points: list[Point], chunk: int = 1024) -> float:
    started = time.perf_counter()
    for start in range(0, len(points), chunk):
        store.upsert(COLLECTION, points[start:start + chunk])
    return time.perf_counter() - started


def time_optimize(store: Any) -> float:
    started = time.perf_counter()
    store.optimize(COLLECTION)
    return time.perf_counter() - started


def time_queries(store: Any, queries: np.ndarray, filters: list | None, limit: int,
                 max_s: float = 60.0) -> tuple[tuple[float, float], float]:
    """(p50, p95) latency in ms and the mean number of hits; stops after max_s (slow backends, at least 10 queries)."""
    latencies, hits, deadline = [], [], time.perf_counter() + max_s
    for i, query in enumerate(queries):
        if i >= 10 and time.perf_counter() > deadline:
            break
        started = time.perf_counter()
        found = store.search(COLLECTION, IMAGE_VECTOR, query, limit, filters[i] if filters else None)
        latencies.append((time.perf_counter() - started) * 1000)
        hits.append(len(found))
    return (float(np.percentile(latencies, 50)), float(np.percentile(latencies, 95))), float(np.mean(hits))


def bench_one(variant: str, points: list[Point], dim: int, queries: int, limit: int) -> StoreBenchResult:
    """One backend at one size; a "+hnsw" variant also runs the store's optimize() (the HNSW build) after upserting."""
    backend, _, extra = variant.partition("+")
    folder = Path(tempfile.mkdtemp(prefix=f"bench-store-{backend}-", dir=_scratch()))
    try:
        with open_store(StoreConfig(backend=backend, path=folder)) as store:
            store.create_collection(CollectionSpec(name=COLLECTION, model="bench", dim=dim))
            upsert_s = time_upsert(store, points)
            optimize_s = time_optimize(store) if extra == "hnsw" else None
        started = time.perf_counter()
        with open_store(StoreConfig(backend=backend, path=folder)) as store:
            assert store.count(COLLECTION) == len(points)
            reopen_s = time.perf_counter() - started
            result = _bench_queries(store, backend, len(points), dim, queries, limit)
        return StoreBenchResult(variant, len(points), upsert_s, optimize_s, reopen_s, *result)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _bench_queries(store: Any, backend: str, n: int, dim: int, queries: int, limit: int) -> tuple:
    vectors = unit_vectors(np.random.default_rng(2), queries, dim)
    time_queries(store, vectors[:5], None, limit)  # warm-up: page cache, lazy structures
    knn, _ = time_queries(store, vectors, None, limit)
    filtered, mean_hits = time_queries(store, vectors, make_filters(queries), limit)
    return knn, filtered, mean_hits


def _scratch() -> Path:
    folder = PROJECT_ROOT / "var" / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def markdown(results: list[StoreBenchResult], dim: int, queries: int, limit: int) -> str:
    lines = [
        f"dim {dim}, {queries} queries, top {limit}, {os.cpu_count()} CPUs; filter = gender + articleType "
        "(zipf-distributed, so selectivity varies per query)",
        "",
        "| backend | points | upsert s | optimize s | reopen s | kNN p50 ms | kNN p95 ms | filtered p50 ms "
        "| filtered p95 ms | filtered hits (mean) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        optimize = "-" if r.optimize_s is None else f"{r.optimize_s:.1f}"
        lines.append(f"| {r.backend} | {r.points} | {r.upsert_s:.1f} | {optimize} | {r.reopen_s:.2f} | "
                     f"{r.knn_ms[0]:.1f} | {r.knn_ms[1]:.1f} | {r.filtered_ms[0]:.1f} | {r.filtered_ms[1]:.1f} | "
                     f"{r.filtered_hits:.0f} |")
    return "\n".join(lines)


@cli.entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[10_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--backends", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                        help="edge+hnsw: edge, then optimize() to build the HNSW index before querying")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--budget-s", type=float, default=900,
                        help="skip a backend at a size where its upsert + optimize would take longer, scaled "
                             "linearly from the previous size")
    args = parser.parse_args(argv)
    results, skipped = [], []
    for n in sorted(args.points):
        points = make_points(n, args.dim)
        for backend in args.backends:
            predicted = predicted_build_s(results, backend, n)
            if predicted is not None and predicted > args.budget_s:
                skipped.append(f"{backend} at {n} points: not run, ~{predicted:.0f} s to build "
                               f"(budget {args.budget_s:.0f} s)")
                print(skipped[-1], flush=True)
                continue
            results.append(bench_one(backend, points, args.dim, args.queries, args.limit))
            print(f"done: {backend} {n} points", flush=True)
        del points
    print(markdown(results, args.dim, args.queries, args.limit))
    print("\n".join(skipped))


def predicted_build_s(results: list[StoreBenchResult], backend: str, n: int) -> float | None:
    """Upsert + optimize time at n points, scaled linearly from this backend's largest measured size."""
    done = [r for r in results if r.backend == backend]
    if not done:
        return None
    last = max(done, key=lambda r: r.points)
    return (last.upsert_s + (last.optimize_s or 0.0)) * n / last.points


if __name__ == "__main__":
    raise SystemExit(main())
