"""Job configurations: where the store is and how an index run is shaped."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class StoreConfig(BaseModel):
    """How to reach the vector store: a server URL, else an embedded store in a folder."""

    url: str | None = None
    api_key: str | None = None
    prefer_grpc: bool = False
    timeout_s: float = Field(30.0, gt=0)
    backend: str = "edge"
    path: Path = Path("var/qdrant")

    @property
    def embedded(self) -> bool:
        return self.url is None


class IndexConfig(BaseModel):
    """One index run: catalog, model, store target and the pipeline's shape."""

    catalog: Path
    catalog_format: str = "auto"
    model: str
    device: str = "auto"
    precision: str = "fp32"
    collection: str = "fashion"
    rebuild: bool = False
    store: StoreConfig = StoreConfig()
    letterbox: bool = False
    draft: bool = True
    max_image_pixels: int = Field(80_000_000, gt=0)
    limit: int | None = Field(None, gt=0, description="Index only the first N catalog items")
    batch_size: int = Field(64, gt=0)
    encode_actors: int = Field(1, gt=0)
    encode_cpus: float = Field(1.0, ge=0)
    encode_threads: int | None = Field(None, ge=1, description="torch threads per actor (default: its CPUs)")
    allow_random_weights: bool = Field(False, description="Benchmarks only: a NAME without pretrained tag")
    encode_gpus: float = Field(0.0, ge=0)
    decode_cpus: float = Field(0.5, gt=0)
    segment: str = Field("none", description="Garment isolation before encoding: none, u2netp, annotations, maskrcnn")
    segment_actors: int = Field(1, gt=0)
    segment_cpus: float = Field(1.0, ge=0)
    segment_gpus: float = Field(0.0, ge=0)
    segment_weights: str | None = Field(None, description="maskrcnn weights file (or DEFAULT to download)")
    max_skip_fraction: float = Field(0.2, ge=0, le=1, description="Fail the run (no alias switch) past this")
    keep_generations: int = Field(2, ge=1)
    summary_json: Path | None = None
    optimize_above: int = Field(20_000, ge=0, description="Build the kNN index when the collection has more points")
