"""The index job's Ray Data plan: which stage runs where, with what resources (the stages live in retrieval/)."""

from __future__ import annotations

from typing import Any

from retrieval.catalogs.location import Ref
from retrieval.indexing import Stage, index_stages
from schemas.collection import CollectionSpec
from schemas.jobs import IndexConfig


def encoder_resources(cfg: IndexConfig) -> dict:
    """Per-actor resources: a whole GPU per actor when the cluster has GPUs and none were asked for explicitly."""
    import ray

    gpus = cfg.encode_gpus
    if gpus == 0 and cfg.device in ("auto", "cuda") and ray.cluster_resources().get("GPU", 0) > 0:
        gpus = 1.0
    return {"num_cpus": cfg.encode_cpus, "num_gpus": gpus}


def build_pipeline(cfg: IndexConfig, spec: CollectionSpec, ds, preprocess_cfg, catalog_root: Ref):
    """The Ray Data plan of retrieval.indexing.index_stages over `ds`, the catalog's input rows
    (retrieval.catalogs.streamed): stateless stages as CPU tasks, the segmenter and the encoder each in its own
    actor pool."""
    resources = encoder_resources(cfg)
    device = "cuda" if resources["num_gpus"] > 0 else ("cpu" if cfg.device == "auto" else cfg.device)
    threads = (cfg.encode_threads or max(1, round(cfg.encode_cpus))) if device == "cpu" else None
    options = segment_options(cfg, catalog_root) if cfg.segment != "none" else {}
    stages = index_stages(cfg, spec, preprocess_cfg, device=device, threads=threads, segment_options=options)
    return map_stages(cfg, ds, stages, resources)


def map_stages(cfg: IndexConfig, ds, stages: list[Stage], encoder: dict):
    """`ds` through the stages in order, each placed by _placement (bench.driver_memory swaps the encoder)."""
    for stage in stages:
        fn, placement = _placement(stage, cfg, encoder)
        ds = ds.map_batches(fn, batch_size=cfg.batch_size, batch_format="numpy", **placement)
    return ds


def _placement(stage: Stage, cfg: IndexConfig, encoder: dict) -> tuple[Any, dict]:
    """Where Ray runs a stage: a stateless one goes in as an instance, so Ray runs (and fuses) it as CPU tasks; a
    stage with a model goes in as its class, built once per actor of its pool."""
    import ray

    if stage.pool is None:
        return stage.build(), {"num_cpus": cfg.decode_cpus}
    size, resources = {"segment": (cfg.segment_actors, {"num_cpus": cfg.segment_cpus, "num_gpus": cfg.segment_gpus}),
                       "encode": (cfg.encode_actors, encoder)}[stage.pool]
    return stage.cls, {"fn_constructor_args": stage.args, "fn_constructor_kwargs": stage.kwargs,
                       "compute": ray.data.ActorPoolStrategy(size=size), **resources}


def segment_options(cfg: IndexConfig, catalog_root: Ref) -> dict:
    """The segmenter's options; building it once here fails fast (bad name, missing weights) before Ray starts."""
    from retrieval.segmentation import make_segmenter, segmenter_options

    options = segmenter_options(cfg.segment, threads=max(1, round(cfg.segment_cpus)), catalog_root=catalog_root,
                                device="cuda" if cfg.segment_gpus else "cpu", weights=cfg.segment_weights)
    make_segmenter(cfg.segment, **options)
    return options
