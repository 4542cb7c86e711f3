"""The storage a collection gets from its catalog's size: one table, measured by bench.store (docs/performance.md)."""

from __future__ import annotations

from typing import Any

from schemas.collection import StorageSpec

PLAIN_BELOW = 20_000  # points; also the index job's default --optimize-above (no graph is built below it)

# Catalogs under each bound get its storage (the last row has no bound). Figures: bench.store on 2 CPUs, 512-d.
SIZE_RULE: tuple[tuple[int | None, StorageSpec], ...] = (
    # Brute force over the float vectors: a few ms below ~20k points, and nothing to build (the index job builds
    # no graph below --optimize-above).
    (PLAIN_BELOW, StorageSpec()),
    # int8 copy searched through the graph, 8x the results rescored by the float vectors: ~1 ms at 100k and 1M
    # points, recall@10 0.99 where 2x gave 0.77 (near-ties the int8 scores cannot order; docs/performance.md).
    (None, StorageSpec(quantization="int8", oversampling=8.0, hnsw_m=16, ef_construct=100, hnsw_ef=128)),
)


def storage_for(points: int, **overrides: Any) -> StorageSpec:
    """The size rule's storage for a catalog of `points` items, with the overrides given (None: not given)."""
    chosen = next(storage for bound, storage in SIZE_RULE if bound is None or points < bound)
    given = {name: value for name, value in overrides.items() if value is not None}
    return StorageSpec.model_validate({**chosen.model_dump(), **given})
