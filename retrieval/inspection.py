"""What a store holds, for people: collections and aliases, a collection's spec and filter value counts, one point.

jobs.inspect reads any store it can open; the service (GET /inspect) reads the one it serves from, through its own
open store, the only way to see an embedded store while the service holds it (one process at a time).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from retrieval.generations import generations
from retrieval.model import public_name
from retrieval.store.base import SparseVector, StoreError, VectorStore
from schemas.collection import CollectionSpec

FACET_VALUES = 20  # values shown per filter field, most common first
# Spec fields the service does not show: the catalog root is a path on the server, synonyms a file's whole text;
# filter_values are the index run's counts, shown live from the store instead.
PRIVATE_SPEC_FIELDS = frozenset({"catalog_root", "synonyms", "filter_values"})
SPEC_ROW_FIELDS = ("complete", "model", "dim", "vectors", "letterbox", "segmentation")


def collection_row(store: VectorStore, name: str, aliases: dict[str, str]) -> dict[str, Any]:
    """One collection's line: its aliases, size, model and completeness (or why they cannot be read)."""
    row: dict[str, Any] = {"name": name, "aliases": sorted(a for a, c in aliases.items() if c == name)}
    try:
        spec = store.collection_spec(name)
        if spec is None:
            return {**row, "problem": "no spec: not made by this project"}
        row.update(spec.model_dump(mode="json", include=set(SPEC_ROW_FIELDS)), points=store.count(name))
    except StoreError as err:  # open in another process (the service, a run)
        row["problem"] = str(err)
    return row


def overview(store: VectorStore, names: list[str] | None = None) -> dict[str, Any]:
    """The collections `names` with their rows and the aliases pointing at them; default: every collection and
    every alias (one pointing at a missing collection too)."""
    aliases = store.aliases()
    shown = aliases if names is None else {a: c for a, c in aliases.items() if c in names}
    names = store.list_collections() if names is None else names
    return {"aliases": shown, "collections": [collection_row(store, name, aliases) for name in names]}


def value_counts(store: VectorStore, collection: str, spec: CollectionSpec,
                 limit: int = FACET_VALUES) -> dict[str, dict[str, int]]:
    """Each filter field's `limit` most common values with their point counts (the store's exact facet)."""
    return {field: store.facet(collection, field, limit) for field in spec.filter_fields}


def collection_detail(store: VectorStore, collection: str, spec: CollectionSpec,
                      limit: int = FACET_VALUES) -> dict[str, Any]:
    """A collection's spec, size, and its filter fields' value counts."""
    return {"collection": collection, "points": store.count(collection),
            "spec": spec.model_dump(mode="json", exclude={"filter_values"}),
            "filter_values": value_counts(store, collection, spec, limit)}


def point_detail(store: VectorStore, collection: str, item_id: str) -> dict[str, Any] | None:
    """One catalog item's point: its payload, and a summary of each named vector it holds; None if it has none."""
    hits = store.retrieve(collection, [item_id], with_vectors=True)
    if not hits:
        return None
    return {"collection": collection, "item_id": item_id, "payload": hits[0].payload,
            "vectors": {n: describe(v) for n, v in sorted((hits[0].vectors or {}).items())}}


def describe(vector) -> dict[str, Any]:
    """A dense vector by its dimension, norm and first values; a sparse one by its number of terms."""
    if isinstance(vector, SparseVector):
        return {"kind": "sparse", "terms": len(vector.indices), "max_weight": round(max(vector.values, default=0), 4)}
    array = np.asarray(vector)
    return {"kind": "dense", "dim": int(array.shape[0]), "norm": round(float(np.linalg.norm(array)), 4),
            "head": [round(float(x), 4) for x in array[:4]]}


def served(store: VectorStore, alias: str, live: str, spec: CollectionSpec,
           limit: int = FACET_VALUES) -> dict[str, Any]:
    """What the service shows of its store: the alias, its generations (which one is live), and the live one's
    spec, size and value counts; models by their public names, no server paths."""
    names = [name for name, _ in generations(store, alias)]
    view = overview(store, names if live in names else [*names, live])
    rows = [{**row, "live": row["name"] == live, **public_model(row)} for row in view["collections"]]
    detail = collection_detail(store, live, spec, limit)
    shown = {k: v for k, v in detail["spec"].items() if k not in PRIVATE_SPEC_FIELDS}
    return {"alias": alias, **detail, "spec": {**shown, **public_model(shown)}, "facet_limit": limit,
            "aliases": view["aliases"], "generations": rows}


def public_model(fields: dict[str, Any]) -> dict[str, Any]:
    """The `model` of a row or spec as anyone may see it (a local folder by its name), if it has one."""
    return {"model": public_name(fields["model"])} if "model" in fields else {}
