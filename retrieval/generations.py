"""Collection generations behind an alias: build a new one (or resume an unfinished one), mark it complete when its
run succeeded, switch the alias to it, and retire old ones without ever losing the last good index.

A generation is created with `complete: false` in its spec and marked complete only after its run was acceptable,
right before the alias moves to it; so the alias never points at a partial generation. Retention keeps the newest
`keep` complete generations, always the one the alias pointed at before the switch (the rollback target), and
never deletes a complete generation in favour of a partial one. Partial generations of dead runs are resumed by
the next run that fits them (same model, preprocessing, vectors and catalog), or removed when a run completes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from retrieval.store.base import REBUILD, CollectionMismatch, StoreError, VectorStore, check_fits
from schemas.collection import CollectionSpec
from schemas.jobs import StoreConfig

log = logging.getLogger(__name__)


@dataclass
class Target:
    """Where a run writes: the collection, its spec, whether it is a generation of its own (published when
    complete) and whether it continues one a dead run left unfinished."""

    name: str
    spec: CollectionSpec
    is_new: bool
    resumed: bool = False


@dataclass
class Published:
    dropped: list[str] = field(default_factory=list)  # complete generations past retention
    removed_partial: list[str] = field(default_factory=list)  # unfinished generations of dead runs
    kept: list[str] = field(default_factory=list)


def new_generation_name(alias: str) -> str:
    """A sortable, unique concrete collection name for the alias."""
    return f"{alias}-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 1_000_000:06d}"


def generations(store: VectorStore, alias: str) -> list[tuple[str, CollectionSpec]]:
    """The alias's generations with their specs, oldest first (names sort by creation time)."""
    found = []
    for name in sorted(c for c in store.list_collections() if c.startswith(f"{alias}-")):
        spec = store.collection_spec(name)
        if spec is not None:
            found.append((name, spec))
    return found


def unfinished(store: VectorStore, spec: CollectionSpec) -> tuple[str, CollectionSpec] | None:
    """The newest partial generation of the alias that this run could continue (fits it, and reads the same
    catalog in the same way), with its spec; or None."""
    # The same catalog read the same way: its filter fields and BM25 mean length come from the items read.
    wanted = {**spec.wanted_by_writer(), **{f: getattr(spec, f) for f in ("catalog_root", "filter_fields",
                                                                          "bm25_avg_len")}}
    for name, found in reversed(generations(store, spec.name)):
        if not found.complete and found.problem(**wanted) is None:
            return name, found
    return None


def target_collection(store: VectorStore, spec: CollectionSpec, rebuild: bool, resume: bool = True) -> Target:
    """The collection to write into. Without --rebuild, the alias's current generation (which must fit); else, or
    when there is none yet, an unfinished generation to continue (unless resume is off) or a new one."""
    current = store.resolve_alias(spec.name)
    if current is not None and not rebuild:
        found = store.collection_spec(current)
        if found is None:
            raise CollectionMismatch(f"alias {spec.name!r} points at {current}, which is missing. {REBUILD}")
        check_fits(found, REBUILD, **spec.wanted_by_writer())
        return Target(current, found, is_new=False)
    partial = unfinished(store, spec) if resume else None
    if partial is not None:
        log.info("resuming unfinished generation %s", partial[0])
        return Target(*partial, is_new=True, resumed=True)
    created = spec.model_copy(update={"name": new_generation_name(spec.name), "complete": False})
    store.create_collection(created)
    return Target(created.name, created, is_new=True)


def publish(store: VectorStore, alias: str, collection: str, keep: int) -> Published:
    """Mark `collection` complete, point the alias at it, then retire generations (see the module docstring)."""
    previous = store.resolve_alias(alias)
    spec = store.collection_spec(collection)
    if spec is not None and not spec.complete:
        store.update_spec(spec.model_copy(update={"complete": True}))
    store.set_alias(alias, collection)
    found = generations(store, alias)
    complete = [name for name, s in found if s.complete]
    keep_names = set(complete[-keep:]) | {collection} | ({previous} if previous else set())
    outcome = Published(kept=[name for name, _ in found if name in keep_names])
    for name, s in found:
        if name not in keep_names:
            _drop(store, name, outcome.dropped if s.complete else outcome.removed_partial)
    return outcome



def finish_generation(config: StoreConfig, alias: str, name: str, *, switch: bool, keep: int,
                      optimize_above: int) -> tuple[int, Published]:
    """Count a written generation's points and build its kNN index past `optimize_above`, then publish it if
    `switch`. The store is opened for each step and closed after it: an embedded store must let go of the new
    shard before the alias sends searches to it."""
    from retrieval.store.factory import open_store

    with open_store(config) as store:
        points = store.count(name)
        if points > optimize_above:  # brute force is ~1.5 ms at 10k points; an index pays off past ~20k
            store.optimize(name)
    if not switch:
        return points, Published()
    with open_store(config) as store:
        return points, publish(store, alias, name, keep)

def _drop(store: VectorStore, name: str, into: list[str]) -> None:
    try:
        store.delete_collection(name)
        into.append(name)
    except StoreError as err:  # open in another process (a server not yet off it, or a live run): next time
        log.warning("kept generation %s: %s", name, err)
