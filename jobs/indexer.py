"""The index job's run (pipeline, resume, publish) and ensure_index, for jobs.index, the demo, evaluation, benches."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from jobs.index_progress import IndexProgress, ProgressLogger
from jobs.pipeline import build_pipeline
from retrieval.catalogs.tabular import READ_RESOURCES
from jobs.qdrant_sink import QdrantDatasink
from retrieval import held
from retrieval.catalogs import open_catalog
from retrieval.entry import UsageError
from retrieval.catalogs.fields import FieldStats, filter_fields, top_values
from retrieval.catalogs.location import Ref
from retrieval.catalogs.streamed import CatalogSource, ordered
from retrieval.generations import Target, finish_generation, target_collection
from retrieval.store.base import StoreError
from retrieval.store.factory import open_store
from retrieval.understanding import Synonyms
from schemas.collection import CollectionSpec
from schemas.jobs import IndexConfig

log = logging.getLogger("jobs.index")


def model_info(cfg: IndexConfig):
    """Load the model once on the driver: the collection needs its dimension, the decoders its preprocess config."""
    from retrieval.model import load_model

    encoder = load_model(cfg.model, device="cpu", precision="fp32", allow_random=cfg.allow_random_weights)
    return encoder.spec, encoder.dim, replace(encoder.preprocess_cfg.with_letterbox(cfg.letterbox), draft=cfg.draft)


def collection_spec(cfg: IndexConfig, model: str, dim: int, catalog_root: Ref, stats: FieldStats) -> CollectionSpec:
    """What this run's collection holds: the model's vectors, the catalog's filter fields and their common values,
    and the catalog's mean document length for BM25 (from the catalog's statistics, fields.FieldStats); its
    storage by the catalog's size (retrieval/store/storage.py) and a server's layout."""
    fields = filter_fields(stats, cfg.filter_fields)
    return CollectionSpec(name=cfg.collection, model=model, dim=dim, letterbox=cfg.letterbox,
                          segmentation=cfg.segment, catalog_root=str(catalog_root), filter_fields=fields,
                          filter_values=top_values(stats, fields), synonyms=synonyms_of(cfg),
                          bm25_avg_len=stats.mean_length(), storage=cfg.storage(stats.items), **cfg.layout())


def synonyms_of(cfg: IndexConfig) -> str | None:
    """The catalog's synonyms file, read and checked (None: the default file applies)."""
    if cfg.synonyms is None:
        return None
    try:
        text = Path(cfg.synonyms).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"--synonyms {cfg.synonyms}: cannot read it ({err})") from err
    if not Synonyms.parse(text).rules:
        raise UsageError(f"--synonyms {cfg.synonyms}: no rule in it (lines like 'a, b, c' or 'a, b => c')")
    return text


def prepare_collection(cfg: IndexConfig, spec: CollectionSpec) -> Target:
    """Create, reuse or resume the collection to write into (retrieval/generations.py); the store is closed again
    so workers can open it."""
    with open_store(cfg.store) as store:
        target = target_collection(store, spec, cfg.rebuild, cfg.resume)
        if cfg.synonyms is not None and target.spec.synonyms != spec.synonyms:  # read by queries only: no reindex
            store.update_spec(target.spec.model_copy(update={"synonyms": spec.synonyms}))
        return target


def still_to_index(cfg: IndexConfig, target: Target, ds):
    """The catalog rows a resumed generation does not hold yet, and how many items it holds (a crashed run's work
    is kept): the held ids paged from the store, the rows filtered against them in the pipeline (retrieval.held)."""
    if not target.resumed:
        return ds, 0
    with open_store(cfg.store) as store:
        keys = held.held_keys(store, target.name)
    return ds.map_batches(held.SkipHeld(keys), batch_format="numpy", batch_size=None, **READ_RESOURCES), len(keys)


def finish(cfg: IndexConfig, target: Target, tally, n_items: int) -> dict:
    """Count what landed, then publish the generation if the run is acceptable, and return the summary's part."""
    skipped = sum(tally.skipped.values())
    acceptable = n_items > 0 and skipped <= cfg.max_skip_fraction * n_items
    switch = target.is_new and acceptable
    points, published = finish_generation(cfg.store, cfg.collection, target.name, switch=switch,
                                          keep=cfg.keep_generations, optimize_above=cfg.optimize_above)
    return {"collection": target.name, "alias": cfg.collection, "alias_switched": switch,
            "points_in_collection": points, "dropped_generations": published.dropped,
            "removed_partial_generations": published.removed_partial, "acceptable": acceptable}


