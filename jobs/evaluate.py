"""Evaluation job: index a catalog, encode the queries once, run every strategy x weight x depth, report metrics.

python -m jobs.evaluate --catalog ../shared/datasets/myntra-fashion-small --queries var/eval/queries-dev.jsonl

The catalog is indexed by jobs.index into its own embedded store (--store-path, default <out-dir>/qdrant); a
collection already indexed there with the same model and letterbox flag is reused as it is. Queries are encoded
with the service's encoder and preprocessing (the collection's letterbox flag), then every configuration runs
through retrieval.search.search, the service's own code; only the store underneath is memoised per query, so
that the grid costs one kNN per distinct query vector (an exact kNN's top `n` is the prefix of its top `m > n`).
Writes results.json, results.md and ndcg_vs_weight.png to --out-dir and prints the best per mode.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from jobs import cli, index
from jobs.eval_report import summary_line, write_outputs
from retrieval.catalogs import Catalog, open_catalog
from retrieval.metrics import DEPTH, aggregate, score_query
from retrieval.model import ClipEncoder, load_model
from retrieval.prepare import prepare_pixels
from retrieval.search import EncodedQuery, SearchParams, search
from retrieval.store.base import Hit, VectorStore
from retrieval.store.factory import open_store
from schemas.api import STRATEGIES
from schemas.jobs import CATALOG_FORMATS, IndexConfig
from schemas.settings import get_settings

log = logging.getLogger("jobs.evaluate")
MODES = ("text", "image", "image+text")
# The knobs each strategy reads; the others are not varied (and shown as "-").
KNOBS = {"image_knn": (), "text_knn": (), "vector_fusion": ("text_weight",), "rrf": ("k1", "text_weight"),
         "two_stage_image": ("k1", "text_weight"), "two_stage": ("k1", "text_weight")}
SINGLE = {"text": "text_knn", "image": "image_knn"}  # one modality: every strategy is this kNN


@dataclass(frozen=True)
class Config:
    strategy: str
    k1: int | None = None
    text_weight: float | None = None

    def params(self, exclude: tuple[str, ...]) -> SearchParams:
        return SearchParams(k=DEPTH, k1=self.k1 or DEPTH, text_weight=0.5 if self.text_weight is None else
                            self.text_weight, exclude=exclude, strategy=self.strategy)

    def label(self) -> str:
        knobs = [f"k1={self.k1}" if self.k1 else "", f"w={self.text_weight:g}" if self.text_weight is not None else ""]
        return " ".join([self.strategy, *filter(None, knobs)])


@dataclass
class Query:
    qid: str
    mode: str
    text: str | None
    image: str | None
    relevant: dict[str, float]
    exclude: tuple[str, ...]


def grid(mode: str, strategies: list[str], weights: list[float], depths: list[int]) -> list[Config]:
    """Every configuration worth running for a mode, cheaper strategies first (they win ties)."""
    if mode in SINGLE:
        return [Config(SINGLE[mode])]
    configs = []
    for strategy in (s for s in KNOBS if s in strategies):
        k1s = depths if "k1" in KNOBS[strategy] else [None]
        ws = weights if "text_weight" in KNOBS[strategy] else [None]
        configs += [Config(strategy, k1, w) for k1 in k1s for w in ws]
    return configs


class MemoKnn:
    """A store whose kNN results are kept until clear(); hits carry vectors from a table loaded once (the edge
    store's own vector transfer costs ~0.3 ms a hit, more than the kNN)."""

    def __init__(self, store: VectorStore, vectors: dict[str, dict[str, np.ndarray]]):
        self.store, self.vectors, self._hits = store, vectors, {}

    def search(self, collection: str, vector_name: str, vector: np.ndarray, limit: int,
               query_filter=None, with_vectors: bool = False) -> list[Hit]:
        key = (collection, vector_name, np.asarray(vector, dtype=np.float32).tobytes(), repr(query_filter))
        fetched, hits = self._hits.get(key, (0, []))
        if fetched < limit:
            fetched, hits = limit, self.store.search(collection, vector_name, vector, limit, query_filter)
            for hit in hits:
                hit.vectors = self.vectors[hit.item_id]
            self._hits[key] = (fetched, hits)
        return hits[:limit]

    def clear(self) -> None:
        self._hits.clear()


def load_vectors(store: VectorStore, collection: str, ids: list[str], batch: int = 1000) -> dict[str, dict]:
    """item id -> named vectors, for every id that the collection holds."""
    hits = [h for start in range(0, len(ids), batch) for h in store.retrieve(collection, ids[start:start + batch])]
    return {h.item_id: h.vectors for h in hits}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__.splitlines()[0])
    cli.add_field(p, IndexConfig, "catalog")
    cli.add_field(p, IndexConfig, "catalog_format", choices=CATALOG_FORMATS)
    p.add_argument("--queries", type=Path, nargs="+", required=True, help="JSONL files (jobs.make_queries)")
    p.add_argument("--limit", type=int, help="index (and judge against) only the first N catalog items")
    p.add_argument("--max-queries", type=int, help="a seeded sample of at most N queries per mode")
    p.add_argument("--out-dir", type=Path, default=Path("var/eval"))
    p.add_argument("--store-path", type=Path, help="embedded store folder (default: <out-dir>/qdrant)")
    p.add_argument("--collection", help="alias to index into (default: eval-<catalog folder>[-<limit>])")
    cli.add_field(p, IndexConfig, "letterbox", action="store_true")
    cli.add_field(p, IndexConfig, "rebuild", action="store_true")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--weights", type=float, nargs="+", help="text weights (default: 0 to 1 by 0.1, by 0.05 near 0.5)",
                   default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0])
    p.add_argument("--depths", type=int, nargs="+", default=[50, 200, 500, 1000], help="stage-1 k1 values")
    p.add_argument("--latency-queries", type=int, default=50, help="queries timed without the memo, per strategy")
    cli.add_model_args(p)
    return p.parse_args(argv)


