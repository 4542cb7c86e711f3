"""What a resumed index run skips: the ids a partial generation holds, paged from the store into one sorted array of
16-byte point ids, and the stage that drops the catalog rows already there.

Why an array and not a set of item ids: a million ids cost 16 MB here and about 90 MB as a Python set of short
strings (bench.driver_memory measures both), and the array ships to the filter tasks as one buffer.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np

from retrieval.rows import Batch
from retrieval.store.base import point_id

PAGE = 2048  # points per scroll page: the most the driver holds of the store's payloads at once


def keys(item_ids: Iterable[str]) -> np.ndarray:
    """Item ids as their point ids' 16 bytes (the store's own identity: UUIDv5 of the item id)."""
    return np.array([uuid.UUID(point_id(str(i))).bytes for i in item_ids], dtype="S16")


def held_keys(store: Any, collection: str, page: int = PAGE) -> np.ndarray:
    """The sorted keys of every item the collection holds, read a page of the store's scroll at a time."""
    chunks, offset = [np.empty(0, "S16")], None
    while True:
        hits, offset = store.scroll(collection, page, offset)
        chunks.append(keys(h.item_id for h in hits))
        if offset is None:
            return np.unique(np.concatenate(chunks))


def is_held(held: np.ndarray, item_ids: Iterable[str]) -> np.ndarray:
    """For each item id, whether its key is in the sorted `held`."""
    wanted = keys(item_ids)
    if not len(held) or not len(wanted):
        return np.zeros(len(wanted), bool)
    at = np.minimum(np.searchsorted(held, wanted), len(held) - 1)
    return held[at] == wanted


class SkipHeld:
    """Map-batches stage before the pipeline: drops the rows whose item the resumed generation already holds."""

    def __init__(self, held: np.ndarray):
        self.held = held

    def __call__(self, batch: Batch) -> Batch:
        keep = ~is_held(self.held, batch["id"])
        return {name: values[keep] for name, values in batch.items()}
