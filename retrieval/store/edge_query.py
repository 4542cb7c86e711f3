"""Our filters, points, query plans and storage settings in qdrant-edge's types (the edge store's wire format)."""

from __future__ import annotations

from typing import Any, Sequence

from retrieval.store.base import (RRF_K, Diverse, Filter, Fuse, Plan, Point, Recommend, average_vector, point_id,
                                  wire_parts, wire_vector)
from schemas.collection import StorageSpec

# Below this many KB of vectors matching a filter, a search scans them (found by the payload index) instead of
# walking the graph: Qdrant's default, kept explicit because HnswIndexConfig requires it.
FULL_SCAN_KB = 10_000


def edge() -> Any:
    import qdrant_edge

    return qdrant_edge


def to_edge_filter(query_filter: Filter | None, exclude: Sequence[str] = (),
                   only: Sequence[str] | None = None) -> Any:
    """{"field": value} -> MatchValue, {"field": [a, b]} -> MatchAny, all ANDed; item ids left out or kept."""
    q = edge()
    must = [q.FieldCondition(key=key, match=q.MatchAny(list(value)) if isinstance(value, (list, tuple, set))
                             else q.MatchValue(value))
            for key, value in (query_filter or {}).items()]
    if only is not None:
        must.append(q.HasIdCondition({point_id(i) for i in only}))
    must_not = [q.HasIdCondition({point_id(i) for i in exclude})] if exclude else None
    return q.Filter(must=must or None, must_not=must_not) if must or must_not else None


def edge_point(point: Point) -> Any:
    vectors, payload = wire_parts(point, edge().SparseVector)
    return edge().Point(point.id, vectors, payload)


def edge_query(plan: Plan) -> Any:
    """The `query` part of a plan: the nearest-vector search, the fusion or the rescoring vector."""
    q = edge()
    if isinstance(plan, Fuse):
        return q.Fusion.Rrf(k=RRF_K) if plan.method == "rrf" else q.Fusion.Dbsf()
    if isinstance(plan, Recommend):
        return edge_recommend(plan)
    if isinstance(plan, Diverse):  # edge's lambda_ weighs relevance: 1 is the plain kNN
        return q.Mmr(wire_vector(plan.vector, q.SparseVector), 1.0 - plan.diversity, plan.candidates, using=plan.using)
    return q.Query.Nearest(wire_vector(plan.vector, q.SparseVector), using=plan.using)  # Nearest, or Rescore


def edge_recommend(plan: Recommend) -> Any:
    """best_score and sum_scores as edge's own recommend queries; average_vector (which edge lacks) as the nearest
    to the averaged vector, the formula a Qdrant server applies."""
    q = edge()
    if plan.strategy == "average_vector":
        return q.Query.Nearest(wire_vector(average_vector(plan.positives, plan.negatives), None), using=plan.using)
    examples = q.RecommendQuery([wire_vector(v, None) for v in plan.positives],
                                [wire_vector(v, None) for v in plan.negatives])
    kind = q.Query.RecommendBestScore if plan.strategy == "best_score" else q.Query.RecommendSumScores
    return kind(examples, using=plan.using)


def edge_prefetches(plan: Plan, edge_filter: Any, params: Any = None) -> list[Any] | None:
    """The plan's parts as prefetches, each with the call's filter (so it holds at every level) and the
    collection's search parameters."""
    if not getattr(plan, "parts", ()):  # a kNN, a recommendation, or an MMR over the nearest points
        return None
    q = edge()
    return [q.Prefetch(part.limit, query=edge_query(part), prefetches=edge_prefetches(part, edge_filter, params),
                       params=params, filter=edge_filter, score_threshold=getattr(part, "min_score", None))
            for part in plan.parts]


def edge_search_params(storage: StorageSpec | None) -> Any:
    """The search parameters a collection's storage asks for (None: the engine's defaults, a spec from before
    storage was recorded)."""
    if storage is None:
        return None
    q = edge()
    quantized = None if storage.quantization == "none" else q.QuantizationSearchParams(
        rescore=storage.rescore, oversampling=storage.oversampling)
    return q.SearchParams(hnsw_ef=storage.hnsw_ef, quantization=quantized)


def edge_storage(storage: StorageSpec | None) -> dict[str, Any]:
    """EdgeConfig's graph and quantization arguments for a storage (none: the engine's defaults)."""
    if storage is None:
        return {}
    q = edge()
    hnsw = q.HnswIndexConfig(m=storage.hnsw_m, ef_construct=storage.ef_construct, full_scan_threshold=FULL_SCAN_KB,
                             on_disk=storage.graph_on_disk)
    # A quantized copy asked for is built by optimize() whatever the collection's size: the engine's default
    # threshold (10 MB of vectors per segment) would leave a catalog of ~10k items unquantized, searched otherwise
    # than the spec says.
    optimizers = q.EdgeOptimizersConfig(indexing_threshold=1) if storage.quantization != "none" else None
    return {"hnsw_config": hnsw, "quantization_config": edge_quantization(storage.quantization),
            "optimizers": optimizers}


def edge_quantization(kind: str) -> Any:
    """The quantized copy of the vectors, always in RAM (searched first; the full vectors rescore)."""
    q = edge()
    configs = {"none": lambda: None,
               "int8": lambda: q.ScalarQuantizationConfig(q.ScalarType.Int8, quantile=0.99, always_ram=True),
               "binary": lambda: q.BinaryQuantizationConfig(always_ram=True),
               "product": lambda: q.ProductQuantizationConfig(q.CompressionRatio.X16, always_ram=True)}
    return configs[kind]()

