"""The collection spec: named vectors, distance, payload indexes, storage and the model that made the vectors."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

IMAGE_VECTOR = "image"  # CLIP image embedding of the item's photo
TEXT_VECTOR = "text"  # CLIP text embedding of the item's document, in the same space as query words and photos
BM25_VECTOR = "bm25"  # sparse BM25 weights of the item's document; the collection applies IDF
TERMS_VECTOR = "terms"  # the same words, ~1.0 each, no IDF: a query of n words scores ~n on items with all of them
DENSE_VECTORS = (IMAGE_VECTOR, TEXT_VECTOR)
SPARSE_VECTORS = (BM25_VECTOR, TERMS_VECTOR)
IDF_VECTORS = (BM25_VECTOR,)  # sparse vectors whose collection applies IDF
# Distance names as the spec records them, and as Qdrant (server, local mode and edge) spells them.
DISTANCES = {"cosine": "Cosine", "dot": "Dot", "euclid": "Euclid", "manhattan": "Manhattan"}

QUANTIZATIONS = ("none", "int8", "binary", "product")  # of the dense vectors; how each is built: retrieval/store

# What must agree between a collection and the run writing into it (the vectors are checked apart).
INDEX_FIELDS = ("model", "dim", "distance", "letterbox", "segmentation")


class StorageSpec(BaseModel):
    """How a collection keeps and searches its dense vectors: the compressed copy searched first (with `oversampling`
    times the candidates rescored by the full vectors), the HNSW graph (m 0: none, brute force), what lies on disk.
    Chosen by catalog size (retrieval/store/storage.py) unless flags say otherwise; fixed when the collection is
    created, except the search-time fields (hnsw_ef, rescore, oversampling)."""

    quantization: Literal["none", "int8", "binary", "product"] = "none"
    rescore: bool = True  # rank the quantized candidates again by the full vectors
    oversampling: float = Field(1.0, ge=1.0, description="quantized candidates fetched per result, then rescored")
    hnsw_m: int = Field(16, ge=0, description="HNSW edges per node; 0: no graph, every search is a full scan")
    ef_construct: int = Field(100, ge=4)
    hnsw_ef: int | None = Field(None, ge=1, description="candidates searched in the graph (None: the engine's)")
    vectors_on_disk: bool = False  # full vectors memory-mapped (the quantized copy stays in RAM)
    graph_on_disk: bool = False


class CollectionSpec(BaseModel):
    """What a collection must look like; opening it with another model or dimension is an error."""

    name: str = Field(min_length=1)
    model: str = Field(min_length=1, description="The model spec string that produced the vectors.")
    dim: int = Field(gt=0)
    vectors: tuple[str, ...] = (*DENSE_VECTORS, *SPARSE_VECTORS)
    distance: Literal["cosine", "dot", "euclid", "manhattan"] = "cosine"  # of the dense vectors
    letterbox: bool = False  # queries must be preprocessed as the items were
    segmentation: str = "none"  # how item photos were isolated before encoding
    catalog_root: str | None = None  # where the item images lie, so the service can show them
    filter_fields: tuple[str, ...] = ()  # keyword-indexed payload fields, from the catalog (or --filter-fields)
    filter_values: dict[str, dict[str, int]] = {}  # the most common values of each, with their item counts
    bm25_avg_len: float = Field(1.0, gt=0, description="the catalog's mean document length in BM25 tokens")
    bm25_language: str = "english"  # stopwords and stemmer of the documents, and so of the queries
    synonyms: str | None = None  # the catalog's synonyms file (retrieval/understanding.py), None: the default one
    complete: bool = True  # a generation is created False and marked True when its run succeeded
    # None (a spec.json written before storage was recorded): the engine's defaults, searched without parameters.
    storage: StorageSpec | None = None
    # A Qdrant server's layout, applied when the collection is created (an embedded store has one shard, one copy).
    shard_number: int = Field(1, ge=1)
    replication_factor: int = Field(1, ge=1)
    write_consistency_factor: int = Field(1, ge=1)

    @property
    def dense_vectors(self) -> tuple[str, ...]:
        return tuple(v for v in self.vectors if v not in SPARSE_VECTORS)

    @property
    def sparse_vectors(self) -> tuple[str, ...]:
        return tuple(v for v in self.vectors if v in SPARSE_VECTORS)

    def problem(self, **wanted: object) -> str | None:
        """Why this collection (as found in the store) cannot serve what is asked, or None: the one decision on fit.

        A writer asks for every INDEX_FIELD and its vectors (`wanted_by_writer`); the service for its model and the
        vectors its searches read (it takes letterbox and segmentation from the collection)."""
        for field, asked in wanted.items():
            if field == "vectors":
                missing = [v for v in asked if v not in self.vectors]
                if missing:
                    return f"it has no {', '.join(missing)} vectors (it was built by an older version)"
            elif getattr(self, field) != asked:
                return f"{field}: the collection has {getattr(self, field)!r}, this run uses {asked!r}"
        return None

    def wanted_by_writer(self) -> dict[str, object]:
        """What a run writing with this spec needs an existing collection to agree on."""
        return {field: getattr(self, field) for field in (*INDEX_FIELDS, "vectors")}
