"""Scaling with the model: index time and in-process query latency at growing catalog sizes (1k to the full catalog).

python -m bench.scale --sizes 1000 2500 5000 0        (0 = the whole catalog; each size in a fresh store)
"""

from __future__ import annotations

import argparse
import shutil

import numpy as np
import psutil

from bench.common import in_process_latency, query_kinds
from jobs import cli
from schemas.jobs import IndexConfig
from schemas.settings import PROJECT_ROOT, get_settings


def index_size(limit: int, store_path, threads: int) -> dict:
    from jobs import indexer

    cfg = IndexConfig.from_settings(store_path=store_path, rebuild=True, encode_threads=threads, limit=limit or None)
    return indexer.run(cfg)


def query_latency(store_path, repeats: int) -> dict[str, float]:
    """p50 ms of text and image searches (encode + search) through SearchService, and of the store's part."""
    from retrieval.service import SearchService

    s, kinds = get_settings(), query_kinds()
    store = IndexConfig.from_settings(store_path=store_path).store
    with SearchService.open(s.model, store, s.collection, precision=s.precision) as service:
        timed = in_process_latency(service, {k: kinds[k] for k in ("text", "image")}, repeats)
    return {"text": float(np.percentile(timed["text"]["total"], 50)),
            "image": float(np.percentile(timed["image"]["total"], 50)),
            "knn": float(np.percentile(timed["text"]["store"] + timed["image"]["store"], 50))}


def table_row(summary: dict, ms: dict[str, float]) -> str:
    return (f"| {summary['indexed']} | {summary['wall_s']:.1f} | {summary['steady_images_per_s'] or '-'} | "
            f"{summary['images_per_s']:.1f} | {ms['text']:.1f} | {ms['image']:.1f} | {ms['knn']:.2f} |")


@cli.entry
def main(argv: list[str] | None = None) -> None:
    import ray

    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
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
          "| store p50 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(table_row(summary, ms) for summary, ms in rows))


if __name__ == "__main__":
    raise SystemExit(main())
