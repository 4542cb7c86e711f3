"""Our filters, points, query plans and storage settings in qdrant-client's models (a Qdrant server, or the
client's local mode)."""

from __future__ import annotations

from typing import Any, Sequence

from retrieval.store.base import (RRF_K, Diverse, Filter, Fuse, Nearest, Plan, Point, Recommend, point_id,
                                  wire_parts, wire_vector)
from schemas.collection import CollectionSpec, StorageSpec


def to_qdrant_filter(query_filter: Filter | None, exclude: Sequence[str] = (),
                     only: Sequence[str] | None = None) -> Any:
    """{"field": value} -> MatchValue, {"field": [a, b]} -> MatchAny, all ANDed; item ids left out or kept."""
    from qdrant_client import models

    must: list[Any] = [
        models.FieldCondition(key=key, match=models.MatchAny(any=list(value)) if isinstance(value, (list, tuple, set))
                              else models.MatchValue(value=value))
        for key, value in (query_filter or {}).items()
    ]
    if only is not None:
        must.append(models.HasIdCondition(has_id=[point_id(i) for i in only]))
    must_not = [models.HasIdCondition(has_id=[point_id(i) for i in exclude])] if exclude else None
    return models.Filter(must=must or None, must_not=must_not) if must or must_not else None


def without_field(qdrant_filter: Any, field: str) -> Any:
    """The filter, narrowed to the points that lack `field` (absent, null or []: Qdrant's is_empty)."""
    from qdrant_client import models

    empty = models.IsEmptyCondition(is_empty=models.PayloadField(key=field))
    if qdrant_filter is None:
        return models.Filter(must=[empty])
    return models.Filter(must=[*(qdrant_filter.must or []), empty], must_not=qdrant_filter.must_not)


def engine_groups(plan: Plan) -> bool:
    """Whether Qdrant's grouping query keeps what the plan ranks: a one-stage plan (a kNN, a recommendation) scores
    each point alone, so the best hit of a group is the same however the engine searches for it. A plan with parts
    (fusion, rescoring) or MMR is not: to fill its groups a server runs the query again without the groups found and
    multiplies every prefetch's limit by the groups asked for (local mode lifts them to the collection's size), which
    changes fused scores (ranks and score spreads are over other candidates) and MMR's picks; and it orders groups
    by score, where MMR's order is its picking order."""
    return isinstance(plan, (Nearest, Recommend))


def point_struct(point: Point) -> Any:
    from qdrant_client import models

    vectors, payload = wire_parts(point, models.SparseVector)
    return models.PointStruct(id=point.id, vector=vectors, payload=payload)


def query_args(plan: Plan, qdrant_filter: Any, params: Any = None) -> dict[str, Any]:
    """query_points' query, using and prefetch for a plan, each prefetch with the call's filter and the collection's
    search params (query_points takes those as `search_params`, a Prefetch as `params`)."""
    from qdrant_client import models

    if isinstance(plan, Fuse):
        query = models.RrfQuery(rrf=models.Rrf(k=RRF_K)) if plan.method == "rrf" \
            else models.FusionQuery(fusion=models.Fusion.DBSF)
        using = None
    elif isinstance(plan, (Recommend, Diverse)):
        query, using = special_query(plan), plan.using
    else:  # Nearest, or the vector a Rescore ranks its candidates by
        query, using = wire_vector(plan.vector, models.SparseVector), plan.using
    prefetch = None if not getattr(plan, "parts", ()) else [
        models.Prefetch(limit=part.limit, filter=qdrant_filter, score_threshold=getattr(part, "min_score", None),
                        params=params, **query_args(part, qdrant_filter, params))
        for part in plan.parts]
    return {"query": query, "using": using, "prefetch": prefetch}


def special_query(plan: Recommend | Diverse) -> Any:
    """A recommendation (every strategy is the client's own) or an MMR as the client's query."""
    from qdrant_client import models

    if isinstance(plan, Diverse):
        return models.NearestQuery(nearest=wire_vector(plan.vector, models.SparseVector),
                                   mmr=models.Mmr(diversity=plan.diversity, candidates_limit=plan.candidates))
    return models.RecommendQuery(recommend=models.RecommendInput(
        positive=[wire_vector(v, None) for v in plan.positives],
        negative=[wire_vector(v, None) for v in plan.negatives],
        strategy=models.RecommendStrategy(plan.strategy)))


def search_params(storage: StorageSpec | None) -> Any:
    """The search params a collection's storage asks for (None: the server's defaults, an older spec)."""
    from qdrant_client import models

    if storage is None:
        return None
    quantized = None if storage.quantization == "none" else models.QuantizationSearchParams(
        rescore=storage.rescore, oversampling=storage.oversampling)
    return models.SearchParams(hnsw_ef=storage.hnsw_ef, quantization=quantized)


def create_args(spec: CollectionSpec) -> dict[str, Any]:
    """create_collection's layout (shards, copies, write quorum) and storage arguments, from the spec."""
    from qdrant_client import models

    layout = {"shard_number": spec.shard_number, "replication_factor": spec.replication_factor,
              "write_consistency_factor": spec.write_consistency_factor}
    storage = spec.storage
    if storage is None:
        return layout
    hnsw = models.HnswConfigDiff(m=storage.hnsw_m, ef_construct=storage.ef_construct, on_disk=storage.graph_on_disk)
    return {**layout, "hnsw_config": hnsw, "quantization_config": quantization(storage.quantization)}


def quantization(kind: str) -> Any:
    """The quantized copy of the vectors, always in RAM (the same choices as the edge store's)."""
    from qdrant_client import models

    configs = {
        "none": lambda: None,
        "int8": lambda: models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
            type=models.ScalarType.INT8, quantile=0.99, always_ram=True)),
        "binary": lambda: models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True)),
        "product": lambda: models.ProductQuantization(product=models.ProductQuantizationConfig(
            compression=models.CompressionRatio.X16, always_ram=True)),
    }
    return configs[kind]()
