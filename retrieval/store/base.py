"""The store contract every backend honours (tested by one suite against each), and the shared value types."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, Sequence, Union

import numpy as np

from schemas.collection import DISTANCES, IDF_VECTORS, CollectionSpec

if TYPE_CHECKING:
    from typing_extensions import Self

# Fixed namespace: the same catalog id always maps to the same point id, so reruns upsert instead of duplicating.
POINT_NAMESPACE = uuid.UUID("6f1c3a4e-2b7d-5e8f-9a0b-1c2d3e4f5a6b")
ITEM_ID_FIELD = "item_id"


def point_id(item_id: str) -> str:
    """Deterministic UUIDv5 point id for a catalog item id."""
    return str(uuid.uuid5(POINT_NAMESPACE, str(item_id)))


class StoreError(RuntimeError):
    """The store cannot be reached or used; the service maps it to 503."""


class CollectionMismatch(StoreError):
    """The collection exists but was built with another model, dimension or distance."""


class CollectionMissing(StoreError):
    """No collection (or alias) of that name; index first."""


@dataclass(frozen=True)
class SparseVector:
    """Token ids and weights, ids ascending and unique (a BM25 vector: retrieval/lexical.py)."""

    indices: tuple[int, ...]
    values: tuple[float, ...]

    def __bool__(self) -> bool:
        return bool(self.indices)

    def as_query(self) -> "SparseVector":
        """The same words as a query (1.0 each), e.g. to search by an item's own document."""
        return SparseVector(self.indices, (1.0,) * len(self.indices))


Vector = Union[np.ndarray, SparseVector]


@dataclass
class Point:
    """One catalog item in the store: its named vectors (dense or sparse; an item without words has no text or
    bm25 vector, never a made-up one) and its payload (which always holds item_id)."""

    item_id: str
    vectors: dict[str, Vector]
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return point_id(self.item_id)


@dataclass
class Hit:
    """A search result: the catalog item id, its similarity score and payload."""

    item_id: str
    score: float
    payload: dict[str, Any]
    vectors: dict[str, Vector] | None = None


# A query plan, run by the store in one call (Qdrant's Query API: prefetches, fusion, rescoring). Every plan has the
# number of candidates it hands on; the payload filter of the call applies to every part of it.
@dataclass(frozen=True)
class Nearest:
    """The `limit` nearest points to `vector` by the named vector `using` (dense cosine, or sparse dot with IDF);
    as a part of a plan, only those scoring at least `min_score`."""

    using: str
    vector: Vector
    limit: int
    min_score: float | None = None


@dataclass(frozen=True)
class Fuse:
    """The candidates of `parts`, fused. rrf: Qdrant's reciprocal-rank fusion, sum of 1 / (RRF_K + rank - 1) over
    the lists (rank from 1); dbsf: each list's scores normalised by its mean +- 3 standard deviations, summed."""

    parts: tuple["Plan", ...]
    method: Literal["rrf", "dbsf"]
    limit: int


@dataclass(frozen=True)
class Rescore:
    """The candidates of `parts`, ranked by their similarity to `vector` over the named vector `using`."""

    parts: tuple["Plan", ...]
    using: str
    vector: np.ndarray
    limit: int


RECOMMEND_STRATEGIES = ("best_score", "sum_scores", "average_vector")


@dataclass(frozen=True)
class Recommend:
    """Points like the `positives` and unlike the `negatives` (example vectors) by the dense vector `using`
    (Qdrant's recommend query). best_score: a point nearer its nearest positive than its nearest negative scores
    that positive's similarity, else it is pushed below every such point; sum_scores: the sum of its similarities to
    the positives minus those to the negatives; average_vector: the nearest to 2 * mean(positives) -
    mean(negatives) (`average_vector`; qdrant-edge 0.9 lacks it, so its store runs that Nearest itself)."""

    using: str
    positives: tuple[np.ndarray, ...]
    negatives: tuple[np.ndarray, ...] = ()
    limit: int = 10
    strategy: Literal["best_score", "sum_scores", "average_vector"] = "best_score"


@dataclass(frozen=True)
class Diverse:
    """Maximal marginal relevance (Qdrant's MMR) among the `candidates` nearest points to `vector` by `using` (or,
    with `parts`, among their candidates): each pick maximises (1 - diversity) * sim(vector, p) - diversity * (its
    highest similarity to the points picked before). Diversity 0 is the plain kNN. A hit's score is its similarity
    to `vector`, so the list is in pick order, not score order."""

    using: str
    vector: np.ndarray
    diversity: float
    candidates: int
    limit: int
    parts: tuple["Plan", ...] = ()


