"""Scaling with the model: index time and in-process query latency at growing catalog sizes (1k to the full catalog).

python -m jobs.bench_scale --sizes 1000 2500 5000 0        (0 = the whole catalog; each size in a fresh store)
"""

from __future__ import annotations

import argparse
import shutil
import time

import numpy as np
import psutil

from retrieval.settings import OFFLINE_CATALOG, PROJECT_ROOT, get_settings

from jobs.bench_serve import PHOTOS, WORDS


def index_size(limit: int, store_path, threads: int) -> dict:
    from jobs import index

    argv = ["--store-path", str(store_path), "--rebuild", "--encode-threads", str(threads)]
    return index.run(index.parse_args(argv + (["--limit", str(limit)] if limit else [])))


def query_latency(store_path, repeats: int) -> dict[str, float]:
    """p50 ms of text and image searches (encode + kNN) through SearchService on this store."""
    from retrieval.search import SearchParams
    from retrieval.service import SearchService
    from schemas.jobs import StoreConfig

    s, photos = get_settings(), [(OFFLINE_CATALOG / "images" / f"{i}.jpg").read_bytes() for i in PHOTOS]
    latencies = {"text": [], "image": [], "knn": []}
    store = StoreConfig(backend=s.store_backend, path=store_path)
    with SearchService.open(s.model, store, s.collection) as service:
        for i in range(repeats + 3):
            for kind, query in (("text", {"text": WORDS[i % len(WORDS)]}), ("image", {"image": photos[i % len(photos)]})):
                started = time.perf_counter()
                outcome = service.search(params=SearchParams(k=10), **query)
                if i >= 3:  # the first rounds warm caches
                    latencies[kind].append((time.perf_counter() - started) * 1000)
                    latencies["knn"].append(outcome.timings_ms["stage1_ms"])
    return {kind: float(np.percentile(ms, 50)) for kind, ms in latencies.items()}


def main(argv: list[str] | None = None) -> None:
    import ray

    parser = argparse.ArgumentParser(prog="python -m jobs.bench_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2500, 5000, 0], help="0 = the whole catalog")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    threads, root = psutil.cpu_count(), PROJECT_ROOT / "var" / "bench" / "scale"
    ray.init(ignore_reinit_error=True, log_to_driver=False)
    rows = []
    for size in args.sizes:
        shutil.rmtree(root, ignore_errors=True)
        summary = index_size(size, root, threads)
        rows.append((summary, query_latency(root, args.repeats)))
        print(f"done: {summary['indexed']} items", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    print(f"\n{threads} CPUs, one encoder actor with {threads} torch threads; model {get_settings().model}")
    print("| items | index wall s | pipeline img/s (steady) | img/s (wall) | text query p50 ms | image query p50 ms "
          "| kNN p50 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for summary, ms in rows:
        print(f"| {summary['indexed']} | {summary['wall_s']:.1f} | {summary['steady_images_per_s'] or '-'} | "
              f"{summary['images_per_s']:.1f} | {ms['text']:.1f} | {ms['image']:.1f} | {ms['knn']:.2f} |")


if __name__ == "__main__":
    main()
