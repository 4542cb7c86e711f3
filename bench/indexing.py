"""Index throughput: (a) model-only ceiling, (b) the project's Ray pipeline, (c) a naive per-image loop; same images.

python -m bench.indexing --n 512 --models offline ViT-B-32 --sizes 224 750x1101
ViT-B-32 runs with random weights (speed does not depend on the weights; the output says so).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

from jobs import cli
from schemas.jobs import IndexConfig, StoreConfig
from schemas.settings import OFFLINE_CATALOG, OFFLINE_MODEL, PROJECT_ROOT

MODELS = {"offline": OFFLINE_MODEL, "ViT-B-32": "ViT-B-32"}
# Images per set: enough for a steady window of 10+ s at each model's speed on 2 CPUs (~200 and ~11 images/s).
DEFAULT_N = {"offline": 2048, "ViT-B-32": 512}


@dataclass
class Row:
    model: str
    images: str
    ceiling: float
    pipeline: float
    end_to_end: float
    naive: float
    peak_gb: float


class PeakMemory:
    """Samples the RSS of this process and every Ray worker on the machine (or of this process only); keeps the
    peak."""

    def __init__(self, interval_s: float = 0.2, ray_workers: bool = True):
        self.peak, self._stop, self.interval_s, self.ray_workers = 0, threading.Event(), interval_s, ray_workers
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        if not self.ray_workers:
            return psutil.Process().memory_info().rss
        return sum(_rss(p) for p in psutil.process_iter(["cmdline"]) if _ours(p))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _ours(process) -> bool:
    cmdline = " ".join(process.info.get("cmdline") or [])
    return process.pid == psutil.Process().pid or "ray::" in cmdline or "default_worker.py" in cmdline


def _rss(process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


def image_set(n: int, size: str, root: Path) -> Path:
    """A CSV catalog of the first n offline photos, as they are (224) or re-encoded at WxH like DeepFashion."""
    folder = root / f"images-{size}-{n}"
    if (folder / "catalog.csv").is_file():
        return folder
    (folder / "images").mkdir(parents=True, exist_ok=True)
    ids = sorted(p.stem for p in (OFFLINE_CATALOG / "images").glob("*.jpg"))[:n]
    for item_id in ids:
        source, target = OFFLINE_CATALOG / "images" / f"{item_id}.jpg", folder / "images" / f"{item_id}.jpg"
        if size == "224":
            shutil.copyfile(source, target)
        else:
            width, height = map(int, size.split("x"))
            Image.open(source).convert("RGB").resize((width, height), Image.Resampling.BICUBIC).save(target, quality=90)
    with (folder / "catalog.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "image"])
        writer.writerows([i, f"images/{i}.jpg"] for i in ids)
    return folder


def _load(model: str):
    from retrieval.model import load_model

    return load_model(MODELS[model], device="auto", precision="fp32", allow_random=model != "offline")


def ceiling(model: str, catalog: Path, batch_size: int) -> float:
    """Pre-decoded, pre-processed uint8 batches straight through the encoder: what the model alone can do."""
    import torch

    from retrieval.images import load_and_preprocess

    torch.set_num_threads(psutil.cpu_count())
    encoder = _load(model)
    files = sorted((catalog / "images").glob("*.jpg"))
    pixels = np.stack([load_and_preprocess(f.read_bytes(), encoder.preprocess_cfg, max_pixels=10**9) for f in files])
    encoder.encode_images(pixels[:batch_size])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(pixels), batch_size):
        encoder.encode_images(pixels[start:start + batch_size])
    return len(pixels) / (time.perf_counter() - started)


def pipeline(model: str, catalog: Path, batch_size: int, store: Path, extra: list[str]) -> tuple[float, float]:
    """The real index job (Ray Data read, decode, encode, upsert) into a fresh generation: images/s between the
    first and the last write (steady state), and over the whole pipeline (with worker start-up and model loading)."""
    from jobs import index, indexer

    flags = {k: v for k, v in vars(index.build_parser().parse_args(extra)).items() if v is not None}
    cfg = IndexConfig.from_settings(**{**flags, "catalog": catalog, "model": MODELS[model], "store_path": store,
                                       "rebuild": True, "batch_size": batch_size,
                                       "allow_random_weights": model != "offline"})
    summary = indexer.run(cfg)
    assert summary["indexed"] == summary["read"], summary["skipped"]
    if summary["steady_images_per_s"] is None:
        raise SystemExit("too few images for a steady-state rate (one write); raise --n")
    return summary["steady_images_per_s"], summary["indexed"] / summary["pipeline_s"]


def naive(model: str, catalog: Path, store_root: Path, limit: int) -> float:
    """The seed project's loop: PIL open, open_clip preprocess, encode one image, upsert one point."""
    import open_clip
    import torch

    from retrieval.store.base import Point
    from retrieval.store.factory import open_store
    from schemas.collection import IMAGE_VECTOR, CollectionSpec

    torch.set_num_threads(psutil.cpu_count())
    encoder = _load(model)
    transform = open_clip.image_transform(encoder.preprocess_cfg.image_size, is_train=False)
    files = sorted((catalog / "images").glob("*.jpg"))[:limit]
    with open_store(StoreConfig(backend="edge", path=store_root / "naive")) as store:
        store.create_collection(CollectionSpec(name="naive", model=model, dim=encoder.dim))
        started = time.perf_counter()
        with torch.inference_mode():
            for path in files:
                vector = encoder.model.encode_image(transform(Image.open(path).convert("RGB"))[None])
                vector = torch.nn.functional.normalize(vector, dim=-1)[0].numpy()
                store.upsert("naive", [Point(path.stem, {IMAGE_VECTOR: vector})])
        return len(files) / (time.perf_counter() - started)


