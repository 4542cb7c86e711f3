"""Search: a query's vectors in, ranked and explained catalog items out, by one of the strategies.

Strategies (retrieval/strategies.py): the store-side hybrid ones (retrieval/hybrid.py: every signal of the query as a
leg, fused in one store call) and the client-side ones (retrieval/fusion.py). Unset knobs take the defaults the
evaluation chose per query mode (docs/evaluation.md); every result is then explained by the same signals whatever
ranked it: the photo's and the words' CLIP similarity to the item's photo, the words' to its document, the BM25
score and the words that matched.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Any

import numpy as np

from retrieval import fusion, lexical, strategies
from retrieval.evidence import Tier, within
from retrieval.store.base import Filter, Hit, Nearest, SparseVector, VectorStore
from retrieval.understanding import Understood
from schemas.collection import BM25_VECTOR, IMAGE_VECTOR, TEXT_VECTOR


class QueryError(ValueError):
    """A query that cannot be run (no image and no text, unknown filter field, bad k)."""


class FilterError(QueryError):
    """A filter on a field that is not indexed for filtering (a well-formed request this collection cannot serve)."""


class StrategyError(QueryError):
    """A strategy that needs a signal the query lacks (a well-formed request that cannot be served as asked)."""


@dataclass(frozen=True)
class SearchParams:
    """How to search; knobs left None take the evaluated default of the strategy, and the strategy the default of
    the query's mode."""

    k: int = 10
    k1: int | None = None  # candidates per leg (hybrid), or stage-1 depth (two_stage, two_stage_image, rrf)
    text_weight: float | None = None  # 0: the photo only, 1: the words only (fusion strategies)
    filters: Filter | None = None
    exclude: tuple[str, ...] = ()
    strategy: str | None = None  # one of retrieval.strategies
    explain: bool = True  # score each result by every signal (the evaluation turns it off: it only ranks)

    def __post_init__(self) -> None:
        if self.strategy is not None and self.strategy not in strategies.REGISTRY:
            raise QueryError(f"unknown strategy {self.strategy!r}; valid: {', '.join(strategies.names())}")

    def excluding(self, item_ids: tuple[str, ...]) -> "SearchParams":
        """The same search, also leaving these items out (the item a search by item started from)."""
        return replace(self, exclude=tuple(dict.fromkeys((*self.exclude, *item_ids))))

    def resolved(self, mode: str) -> "SearchParams":
        """Every knob set: the strategy for this mode, its evaluated k1 and weight (k1 at least k)."""
        strategy = strategies.REGISTRY[self.strategy] if self.strategy is not None else strategies.default(mode)
        knobs = strategy.knobs_in(mode)
        k1 = self.k1 if self.k1 is not None else knobs.k1
        weight = self.text_weight if self.text_weight is not None else knobs.text_weight
        return replace(self, strategy=strategy.name, k1=max(k1, self.k), text_weight=weight)


@dataclass(frozen=True)
class EncodedQuery:
    """What a query gives: unit CLIP vectors of the photo and of the words, the words' BM25 vector, and the words
    as typed (to show which matched). At least one is set."""

    photo_vector: np.ndarray | None = None
    words_vector: np.ndarray | None = None  # the words' CLIP vector (an item's document vector when searching by it)
    words_bm25: SparseVector | None = None
    phrase: str | None = None
    understood: Understood | None = None  # what the words name in the catalog (retrieval/understanding.py)
    photo_values: Filter | None = None  # what the photo's neighbours agree it is (retrieval/evidence.py)

    @property
    def signals(self) -> set[str]:
        """Which of retrieval.strategies.SIGNALS the query has."""
        has = {"photo": self.photo_vector is not None, "words": self.words_vector is not None,
               "lexical": bool(self.words_bm25)}
        return {signal for signal, present in has.items() if present}

    @property
    def mode(self) -> str:
        has_words = self.words_vector is not None or bool(self.words_bm25)
        if self.photo_vector is None and not has_words:
            raise QueryError("a query needs an image, a text, or both")
        return mode_of(self.photo_vector is not None, has_words)


def mode_of(has_image: bool, has_words: bool) -> str:
    """A query's mode by its signals (the metrics label a request with neither, which is refused, as text)."""
    return "image+text" if has_image and has_words else "image" if has_image else "text"


@dataclass
class ScoredItem:
    """One ranked item, its final score and what each signal says of it (None where the query lacks the signal)."""

    item_id: str
    score: float
    payload: dict[str, Any]
    photo_score: float | None = None  # the photo against the item's photo (CLIP cosine)
    words_photo_score: float | None = None  # the words against the item's photo (CLIP cosine)
    words_document_score: float | None = None  # the words against the item's document (CLIP cosine)
    lexical_score: float | None = None  # BM25 of the words in the item's document, IDF from the collection
    matched_words: list[str] = field(default_factory=list)
    matched_values: list[str] = field(default_factory=list)  # "field: value" it has of those the words name


@dataclass
class SearchOutcome:
    results: list[ScoredItem]
    strategy: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)
    mode: str = ""  # the query's mode, as searched
    understood: Understood | None = None  # what the words named in the catalog, and the corrections made


def validate_filters(filters: Filter | None, allowed: tuple[str, ...]) -> None:
    """Unknown fields are an error (a typo must not silently return everything); so is an empty list of values."""
    unknown = sorted(set(filters or {}) - set(allowed))
    if unknown:
        raise FilterError(f"unknown filter field(s) {unknown}; filterable fields: {', '.join(allowed) or '(none)'}")
    empty = sorted(name for name, value in (filters or {}).items() if isinstance(value, list) and not value)
    if empty:
        raise FilterError(f"filter field(s) {empty} list no value; give at least one")


