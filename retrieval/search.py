"""Two-stage search: stage 1 kNN over image vectors (with payload filters), stage 2 rerank fusing image and text similarity."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrieval.store.base import Filter, Hit, VectorStore
from schemas.collection import IMAGE_VECTOR


class QueryError(ValueError):
    """A query that cannot be run (no image and no text, unknown filter field, bad k)."""


class FilterError(QueryError):
    """A filter on a field that is not indexed for filtering."""


@dataclass(frozen=True)
class SearchParams:
    """How to search; the defaults are the ones the evaluation chose (docs/evaluation.md)."""

    k: int = 10
    k1: int = 200
    text_weight: float = 0.5  # 0: image similarity only, 1: text similarity only
    filters: Filter | None = None
    exclude: tuple[str, ...] = ()


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


def _stage1(store: VectorStore, collection: str, query: EncodedQuery, params: SearchParams) -> list[Hit]:
    """Single kNN for one modality; for image + text, the union of both kNNs, so that items matching the words
    but not the photo's colour (\"this, but red\") are candidates at all."""
    if query.image is None or query.text is None:
        return _knn(store, collection, query.image if query.image is not None else query.text, params.k, params, False)
    by_image = _knn(store, collection, query.image, params.k1, params, True)
    by_text = _knn(store, collection, query.text, params.k1, params, True)
    union = {h.item_id: h for h in by_text}
    union.update({h.item_id: h for h in by_image})
    return list(union.values())


def _rerank(hits: list[Hit], query: EncodedQuery, params: SearchParams) -> list[Result]:
    vectors = np.stack([h.vectors[IMAGE_VECTOR] for h in hits])
    image_scores, text_scores = vectors @ query.image, vectors @ query.text
    fused = fuse(image_scores, text_scores, params.text_weight)
    order = np.argsort(-fused, kind="stable")[: params.k]
    return [Result(hits[i].item_id, float(fused[i]), float(image_scores[i]), float(text_scores[i]), hits[i].payload)
            for i in order]


def search(store: VectorStore, collection: str, query: EncodedQuery, params: SearchParams) -> SearchOutcome:
    """Run the two stages; a text-only or image-only query is a single kNN."""
    if query.image is None and query.text is None:
        raise QueryError("a query needs an image, a text, or both")
    started = time.perf_counter()
    hits = _stage1(store, collection, query, params)
    timings = {"stage1_ms": (time.perf_counter() - started) * 1000}
    if query.image is not None and query.text is not None and hits:
        results = _rerank(hits, query, params)
    else:
        only_text = query.image is None
        results = [Result(h.item_id, h.score, h.score, h.score if only_text else None, h.payload)
                   for h in hits[: params.k]]
    timings["stage2_ms"] = (time.perf_counter() - started) * 1000 - timings["stage1_ms"]
    return SearchOutcome(results, timings)
