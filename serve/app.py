"""Application builder: typed arguments (for `serve run`, `serve build` and config files) to the bound deployments.

serve run cluster/serve-config.yaml                      # what `make serve` runs
serve run serve.app:build_app model=... collection=...   # or arguments; unset ones come from FASHION_* settings

Nothing is built at import: `serve run` and `serve build` import this module on the driver, and the settings must be
read when the app is built, not when a module happens to be imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from retrieval.model import canonical_spec
from schemas.jobs import QUERY_SEGMENTERS, STORE_SETTINGS, StoreConfig
from schemas.settings import get_settings
from serve.api import SearchAPI
from serve.encoder import EncoderSpec, QueryEncoder
from serve.http import BodyTimeouts


def _settings_default(name: str):
    return lambda: getattr(get_settings(), name)


class ServeArgs(BaseModel):
    """Every knob of the service; unset ones come from FASHION_* settings. Unknown keys are an error (typos)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(default_factory=_settings_default("model"))
    device: str = Field(default_factory=_settings_default("device"))
    precision: str = Field(default_factory=_settings_default("precision"))
    collection: str = Field(default_factory=_settings_default("collection"))
    qdrant_url: str | None = Field(default_factory=_settings_default("qdrant_url"))
    qdrant_api_key: str | None = Field(default_factory=_settings_default("qdrant_api_key"))
    qdrant_grpc: bool = Field(default_factory=_settings_default("qdrant_grpc"))
    qdrant_timeout_s: float = Field(default_factory=_settings_default("qdrant_timeout_s"), gt=0)
    store_backend: str = Field(default_factory=_settings_default("store_backend"))
    store_path: Path | str = Field(default_factory=_settings_default("store_path"))
    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0)
    body_idle_timeout_s: float = Field(BodyTimeouts.idle_s, gt=0, description="a request body that sends nothing "
                                       "for this long is refused (408), freeing its request slot")
    body_timeout_s: float = Field(BodyTimeouts.total_s, gt=0, description="a request body must arrive whole "
                                  "within this (408)")
    max_ongoing_requests: int = Field(256, ge=1, description="requests one ingress replica holds at once; a request "
                                      "still sending its body holds one (for at most body_timeout_s), so this is "
                                      "how many slow uploads a replica absorbs without queueing other searches")
    query_max_pixels: int = Field(default_factory=_settings_default("query_max_pixels"), gt=0,
                                  description="larger query photos are refused from their header")
    query_decode_budget: int = Field(default_factory=_settings_default("query_decode_budget"), gt=0,
                                     description="query pixels decoded at once (bounds decode memory)")
    encoder_placement: Literal["ingress", "deployment"] = Field(
        "ingress", description="ingress: the model runs in the ingress process (no hop, lowest latency on one "
                               "machine); deployment: QueryEncoder replicas of their own (GPUs, scaling apart)")
    encoder_replicas: int = Field(1, ge=1, description="QueryEncoder replicas (encoder_placement: deployment)")
    encoder_cpus: float = Field(1.0, ge=0, description="CPUs for the encoder, added to the ingress's when placed there")
    encoder_gpus: float = Field(0.0, ge=0)
    encoder_threads: int | None = Field(None, ge=1, description="torch threads per encoder (default: its whole CPUs)")
    query_segmenter: Literal[QUERY_SEGMENTERS] = Field(  # type: ignore[valid-type]
        "u2netp", description="garment isolation for requests with segment=true, or none")
    ingress_replicas: int = Field(1, ge=1, description="must stay 1 with the embedded store (one process)")
    ingress_cpus: float = Field(0.25, ge=0)

    def store(self) -> StoreConfig:
        return StoreConfig.from_settings(**self.model_dump(include=set(STORE_SETTINGS)))

    def encoder_args(self) -> tuple:
        """What the query encoder is built from (serve/encoder.py's EncoderTarget)."""
        return (self.model, self.device, self.precision, self.query_max_pixels,
                self.encoder_threads or max(1, int(self.encoder_cpus)), self.query_segmenter,
                self.query_decode_budget)

    def ingress_args(self) -> tuple:
        """The ingress's arguments after the encoder (serve/api.py's SearchHandlers)."""
        return (self.store(), self.collection, canonical_spec(self.model), self.max_upload_bytes,
                BodyTimeouts(self.body_idle_timeout_s, self.body_timeout_s))


def build_app(args: ServeArgs) -> Application:
    """Bind the encoder and the ingress; `args` may be a dict (serve run key=value, config files)."""
    args = args if isinstance(args, ServeArgs) else ServeArgs.model_validate(args or {})
    if args.ingress_replicas > 1 and args.qdrant_url is None:
        raise ValueError("the embedded store lives in one process: ingress_replicas must be 1 without qdrant_url")
    if args.encoder_replicas > 1 and args.encoder_placement == "ingress":
        raise ValueError("encoder_replicas needs encoder_placement: deployment (in the ingress, each ingress "
                         "replica has one encoder: scale ingress_replicas)")
    encoder_args, ingress_args = args.encoder_args(), args.ingress_args()
    if args.encoder_placement == "ingress":
        ingress = SearchAPI.options(num_replicas=args.ingress_replicas, max_ongoing_requests=args.max_ongoing_requests,
                                    ray_actor_options={"num_cpus": args.ingress_cpus + args.encoder_cpus,
                                                       "num_gpus": args.encoder_gpus})
        return ingress.bind(EncoderSpec(args=encoder_args), *ingress_args)
    encoder = QueryEncoder.options(
        num_replicas=args.encoder_replicas,
        ray_actor_options={"num_cpus": args.encoder_cpus, "num_gpus": args.encoder_gpus},
    ).bind(*encoder_args)
    ingress = SearchAPI.options(num_replicas=args.ingress_replicas, max_ongoing_requests=args.max_ongoing_requests,
                                ray_actor_options={"num_cpus": args.ingress_cpus})
    return ingress.bind(encoder, *ingress_args)


def __getattr__(name: str) -> Application:
    """`serve.app:app` (what `serve build` and `serve run serve.app:app` need, an Application) is built when asked
    for, from the settings of that moment, never as a side effect of importing this module."""
    if name == "app":
        return build_app(ServeArgs())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