def index_config(args: argparse.Namespace) -> IndexConfig:
    """The index this evaluation judges: its own store under --out-dir and an alias named after the catalog."""
    given = {k: v for k, v in vars(args).items() if k in IndexConfig.model_fields and k != "collection"}
    cfg = IndexConfig.from_settings(**given, store_path=args.store_path or args.out_dir / "qdrant")
    name = args.collection or f"eval-{cfg.catalog.resolve().name}" + (f"-{cfg.limit}" if cfg.limit else "")
    return cfg.model_copy(update={"collection": name})


def load_queries(files: list[Path], max_per_mode: int | None) -> list[Query]:
    queries = [Query(q["qid"], q["mode"], q.get("text"), q.get("image"), dict(q.get("relevant") or {}),
                     tuple(q.get("exclude") or ())) for f in files for q in map(json.loads, f.open()) if q]
    unknown = {q.mode for q in queries} - set(MODES)
    if unknown:
        raise cli.UsageError(f"unknown query mode(s) {sorted(unknown)}; valid: {', '.join(MODES)}")
    if max_per_mode is None:
        return queries
    rng = random.Random(0)
    return [q for m in MODES for q in rng.sample(by_mode(queries, m), min(max_per_mode, len(by_mode(queries, m))))]


def by_mode(queries: list[Query], mode: str) -> list[Query]:
    return [q for q in queries if q.mode == mode]


def restrict_to_collection(queries: list[Query], store: VectorStore, collection: str) -> int:
    """Judge against what the collection holds: relevant items that are not in it are dropped (returns how many)."""
    judged = sorted({i for q in queries for i in q.relevant})
    present = {h.item_id for h in store.retrieve(collection, judged, with_vectors=False)}
    for q in queries:
        q.relevant = {i: g for i, g in q.relevant.items() if i in present}
    return len(judged) - len(present)


