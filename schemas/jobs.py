"""Job configurations and their valid choices: where the store is and how an index run is shaped.

Each config is built from the settings plus the caller's overrides (`IndexConfig.from_settings(limit=300)`), so
defaults live in one place: the settings for what an environment variable may set, the fields here for the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from schemas.settings import Settings, get_settings

CATALOG_FORMATS = ("auto", "csv", "folder", "deepfashion-mm", "inshop", "magento")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
SEGMENTERS = ("none", "u2netp", "annotations", "maskrcnn")
QUERY_SEGMENTERS = ("none", "u2netp")  # the ones that work on a shopper's photo (no annotations, no GPU model)
STORE_BACKENDS = ("edge", "local")
# Settings (and command-line flags) that make up a StoreConfig, and the StoreConfig field each one sets.
STORE_SETTINGS = {"qdrant_url": "url", "qdrant_api_key": "api_key", "qdrant_grpc": "prefer_grpc",
                  "qdrant_timeout_s": "timeout_s", "store_backend": "backend", "store_path": "path"}


class StoreConfig(BaseModel):
    """How to reach the vector store: a server URL, else an embedded store in a folder."""

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
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> "StoreConfig":
        """The configured store; overrides are named as the settings are (qdrant_url, store_path, ...), and one
        given as None (or "") keeps the setting."""
        s = settings or get_settings()
        named = {name: overrides.get(name) if overrides.get(name) not in (None, "") else getattr(s, name)
                 for name in STORE_SETTINGS}
        fields = {field: named[name] for name, field in STORE_SETTINGS.items()}
        if fields["path"] is not None and str(fields["path"]) != ":memory:":
            fields["path"] = Path(fields["path"]).expanduser().resolve()  # Ray workers run in other folders
        return cls(**fields)


class IndexConfig(BaseModel):
    """One index run: catalog, model, store target and the pipeline's shape. Fields without a default here are
    settings (FASHION_*): build it with `from_settings`, which fills them."""

    catalog: Path = Field(description="catalog root or CSV file")
    catalog_format: str = Field(description=f"one of {', '.join(CATALOG_FORMATS)}")
    text_fields: tuple[str, ...] | None = Field(
        None, description="CSV columns that make an item's document, in order (default: every column but the id "
                          "and the image; numbers left out)")
    filter_fields: tuple[str, ...] | None = Field(
        None, description="payload fields to filter by (default: the catalog's categorical string fields)")
    model: str = Field(description="NAME/TAG, hf-hub:ORG/REPO or local-dir:PATH")
    device: str = Field(description="auto, cpu, cuda")
    precision: str = Field(description=f"one of {', '.join(PRECISIONS)}")
    collection: str = Field(description="alias searched and (re)built")
    rebuild: bool = Field(False, description="build a new generation and switch the alias to it")
    resume: bool = Field(True, description="continue an unfinished generation a crashed run left (same model, "
                                           "preprocessing and catalog), skipping the items it already holds")
    store: StoreConfig
    letterbox: bool = Field(description="pad to square instead of centre-cropping")
    draft: bool = Field(True, description="JPEG DCT-domain downscale before decoding")
    max_image_pixels: int = Field(gt=0, description="larger images are skipped as decompression bombs")
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
    optimize_above: int = Field(20_000, ge=0, description="build the kNN index past this many points")

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> "IndexConfig":
        """Settings for what they cover, field defaults for the rest; overrides given as None are left out."""
        s = settings or get_settings()
        given = {k: v for k, v in overrides.items() if v is not None}
        store = given.pop("store", None) or StoreConfig.from_settings(
            s, **{name: given.pop(name, None) for name in STORE_SETTINGS})
        fields = {"catalog": s.catalog, "catalog_format": s.catalog_format, "model": s.model, "device": s.device,
                  "precision": s.precision, "collection": s.collection, "letterbox": s.letterbox,
                  "max_image_pixels": s.max_image_pixels, **given}
        return cls(store=store, **fields)

