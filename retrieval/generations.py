"""Collection generations behind an alias: build a new one, switch the alias when complete, prune old ones."""

from __future__ import annotations

import logging
import time

from retrieval.store.base import REBUILD, CollectionMismatch, StoreError, VectorStore, check_fits
from schemas.collection import CollectionSpec

log = logging.getLogger(__name__)


def new_generation_name(alias: str) -> str:
    """A sortable, unique concrete collection name for the alias."""
    return f"{alias}-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 1_000_000:06d}"


def target_collection(store: VectorStore, spec: CollectionSpec, rebuild: bool) -> tuple[str, CollectionSpec, bool]:
    """The collection to write into, its spec, and whether it is a new generation (alias switched when it
    completes). An existing one keeps the spec it was created with."""
    current = store.resolve_alias(spec.name)
    if current is not None and not rebuild:
        found = store.collection_spec(current)
        if found is None:
            raise CollectionMismatch(f"alias {spec.name!r} points at {current}, which is missing. {REBUILD}")
        check_fits(found, REBUILD, **spec.wanted_by_writer())
        return current, found, False
    name = new_generation_name(spec.name)
    created = spec.model_copy(update={"name": name})
    store.create_collection(created)
    return name, created, True


def publish(store: VectorStore, alias: str, collection: str, keep: int) -> list[str]:
    """Point the alias at `collection`, then drop generations beyond the newest `keep`; returns the dropped names."""
    store.set_alias(alias, collection)
    generations = sorted(c for c in store.list_collections() if c.startswith(f"{alias}-"))
    dropped = []
    for name in (c for c in generations[:-keep] if c != collection):
        try:
            store.delete_collection(name)
            dropped.append(name)
        except StoreError as err:  # still open in a server that has not followed the alias yet: next run drops it
            log.warning("kept old generation %s: %s", name, err)
    return dropped
