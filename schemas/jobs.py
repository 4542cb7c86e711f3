"""Job configurations and their valid choices: where the store is and how an index run is shaped.

Each config is built from the settings plus the caller's overrides (`IndexConfig.from_settings(limit=300)`), so
defaults live in one place: the settings for what an environment variable may set, the fields here for the rest.
A field named as a setting takes the setting's value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from retrieval import model, segmentation
from retrieval.catalogs import formats
from retrieval.store.storage import PLAIN_BELOW, storage_for
from schemas.catalog import CatalogRef
from schemas.collection import QUANTIZATIONS, StorageSpec
from schemas.settings import Settings, get_settings

# The choices, from their tables next to the implementations.
CATALOG_FORMATS = formats.CHOICES
PRECISIONS = model.PRECISION_CHOICES
SEGMENTERS = segmentation.SEGMENTER_NAMES
QUERY_SEGMENTERS = segmentation.QUERY_SEGMENTER_NAMES  # the ones that work on a shopper's photo
STORE_BACKENDS = ("edge", "local")
SERVER_LAYOUT = ("shard_number", "replication_factor", "write_consistency_factor")


class StoreConfig(BaseModel):
    """How to reach the vector store: a server URL, else an embedded store in a folder. The store's own names;
    `from_settings` fills them from the settings (qdrant_*, store_*)."""

    url: str | None = None
    api_key: str | None = None
    prefer_grpc: bool = False
    timeout_s: float = Field(30.0, gt=0)
    backend: str = Field("edge", description=f"embedded backend: {', '.join(STORE_BACKENDS)}")
    path: Path | str | None = Field(None, description="folder of the embedded store (or ':memory:' for local mode)")

    @property
    def embedded(self) -> bool:
        return self.url is None

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "StoreConfig":
        """The store the settings name (give flags with `settings.with_values(...)` first)."""
        s = settings or get_settings()
        path = s.store_path if str(s.store_path) == ":memory:" else Path(s.store_path).expanduser().resolve()
        return cls(url=s.qdrant_url, api_key=s.qdrant_api_key.get_secret_value() if s.qdrant_api_key else None,
                   prefer_grpc=s.qdrant_grpc, timeout_s=s.qdrant_timeout_s, backend=s.store_backend,
                   path=path)  # resolved: Ray workers run in other folders


class IndexConfig(BaseModel):
    """One index run: catalog, model, store target and the pipeline's shape. Fields without a default here are
    settings (FASHION_*, described and bounded where schemas/settings.py declares them): build it with
    `from_settings`, which fills them."""

    catalog: CatalogRef
    catalog_format: str
    text_fields: tuple[str, ...] | None = Field(
        None, description="Table (CSV, Parquet, JSON lines) columns that make an item's document, in order "
                          "(default: every column but the id and the image; numbers left out)")
    filter_fields: tuple[str, ...] | None = Field(
        None, description="payload fields to filter by (default: the catalog's categorical string fields)")
    synonyms: Path | None = Field(
        None, description="the catalog's synonyms file for the search box ('a, b, c' or 'a, b => c' per line; "
                          "default: retrieval/synonyms.txt), recorded with the collection")
    model: str
    device: str
    precision: str
    collection: str
    rebuild: bool = Field(False, description="build a new generation and switch the alias to it")
    resume: bool = Field(True, description="continue an unfinished generation a crashed run left (same model, "
                                           "preprocessing and catalog), skipping the items it already holds")
    store: StoreConfig
    letterbox: bool
    draft: bool = Field(True, description="JPEG DCT-domain downscale before decoding")
    max_image_pixels: int
    image_timeout_s: float
    image_retries: int
    image_read_threads: int
    limit: int | None = Field(None, gt=0, description="index only the first N catalog items")
    batch_size: int = Field(64, gt=0)
    encode_actors: int = Field(1, gt=0)
    encode_cpus: float = Field(1.0, ge=0, description="CPUs per encoder actor (fractions allowed)")
    encode_threads: int | None = Field(None, ge=1, description="torch threads per encoder actor (default: its CPUs)")
    allow_random_weights: bool = Field(False, description="benchmarks only: a NAME without pretrained tag")
    encode_gpus: float = Field(0.0, ge=0, description="GPUs per encoder actor (auto: 1 when the cluster has GPUs)")
    decode_cpus: float = Field(0.5, gt=0, description="CPUs per decode task")
    segment: str = Field("none", description=f"garment isolation before encoding: {', '.join(SEGMENTERS)}")
    segment_actors: int = Field(1, gt=0)
    segment_cpus: float = Field(1.0, ge=0)
    segment_gpus: float = Field(0.0, ge=0)
    segment_weights: str | None = Field(None, description="maskrcnn weights file, or DEFAULT to download")
    max_skip_fraction: float = Field(0.2, ge=0, le=1, description="fail the run (no alias switch) past this")
    keep_generations: int = Field(2, ge=1)
    summary_json: Path | None = Field(None, description="also write the summary here")
    progress_every_s: float = Field(10.0, gt=0, description="seconds between progress lines in the log")
    optimize_above: int = Field(PLAIN_BELOW, ge=0, description="build the kNN index past this many points")
    # The collection's storage: chosen by the catalog's size (retrieval/store/storage.py); each given one overrides.
    quantization: str | None = Field(None, description=f"quantized copy searched first: {', '.join(QUANTIZATIONS)}")
    oversampling: float | None = Field(None, ge=1, description="quantized candidates per result, rescored")
    rescore: bool | None = Field(None, description="rank quantized candidates again by the full vectors")
    hnsw_m: int | None = Field(None, ge=0, description="HNSW edges per node (0: no graph, brute force)")
    ef_construct: int | None = Field(None, ge=4, description="HNSW candidates while building")
    hnsw_ef: int | None = Field(None, ge=1, description="HNSW candidates while searching")
    vectors_on_disk: bool | None = Field(None, description="full vectors memory-mapped (quantized copy in RAM)")
    graph_on_disk: bool | None = Field(None, description="HNSW graph memory-mapped")
    shard_number: int
    replication_factor: int
    write_consistency_factor: int

    def storage(self, points: int) -> StorageSpec:
        """The storage of a new collection for `points` catalog items: the size rule, with the flags given."""
        return storage_for(points, **{name: getattr(self, name) for name in StorageSpec.model_fields})

    def layout(self) -> dict[str, int]:
        """A new collection's layout on a Qdrant server (recorded in the spec; an embedded store ignores it)."""
        return {name: getattr(self, name) for name in SERVER_LAYOUT}

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> "IndexConfig":
        """The settings (with the overrides that name one in their place) for the fields named as settings, the
        other overrides and the field defaults for the rest; overrides given as None are left out."""
        given = {k: v for k, v in overrides.items() if v is not None}
        s = (settings or get_settings()).with_values(
            **{name: given.pop(name) for name in list(given) if name in Settings.model_fields})
        store = given.pop("store", None) or StoreConfig.from_settings(s)
        named = {name: getattr(s, name) for name in cls.model_fields if name in Settings.model_fields}
        return cls(store=store, **named, **given)
