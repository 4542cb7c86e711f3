"""Every knob in one place: defaults that work on one machine, overridable by FASHION_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.catalog import CatalogRef

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The offline kit lies beside the checkout; real users point FASHION_MODEL / --catalog elsewhere.
SHARED_ROOT = PROJECT_ROOT.parent / "shared"
OFFLINE_MODEL = f"local-dir:{SHARED_ROOT / 'models' / 'fashion-clip-mini'}"
OFFLINE_CATALOG = SHARED_ROOT / "datasets" / "myntra-fashion-small"


class Settings(BaseSettings):
    """Run-time settings, each declared once here: environment variables (FASHION_<NAME>) set them; the jobs' flags
    (jobs/cli.py) and the service's arguments (serve/app.py) are derived from these fields and override them."""

    model_config = SettingsConfigDict(env_prefix="FASHION_", extra="ignore")

    model: str = Field(OFFLINE_MODEL, description="open_clip model spec: NAME/TAG, hf-hub:ORG/REPO or local-dir:PATH")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    precision: str = Field("fp32", description="fp32, bf16, fp16, int8 (CPU only) or auto (bf16 on GPU, fp32 on CPU)")
    graphs: bool = Field(True, description="Run the encoder's towers as TorchScript graphs (the same vectors, without "
                                           "holding the GIL: docs/performance.md); false runs them eagerly")
    catalog: CatalogRef = Field(OFFLINE_CATALOG, description="Catalog root (folder with catalog.csv, or images) or "
                                                         "table file; the index job also reads a table on an object "
                                                         "store (s3://, gs://, abfs://, hdfs://)")
    catalog_format: str = Field("auto", description="auto, csv, parquet, jsonl, folder, deepfashion-mm, inshop,"
                                                    " magento")
    collection: str = Field("fashion", description="Collection (alias) name searched and indexed")
    qdrant_url: str | None = Field(None, description="Qdrant server URL; unset means the embedded store")
    qdrant_api_key: SecretStr | None = Field(None, description="API key for the Qdrant server")
    qdrant_grpc: bool = Field(False, description="Prefer gRPC to the server (port 6334)")
    qdrant_timeout_s: float = Field(30.0, gt=0)
    store_backend: str = Field("edge", description="Embedded backend: edge (qdrant-edge-py) or local (qdrant-client)")
    store_path: Path = Field(PROJECT_ROOT / "var" / "qdrant", description="Folder of the embedded store")
    # A server's layout of new collections (an embedded store has one shard and one copy, whatever these say).
    shard_number: int = Field(1, ge=1, description="Shards of a new collection on a Qdrant server")
    replication_factor: int = Field(1, ge=1, description="Copies of each shard on a Qdrant server")
    write_consistency_factor: int = Field(1, ge=1, description="Copies that must confirm a write on a Qdrant server")
    letterbox: bool = Field(False, description="Pad to square instead of centre-cropping")
    max_image_pixels: int = Field(80_000_000, gt=0, description="Larger catalog images are skipped as "
                                                                 "decompression bombs")
    image_timeout_s: float = Field(20.0, gt=0, description="Seconds an image named by a URI (s3://, gs://, ...) may "
                                                           "take to read, retries included; past it, it is skipped")
    image_retries: int = Field(3, ge=0, description="Retries of a transient object-store error (backoff 0.2 s, "
                                                    "doubling)")
    image_read_threads: int = Field(16, ge=1, description="URI images read at once per read task (object stores "
                                                          "answer in tens of ms: reading in turn would idle)")
    query_max_pixels: int = Field(16_000_000, gt=0, description="Larger query photos are refused (a 16 MP phone "
                                                                "photo passes; decoding memory is 3 bytes a pixel)")
    metrics: bool = Field(True, description="Export the service's Prometheus metrics (off: to measure their cost)")
    query_cache_size: int = Field(8192, ge=0, description="Encoded queries (words, photos) kept per service "
                                                         "process, least recently used dropped (0: none); about "
                                                         "4 bytes x the model's dimension each")
    result_cache_size: int = Field(40_000, ge=0, description="Results kept per ingress process in whole search "
                                   "responses, for repeated requests on the same generation (4,000 ten-result answers; "
                                   "0: none; serve/result_cache.py)")
    result_cache_ttl_s: float = Field(30.0, ge=0, description="Seconds a cached response is served: an index run "
                                      "without --rebuild changes the live generation in place")
    query_decode_budget: int = Field(48_000_000, gt=0, description="Query pixels decoded at once per replica; more "
                                                                   "wait (bounds decode memory to a few hundred MB)")

    def with_values(self, **given: Any) -> Settings:
        """These settings with the given ones in their place, validated as the settings are; None (or "") is a value
        not given, so a flag left out keeps the setting."""
        unknown = set(given) - set(type(self).model_fields)
        if unknown:
            raise TypeError(f"not settings: {', '.join(sorted(unknown))}")
        chosen = {name: value for name, value in given.items() if value is not None and value != ""}
        return type(self).model_validate({**self.model_dump(), **chosen}) if chosen else self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
