"""Index job: catalog -> read -> decode/preprocess -> CLIP encode (actor pool) -> Qdrant, with a summary at the end.

Run locally:   python -m jobs.index --catalog ../shared/datasets/myntra-fashion-small
On a cluster:  ray job submit --working-dir . -- python -m jobs.index --catalog /abs/path ...
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from itertools import islice
from pathlib import Path

from jobs.qdrant_sink import QdrantDatasink
from retrieval.catalogs import CATALOG_FORMATS, CatalogError, open_catalog
from retrieval.generations import publish, target_collection
from retrieval.model import ModelLoadError
from retrieval.settings import get_settings
from retrieval.stages import DecodeImages, EncodeImages, ReadImages, catalog_rows
from retrieval.store.base import StoreError
from retrieval.store.factory import open_store
from schemas.collection import CollectionSpec
from schemas.jobs import IndexConfig, StoreConfig

log = logging.getLogger("jobs.index")


def add_store_args(parser: argparse.ArgumentParser) -> None:
    """Store flags shared by every job; defaults come from the settings."""
    s = get_settings()
    parser.add_argument("--collection", default=s.collection, help="alias searched and (re)built")
    parser.add_argument("--qdrant-url", default=s.qdrant_url, help="Qdrant server URL (unset: embedded store)")
    parser.add_argument("--qdrant-api-key", default=s.qdrant_api_key)
    parser.add_argument("--qdrant-grpc", action="store_true", default=s.qdrant_grpc)
    parser.add_argument("--store-backend", default=s.store_backend, choices=["edge", "local"])
    parser.add_argument("--store-path", type=Path, default=s.store_path, help="folder of the embedded store")


def store_config(args: argparse.Namespace) -> StoreConfig:
    s = get_settings()
    return StoreConfig(url=args.qdrant_url, api_key=args.qdrant_api_key, prefer_grpc=args.qdrant_grpc,
                       timeout_s=s.qdrant_timeout_s, backend=args.store_backend, path=args.store_path.resolve())


def add_model_args(parser: argparse.ArgumentParser) -> None:
    s = get_settings()
    parser.add_argument("--model", default=s.model, help="NAME/TAG, hf-hub:ORG/REPO or local-dir:PATH")
    parser.add_argument("--device", default=s.device, help="auto, cpu, cuda")
    parser.add_argument("--precision", default=s.precision, choices=["fp32", "bf16", "fp16", "auto"])


def parse_args(argv: list[str] | None = None) -> IndexConfig:
    s = get_settings()
    p = argparse.ArgumentParser(prog="python -m jobs.index", description=__doc__.splitlines()[0])
    p.add_argument("--catalog", type=Path, default=s.catalog, help="catalog root or CSV file")
    p.add_argument("--catalog-format", default=s.catalog_format, choices=CATALOG_FORMATS)
    add_model_args(p)
    add_store_args(p)
    p.add_argument("--rebuild", action="store_true", help="build a new generation and switch the alias to it")
    p.add_argument("--letterbox", action="store_true", default=s.letterbox, help="pad to square, no centre crop")
    p.add_argument("--no-draft", dest="draft", action="store_false", help="full-size JPEG decode before resizing")
    p.add_argument("--limit", type=int, help="index only the first N items")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--encode-actors", type=int, default=1)
    p.add_argument("--encode-cpus", type=float, default=1.0, help="CPUs per encoder actor (fractions allowed)")
    p.add_argument("--encode-gpus", type=float, default=0.0, help="GPUs per encoder actor (auto: 1 when present)")
    p.add_argument("--encode-threads", type=int, help="torch threads per encoder actor (default: its CPUs)")
    p.add_argument("--allow-random-weights", action="store_true", help="benchmarks only: NAME without a tag")
    p.add_argument("--decode-cpus", type=float, default=0.5, help="CPUs per decode task")
    p.add_argument("--segment", default="none", choices=["none", "u2netp", "annotations", "maskrcnn"],
                   help="isolate the garment before encoding (its own actor pool)")
    p.add_argument("--segment-actors", type=int, default=1)
    p.add_argument("--segment-cpus", type=float, default=1.0)
    p.add_argument("--segment-gpus", type=float, default=0.0)
    p.add_argument("--segment-weights", help="maskrcnn weights file, or DEFAULT to download torchvision's")
    p.add_argument("--max-skip-fraction", type=float, default=0.2, help="fail (no alias switch) past this")
    p.add_argument("--optimize-above", type=int, default=20_000, help="build the kNN index past this many points")
    p.add_argument("--summary-json", type=Path, help="also write the summary here")
    args = p.parse_args(argv)
    return IndexConfig(store=store_config(args), max_image_pixels=s.max_image_pixels,
                       **{k: v for k, v in vars(args).items() if k in IndexConfig.model_fields and k != "store"})


def encoder_resources(cfg: IndexConfig) -> dict:
    """Per-actor resources: a whole GPU per actor when the cluster has GPUs and none were asked for explicitly."""
    import ray

    gpus = cfg.encode_gpus
    if gpus == 0 and cfg.device in ("auto", "cuda") and ray.cluster_resources().get("GPU", 0) > 0:
        gpus = 1.0
    return {"num_cpus": cfg.encode_cpus, "num_gpus": gpus}


def build_pipeline(cfg: IndexConfig, rows: list[dict], preprocess_cfg, catalog_root: Path):
    """The Ray Data plan: decode in CPU tasks, optionally segment in its own actor pool, encode in an actor pool."""
    import ray

    resources = encoder_resources(cfg)
    device = "cuda" if resources["num_gpus"] > 0 else ("cpu" if cfg.device == "auto" else cfg.device)
    threads = (cfg.encode_threads or max(1, round(cfg.encode_cpus))) if device == "cpu" else None
    ds = (
        ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // 256, 400)))
        # Stateless stages go in as instances, so Ray runs (and fuses) them as CPU tasks, not actors.
        .map_batches(ReadImages(), batch_size=cfg.batch_size, num_cpus=cfg.decode_cpus, batch_format="numpy")
    )
    ds = _decode(ds, cfg, preprocess_cfg, catalog_root)
    return ds.map_batches(
        EncodeImages, fn_constructor_args=(cfg.model, device, cfg.precision, threads, cfg.allow_random_weights),
        batch_size=cfg.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.encode_actors), **resources)


def _decode(ds, cfg: IndexConfig, preprocess_cfg, catalog_root: Path):
    """Decode straight to model pixels, or decode to RGB and let the segmentation actors crop and preprocess."""
    import ray

    if cfg.segment == "none":
        return ds.map_batches(DecodeImages(preprocess_cfg, cfg.max_image_pixels),
                              batch_size=cfg.batch_size, num_cpus=cfg.decode_cpus, batch_format="numpy")
    from retrieval.segmentation import DecodeRGB, SegmentImages

    options = segment_options(cfg, catalog_root)
    return (ds.map_batches(DecodeRGB(cfg.max_image_pixels, min_side=320, max_side=640),
                           batch_size=cfg.batch_size, num_cpus=cfg.decode_cpus, batch_format="numpy")
            .map_batches(SegmentImages, fn_constructor_args=(cfg.segment,),
                         fn_constructor_kwargs={"preprocess_cfg": preprocess_cfg, **options},
                         batch_size=cfg.batch_size, batch_format="numpy",
                         compute=ray.data.ActorPoolStrategy(size=cfg.segment_actors),
                         num_cpus=cfg.segment_cpus, num_gpus=cfg.segment_gpus))


def segment_options(cfg: IndexConfig, catalog_root: Path) -> dict:
    """The segmenter's options; building it once here fails fast (bad name, missing weights) before Ray starts."""
    from retrieval.segmentation import make_segmenter, segmenter_options

    options = segmenter_options(cfg.segment, threads=max(1, round(cfg.segment_cpus)), catalog_root=catalog_root,
                                device="cuda" if cfg.segment_gpus else "cpu", weights=cfg.segment_weights)
    make_segmenter(cfg.segment, **options)
    return options