def measure(model: str, size: str, args, root: Path) -> Row:
    catalog = image_set(args.n or DEFAULT_N[model], size, root)
    store = root / "stores" / f"{model}-{size}"
    shutil.rmtree(store, ignore_errors=True)
    a = ceiling(model, catalog, args.batch_size)
    with PeakMemory() as memory:
        b, end_to_end = pipeline(model, catalog, args.batch_size, store, args.pipeline_args.split())
    c = naive(model, catalog, store, args.naive_limit)
    return Row(model, size, a, b, end_to_end, c, memory.peak / 2**30)


def print_table(rows: list[Row]) -> None:
    print("\n| model | images | (a) ceiling img/s | (b) pipeline img/s | b end-to-end img/s | (c) naive img/s | "
          "b/a | b/c | peak GB (b) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.model} | {r.images} | {r.ceiling:.1f} | {r.pipeline:.1f} | {r.end_to_end:.1f} | {r.naive:.1f} | "
              f"{r.pipeline / r.ceiling:.2f} | {r.pipeline / r.naive:.2f} | {r.peak_gb:.2f} |")
    print("(b) is steady state, first write to last; end-to-end adds worker start-up and model loading.")
    print("ViT-B-32 runs with RANDOM weights: throughput does not depend on the weights; its vectors mean nothing.")


@cli.entry
def main(argv: list[str] | None = None) -> None:
    import ray

    parser = argparse.ArgumentParser(prog="python -m bench.indexing", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help=f"images per set (default per model: {DEFAULT_N})")
    parser.add_argument("--models", nargs="+", default=["offline", "ViT-B-32"], choices=list(MODELS))
    parser.add_argument("--sizes", nargs="+", default=["224", "750x1101"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--naive-limit", type=int, default=128, help="images timed in the slow naive loop")
    parser.add_argument("--pipeline-args", default=f"--encode-threads {psutil.cpu_count()}",
                        help="jobs.index flags (default: one encoder actor using every core, as measured best on "
                             "2 CPUs; docs/performance.md)")
    args = parser.parse_args(argv)
    root = PROJECT_ROOT / "var" / "bench"
    ray.init(ignore_reinit_error=True, log_to_driver=False)
    print(f"{psutil.cpu_count()} CPUs; torch device auto; n={args.n or DEFAULT_N}; batch {args.batch_size}; "
          f"pipeline flags: {args.pipeline_args or '(none)'}")
    rows = [measure(model, size, args, root) for model in args.models for size in args.sizes]
    print_table(rows)


if __name__ == "__main__":
    raise SystemExit(main())
