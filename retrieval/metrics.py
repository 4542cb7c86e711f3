"""Ranking metrics for the evaluation: Recall@K, MRR@10, nDCG@10 (graded), P@10, per query and averaged.

Conventions (tested in tests/test_metrics.py):

- A query's judgements map item ids to gains; an item is relevant when its gain is > 0. Unjudged items have gain 0.
- Ranks are taken in the order given: ties in score are not re-broken here (the search returns a stable order).
  An id repeated in a ranking counts only at its first position; later copies are non-relevant.
- Fewer results than K: the missing positions count as non-relevant. P@10 always divides by 10 and Recall@K by
  the number of relevant items (so Recall@10 cannot reach 1 when more than 10 items are relevant).
- nDCG@10 uses linear gains and the standard log2 discount, gain_i / log2(i + 1) for rank i = 1..10; the ideal
  DCG sorts the query's own relevant gains, best first, and truncates them at 10.
- A query with no relevant item has no defined recall, MRR or nDCG: `score_query` returns None, `aggregate`
  leaves it out of every average and counts it in `n_no_relevant`.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

RECALL_KS = (1, 5, 10, 50)
CUTOFF = 10  # MRR, nDCG and precision are @10
METRICS = tuple(f"recall@{k}" for k in RECALL_KS) + ("mrr@10", "ndcg@10", "p@10")
DEPTH = max(RECALL_KS)  # results a ranking needs for every metric


def _relevant(gains: Mapping[str, float]) -> dict[str, float]:
    return {item: float(gain) for item, gain in gains.items() if gain > 0}


def _ranked_gains(ranking: Sequence[str], gains: Mapping[str, float], k: int) -> list[float]:
    """The gain at each of the first k positions (0 for non-relevant, repeated or missing positions)."""
    seen: set[str] = set()
    out = []
    for item in ranking[:k]:
        gain = 0.0 if item in seen else float(gains.get(item, 0.0))
        out.append(max(gain, 0.0))
        seen.add(item)
    return out + [0.0] * (k - len(out))


def _found(ranked: list[float], k: int) -> int:
    return sum(1 for g in ranked[:k] if g > 0)


def _mrr(ranked: list[float], k: int) -> float:
    return next((1.0 / rank for rank, g in enumerate(ranked[:k], 1) if g > 0), 0.0)


def _ndcg(ranked: list[float], relevant: dict[str, float], k: int) -> float:
    return dcg(ranked[:k]) / dcg(sorted(relevant.values(), reverse=True)[:k])


def recall_at(ranking: Sequence[str], gains: Mapping[str, float], k: int) -> float:
    """Share of the relevant items found in the first k results."""
    relevant = _relevant(gains)
    return _found(_ranked_gains(ranking, relevant, k), k) / len(relevant)


def precision_at(ranking: Sequence[str], gains: Mapping[str, float], k: int = CUTOFF) -> float:
    """Relevant results in the first k, divided by k (missing positions are non-relevant)."""
    return _found(_ranked_gains(ranking, gains, k), k) / k


def mrr_at(ranking: Sequence[str], gains: Mapping[str, float], k: int = CUTOFF) -> float:
    """1 / rank of the first relevant result within the first k, else 0."""
    return _mrr(_ranked_gains(ranking, gains, k), k)


def dcg(gains: Iterable[float]) -> float:
    """Discounted cumulative gain of gains in rank order: sum of gain_i / log2(i + 1)."""
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, 1))


def ndcg_at(ranking: Sequence[str], gains: Mapping[str, float], k: int = CUTOFF) -> float:
    """DCG of the first k results over the DCG of the best possible k (from the query's relevant gains)."""
    relevant = _relevant(gains)
    return _ndcg(_ranked_gains(ranking, relevant, k), relevant, k)


def score_query(ranking: Sequence[str], gains: Mapping[str, float]) -> dict[str, float] | None:
    """Every metric for one query, or None when the query has no relevant item."""
    relevant = _relevant(gains)
    if not relevant:
        return None
    ranked = _ranked_gains(ranking, relevant, DEPTH)
    scores = {f"recall@{k}": _found(ranked, k) / len(relevant) for k in RECALL_KS}
    scores.update({"mrr@10": _mrr(ranked, CUTOFF), "ndcg@10": _ndcg(ranked, relevant, CUTOFF),
                   "p@10": _found(ranked, CUTOFF) / CUTOFF})
    return scores


def aggregate(per_query: Iterable[dict[str, float] | None]) -> dict[str, float]:
    """Means over the queries with relevant items; `n_queries` counts those, `n_no_relevant` the others."""
    scored, skipped = [], 0
    for scores in per_query:
        if scores is None:
            skipped += 1
        else:
            scored.append(scores)
    means = {name: (sum(s[name] for s in scored) / len(scored) if scored else float("nan")) for name in METRICS}
    return {**means, "n_queries": len(scored), "n_no_relevant": skipped}