def model_info(cfg: IndexConfig):
    """Load the model once on the driver: the collection needs its dimension, the decoders its preprocess config."""
    from retrieval.model import load_model

    encoder = load_model(cfg.model, device="cpu", precision="fp32", allow_random=cfg.allow_random_weights)
    preprocess = encoder.preprocess_cfg
    preprocess = preprocess.letterboxed() if cfg.letterbox else preprocess
    return encoder.spec, encoder.dim, replace(preprocess, draft=cfg.draft)


def prepare_collection(cfg: IndexConfig, model: str, dim: int, catalog_root: Path) -> tuple[str, bool]:
    """Create (or reuse) the collection to write into; the store is closed again so workers can open it."""
    store = open_store(**cfg.store.model_dump())
    try:
        spec = CollectionSpec(name=cfg.collection, model=model, dim=dim, letterbox=cfg.letterbox,
                              segmentation=cfg.segment, catalog_root=str(catalog_root))
        return target_collection(store, spec, cfg.rebuild)
    finally:
        store.close()


def finish(cfg: IndexConfig, collection: str, is_new: bool, tally, n_items: int) -> dict:
    """Count what landed, then switch the alias if the run is acceptable, and return the summary."""
    store = open_store(**cfg.store.model_dump())
    try:
        points = store.count(collection)
        if points > cfg.optimize_above:  # brute force is ~1.5 ms at 10k points; an index pays off past ~20k
            store.optimize(collection)
    finally:
        store.close()  # release the new generation before the alias sends searches to it
    skipped = sum(tally.skipped.values())
    acceptable = n_items > 0 and skipped <= cfg.max_skip_fraction * n_items
    switch = is_new and acceptable
    store = open_store(**cfg.store.model_dump())
    try:
        dropped = publish(store, cfg.collection, collection, cfg.keep_generations) if switch else []
    finally:
        store.close()
    return {"collection": collection, "alias": cfg.collection, "alias_switched": switch,
            "points_in_collection": points, "dropped_generations": dropped, "acceptable": acceptable}


