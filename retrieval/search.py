"""Search strategies over the image vectors (payload filters apply in stage 1); the default is chosen by the
evaluation (docs/evaluation.md):

- two_stage: for image + text, stage 1 is the union of an image kNN and a text kNN (k1 each), stage 2 reranks the
  candidates by a z-scored fusion of image and text similarity (text_weight);
- two_stage_image: the same rerank over k1 candidates of the image kNN only (DESIGN.md's first shape);
- vector_fusion: one kNN with normalize((1 - w) * image + w * text);
- rrf: reciprocal-rank fusion (k = 60) of the image and text kNN lists (k1 each), weighted by text_weight;
- image_knn, text_knn: one modality's kNN, the other ignored.

With only an image or only a text every fusion strategy is that modality's kNN.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from retrieval.store.base import Filter, Hit, VectorStore
from schemas.api import STRATEGIES
from schemas.collection import IMAGE_VECTOR

RRF_K = 60


class QueryError(ValueError):
    """A query that cannot be run (no image and no text, unknown filter field, bad k)."""


class FilterError(QueryError):
    """A filter on a field that is not indexed for filtering."""


@dataclass(frozen=True)
class SearchParams:
    """How to search; the defaults are the ones the evaluation chose (docs/evaluation.md): for image + text,
    vector_fusion at text weight 0.55 ranks as well as two_stage (k1 1000, same weight) at a fiftieth of its
    latency. k1 is the best depth of the strategies that use it; 0.55 is the best weight of both top strategies."""

    k: int = 10
    k1: int = 1000  # stage-1 candidates of two_stage, two_stage_image and rrf
    text_weight: float = 0.55  # 0: image similarity only, 1: text similarity only
    filters: Filter | None = None
    exclude: tuple[str, ...] = ()
    strategy: str = "vector_fusion"  # one of STRATEGIES

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise QueryError(f"unknown strategy {self.strategy!r}; valid: {', '.join(STRATEGIES)}")

    def excluding(self, item_ids: tuple[str, ...]) -> "SearchParams":
        """The same search, also leaving these items out (the item a search by item started from)."""
        return replace(self, exclude=tuple(dict.fromkeys((*self.exclude, *item_ids))))


@dataclass(frozen=True)
class EncodedQuery:
    """Unit query vectors; at least one of the two is set."""

    image: np.ndarray | None = None
    text: np.ndarray | None = None


@dataclass
class Result:
    """One ranked item with the score of each stage."""

    item_id: str
    score: float
    stage1_score: float
    text_score: float | None
    payload: dict[str, Any]


@dataclass
class SearchOutcome:
    results: list[Result]
    timings_ms: dict[str, float] = field(default_factory=dict)


def validate_filters(filters: Filter | None, allowed: tuple[str, ...]) -> None:
    """Unknown fields are an error (a typo must not silently return everything)."""
    unknown = sorted(set(filters or {}) - set(allowed))
    if unknown:
        raise FilterError(f"unknown filter field(s) {unknown}; filterable fields: {', '.join(allowed)}")


def zscore(values: np.ndarray) -> np.ndarray:
    """Standardise within the candidate set: image-image and text-image cosines live on different scales."""
    spread = values.std()
    return (values - values.mean()) / spread if spread > 1e-9 else np.zeros_like(values)


def fuse(stage1: np.ndarray, text: np.ndarray, text_weight: float) -> np.ndarray:
    """Weighted sum of standardised image and text similarities."""
    return (1.0 - text_weight) * zscore(stage1) + text_weight * zscore(text)


def _knn(store: VectorStore, collection: str, vector: np.ndarray, limit: int, params: SearchParams,
         with_vectors: bool) -> list[Hit]:
    hits = store.search(collection, IMAGE_VECTOR, vector, limit + len(params.exclude), params.filters,
                        with_vectors=with_vectors)
    excluded = set(params.exclude)
    return [h for h in hits if h.item_id not in excluded][:limit]


def fused_vector(query: EncodedQuery, text_weight: float) -> np.ndarray:
    """normalize((1 - w) * image + w * text): one query vector for both modalities (w = 0.5: their plain sum)."""
    vector = (1.0 - text_weight) * query.image + text_weight * query.text
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1e-9 else query.image


def rrf_scores(lists: list[list[Hit]], weights: list[float], k: int = RRF_K) -> dict[str, float]:
    """Reciprocal-rank fusion: sum of 2 * weight / (k + rank) over the lists an item appears in (ranks from 1);
    with equal weights of 0.5 this is the standard RRF sum of 1 / (k + rank)."""
    scores: dict[str, float] = {}
    for hits, weight in zip(lists, weights):
        for rank, hit in enumerate(hits, 1):
            scores[hit.item_id] = scores.get(hit.item_id, 0.0) + 2.0 * weight / (k + rank)
    return scores


# Stage 1 of each strategy: named candidate lists ("image", "text" or "fused"), each best first.
Candidates = dict[str, list[Hit]]


def _stage1_image(store: VectorStore, collection: str, query: EncodedQuery, params: SearchParams) -> Candidates:
    return {"image": _knn(store, collection, query.image, params.k, params, False)}


def _stage1_text(store: VectorStore, collection: str, query: EncodedQuery, params: SearchParams) -> Candidates:
    return {"text": _knn(store, collection, query.text, params.k, params, False)}


def _stage1_fused(store: VectorStore, collection: str, query: EncodedQuery, params: SearchParams) -> Candidates:
    vector = fused_vector(query, params.text_weight)
    return {"fused": _knn(store, collection, vector, params.k, params, True)}


def _stage1_image_deep(store: VectorStore, collection: str, query: EncodedQuery, params: SearchParams) -> Candidates:
    return {"image": _knn(store, collection, query.image, params.k1, params, True)}


def _stage1_both(store: VectorStore, collection: str, query: EncodedQuery, params: SearchParams) -> Candidates:
    """Both kNNs, k1 each, so that items matching the words but not the photo's colour ("this, but red") are
    candidates at all."""
    return {"image": _knn(store, collection, query.image, params.k1, params, True),
            "text": _knn(store, collection, query.text, params.k1, params, True)}


def _union(candidates: Candidates) -> list[Hit]:
    """Text hits first, image hits over them (an item in both keeps its first place)."""
    union = {h.item_id: h for h in candidates.get("text", [])}
    union.update({h.item_id: h for h in candidates.get("image", [])})
    return list(union.values())


def _similarities(hits: list[Hit], query: EncodedQuery) -> tuple[np.ndarray, np.ndarray]:
    vectors = np.array([h.vectors[IMAGE_VECTOR] for h in hits], dtype=np.float32)  # 3x faster than np.stack
    return vectors @ query.image, vectors @ query.text


def _ranked(hits: list[Hit], scores: np.ndarray, stage1: np.ndarray, text: np.ndarray | None, k: int) -> list[Result]:
    order = np.argsort(-scores, kind="stable")[:k]
    return [Result(hits[i].item_id, float(scores[i]), float(stage1[i]), None if text is None else float(text[i]),
                   hits[i].payload) for i in order]


def _stage2_list(candidates: Candidates, query: EncodedQuery, params: SearchParams) -> list[Result]:
    """A single kNN list as it came: its cosine is the final and the stage-1 score."""
    (name, hits), = candidates.items()
    return [Result(h.item_id, h.score, h.score, h.score if name == "text" else None, h.payload)
            for h in hits[: params.k]]


def _stage2_fused(candidates: Candidates, query: EncodedQuery, params: SearchParams) -> list[Result]:
    hits = candidates["fused"]
    if not hits:
        return []
    _, text_scores = _similarities(hits, query)
    scores = np.array([h.score for h in hits])
    return _ranked(hits, scores, scores, text_scores, params.k)


def _stage2_rerank(candidates: Candidates, query: EncodedQuery, params: SearchParams) -> list[Result]:
    """Rerank the candidates by z-scored fusion of image and text similarity."""
    hits = _union(candidates)
    if not hits:
        return []
    image_scores, text_scores = _similarities(hits, query)
    return _ranked(hits, fuse(image_scores, text_scores, params.text_weight), image_scores, text_scores, params.k)


def _stage2_rrf(candidates: Candidates, query: EncodedQuery, params: SearchParams) -> list[Result]:
    hits = _union(candidates)
    if not hits:
        return []
    fused = rrf_scores([candidates["image"], candidates["text"]], [1.0 - params.text_weight, params.text_weight])
    image_scores, text_scores = _similarities(hits, query)
    return _ranked(hits, np.array([fused[h.item_id] for h in hits]), image_scores, text_scores, params.k)


_PLANS = {
    "image_knn": (_stage1_image, _stage2_list),
    "text_knn": (_stage1_text, _stage2_list),
    "vector_fusion": (_stage1_fused, _stage2_fused),
    "rrf": (_stage1_both, _stage2_rrf),
    "two_stage": (_stage1_both, _stage2_rerank),
    "two_stage_image": (_stage1_image_deep, _stage2_rerank),
}
assert set(_PLANS) == set(STRATEGIES)


def plan(query: EncodedQuery, strategy: str) -> str:
    """The strategy actually run: with one modality given, every fusion strategy is the single kNN over it."""
    if query.image is None and query.text is None:
        raise QueryError("a query needs an image, a text, or both")
    if (strategy == "image_knn" and query.image is None) or (strategy == "text_knn" and query.text is None):
        raise QueryError(f"strategy {strategy} needs the query's {strategy.removesuffix('_knn')}")
    if query.image is None or query.text is None:
        return "image_knn" if query.image is not None else "text_knn"
    return strategy


def search(store: VectorStore, collection: str, query: EncodedQuery, params: SearchParams) -> SearchOutcome:
    """Run the strategy's two stages (see SearchParams.strategy); a text-only or image-only query is a single kNN."""
    stage1, stage2 = _PLANS[plan(query, params.strategy)]
    started = time.perf_counter()
    candidates = stage1(store, collection, query, params)
    timings = {"stage1_ms": (time.perf_counter() - started) * 1000}
    results = stage2(candidates, query, params)
    timings["stage2_ms"] = (time.perf_counter() - started) * 1000 - timings["stage1_ms"]
    return SearchOutcome(results, timings)