def run(cfg: IndexConfig) -> dict:
    """Index the catalog; returns the summary (read, indexed, skipped by reason, wall time, images/s)."""
    import ray

    started = time.perf_counter()
    catalog = open_catalog(cfg.catalog, cfg.catalog_format, cfg.text_fields, remote=True)
    source = CatalogSource(catalog, cfg.limit)
    ray.init(ignore_reinit_error=True, log_to_driver=False) if not ray.is_initialized() else None
    stats = source.stats(cfg.filter_fields or ())
    model, dim, preprocess_cfg = model_info(cfg)
    target = prepare_collection(cfg, collection_spec(cfg, model, dim, catalog.root, stats))
    with ordered(cfg.limit is not None):  # a --limit takes the same first items as the statistics did
        todo, already = still_to_index(cfg, target, source.dataset())
        n_todo = max(0, stats.items - already)  # resumed: a bound (held points need not all be catalog items)
        log.info("indexing %d items of %s into %s%s (filter fields: %s)", n_todo, catalog.root, target.name,
                 f", resumed: {already} already there" if target.resumed else "", ", ".join(target.spec.filter_fields))
        sink, pipeline_s = QdrantDatasink(cfg.store, target.name), 0.0
        if n_todo or target.resumed:  # the filter, not the count, says what a resumed run still has to index
            pipeline_s = write(cfg, target, build_pipeline(cfg, target.spec, todo, preprocess_cfg, catalog.root),
                               sink, n_todo)
    wall = time.perf_counter() - started
    return {"read": stats.items, "indexed": sink.tally.written, "resumed": target.resumed,
            "already_in_collection": already, "skipped": dict(sink.tally.skipped),
            "skipped_examples": sink.tally.examples, "wall_s": round(wall, 2), "pipeline_s": round(pipeline_s, 2),
            "stage_seconds": {k: round(v, 2) for k, v in sorted(sink.tally.stage_seconds.items())},
            "steady_images_per_s": round(rate, 1) if (rate := sink.tally.steady_rate()) else None,
            "images_per_s": round(sink.tally.written / wall, 1) if wall else 0.0,
            **finish(cfg, target, sink.tally, stats.items)}


def write(cfg: IndexConfig, target: Target, ds, sink: QdrantDatasink, n_todo: int) -> float:
    """Run the plan into the sink with its progress actor; returns the pipeline's seconds."""
    import ray

    started = time.perf_counter()
    sink.progress = ray.remote(IndexProgress).options(num_cpus=0).remote(target.name, n_todo)
    try:
        with ProgressLogger(sink.progress, cfg.progress_every_s):
            ds.write_datasink(sink, concurrency=None if not cfg.store.embedded else 1,
                              ray_remote_args={"num_cpus": 0.25})
        log.info("%s", ray.get(sink.progress.line.remote()))
    finally:
        ray.kill(sink.progress)
    return time.perf_counter() - started


def fitting_collection(cfg: IndexConfig) -> str | None:
    """The generation behind cfg's alias when it fits this run (model, letterbox, segmentation, vectors, catalog)
    and holds points, else None."""
    from retrieval.model import canonical_spec

    with open_store(cfg.store) as store:
        name = store.resolve_alias(cfg.collection)
        found = store.collection_spec(name) if name else None
        wanted = {"model": canonical_spec(cfg.model), "letterbox": cfg.letterbox, "segmentation": cfg.segment,
                  "vectors": CollectionSpec.model_fields["vectors"].default,
                  "catalog_root": str(open_catalog(cfg.catalog, cfg.catalog_format, remote=True).root)}
        return name if found and found.problem(**wanted) is None and store.count(name) else None


def ensure_index(cfg: IndexConfig) -> dict:
    """Reuse the collection when it fits (`{"reused": name}`), else index it and return the run's summary; Ray is
    started and shut down here when nobody had started it. Raises StoreError when the run skipped too much."""
    import ray

    found = None if cfg.rebuild else fitting_collection(cfg)
    if found:
        log.info("reusing collection %s (alias %s)", found, cfg.collection)
        return {"reused": found}
    cfg = cfg.model_copy(update={"rebuild": True})  # none, or one that does not fit: a new generation either way
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(include_dashboard=False, log_to_driver=False)
    try:
        summary = run(cfg)
    finally:
        if started_here:
            ray.shutdown()
    if not summary["acceptable"]:
        raise StoreError(f"indexing skipped too many items: {summary['skipped']}")
    return summary
