"""Evaluation job: index a catalog, encode the queries once, run every strategy x weight x depth, report metrics.

python -m jobs.evaluate --catalog ../shared/datasets/myntra-fashion-small --queries var/eval/queries-dev.jsonl

The catalog is indexed by jobs.index into its own embedded store (--store-path, default <out-dir>/qdrant); a
collection already indexed there that fits (model, letterbox, vectors) is reused as it is. Queries are encoded
with the service's encoder and preprocessing (the collection's letterbox flag) and the service's BM25 tokenizer,
then every configuration runs through retrieval.search.search, the service's own code (retrieval/evaluation.py).
Writes results.json, results.md and ndcg_vs_weight.png to --out-dir and prints the best and the default per mode.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from jobs import cli, indexer
from jobs.eval_report import summary_line, write_outputs
from jobs.progress import Progress
from retrieval import strategies
from retrieval.catalogs import Catalog, open_catalog
from retrieval.evaluation import (Config, DevQuery, MemoKnn, best_rows, by_mode, compare_strategies, grid,
                                  load_queries, recommend, rows_of, run_grid)
from retrieval.model import ClipEncoder, load_model
from retrieval.prepare import prepare_pixels, with_words
from retrieval.search import EncodedQuery, search
from retrieval.service import catalog_words
from retrieval.store.base import VectorStore
from retrieval.store.factory import open_store
from retrieval.strategies import MODES
from retrieval.understanding import CatalogWords
from schemas.collection import CollectionSpec
from schemas.jobs import CATALOG_FORMATS, IndexConfig
from schemas.settings import get_settings

log = logging.getLogger("jobs.evaluate")
WEIGHTS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0]


def add_catalog_args(p: argparse.ArgumentParser) -> None:
    """The catalog an evaluation judges, as the index job reads it."""
    cli.add_field(p, IndexConfig, "catalog")
    cli.add_field(p, IndexConfig, "catalog_format", choices=CATALOG_FORMATS)


def add_index_args(p: argparse.ArgumentParser) -> None:
    """Where an evaluation's own index lives and how it is built (index_config reads them)."""
    p.add_argument("--limit", type=int, help="index (and judge against) only the first N catalog items")
    p.add_argument("--out-dir", type=Path, default=Path("var/eval"))
    p.add_argument("--store-path", type=Path, help="embedded store folder (default: <out-dir>/qdrant)")
    p.add_argument("--collection", help="alias to index into (default: eval-<catalog folder>[-<limit>])")
    cli.add_field(p, IndexConfig, "letterbox", action="store_true")
    cli.add_field(p, IndexConfig, "rebuild", action="store_true")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__.splitlines()[0])
    add_catalog_args(p)
    p.add_argument("--queries", type=Path, nargs="+", required=True, help="JSONL files (jobs.make_queries)")
    p.add_argument("--max-queries", type=int, help="a seeded sample of at most N queries per mode")
    add_index_args(p)
    p.add_argument("--strategies", nargs="+", default=list(strategies.names()), choices=strategies.names())
    p.add_argument("--weights", type=float, nargs="+", default=WEIGHTS,
                   help="text weights (default: 0 to 1 by 0.1, by 0.05 near 0.5)")
    p.add_argument("--depths", type=int, nargs="+", default=[50, 200, 500, 1000], help="k1 values")
    p.add_argument("--latency-queries", type=int, default=50, help="queries timed without the memo, per strategy")
    cli.add_model_args(p)
    return p.parse_args(argv)


def index_config(args: argparse.Namespace) -> IndexConfig:
    """The index this evaluation judges: its own store under --out-dir and an alias named after the catalog."""
    given = {k: v for k, v in vars(args).items() if k in IndexConfig.model_fields and k != "collection"}
    cfg = IndexConfig.from_settings(**given, store_path=args.store_path or args.out_dir / "qdrant")
    name = args.collection or f"eval-{Path(cfg.catalog).resolve().name}" + (f"-{cfg.limit}" if cfg.limit else "")
    own = cfg.store.model_copy(update={"url": None, "api_key": None})  # never a server FASHION_QDRANT_URL names
    return cfg.model_copy(update={"collection": name, "store": own})


