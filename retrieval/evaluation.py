"""The evaluation's logic without Ray: the query file, the grid of configurations, scoring every configuration on
every query through retrieval.search.search (the service's own code), paired comparisons and the default rule.

The rule for a mode's default: among the strategies that use every signal a query of that mode has (DESIGN.md:
candidates from the photo's and the words' CLIP vectors and from the words matched lexically), the fastest whose
settled configuration is not significantly worse than the best configuration of them (the 95 % interval of the
paired nDCG@10 difference reaches 0): a slower strategy has to earn its cost. A strategy's settled configuration is
not its best point either: the smallest depth and the middle weight among its configurations that are not
significantly worse than its best (see `settled`), so the defaults sit on plateaus, not on peaks of this dev set.
Strategies that ignore a signal are measured and reported, never chosen, since on another catalog the signal they
ignore may be the one that matters.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from retrieval import strategies
from retrieval.metrics import DEPTH, aggregate, score_query
from retrieval.search import EncodedQuery, SearchParams, search
from retrieval.store.base import Hit, VectorStore
from retrieval.strategies import MODES


class QueryFileError(ValueError):
    """A query file line that cannot be used; says which line and why."""


@dataclass(frozen=True)
class Config:
    strategy: str
    k1: int | None = None
    text_weight: float | None = None

    def params(self, exclude: tuple[str, ...], k: int = DEPTH) -> SearchParams:
        return SearchParams(k=k, k1=self.k1 or k, text_weight=0.5 if self.text_weight is None else self.text_weight,
                            exclude=exclude, strategy=self.strategy, explain=False)

    def label(self) -> str:
        knobs = [f"k1={self.k1}" if self.k1 else "", f"w={self.text_weight:g}" if self.text_weight is not None else ""]
        return " ".join([self.strategy, *filter(None, knobs)])


@dataclass
class DevQuery:
    """A query of the dev set: its words as typed, its photo (a path in the catalog), and the items it should find."""

    qid: str
    mode: str
    phrase: str | None
    image: str | None
    relevant: dict[str, float]
    exclude: tuple[str, ...]


def query_of(line: dict, where: str) -> DevQuery:
    """One query file line; without `mode`, the mode follows from which of image and text it sets."""
    image, phrase = line.get("image"), (line.get("text") or "").strip() or None
    mode = line.get("mode") or ("image+text" if image and phrase else "image" if image else "text" if phrase else None)
    if mode not in MODES:
        raise QueryFileError(f"{where}: mode {mode!r} (a query needs image and/or text; modes: {', '.join(MODES)})")
    return DevQuery(str(line.get("qid", where)), mode, phrase, image, dict(line.get("relevant") or {}),
                 tuple(line.get("exclude") or ()))


def load_queries(files: list[Path], max_per_mode: int | None) -> list[DevQuery]:
    """Every line of the JSONL files; with max_per_mode, a seeded sample of each mode."""
    queries = []
    for path in files:
        for number, text in enumerate(path.read_text().splitlines(), 1):
            if text.strip():
                try:
                    queries.append(query_of(json.loads(text), f"{path}:{number}"))
                except json.JSONDecodeError as err:
                    raise QueryFileError(f"{path}:{number}: not JSON ({err})") from err
    if max_per_mode is None:
        return queries
    rng = random.Random(0)
    return [q for m in MODES for q in rng.sample(by_mode(queries, m), min(max_per_mode, len(by_mode(queries, m))))]


def by_mode(queries: list[DevQuery], mode: str) -> list[DevQuery]:
    return [q for q in queries if q.mode == mode]


def grid(mode: str, chosen: list[str], weights: list[float], depths: list[int]) -> list[Config]:
    """Every configuration worth running for a mode, in the grid's order (earlier ones win ties); the text weight
    only where the mode has a photo to weigh the words against."""
    configs = []
    for name in (s for s in strategies.in_mode(mode) if s in chosen):
        knobs = strategies.REGISTRY[name].knobs
        k1s = depths if "k1" in knobs else [None]
        weighted = "text_weight" in knobs and "photo" in strategies.MODE_SIGNALS[mode]
        configs += [Config(name, k1, w) for k1 in k1s for w in (weights if weighted else [None])]
    return configs


class MemoKnn:
    """A store whose plain kNN results are kept until clear() (hits carry vectors from a table loaded once: the
    edge store's own vector transfer costs ~0.3 ms a hit, more than the kNN); query plans go to the store as they
    are (they are one call already)."""

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

    def query(self, *args, **kwargs) -> list[Hit]:
        return self.store.query(*args, **kwargs)

    def clear(self) -> None:
        self._hits.clear()


def run_grid(memo: MemoKnn, collection: str, queries: list[DevQuery], encoded: list[EncodedQuery],
             configs: dict[str, list[Config]], search_fn=search, progress=None) -> dict[tuple[str, Config], list]:
    """Per (mode, config): each query's metrics (None for a query without relevant items), in query order.
    The deepest configurations run first, so that each kNN is fetched once and sliced for the others."""
    scores: dict[tuple[str, Config], list] = {(m, c): [] for m, cs in configs.items() for c in cs}
    deepest_first = {m: sorted(cs, key=lambda c: -(c.k1 or 0)) for m, cs in configs.items()}
    for query, vectors in zip(queries, encoded):
        memo.clear()
        for config in deepest_first.get(query.mode, []):
            per_query = None
            if query.relevant:
                outcome = search_fn(memo, collection, vectors, config.params(query.exclude))
                per_query = score_query([r.item_id for r in outcome.results], query.relevant)
            scores[(query.mode, config)].append(per_query)
        if progress is not None:
            progress()
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


def of(scores: dict, mode: str, row: dict) -> list:
    """A result row's per-query metrics, from the grid's scores."""
    return scores[(mode, Config(row["strategy"], row["k1"], row["text_weight"]))]


def settled(scores: dict, rows: list[dict], mode: str, strategy: str) -> dict:
    """A strategy's configuration to use: among those not significantly worse than its best (paired 95 % interval
    reaching 0), the smallest k1 (more candidates must earn their cost), then the middle of the weights left there
    (the centre of the plateau, not its noisiest point)."""
    mine = [r for r in rows if r["mode"] == mode and r["strategy"] == strategy]
    best = max(mine, key=lambda r: r["ndcg@10"])
    fine = [r for r in mine if r is best or paired_delta(of(scores, mode, r), of(scores, mode, best))[2] >= 0]
    k1 = min((r["k1"] for r in fine if r["k1"] is not None), default=None)
    at_k1 = sorted((r for r in fine if r["k1"] == k1), key=lambda r: (r["text_weight"] or 0.0))
    return at_k1[(len(at_k1) - 1) // 2]


def compare_strategies(scores: dict, rows: list[dict], mode: str) -> list[dict]:
    """Each strategy of a mode at its settled configuration, against the best configuration of the strategies using
    every signal (paired on queries), best first."""
    mine = [r for r in rows if r["mode"] == mode]
    eligible = [r for r in mine if r["strategy"] in strategies.all_signals(mode)]
    reference = best_rows(eligible or mine)[mode]
    chosen = [settled(scores, rows, mode, s) for s in dict.fromkeys(r["strategy"] for r in mine)]
    return [{**row, "all_signals": row["strategy"] in strategies.all_signals(mode),
             "delta_vs_best": paired_delta(of(scores, mode, row), of(scores, mode, reference))}
            for row in sorted(chosen, key=lambda r: -r["ndcg@10"])]


def recommend(comparison: list[dict], latency_ms: dict[str, float]) -> dict | None:
    """The fastest strategy using every signal whose settled configuration is not significantly worse than the best
    configuration of them (the module's rule)."""
    fine = [row for row in comparison if row["all_signals"] and row["delta_vs_best"][2] >= 0]
    return min(fine, key=lambda r: (latency_ms.get(r["label"], float("inf")), -r["ndcg@10"]), default=None)