def encode_texts(encoder: ClipEncoder, texts: list[str], batch_size: int = 256) -> dict[str, np.ndarray]:
    """Unique texts to unit vectors, batched (stripped as retrieval.prepare.checked_query does)."""
    out = {}
    for start in range(0, len(texts), batch_size):
        batch = texts[start:start + batch_size]
        out.update(zip(batch, encoder.encode_texts([t.strip() for t in batch])))
    return out


def encode_images(encoder: ClipEncoder, paths: list[Path], letterbox: bool, max_pixels: int,
                  batch_size: int = 64) -> dict[Path, np.ndarray]:
    """Unique image files to unit vectors through retrieval.images, preprocessed as the collection was."""
    cfg = encoder.preprocess_cfg.with_letterbox(letterbox)
    out = {}
    for start in tqdm(range(0, len(paths), batch_size), desc="encode images", unit="batch", leave=False):
        batch = paths[start:start + batch_size]
        pixels = np.stack([prepare_pixels(p.read_bytes(), cfg, max_pixels=max_pixels) for p in batch])
        out.update(zip(batch, encoder.encode_images(pixels)))
    return out


def encode_queries(encoder: ClipEncoder, queries: list[Query], root: Path, letterbox: bool,
                   max_pixels: int) -> list[EncodedQuery]:
    """Every query once, each distinct image and text once, in batches."""
    texts = encode_texts(encoder, sorted({q.text for q in queries if q.text and q.text.strip()}))
    paths = sorted({root / q.image for q in queries if q.image})
    images = encode_images(encoder, paths, letterbox, max_pixels)
    return [EncodedQuery(image=images[root / q.image] if q.image else None,
                         text=texts.get(q.text) if q.text else None) for q in queries]


def run_grid(memo: MemoKnn, collection: str, queries: list[Query], encoded: list[EncodedQuery],
             configs: dict[str, list[Config]], search_fn=search) -> dict[tuple[str, Config], list]:
    """Per (mode, config): each query's metrics (None for a query without relevant items), in query order.
    The deepest configurations run first, so that each kNN is fetched once and sliced for the others."""
    scores: dict[tuple[str, Config], list] = {(m, c): [] for m, cs in configs.items() for c in cs}
    deepest_first = {m: sorted(cs, key=lambda c: -(c.k1 or 0)) for m, cs in configs.items()}
    for query, vectors in tqdm(list(zip(queries, encoded)), desc="search grid", unit="query"):
        memo.clear()
        for config in deepest_first[query.mode]:
            per_query = None
            if query.relevant:
                outcome = search_fn(memo, collection, vectors, config.params(query.exclude))
                per_query = score_query([r.item_id for r in outcome.results], query.relevant)
            scores[(query.mode, config)].append(per_query)
    return scores


def rows_of(scores: dict[tuple[str, Config], list]) -> list[dict]:
    return [{"mode": mode, **asdict(config), "label": config.label(), **aggregate(per_query)}
            for (mode, config), per_query in scores.items()]


def best_rows(rows: list[dict], by: str = "mode", key: str = "ndcg@10") -> dict[str, dict]:
    """The best row for each value of `by`, by nDCG@10; the first of equals wins (cheaper strategies come first)."""
    best: dict[str, dict] = {}
    for row in rows:
        if row[by] not in best or row[key] > best[row[by]][key]:
            best[row[by]] = row
    return best