def run(cfg: IndexConfig) -> dict:
    """Index the catalog; returns the summary (read, indexed, skipped by reason, wall time, images/s)."""
    import ray

    started = time.perf_counter()
    catalog = open_catalog(cfg.catalog, cfg.catalog_format)
    items = list(islice(catalog.items(), cfg.limit))
    model, dim, preprocess_cfg = model_info(cfg)
    collection, is_new = prepare_collection(cfg, model, dim, catalog.root)
    log.info("indexing %d items of %s into %s", len(items), catalog.root, collection)
    sink = QdrantDatasink(cfg.store, collection)
    pipeline_s = 0.0
    if items:
        ray.init(ignore_reinit_error=True, log_to_driver=False) if not ray.is_initialized() else None
        pipeline_started = time.perf_counter()
        build_pipeline(cfg, catalog_rows(catalog, items), preprocess_cfg, catalog.root).write_datasink(
            sink, concurrency=None if not cfg.store.embedded else 1, ray_remote_args={"num_cpus": 0.25})
        pipeline_s = time.perf_counter() - pipeline_started
    wall = time.perf_counter() - started
    summary = {"read": len(items), "indexed": sink.tally.written, "skipped": dict(sink.tally.skipped),
               "skipped_examples": sink.tally.examples, "wall_s": round(wall, 2),
               "pipeline_s": round(pipeline_s, 2),
               "steady_images_per_s": round(rate, 1) if (rate := sink.tally.steady_rate()) else None,
               "images_per_s": round(sink.tally.written / wall, 1) if wall else 0.0,
               **finish(cfg, collection, is_new, sink.tally, len(items))}
    return summary


def print_summary(summary: dict) -> None:
    print(f"\nread {summary['read']}  indexed {summary['indexed']}  skipped {sum(summary['skipped'].values())}"
          f"  in {summary['wall_s']} s  ({summary['images_per_s']} images/s)")
    for reason, count in sorted(summary["skipped"].items(), key=lambda kv: -kv[1]):
        print(f"  skipped {count:>6}  {reason}  e.g. {', '.join(summary['skipped_examples'][reason])}")
    print(f"collection {summary['collection']} holds {summary['points_in_collection']} points; alias "
          f"{summary['alias']} {'switched to it' if summary['alias_switched'] else 'unchanged'}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = parse_args(argv)
    try:
        summary = run(cfg)
    except (CatalogError, ModelLoadError, StoreError, ValueError) as err:  # SegmenterError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_summary(summary)
    if cfg.summary_json:
        cfg.summary_json.write_text(json.dumps(summary, indent=2))
    if not summary["acceptable"]:
        print(f"error: more than {cfg.max_skip_fraction:.0%} of the items were skipped", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