def load_vectors(store: VectorStore, collection: str, ids: list[str], batch: int = 1000) -> dict[str, dict]:
    """item id -> named vectors, for every id that the collection holds."""
    hits = [h for start in range(0, len(ids), batch) for h in store.retrieve(collection, ids[start:start + batch])]
    return {h.item_id: h.vectors for h in hits}


def restrict_to_collection(queries: list[DevQuery], store: VectorStore, collection: str) -> int:
    """Judge against what the collection holds: relevant items that are not in it are dropped (returns how many)."""
    judged = sorted({i for q in queries for i in q.relevant})
    present = {h.item_id for h in store.retrieve(collection, judged, with_vectors=False)}
    for q in queries:
        q.relevant = {i: g for i, g in q.relevant.items() if i in present}
    return len(judged) - len(present)


def encode_texts(encoder: ClipEncoder, texts: list[str], batch_size: int = 256) -> dict[str, np.ndarray]:
    """Unique texts to unit vectors, batched (already stripped, as retrieval.prepare.checked_query does)."""
    out = {}
    for start in range(0, len(texts), batch_size):
        batch = texts[start:start + batch_size]
        out.update(zip(batch, encoder.encode_texts(batch)))
    return out


def encode_images(encoder: ClipEncoder, paths: list[Path], letterbox: bool, max_pixels: int,
                  batch_size: int = 64) -> dict[Path, np.ndarray]:
    """Unique image files to unit vectors through the query path's preparation, preprocessed as the collection was."""
    cfg = encoder.preprocess_cfg.with_letterbox(letterbox)
    out = {}
    with Progress("encode query photos", len(paths), unit="images") as progress:
        for start in range(0, len(paths), batch_size):
            batch = paths[start:start + batch_size]
            pixels = np.stack([prepare_pixels(p.read_bytes(), cfg, max_pixels=max_pixels) for p in batch])
            out.update(zip(batch, encoder.encode_images(pixels)))
            progress.advance(len(batch))
    return out


def encode_queries(encoder: ClipEncoder, queries: list[DevQuery], root: Path, spec: CollectionSpec,
                   max_pixels: int, words: CatalogWords | None = None) -> list[EncodedQuery]:
    """Every query once, each distinct image and text once, in batches; the words' BM25 vector, and what they name
    in the catalog, as the service makes them."""
    texts = encode_texts(encoder, sorted({q.phrase for q in queries if q.phrase}))
    paths = sorted({root / q.image for q in queries if q.image})
    images = encode_images(encoder, paths, spec.letterbox, max_pixels)
    return [with_words(EncodedQuery(photo_vector=images[root / q.image] if q.image else None,
                                    words_vector=texts.get(q.phrase) if q.phrase else None), q.phrase,
                       spec.bm25_language, words) for q in queries]


def time_strategies(store: VectorStore, collection: str, sample: list[tuple[DevQuery, EncodedQuery]],
                    comparison: list[dict]) -> dict[str, float]:
    """Median search() latency in ms (no memo, results explained as the service does) of each strategy's best
    configuration over the sample."""
    out = {}
    for row in comparison:
        config = Config(row["strategy"], row["k1"], row["text_weight"])
        times = []
        for query, vectors in sample:
            started = time.perf_counter()
            search(store, collection, vectors, replace(config.params(query.exclude, k=10), explain=True))
            times.append((time.perf_counter() - started) * 1000)
        out[row["label"]] = float(np.median(times)) if times else float("nan")
    return out


class Phases:
    """Seconds spent in each phase of the run, and in all."""

    def __init__(self):
        self.started = self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self._last = round(now - self._last, 1), now

    def total(self) -> float:
        return time.perf_counter() - self.started


