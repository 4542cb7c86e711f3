"""Recommendations: catalog items like the ones a shopper liked and unlike the ones they disliked, optionally steered
by words ("summer dress") and away from words ("not floral"), diverse, and one per product group.

- The examples are the liked and disliked items' stored photo vectors (never encoded again) and the shopper's own
  liked and disliked photos (encoded as a search's photo is), run as the store's recommend query (`Recommend` on the
  `image` vector: best_score by default, sum_scores or average_vector asked). A photo is an example, not a catalog
  item: only the items are left out of the results.
- Words add the hybrid strategies' word legs (BM25 and CLIP meaning, retrieval/hybrid.py), fused with the examples
  by DBSF as hybrid_dbsf fuses a photo with words: each kind of evidence counts once.
- Negative words leave out the items whose documents have any of them: "not floral" is a refusal, not a
  preference (pushing such items down would still show them on a short list). The store leaves out the first
  NOT_WORDS_LIMIT such items (a BM25 lookup: enough for a rare word, and cheap), and the service drops any other
  from a list NOT_WORDS_DEPTH times deeper by the candidates' own BM25 words (a common word such as "white" is in
  thousands of documents: listing them all cost 14 ms at 9.6k items, the check on the candidates nothing).
- Diversity is the store's MMR (`Diverse`) over the recommended candidates (the disliked items already pushed
  theirs down); its relevance is the similarity to the liked items' average direction. Moved away from the disliked
  ones as well (Qdrant's average_vector), it cost liked+disliked queries 0.06 nDCG@10 at diversity 0.1 on the
  Myntra dev set; the liked average gains 0.06 there (docs/evaluation.md). 0 keeps the recommend query's order.
- What the liked items agree on ranks first: the values of a keyword field that every liked catalog item has (two
  or more items), far more often than the catalog's items do (evidence.LIFT, as a search's photo neighbours'
  agreement), make a tier, as the values a search's words name do (retrieval/evidence.py): the items with all of
  them first, then the others, each ranked by the examples. Two liked blue shirts ask for blue shirts; one liked item
  says nothing of which of its values mattered, so "more like this" has no tier. A photo has no payload: it does
  not vote. Where the disliked items all differ from that agreement in a field (liked blue shirts, a red one
  disliked), the items that differ as the disliked ones do (every such value: a disliked red men's shirt among
  liked blue women's ones says no more of men's blue shirts than of women's red ones) go last among the others (a
  list AVOID_DEPTH times deeper): a preference, not a refusal, since a disliked item is one example, not a rule.
  `shared_values=False` turns both off (docs/evaluation.md has both).
- Group-by keeps the best result of each value of a keyword payload field (Luma's `product_group`: one photo per
  colour, many colours per product), an item without the field a group of its own. The store keeps them
  (VectorStore.query_groups: a Qdrant server's grouping query for a recommendation without words or diversity,
  else the first of each group in a list GROUP_DEPTH times deeper), k groups per tier, the first of
  each group kept across the tiers. Where the service drops or reorders the store's hits (negative words, avoided
  values) it groups them itself over the deeper list, as a group whose best hit goes must keep its next one.

Every result says which liked example it is closest to and which disliked one it avoided (photo CLIP cosine): an item
by its id, a photo by its label ("liked photo 1" is the first of liked_photos).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Sequence

import numpy as np

from retrieval import hybrid, negation, strategies
from retrieval.evidence import LIFT, within
from retrieval.prepare import with_words
from retrieval.search import EncodedQuery, FilterError, QueryError, validate_filters
from retrieval.store.base import (GROUP_DEPTH, Diverse, Filter, Hit, Nearest, Plan, Recommend, SparseVector,
                                  VectorStore, average_vector, group_of, one_per_group)
from schemas.collection import BM25_VECTOR, IMAGE_VECTOR, CollectionSpec

MMR_DEPTH = 10  # candidates MMR chooses from per result it keeps (from k alone it could only reorder them)
NOT_WORDS_LIMIT = 200  # items the store leaves out for having a negative word (the service checks the rest)
NOT_WORDS_DEPTH = 2  # candidates read per result when negative words may drop some of them
AVOID_DEPTH = 2  # candidates read per result beyond the shared values' tier when some have a disliked value
MAX_DEPTH = 1000  # candidates read, at most (the API's k is at most 100)
FUSION = "dbsf"  # examples with words, as hybrid_dbsf fuses a photo with words


class GroupFieldError(FilterError):
    """A group_by field the collection does not index as a keyword (HTTP 422, naming the valid ones)."""


class ItemsNotFound(QueryError):
    """Liked or disliked item ids the collection does not hold (HTTP 404, naming them)."""


class NoLikedExample(QueryError):
    """A request without a liked item or a liked photo: nothing to recommend from (HTTP 422)."""


NO_LIKED_EXAMPLE = "a recommendation needs at least one liked item (liked) or liked photo (liked_photos)"


@dataclass(frozen=True)
class RecommendParams:
    """What a recommendation asks: the examples (catalog item ids and the shopper's photos, as bytes), words for and
    against, and the knobs."""

    liked: tuple[str, ...] = ()
    disliked: tuple[str, ...] = ()
    text: str | None = None
    not_text: str | None = None
    filters: Filter | None = None
    k: int = 10
    diversity: float = 0.0  # 0: none (MMR's trade-off, 0..1)
    group_by: str | None = None
    strategy: Literal["best_score", "sum_scores", "average_vector"] | None = None  # None: by the table below
    liked_photos: tuple[bytes, ...] = ()
    disliked_photos: tuple[bytes, ...] = ()
    shared_values: bool = True  # what every liked item has ranks first (module docstring)

    @property
    def chosen_strategy(self) -> str:
        """The strategy asked for, else the evaluated default for this request's shape (strategies.py); a disliked
        photo counts as a disliked item."""
        return self.strategy or strategies.recommend_strategy(bool(self.disliked or self.disliked_photos))

    @property
    def depth(self) -> int:
        """Results read from the store (and the plan's size): k, times GROUP_DEPTH when one per group is kept, times
        NOT_WORDS_DEPTH when negative words may drop some. Where the store groups, it is asked for k groups and
        reads this deep itself if it cannot group in the engine."""
        deeper = (GROUP_DEPTH if self.group_by else 1) * (NOT_WORDS_DEPTH if self.not_text else 1)
        return min(MAX_DEPTH, self.k * deeper)

    @property
    def candidates(self) -> int:
        """Candidates the examples (and words) hand on: the depth, or MMR_DEPTH times it for MMR to choose from."""
        return min(MAX_DEPTH, self.depth * (MMR_DEPTH if self.diversity > 0 else 1))


@dataclass(frozen=True)
class Example:
    """One liked or disliked photo vector: a catalog item's (labelled by its id) or the shopper's own photo."""

    label: str  # the item id, or e.g. "liked photo 1"
    vector: np.ndarray
    item: bool = True  # a catalog item, left out of the results (a shopper's photo is not in the catalog)
    payload: dict = field(default_factory=dict)  # a catalog item's; a photo has none


def photo_label(side: str, index: int) -> str:
    """What a result calls the shopper's photo `index` (0-based) of `side`: "liked photo 1" is the first."""
    return f"{side} photo {index + 1}"


def photo_name(side: str, index: int) -> str:
    """How an error names that photo: where the request has it, and its label ("liked_photos[0] (liked photo 1)")."""
    return f"{side}_photos[{index}] ({photo_label(side, index)})"


def photos_of(params: RecommendParams) -> list[tuple[str, bytes]]:
    """The shopper's photos to encode, liked then disliked, each with its photo_name."""
    return [(photo_name(side, i), data)
            for side, photos in (("liked", params.liked_photos), ("disliked", params.disliked_photos))
            for i, data in enumerate(photos)]


@dataclass(frozen=True)
class EncodedPhotos:
    """The shopper's liked and disliked photos' CLIP vectors, in the order asked."""

    liked: tuple[np.ndarray, ...] = ()
    disliked: tuple[np.ndarray, ...] = ()

    @classmethod
    def of(cls, params: RecommendParams, vectors: Sequence[np.ndarray]) -> EncodedPhotos:
        """The vectors of photos_of(params), in its order, split back into liked and disliked."""
        liked = len(params.liked_photos)
        return cls(tuple(vectors[:liked]), tuple(vectors[liked:]))


@dataclass
class Examples:
    """The liked and disliked examples, the items' first in the order asked, then the photos'."""

    liked: tuple[Example, ...]
    disliked: tuple[Example, ...] = ()

    @property
    def ids(self) -> tuple[str, ...]:
        """The catalog items among the examples (left out of the results); photos are not items."""
        return tuple(e.label for e in (*self.liked, *self.disliked) if e.item)

    def with_photos(self, photos: EncodedPhotos) -> Examples:
        """These examples and the shopper's photos after them, labelled by side and position."""
        def labelled(side: str, vectors: tuple[np.ndarray, ...]) -> tuple[Example, ...]:
            return tuple(Example(photo_label(side, i), v, item=False) for i, v in enumerate(vectors))

        return Examples((*self.liked, *labelled("liked", photos.liked)),
                        (*self.disliked, *labelled("disliked", photos.disliked)))

    def shared(self, counts: dict[str, dict[str, int]]) -> Filter | None:
        """The values every liked catalog item has (two or more of them), in the fields of `counts` (value -> items
        in the catalog), each held by at most 1 / LIFT of the catalog: a value most items have says nothing."""
        payloads = [e.payload for e in self.liked if e.item]
        if len(payloads) < 2:
            return None
        shared = {}
        for name, field_counts in counts.items():
            value = common_value(payloads, name)
            if value is not None and LIFT * field_counts.get(value, 0) <= sum(field_counts.values()):
                shared[name] = value
        return shared or None

    def avoided(self, shared: Filter | None) -> Filter | None:
        """In the fields the liked items agree on, the value every disliked catalog item has instead."""
        payloads = [e.payload for e in self.disliked if e.item]
        if not payloads or not shared:
            return None
        avoided = {}
        for name, value in shared.items():
            if (other := common_value(payloads, name)) not in (None, value):
                avoided[name] = other
        return avoided or None


def common_value(payloads: list[dict], name: str) -> str | None:
    """The text value of `name` that every payload has, or None (any differs, or is missing, a number or a list)."""
    values = {p.get(name) if isinstance(p.get(name), str) else None for p in payloads}
    return values.pop() if len(values) == 1 else None


def has_all(payload: dict, values: Filter | None) -> bool:
    return bool(values) and all(payload.get(name) == value for name, value in values.items())


@dataclass
class Recommended:
    """One result: its rank score, payload, group, and the examples that explain it."""

    item_id: str
    score: float
    payload: dict[str, Any]
    closest_liked: str
    closest_liked_score: float
    avoided_disliked: str | None = None
    avoided_disliked_score: float | None = None
    group: str | None = None


@dataclass
class RecommendOutcome:
    results: list[Recommended]
    strategy: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    shared_values: Filter | None = None  # what the liked items agree on, ranked first


def check_request(params: RecommendParams, spec: CollectionSpec) -> None:
    """A request with nothing liked, or unknown filter or group-by fields, is refused before anything is read or
    encoded."""
    if not (params.liked or params.liked_photos):
        raise NoLikedExample(NO_LIKED_EXAMPLE)
    validate_filters(params.filters, spec.filter_fields)
    if params.group_by is not None and params.group_by not in spec.filter_fields:
        raise GroupFieldError(f"unknown group_by field {params.group_by!r}; keyword fields: "
                              f"{', '.join(spec.filter_fields) or '(none)'}")


def read_examples(store: VectorStore, collection: str, params: RecommendParams) -> Examples:
    """The liked and disliked items' stored photo vectors (the photos are added once encoded: Examples.with_photos);
    every id the collection lacks is named in one ItemsNotFound."""
    wanted = list(dict.fromkeys((*params.liked, *params.disliked)))
    found = {h.item_id: h for h in store.retrieve(collection, wanted)
             if (h.vectors or {}).get(IMAGE_VECTOR) is not None}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise ItemsNotFound(f"no catalog item(s) {', '.join(map(repr, missing))} in collection {collection}")
    def side(ids: tuple[str, ...]) -> tuple[Example, ...]:
        return tuple(Example(i, found[i].vectors[IMAGE_VECTOR], payload=found[i].payload) for i in dict.fromkeys(ids))

    return Examples(side(params.liked), side(params.disliked))


def unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1e-9 else vector


def plan(examples: Examples, words: EncodedQuery | None, params: RecommendParams) -> Plan:
    """The examples' recommend query, fused with the words' legs if any, under MMR if diversity is asked."""
    depth = params.candidates
    liked, disliked = (tuple(e.vector for e in side) for side in (examples.liked, examples.disliked))
    found: Plan = Recommend(IMAGE_VECTOR, liked, disliked, depth, params.chosen_strategy)
    if words is not None:
        word_legs = [hybrid.lexical_legs(words, depth), hybrid.meaning_legs(words, depth)]
        found = hybrid.fused([[found], [hybrid.fused(word_legs, FUSION, depth)]], FUSION, depth)
    if params.diversity > 0:
        probe = unit(average_vector(liked))
        found = Diverse(IMAGE_VECTOR, probe, params.diversity, depth, params.depth, (found,))
    return found


def not_words_ids(store: VectorStore, collection: str, words: SparseVector | None, params: RecommendParams) -> list:
    """Up to NOT_WORDS_LIMIT items (within the filters) whose documents have any of the negative words."""
    if words is None:
        return []
    return [h.item_id for h in store.query(collection, Nearest(BM25_VECTOR, words, NOT_WORDS_LIMIT),
                                           NOT_WORDS_LIMIT, params.filters)]


def without_words(hits: list[Hit], words: SparseVector | None) -> list[Hit]:
    """The hits whose own BM25 vectors (their documents' words) have none of `words`."""
    if words is None:
        return hits
    tokens = set(words.indices)
    return [h for h in hits if tokens.isdisjoint(getattr((h.vectors or {}).get(BM25_VECTOR), "indices", ()))]


def nearest_example(vector: np.ndarray | None, examples: Sequence[Example]) -> tuple[str | None, float | None]:
    """The label of the example whose photo is most like `vector` (CLIP cosine) and that cosine; None without
    examples."""
    if vector is None or not examples:
        return None, None
    scores = np.stack([e.vector for e in examples]) @ np.asarray(vector, dtype=np.float32)
    best = int(np.argmax(scores))
    return examples[best].label, float(scores[best])


def explained(hit: Hit, examples: Examples, group_by: str | None) -> Recommended:
    photo = (hit.vectors or {}).get(IMAGE_VECTOR)
    liked, liked_score = nearest_example(photo, examples.liked)
    disliked, disliked_score = nearest_example(photo, examples.disliked)
    return Recommended(hit.item_id, hit.score, hit.payload, liked or "", liked_score or 0.0, disliked,
                       disliked_score, group_of(hit.payload, group_by))


def tiered_hits(store: VectorStore, collection: str, query: Plan, params: RecommendParams, exclude: tuple,
                shared: Filter | None, avoided: Filter | None = None, grouped: bool = False) -> list[Hit]:
    """The candidates: the items with every shared value first (one store call), then, while fewer than wanted came
    back, the others (a second), those with an avoided value last. grouped: one per group, by the store (k groups a
    call: a group a former tier found is dropped from a later one), else the depth's items."""
    wanted = params.k if grouped else params.depth
    hits: list[Hit] = []
    for narrowed in ((shared, None) if shared else (None,)):
        filters = within(params.filters, narrowed)
        if filters is False:
            continue
        left_out = (*exclude, *(h.item_id for h in hits))
        if grouped:
            found = store.query_groups(collection, query, params.group_by, wanted, filters, exclude=left_out,
                                       with_vectors=True)
            hits = one_per_group([*hits, *found], params.group_by, wanted)
        else:
            missing = wanted - len(hits)
            deeper = AVOID_DEPTH if avoided and narrowed is None else 1  # the tier's items all hold the shared values
            found = store.query(collection, query, min(MAX_DEPTH, missing * deeper), filters, exclude=left_out,
                                with_vectors=True)
            hits += sorted(found, key=lambda h: has_all(h.payload, avoided))[:missing]  # stable: the order kept
        if len(hits) >= wanted:
            break
    return hits


def groups_in_store(params: RecommendParams, refused: SparseVector | None, avoided: Filter | None) -> bool:
    """Whether the store keeps one hit per group: not where the service drops or reorders hits after the store call
    (negative words among the candidates' own words; the avoided values sent last), since a group whose best hit is
    dropped or sent down must be kept by its next one, and only the deeper list has that."""
    return params.group_by is not None and refused is None and not avoided


def applied_shared(examples: Examples, spec: CollectionSpec, params: RecommendParams) -> Filter | None:
    """The shared values that make the first tier: not the group_by field's (one group would fill the tier, and one
    result per group would leave fewer than k), and none where the request's filters contradict them (the shopper
    filtered to another value: no tier, and none reported)."""
    if not params.shared_values:
        return None
    counts = {name: values for name, values in spec.filter_values.items() if name != params.group_by}
    shared = examples.shared(counts)
    return shared if shared and within(params.filters, shared) is not False else None


def recommend(store: VectorStore, collection: str, spec: CollectionSpec, examples: Examples,
              words: EncodedQuery | None, params: RecommendParams) -> RecommendOutcome:
    """The candidates by tier (the examples and the negative words' items left out), then one per group and the
    explanation; timings: search (with the negative words' lookup), explain."""
    started = time.perf_counter()
    refused = negation.tokens(params.not_text, spec.bm25_language)
    exclude = (*examples.ids, *not_words_ids(store, collection, refused, params))
    shared = applied_shared(examples, spec, params)
    avoided = examples.avoided(shared)
    hits = without_words(tiered_hits(store, collection, plan(examples, words, params), params, exclude, shared,
                                     avoided, groups_in_store(params, refused, avoided)), refused)
    searched = time.perf_counter()
    results = [explained(h, examples, params.group_by) for h in one_per_group(hits, params.group_by, params.k)]
    timings = {"search_ms": (searched - started) * 1000, "explain_ms": (time.perf_counter() - searched) * 1000}
    return RecommendOutcome(results, params.chosen_strategy, timings, shared)


@dataclass
class PendingRecommend:
    """A recommendation between begin and finish: where it runs, the examples read, the words still to encode."""

    collection: str
    spec: CollectionSpec
    examples: Examples
    phrase: str | None
    started: float
    parsed: float = field(default_factory=time.perf_counter)


def with_typed_negations(params: RecommendParams) -> RecommendParams:
    """The words' own negations ("-floral", "not floral": retrieval/negation.py) moved to not_text; a second call
    changes nothing."""
    text, refused = negation.split(params.text)
    return replace(params, text=text, not_text=negation.joined(params.not_text, refused)) if refused else params


def begin(searcher, params: RecommendParams, started: float | None = None) -> PendingRecommend:
    """Resolve the generation (retrieval/service.py's Searcher), refuse a request without a liked example and
    unknown fields, read the items' vectors (404 for unknown ids), all before anything is encoded."""
    started = time.perf_counter() if started is None else started
    params = with_typed_negations(params)
    collection, spec = searcher.current()
    check_request(params, spec)
    examples = read_examples(searcher.store, collection, params)
    return PendingRecommend(collection, spec, examples, (params.text or "").strip() or None, started)


def finish(searcher, pending: PendingRecommend, words: EncodedQuery | None, params: RecommendParams,
           photos: EncodedPhotos = EncodedPhotos()) -> RecommendOutcome:
    """Recommend with the words and the shopper's photos encoded (the words' CLIP vector; their BM25 vector is added
    here, as a search's is); timings: encode (since begin), search, explain, total."""
    encoded = time.perf_counter()
    params = with_typed_negations(params)
    if pending.phrase is not None and words is not None:
        catalog = searcher.words(pending.collection, pending.spec)
        words = with_words(words, pending.phrase, pending.spec.bm25_language, catalog)
    outcome = recommend(searcher.store, pending.collection, pending.spec, pending.examples.with_photos(photos),
                        words if pending.phrase else None, params)
    outcome.timings_ms = {"encode_ms": (encoded - pending.parsed) * 1000, **outcome.timings_ms,
                          "total_ms": (time.perf_counter() - pending.started) * 1000}
    return outcome
