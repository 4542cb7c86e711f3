"""An LRU of whole search responses, per generation: a shop's head queries ask the same thing again and again, and
after the encoded-query cache (retrieval/query_cache.py) the store search and the explanation are most of what a
repeated search costs (docs/performance.md).

A key is the generation the alias resolved to and a digest of the request as parsed (every field, the photo's bytes
included), so a switched alias never answers from the generation before. An entry also expires after `ttl_s`: an
index run without --rebuild adds items to the live generation in place, and a cached answer must not hide them for
longer than that. Refusals are never cached (they are decided before the lookup, or raise).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable

from retrieval.query_cache import CacheStats


class ResultCache:
    """LRU with a time to live, bounded by the total weight of its entries (a response's weight: its results, so a
    k=100 answer takes the room of ten k=10 ones); capacity or ttl_s 0 keeps nothing (every lookup a miss, still
    counted)."""

    def __init__(self, capacity: int, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        if capacity < 0 or ttl_s < 0:
            raise ValueError(f"a result cache holds 0 or more results for 0 or more seconds, not {capacity}, {ttl_s}")
        self.capacity, self.ttl_s, self.clock = capacity if ttl_s > 0 else 0, ttl_s, clock
        self._items: OrderedDict[Hashable, tuple[float, int, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = self._weight = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            entry = self._items.get(key)
            if entry is None or self.clock() - entry[0] > self.ttl_s:
                self._drop(key)
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return entry[2]

    def put(self, key: Hashable, value: Any, weight: int = 1) -> None:
        """Keep `value` (the least recently used ones go while the total weight is past capacity); a value heavier
        than the whole capacity is not kept."""
        weight = max(1, weight)
        if weight > self.capacity:
            return
        with self._lock:
            self._drop(key)
            self._items[key] = (self.clock(), weight, value)
            self._weight += weight
            while self._weight > self.capacity:
                self._drop(next(iter(self._items)))

    def _drop(self, key: Hashable) -> None:
        entry = self._items.pop(key, None)
        self._weight -= entry[1] if entry else 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._items), self.capacity)


def request_key(collection: str, request_json: str, image: bytes | None) -> tuple[str, bytes]:
    """The generation and a digest of the parsed request and its photo (a multipart photo is not in the JSON)."""
    digest = hashlib.blake2b(request_json.encode(), digest_size=16)
    if image:
        digest.update(hashlib.blake2b(image, digest_size=16).digest())
    return collection, digest.digest()
