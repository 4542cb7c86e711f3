"""An LRU of encoded queries: shop traffic repeats its head queries, and encoding them is most of a search's CPU.

Keys name what the model reads, with the model: words by the model's spec and their token ids (the tokenizer's own
normalisation: case and spacing as it folds them, never ours), a photo by the model's spec, a hash of its bytes and
the options that change its pixels (letterbox, garment isolation). A vector is never served for another model, and a
reloaded encoder gets a cache of its own. Vectors are kept read-only, so no caller can change a cached one.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable

import numpy as np


@dataclass(frozen=True)
class CacheStats:
    """Counts since the cache was made (a snapshot)."""

    hits: int
    misses: int
    entries: int
    capacity: int

    @property
    def hit_rate(self) -> float:
        return self.hits / (self.hits + self.misses) if self.hits + self.misses else 0.0

    def since(self, before: "CacheStats") -> "CacheStats":
        """The counts between two snapshots (a benchmark's load)."""
        return CacheStats(self.hits - before.hits, self.misses - before.misses, self.entries, self.capacity)


class QueryCache:
    """Thread-safe bounded LRU of unit vectors; capacity 0 keeps nothing (every lookup a miss, still counted)."""

    def __init__(self, capacity: int):
        if capacity < 0:
            raise ValueError(f"a query cache holds 0 or more vectors, not {capacity}")
        self.capacity, self._items, self._lock = capacity, OrderedDict(), threading.Lock()
        self._hits = self._misses = 0

    def get(self, key: Hashable) -> np.ndarray | None:
        with self._lock:
            vector = self._items.get(key)
            if vector is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return vector

    def put(self, key: Hashable, vector: np.ndarray) -> np.ndarray:
        """Keep a read-only copy (the least recently used one goes past capacity); returns what is kept."""
        kept = np.array(vector, dtype=np.float32)
        kept.flags.writeable = False
        if self.capacity == 0:
            return kept
        with self._lock:
            self._items[key] = kept
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return kept

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._items), self.capacity)


def words_key(encoder, phrase: str) -> tuple:
    """The words as the model reads them: its spec and the phrase's token ids."""
    return encoder.spec, "words", tuple(encoder.tokenizer([phrase])[0].tolist())


def photo_key(encoder, data: bytes, letterbox: bool, segment: bool) -> tuple:
    """A photo by its bytes' hash and the options that change its pixels."""
    return encoder.spec, "photo", hashlib.blake2b(data, digest_size=16).digest(), letterbox, segment


def cached(cache: QueryCache | None, key: Callable[[], tuple], compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The cached vector for `key()`, or `compute()`'s, kept; without a cache, `compute()`."""
    if cache is None:
        return compute()
    k = key()
    hit = cache.get(k)
    return hit if hit is not None else cache.put(k, compute())
