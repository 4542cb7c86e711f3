"""What the serving and scaling benchmarks share: real query photos and words, and the in-process search loop."""

from __future__ import annotations

import socket
import time
from typing import Any

import numpy as np

from schemas.settings import OFFLINE_CATALOG

PHOTOS = ["10003", "10127", "10438", "10016", "11534", "10098", "10196", "10035"]
WORDS = ["blue jeans", "red dress for women", "white sports shoes", "black leather handbag", "pink top",
         "grey track pants", "brown watch", "green kurta"]
WARM_UP = 3  # first calls of each kind warm caches and are dropped


def photo_bytes() -> list[bytes]:
    return [(OFFLINE_CATALOG / "images" / f"{i}.jpg").read_bytes() for i in PHOTOS]


def query_kinds() -> dict[str, list[dict]]:
    """SearchService.search keyword arguments by kind, cycling through real catalog photos and shopper words."""
    photos = photo_bytes()
    return {"text": [{"text": w} for w in WORDS], "image": [{"image": p} for p in photos],
            "image+text": [{"image": p, "text": "in red"} for p in photos]}


def percentiles(ms: list[float]) -> dict[str, float]:
    return {f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)}


def free_port() -> int:
    """A port of 127.0.0.1 free now, for a service a benchmark starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def timed_search(service, query: dict) -> tuple[float, Any]:
    """One in-process search of 10 (SearchService.search keyword arguments): its ms and its outcome."""
    from retrieval.search import SearchParams

    started = time.perf_counter()
    outcome = service.search(params=SearchParams(k=10), **query)
    return (time.perf_counter() - started) * 1000, outcome


def in_process_latency(service, kinds: dict[str, list[dict]], repeats: int) -> dict[str, dict[str, list[float]]]:
    """Per kind, the ms of each whole search (encode + store) and of its store stages, warm-up calls dropped."""
    out: dict[str, dict[str, list[float]]] = {}
    for kind, queries in kinds.items():
        total, store = [], []
        for i in range(repeats + WARM_UP):
            ms, outcome = timed_search(service, queries[i % len(queries)])
            if i >= WARM_UP:
                total.append(ms)
                store.append(outcome.timings_ms["search_ms"] + outcome.timings_ms["explain_ms"])
        out[kind] = {"total": total, "store": store}
    return out
