"""Driver memory of the index job: peak RSS of the driver for synthetic CSV catalogs of growing size.

python -m bench.driver_memory [--rows 10000 1000000] [--out var/bench/driver-memory]

Each size gets a synthetic catalog.csv whose rows cycle through the offline catalog's rows and photos (ids and names
made unique), and runs in a fresh driver process (freed memory is not always returned to the OS) the job's own
streamed path: the statistics pass (retrieval.catalogs.streamed), the collection spec, then the read, document and
decode stages of the job's plan into a sink that only counts. The encoder is replaced by a stand-in that writes a
constant vector (here only: what is measured is the driver's share, not the model's), so a million rows take the
time of decoding a million small photos. The driver's peak RSS is sampled every 50 ms and read from
getrusage at the end. A second table measures the resumed run's held ids: a million as retrieval.held's sorted
16-byte array against a Python set of the same ids.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from itertools import cycle, islice
from pathlib import Path

import numpy as np
from ray.data import Datasink
from ray.data.block import BlockAccessor

from bench.indexing import PeakMemory
from jobs import cli
from retrieval.indexing import Stage, column, index_stages, timed
from retrieval.rows import Batch
from schemas.settings import OFFLINE_CATALOG, OFFLINE_MODEL, PROJECT_ROOT

DIM = 256  # the offline model's width: the stand-in's vectors are the size the sink would get


class StandInEncoder:
    """The encoder's place in the plan (an actor pool), without a model: a constant vector per accepted row."""

    def __init__(self, dim: int = DIM):
        self.vector = (np.ones(dim, np.float32) / np.sqrt(dim)).tobytes()

    @timed("encode")
    def __call__(self, batch: Batch) -> Batch:
        out = {k: v for k, v in batch.items() if k != "pixels"}
        done = [b"" if error else self.vector for error in batch["error"]]
        return {**out, "vector": column(done), "text_vector": column(done)}


class CountingSink(Datasink):
    """Counts the rows that reach it (on the workers); the driver gets one number per write task."""

    rows = 0

    def write(self, blocks, ctx) -> int:
        return sum(BlockAccessor.for_block(block).num_rows() for block in blocks)

    def on_write_complete(self, write_result) -> None:
        self.rows = sum(write_result.write_returns)


def write_catalog(path: Path, rows: int) -> Path:
    """A catalog.csv of `rows` rows cycling through the offline catalog's rows; photos by absolute path."""
    with (OFFLINE_CATALOG / "catalog.csv").open(newline="", encoding="utf-8") as handle:
        source = list(csv.DictReader(handle))
    path.mkdir(parents=True, exist_ok=True)
    with (path / "catalog.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(source[0]))
        writer.writeheader()
        for i, row in enumerate(islice(cycle(source), rows)):
            writer.writerow({**row, "id": f"s{i}", "image": str(OFFLINE_CATALOG / row["image"]),
                             "productDisplayName": f"{row['productDisplayName']} {i}"})
    return path


def measure(catalog: Path) -> dict:
    """In this (fresh) process: the job's streamed statistics and plan, encoder stood in, peak driver RSS."""
    import ray

    from jobs.indexer import collection_spec, model_info
    from jobs.pipeline import map_stages
    from retrieval.catalogs import open_catalog
    from retrieval.catalogs.streamed import CatalogSource
    from schemas.jobs import IndexConfig

    ray.init(include_dashboard=False, log_to_driver=False)
    cfg = IndexConfig.from_settings(catalog=catalog, model=OFFLINE_MODEL, batch_size=256)
    started, after_init = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with PeakMemory(interval_s=0.05, ray_workers=False) as peak:
        source = CatalogSource(open_catalog(catalog))
        stats = source.stats()
        stats_s = time.perf_counter() - started
        _, dim, preprocess_cfg = model_info(cfg)  # the job loads the model on the driver too (its width)
        spec = collection_spec(cfg, cfg.model, dim, catalog, stats)
        stages = [*index_stages(cfg, spec, preprocess_cfg)[:-1], Stage(StandInEncoder, (dim,), pool="encode")]
        sink = CountingSink()
        map_stages(cfg, source.dataset(), stages, {"num_cpus": 0.5, "num_gpus": 0}).write_datasink(sink)
    return {"rows": int(sink.rows), "stats_s": round(stats_s, 1), "wall_s": round(time.perf_counter() - started, 1),
            "after_init_mb": after_init // 1024, "peak_sampled_mb": int(peak.peak) // 2**20,
            "peak_rusage_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def measure_in_child(catalog: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench.driver_memory", "--measure", str(catalog)],
                          capture_output=True, text=True, cwd=PROJECT_ROOT)
    if done.returncode:
        raise SystemExit(f"the measurement of {catalog} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def held_ids_memory(n: int) -> dict:
    """Bytes a resumed run holds for n held ids: retrieval.held's array against a set of the same id strings."""
    from retrieval.held import keys

    ids = [f"s{i}" for i in range(n)]
    tracemalloc.start()
    as_set = set(ids)
    set_bytes = tracemalloc.get_traced_memory()[0] + sum(map(sys.getsizeof, ids))
    tracemalloc.stop()
    del as_set
    started = time.perf_counter()
    array = np.unique(keys(ids))
    return {"ids": n, "set_mb": round(set_bytes / 2**20, 1), "array_mb": round(array.nbytes / 2**20, 1),
            "array_build_s": round(time.perf_counter() - started, 2)}


@cli.entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.driver_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "var" / "bench" / "driver-memory")
    parser.add_argument("--held", type=int, default=1_000_000, help="held ids for the resume table (0: skip it)")
    parser.add_argument("--measure", type=Path, help="(internal) measure this catalog here")
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    results = [{**measure_in_child(write_catalog(args.out / f"rows-{n}", n))} for n in args.rows]
    print("| catalog rows | rows through | stats pass s | wall s | driver RSS after ray.init MB | peak RSS MB "
          "(sampled) | peak RSS MB (getrusage) |\n|---|---|---|---|---|---|---|")
    for n, r in zip(args.rows, results):
        print(f"| {n:,} | {r['rows']:,} | {r['stats_s']} | {r['wall_s']} | {r['after_init_mb']} | "
              f"{r['peak_sampled_mb']} | {r['peak_rusage_mb']} |")
    print(f"\npeak growth {args.rows[0]:,} -> {args.rows[-1]:,} rows: "
          f"{results[-1]['peak_rusage_mb'] - results[0]['peak_rusage_mb']} MB (target: within 300 MB)")
    if args.held:
        print(f"\nheld ids on resume: {json.dumps(held_ids_memory(args.held))}")


if __name__ == "__main__":
    sys.exit(main())