def choose(store: VectorStore, collection: str, scores: dict, rows: list[dict], queries: list[DevQuery],
           encoded: list[EncodedQuery], n_timed: int) -> dict[str, dict]:
    """Per mode with a choice to make: each strategy settled, against the best, timed, and the default."""
    out = {}
    present = {r["mode"] for r in rows}
    for mode in (m for m in MODES if len(strategies.in_mode(m)) > 1 and m in present):
        comparison = compare_strategies(scores, rows, mode)
        sample = [(q, e) for q, e in zip(queries, encoded) if q.mode == mode][:n_timed]
        latency = time_strategies(store, collection, sample, comparison)
        out[mode] = {"comparison": comparison, "latency_ms": latency, "recommended": recommend(comparison, latency)}
    return out


def prepared(store: VectorStore, collection: str, spec: CollectionSpec, catalog: Catalog, queries: list[DevQuery],
             encoder: ClipEncoder) -> tuple[MemoKnn, list[EncodedQuery]]:
    """What a grid runs on: the collection's kNN memo (its vectors loaded once) and the queries encoded as the
    service encodes them."""
    memo = MemoKnn(store, load_vectors(store, collection, [item.id for item in catalog.items()]))
    return memo, encode_queries(encoder, queries, catalog.root, spec, get_settings().max_image_pixels,
                                catalog_words(store, collection, spec))


def measure(store: VectorStore, args: argparse.Namespace, catalog: Catalog, queries: list[DevQuery],
            encoder: ClipEncoder, phases: Phases) -> dict:
    """Encode, run the grid, compare and time the strategies; the report without the run's provenance."""
    collection = store.resolve_alias(args.collection) or args.collection
    spec = store.collection_spec(collection)
    dropped = restrict_to_collection(queries, store, collection)
    memo, encoded = prepared(store, collection, spec, catalog, queries, encoder)
    phases.done("encode_s")
    configs = {m: grid(m, args.strategies, args.weights, args.depths) for m in MODES if by_mode(queries, m)}
    with Progress("search grid", len(queries), unit="queries") as progress:
        scores = run_grid(memo, collection, queries, encoded, configs, progress=progress.advance)
    rows = sorted(rows_of(scores), key=lambda r: (MODES.index(r["mode"]), -r["ndcg@10"]))
    phases.done("grid_s")
    choices = choose(store, collection, scores, rows, queries, encoded, args.latency_queries)
    phases.done("latency_s")
    run = {"collection": collection, "points": store.count(collection), "letterbox": spec.letterbox,
           "queries": {m: len(by_mode(queries, m)) for m in configs}, "judged_items_not_in_collection": dropped}
    return {"run": run, "best": best_rows(rows), "choices": choices, "rows": rows}


def evaluate(args: argparse.Namespace, command: str = "") -> dict:
    """The whole run; returns the report written to results.json."""
    phases = Phases()
    cfg = index_config(args)
    args.collection = cfg.collection
    catalog = open_catalog(cfg.catalog, cfg.catalog_format)
    index_summary = indexer.ensure_index(cfg)
    phases.done("index_s")
    queries = load_queries(args.queries, args.max_queries)
    encoder = load_model(cfg.model, device=cfg.device, precision=cfg.precision)
    with open_store(cfg.store) as store:
        report = measure(store, args, catalog, queries, encoder, phases)
    report["run"] = {"catalog": str(catalog.root), "model": encoder.spec, **report["run"], "index": index_summary,
                     "command": command, "phases_s": phases.seconds, "wall_s": phases.total()}
    return report


@cli.entry
def main(argv: list[str] | None = None) -> int:
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    args = parse_args(argv)
    command = "python -m jobs.evaluate " + " ".join(sys.argv[1:] if argv is None else argv)
    # The rerank's matrix-vector products (a few thousand rows) ran 25 s against 14 s for one grid with OpenBLAS
    # threads contending on a busy machine: one BLAS thread for this run.
    with threadpool_limits(1, user_api="blas"):
        report = evaluate(args, command)
    write_outputs(args.out_dir, report)
    print(summary_line(report, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