def check_strategy(query: EncodedQuery, strategy: strategies.Strategy) -> None:
    """A strategy that needs a signal the query lacks is an error, not a silent substitute. (Typed words without a
    BM25 term, all stopwords or punctuation, are not lacking: BM25 finds nothing for them, see `rank`.)"""
    missing = [signal for signal in strategy.needs if signal not in query.signals and not terms_only(signal, query)]
    if missing:
        raise StrategyError(f"strategy {strategy.name} needs the query's {strategies.SIGNALS[missing[0]]}")


def terms_only(signal: str, query: EncodedQuery) -> bool:
    """Whether `signal` is the BM25 terms of words that were typed but have none (which no schema can tell apart
    from words that have some: the tokenizer is the engine's)."""
    return signal == "lexical" and query.phrase is not None and not query.words_bm25


def rank(store: VectorStore, collection: str, query: EncodedQuery, params: SearchParams) -> fusion.Ranked:
    """The resolved strategy's ranking: hits with their final score, best first."""
    strategy = strategies.REGISTRY[params.strategy]
    check_strategy(query, strategy)
    if "lexical" in strategy.needs and not query.words_bm25:  # typed words without a BM25 term match nothing
        return []
    if strategy.prepare is not None:
        query = strategy.prepare(store, collection, query, params)
    if strategy.plans is not None:
        return hybrid_hits(store, collection, query, params, strategy.plans)
    return ties_by_id(strategy.rank(store, collection, query, params))


def ties_by_id(ranked: list[Hit]) -> list[Hit]:
    """Items with exactly the same score (a catalog's duplicate photos) in item id order: a store's own order
    among them depends on where each point was written, so a copy or a reindex would list them otherwise. (Which
    of a tied group make the cut at k is still the store's choice.)"""
    return [hit for _, tied in itertools.groupby(ranked, key=attrgetter("score"))
            for hit in sorted(tied, key=attrgetter("item_id"))]


def hybrid_hits(store: VectorStore, collection: str, query: EncodedQuery, params: SearchParams, plans) -> list:
    """One store call per plan, the next plan only while fewer than k results came back, its results after the
    earlier ones (hybrid_rescore: items with all the words, then with any, then the words' meaning; a Tier's plan
    on the items of its tier only)."""
    hits: list = []
    for plan in plans(query, params.k1, params.text_weight):
        tier = plan if isinstance(plan, Tier) else Tier(plan)
        filters = within(params.filters, tier.narrowed)
        if filters is False:
            continue
        seen = (*params.exclude, *(h.item_id for h in hits))
        hits += ties_by_id(store.query(collection, tier.plan, params.k - len(hits), filters, exclude=seen,
                                       with_vectors=params.explain))  # the explanation's, in the same call
        if len(hits) >= params.k:
            break
    return hits


def search(store: VectorStore, collection: str, query: EncodedQuery, params: SearchParams) -> SearchOutcome:
    """Rank with the strategy (defaults by the query's mode), then explain the results."""
    params = params.resolved(query.mode)
    started = time.perf_counter()
    ranked = rank(store, collection, query, params)
    timings = {"search_ms": (time.perf_counter() - started) * 1000}
    results = explain(store, collection, query, ranked) if params.explain else [
        ScoredItem(h.item_id, h.score, h.payload) for h in ranked]
    timings["explain_ms"] = (time.perf_counter() - started) * 1000 - timings["search_ms"]
    return SearchOutcome(results, params.strategy, timings, query.mode, query.understood)


def explain(store: VectorStore, collection: str, query: EncodedQuery, ranked: fusion.Ranked) -> list[ScoredItem]:
    """Each result scored by every signal of the query: the results' vectors (read again only where the strategy
    did not bring them), and one BM25 query restricted to them (the score needs the collection's IDF)."""
    ids = [hit.item_id for hit in ranked]
    if not ids:
        return []
    vectors = {hit.item_id: hit.vectors for hit in ranked if hit.vectors is not None}
    unread = [item_id for item_id in ids if item_id not in vectors]
    if unread:
        vectors.update({h.item_id: h.vectors or {} for h in store.retrieve(collection, unread, with_vectors=True)})
    lexical_scores = {}
    if query.words_bm25:
        hits = store.query(collection, Nearest(BM25_VECTOR, query.words_bm25, len(ids)), len(ids), only=ids)
        lexical_scores = {h.item_id: h.score for h in hits}
    return [ScoredItem(hit.item_id, hit.score, hit.payload, *_dense_scores(vectors.get(hit.item_id, {}), query),
                   lexical_scores.get(hit.item_id, 0.0) if query.words_bm25 else None,
                   lexical.matched_words(query.phrase, hit.payload.get("text", "")),
                   matched_values(query.understood, hit.payload))
            for hit in ranked]


def matched_values(understood: Understood | None, payload: dict) -> list[str]:
    """The values the words named that the item has, as "field: value"."""
    found = []
    for span in (understood.spans if understood else ()):
        have = payload.get(span.field)
        have = have if isinstance(have, list) else [have]
        found += [f"{span.field}: {name}" for name in span.names if name in have]
    return found


def _dense_scores(vectors: dict, query: EncodedQuery) -> tuple[float | None, float | None, float | None]:
    photo, document = vectors.get(IMAGE_VECTOR), vectors.get(TEXT_VECTOR)
    cos = lambda a, b: None if a is None or b is None else float(np.dot(a, b))  # noqa: E731
    return cos(photo, query.photo_vector), cos(photo, query.words_vector), cos(document, query.words_vector)