Plan = Union[Nearest, Fuse, Rescore, Recommend, Diverse]
RRF_K = 60  # the usual constant; Qdrant's formula makes the best rank worth 1 / RRF_K


def average_vector(positives: Sequence[np.ndarray], negatives: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Qdrant's average_vector recommendation: mean(positives) moved away from mean(negatives) by as much again."""
    mean = np.mean(np.asarray(positives, dtype=np.float32), axis=0)
    if len(negatives):
        mean = 2 * mean - np.mean(np.asarray(negatives, dtype=np.float32), axis=0)
    return mean


def wire_vector(vector: Vector, sparse_type: Any) -> Any:
    """A dense vector as a plain float list (what every client sends), a sparse one as the client's own type."""
    if isinstance(vector, SparseVector):
        return sparse_type(indices=list(vector.indices), values=list(vector.values))
    return np.asarray(vector, dtype=np.float32).tolist()


def wire_parts(point: Point, sparse_type: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A point's named vectors as a client sends them, and its payload with item_id."""
    vectors = {name: wire_vector(v, sparse_type) for name, v in point.vectors.items()}
    return vectors, {**point.payload, ITEM_ID_FIELD: point.item_id}


def read_vector(value: Any) -> Vector:
    """A client's dense list or sparse object (anything with indices and values) as our type."""
    if hasattr(value, "indices"):
        return SparseVector(tuple(int(i) for i in value.indices), tuple(float(v) for v in value.values))
    return np.asarray(value, dtype=np.float32)


def hit_from_record(record: Any, score: float) -> Hit:
    """A client's scored point or record (id, payload, optional named vectors) as a Hit."""
    payload = dict(record.payload or {})
    vectors = record.vector if isinstance(record.vector, dict) else None
    return Hit(item_id=str(payload[ITEM_ID_FIELD]), score=float(score), payload=payload,
               vectors={k: read_vector(v) for k, v in vectors.items()} if vectors else None)


def check_fits(found: CollectionSpec, remedy: str, **wanted: object) -> None:
    """Raise CollectionMismatch, naming the collection's model and what is asked, when `found` cannot serve it."""
    problem = found.problem(**wanted)
    if problem:
        asked = f" with model {wanted['model']!r}" if "model" in wanted else ""
        raise CollectionMismatch(f"collection {found.name!r} (model {found.model!r}, dim {found.dim}) cannot be "
                                 f"used{asked}: {problem}. {remedy}")


def vector_params(spec: CollectionSpec, dense: Callable[[int, str], Any],
                  sparse: Callable[[bool], Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The spec's named vectors as a client's parameters: `dense(size, distance)` with Qdrant's spelling of the
    distance, `sparse(idf)`; every backend creates its collections from these."""
    # IDF by the collection, so it stays right as items come and go (queries carry 1.0 per word).
    return ({name: dense(spec.dim, DISTANCES[spec.distance]) for name in spec.dense_vectors},
            {name: sparse(name in IDF_VECTORS) for name in spec.sparse_vectors})


def keyword_fields(spec: CollectionSpec) -> tuple[str, ...]:
    """The payload fields a collection indexes as keywords: its filter fields, then the item id."""
    return tuple(dict.fromkeys((*spec.filter_fields, ITEM_ID_FIELD)))


REBUILD = "Build a new generation with --rebuild (the alias switches when it is complete)."


def item_ids(store: "VectorStore", collection: str, page: int = 2048) -> set[str]:
    """Every catalog item id the collection holds (a resumed run skips them)."""
    ids: set[str] = set()
    offset: Any = None
    while True:
        hits, offset = store.scroll(collection, page, offset)
        ids.update(h.item_id for h in hits)
        if offset is None:
            return ids


# Filters are plain data: {"field": "value"} matches one value, {"field": ["a", "b"]} matches any of them.
Filter = dict[str, Any]

# One hit per group (VectorStore.query_groups): a group is an item's value of a keyword payload field (Luma's
# product_group); an item without the field (absent, null or []) is a group of its own. Where the engine cannot group
# (qdrant-edge has no grouping query; a Qdrant server's would rank fused or MMR plans otherwise: qdrant_store.py),
# the best hit of each group is kept from a list GROUP_DEPTH times deeper than the groups asked for, so a group
# whose best hit is below that depth is missed. Group by a single-valued field: an item with a list of values is the
# group of that whole list on the deeper list, and in the group of each of its values in Qdrant's grouping query.
GROUP_DEPTH = 5  # hits read per group asked for, where the store keeps the first hit of each group itself
MAX_GROUP_READ = 1000  # hits read for that, at most


def group_of(payload: dict, field_name: str | None) -> str | None:
    """A payload's group value as text (a list of values is one group), or None."""
    value = payload.get(field_name) if field_name else None
    if value is None or value == []:
        return None
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def one_per_group(hits: Sequence[Hit], field_name: str | None, k: int) -> list[Hit]:
    """The first (best) hit of each value of `field_name`, k at most; an item without the field is its own group."""
    if field_name is None:
        return list(hits[:k])
    kept, seen = [], set()
    for hit in hits:
        key = group_of(hit.payload, field_name) or ("item", hit.item_id)
        if key not in seen:
            seen.add(key)
            kept.append(hit)
    return kept[:k]


class VectorStore(Protocol):
    """What jobs and the service need from a store. A collection argument may also be an alias (resolved at once).

    Payload values must be plain JSON types (str, int, float, bool and lists of them): numpy scalars fail everywhere.
    """

    def create_collection(self, spec: CollectionSpec) -> None:
        """Create the collection (vectors, payload indexes, spec) if absent; CollectionMismatch if it differs."""

    def collection_spec(self, name: str) -> CollectionSpec | None:
        """The spec recorded with the collection, or None if there is no such collection."""

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        """Insert or replace points by their deterministic ids."""

    def search(self, collection: str, vector_name: str, vector: np.ndarray, limit: int,
               query_filter: Filter | None = None, with_vectors: bool = False) -> list[Hit]:
        """kNN by cosine similarity, best first, restricted by the payload filter (a store that subclasses this
        protocol gets it as a one-leg query plan)."""
        return self.query(collection, Nearest(vector_name, vector, limit), limit, query_filter,
                          with_vectors=with_vectors)

    def query(self, collection: str, plan: Plan, limit: int, query_filter: Filter | None = None, *,
              with_vectors: bool = False, exclude: Sequence[str] = (), only: Sequence[str] | None = None) -> list[Hit]:
        """Run a query plan in one call, best first. The filter, and leaving out the `exclude` item ids (or keeping
        only the `only` ones), apply to every part of the plan."""

    def query_groups(self, collection: str, plan: Plan, group_by: str, groups: int,
                     query_filter: Filter | None = None, *, with_vectors: bool = False,
                     exclude: Sequence[str] = ()) -> list[Hit]:
        """The best hit of each of the first `groups` groups of the keyword field `group_by`, best first, as query
        ranks them; an item without the field is a group of its own. A store that subclasses this protocol gets
        it as one_per_group over a list GROUP_DEPTH times deeper (a group whose best hit is below it is missed)."""
        depth = min(MAX_GROUP_READ, groups * GROUP_DEPTH)
        hits = self.query(collection, plan, depth, query_filter, with_vectors=with_vectors, exclude=exclude)
        return one_per_group(hits, group_by, groups)

    def retrieve(self, collection: str, item_ids: Sequence[str], with_vectors: bool = True) -> list[Hit]:
        """Points by catalog item id (missing ids are left out), score 0."""

    def scroll(self, collection: str, limit: int, offset: Any = None,
               with_vectors: bool = False) -> tuple[list[Hit], Any]:
        """A page of points in id order from `offset` (None: the start), and the offset of the next page (None at
        the end); score 0."""

    def facet(self, collection: str, field: str, limit: int) -> dict[str, int]:
        """The most common values of a keyword-indexed payload field with their point counts, most common first."""

    def aliases(self) -> dict[str, str]:
        """Every alias and the collection it points to."""

    def update_spec(self, spec: CollectionSpec) -> None:
        """Record a changed spec for an existing collection (its vectors and indexes stay as created)."""

    def count(self, collection: str) -> int:
        """Number of points in the collection."""

    def optimize(self, collection: str) -> None:
        """Build the kNN index after a bulk load where the backend needs to be told (embedded edge); else nothing."""

    def delete_collection(self, name: str) -> None:
        """Drop a collection (no error if absent)."""

    def list_collections(self) -> list[str]:
        """Concrete collection names."""

    def set_alias(self, alias: str, collection: str) -> None:
        """Point `alias` at `collection` atomically (searches through the alias switch at once)."""

    def resolve_alias(self, alias: str) -> str | None:
        """The collection an alias points to, or None."""

    def close(self) -> None:
        """Release files, locks and connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """`with open_store(config) as store:` closes the store however the block ends."""
        self.close()
