"""The store contract every backend honours (tested by one suite against each), and the shared value types."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from schemas.collection import CollectionSpec

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


@dataclass
class Point:
    """One catalog item in the store: its named vectors and its payload (which always holds item_id)."""

    item_id: str
    vectors: dict[str, np.ndarray]
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
    vectors: dict[str, np.ndarray] | None = None


def wire_parts(point: Point) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """A point's named vectors as plain float lists and its payload with item_id, as every client sends them."""
    vectors = {name: np.asarray(v, dtype=np.float32).tolist() for name, v in point.vectors.items()}
    return vectors, {**point.payload, ITEM_ID_FIELD: point.item_id}


def hit_from_record(record: Any, score: float) -> Hit:
    """A client's scored point or record (id, payload, optional named vectors) as a Hit."""
    payload = dict(record.payload or {})
    vectors = record.vector if isinstance(record.vector, dict) else None
    return Hit(item_id=str(payload[ITEM_ID_FIELD]), score=float(score), payload=payload,
               vectors={k: np.asarray(v, dtype=np.float32) for k, v in vectors.items()} if vectors else None)


def check_fits(found: CollectionSpec, remedy: str, **wanted: object) -> None:
    """Raise CollectionMismatch, naming the collection's model and what is asked, when `found` cannot serve it."""
    problem = found.problem(**wanted)
    if problem:
        asked = f" with model {wanted['model']!r}" if "model" in wanted else ""
        raise CollectionMismatch(f"collection {found.name!r} (model {found.model!r}, dim {found.dim}) cannot be "
                                 f"used{asked}: {problem}. {remedy}")


REBUILD = "Build a new generation with --rebuild (the alias switches when it is complete)."


# Filters are plain data: {"field": "value"} matches one value, {"field": ["a", "b"]} matches any of them.
Filter = dict[str, Any]


class VectorStore(Protocol):
    """What jobs and the service need from a store. A collection argument may also be an alias (resolved at once).

    Payload values must be plain JSON types (str, int, float, bool and lists of them): numpy scalars fail everywhere.
    """

    def create_collection(self, spec: CollectionSpec) -> None:
        """Create the collection (vectors, payload indexes, spec recorded) if absent; raise CollectionMismatch if it differs."""

    def collection_spec(self, name: str) -> CollectionSpec | None:
        """The spec recorded with the collection, or None if there is no such collection."""

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        """Insert or replace points by their deterministic ids."""

    def search(self, collection: str, vector_name: str, vector: np.ndarray, limit: int,
               query_filter: Filter | None = None, with_vectors: bool = False) -> list[Hit]:
        """kNN by cosine similarity, best first, restricted by the payload filter."""

    def retrieve(self, collection: str, item_ids: Sequence[str], with_vectors: bool = True) -> list[Hit]:
        """Points by catalog item id (missing ids are left out), score 0."""

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