def paired_delta(a: list, b: list, metric: str = "ndcg@10", resamples: int = 2000) -> tuple[float, float, float]:
    """Mean of a - b over the queries both scored, with a seeded 95 % bootstrap interval."""
    diffs = np.array([x[metric] - y[metric] for x, y in zip(a, b) if x is not None and y is not None])
    if not len(diffs):
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(0)
    means = diffs[rng.integers(0, len(diffs), (resamples, len(diffs)))].mean(axis=1)
    return float(diffs.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def compare_strategies(scores: dict, rows: list[dict], mode: str) -> list[dict]:
    """The best configuration of each strategy in a mode, against the mode's best (paired on queries)."""
    mine = [r for r in rows if r["mode"] == mode]
    best = best_rows(mine)[mode]
    per = lambda r: scores[(mode, Config(r["strategy"], r["k1"], r["text_weight"]))]  # noqa: E731
    return [{**row, "delta_vs_best": paired_delta(per(row), per(best))}
            for row in sorted(best_rows(mine, by="strategy").values(), key=lambda r: -r["ndcg@10"])]


def recommend(comparison: list[dict], latency_ms: dict[str, float]) -> dict | None:
    """The fastest strategy whose best configuration is not significantly worse than the best one (the 95 %
    interval of its paired nDCG@10 difference reaches 0): a slower strategy has to earn its cost."""
    fine = [row for row in comparison if row["delta_vs_best"][2] >= 0]
    return min(fine, key=lambda r: (latency_ms.get(r["label"], float("inf")), -r["ndcg@10"]), default=None)


def time_strategies(store: VectorStore, collection: str, queries: list[Query], encoded: list[EncodedQuery],
                    comparison: list[dict], n: int) -> dict[str, float]:
    """Median search() latency in ms (no memo) of each strategy's best configuration, over n image+text queries."""
    sample = [(q, e) for q, e in zip(queries, encoded) if q.mode == "image+text"][:n]
    out = {}
    for row in comparison:
        config = Config(row["strategy"], row["k1"], row["text_weight"])
        times = []
        for query, vectors in sample:
            started = time.perf_counter()
            search(store, collection, vectors, replace(config.params(query.exclude), k=10))
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


def measure(store: VectorStore, args: argparse.Namespace, catalog: Catalog, queries: list[Query],
            encoder: ClipEncoder, phases: Phases) -> dict:
    """Encode, run the grid, compare and time the strategies; the report without the run's provenance."""
    collection = store.resolve_alias(args.collection) or args.collection
    spec = store.collection_spec(collection)
    dropped = restrict_to_collection(queries, store, collection)
    memo = MemoKnn(store, load_vectors(store, collection, [item.id for item in catalog.items()]))
    encoded = encode_queries(encoder, queries, catalog.root, spec.letterbox, get_settings().max_image_pixels)
    phases.done("encode_s")
    configs = {m: grid(m, args.strategies, args.weights, args.depths) for m in MODES if by_mode(queries, m)}
    scores = run_grid(memo, collection, queries, encoded, configs)
    rows = sorted(rows_of(scores), key=lambda r: (MODES.index(r["mode"]), -r["ndcg@10"]))
    comparison = compare_strategies(scores, rows, "image+text") if "image+text" in configs else []
    phases.done("grid_s")
    latency = time_strategies(store, collection, queries, encoded, comparison, args.latency_queries)
    phases.done("latency_s")
    run = {"collection": collection, "points": store.count(collection), "letterbox": spec.letterbox,
           "queries": {m: len(by_mode(queries, m)) for m in configs}, "judged_items_not_in_collection": dropped}
    return {"run": run, "best": best_rows(rows), "comparison": comparison, "latency_ms": latency,
            "recommended": recommend(comparison, latency), "rows": rows}


def evaluate(args: argparse.Namespace, command: str = "") -> dict:
    """The whole run; returns the report written to results.json."""
    phases = Phases()
    cfg = index_config(args)
    args.collection = cfg.collection
    catalog = open_catalog(cfg.catalog, cfg.catalog_format)
    index_summary = index.ensure_index(cfg)
    phases.done("index_s")
    queries = load_queries(args.queries, args.max_queries)
    encoder = load_model(cfg.model, device=cfg.device, precision=cfg.precision)
    store = open_store(cfg.store)
    try:
        report = measure(store, args, catalog, queries, encoder, phases)
    finally:
        store.close()
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
