"""The index job's Ray Data plan: which stage runs where, with what resources (the stages live in retrieval/)."""

from __future__ import annotations

from pathlib import Path

from retrieval.indexing import DecodeImages, EmbedDocuments, EncodeItems, ReadImages
from schemas.collection import CollectionSpec
from schemas.jobs import IndexConfig


def encoder_resources(cfg: IndexConfig) -> dict:
    """Per-actor resources: a whole GPU per actor when the cluster has GPUs and none were asked for explicitly."""
    import ray

    gpus = cfg.encode_gpus
    if gpus == 0 and cfg.device in ("auto", "cuda") and ray.cluster_resources().get("GPU", 0) > 0:
        gpus = 1.0
    return {"num_cpus": cfg.encode_cpus, "num_gpus": gpus}


def build_pipeline(cfg: IndexConfig, spec: CollectionSpec, rows: list[dict], preprocess_cfg, catalog_root: Path):
    """The Ray Data plan: read, BM25-weigh the documents and decode in CPU tasks, optionally segment in its own actor
    pool, encode photos and documents in an actor pool."""
    import ray

    resources = encoder_resources(cfg)
    device = "cuda" if resources["num_gpus"] > 0 else ("cpu" if cfg.device == "auto" else cfg.device)
    threads = (cfg.encode_threads or max(1, round(cfg.encode_cpus))) if device == "cpu" else None
    ds = (
        ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // 256, 400)))
        # Stateless stages go in as instances, so Ray runs (and fuses) them as CPU tasks, not actors.
        .map_batches(ReadImages(), batch_size=cfg.batch_size, num_cpus=cfg.decode_cpus, batch_format="numpy")
        .map_batches(EmbedDocuments(spec.bm25_avg_len, spec.bm25_language), batch_size=cfg.batch_size,
                     num_cpus=cfg.decode_cpus, batch_format="numpy")
    )
    ds = _decode(ds, cfg, preprocess_cfg, catalog_root)
    return ds.map_batches(
        EncodeItems, fn_constructor_args=(cfg.model, device, cfg.precision, threads, cfg.allow_random_weights),
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
