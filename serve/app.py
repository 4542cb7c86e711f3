"""Application builder: typed arguments (for `serve run`, `serve build` and config files) to the bound deployments.

serve run cluster/serve-config.yaml                      # what `make serve` runs
serve run serve.app:build_app model=... collection=...   # or arguments; unset ones come from FASHION_* settings

Nothing is built at import: `serve run` and `serve build` import this module on the driver, and the settings must be
read when the app is built, not when a module happens to be imported.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray.serve import Application

from retrieval.model import canonical_spec
from schemas.jobs import QUERY_SEGMENTERS, StoreConfig
from schemas.settings import Settings, get_settings
from serve.api import SearchAPIConfig, SearchAPIDeployment
from serve.encoder import EncoderConfig, QueryEncoder
from serve.http import BodyTimeouts

# The settings the service takes as arguments, by their names (`model=...`); it reads the others, `metrics` among
# them, from FASHION_* in each replica, so an argument could not change them.
SERVICE_SETTINGS = ("model", "device", "precision", "collection", "qdrant_url", "qdrant_api_key", "qdrant_grpc",
                    "qdrant_timeout_s", "store_backend", "store_path", "query_max_pixels", "query_decode_budget",
                    "query_cache_size", "result_cache_size", "result_cache_ttl_s")


class ServeArgs(BaseModel):
    """The service's own knobs, and SERVICE_SETTINGS (each declared once, by schemas/settings.py) given by name in
    place of their FASHION_* values. Unknown keys are an error (typos)."""

    model_config = ConfigDict(extra="forbid")

    settings: Settings = Field(default_factory=get_settings, description="FASHION_* with the settings given here "
                                                                          "in their place")
    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0)
    body_idle_timeout_s: float = Field(BodyTimeouts.idle_s, gt=0, description="a request body that sends nothing "
                                       "for this long is refused (408), freeing its request slot")
    body_timeout_s: float = Field(BodyTimeouts.total_s, gt=0, description="a request body must arrive whole "
                                  "within this (408)")
    max_ongoing_requests: int = Field(256, ge=1, description="requests one ingress replica holds at once; a request "
                                      "still sending its body holds one (for at most body_timeout_s), so this is "
                                      "how many slow uploads a replica absorbs without queueing other searches")
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

    @model_validator(mode="before")
    @classmethod
    def _settings_by_name(cls, given: Any) -> Any:
        """Serve configs and `serve run ... key=value` are flat: a setting's name sets it over FASHION_*."""
        if not isinstance(given, dict) or not set(given) & set(SERVICE_SETTINGS):
            return given
        base = given.get("settings") or get_settings()
        named = {k: v for k, v in given.items() if k in SERVICE_SETTINGS}
        rest = {k: v for k, v in given.items() if k not in SERVICE_SETTINGS}
        return {**rest, "settings": {**(base.model_dump() if isinstance(base, Settings) else base), **named}}

    def store(self) -> StoreConfig:
        return StoreConfig.from_settings(self.settings)

    def encoder_config(self) -> EncoderConfig:
        """What the query encoder is built from, in the ingress or in its own deployment."""
        s = self.settings
        return EncoderConfig(model=s.model, device=s.device, precision=s.precision,
                             threads=self.encoder_threads or max(1, int(self.encoder_cpus)),
                             segmenter=self.query_segmenter, max_pixels=s.query_max_pixels,
                             decode_budget=s.query_decode_budget, cache_size=s.query_cache_size)

    def search_api_config(self) -> SearchAPIConfig:
        """What SearchAPI is built from, besides its encoder."""
        return SearchAPIConfig(store=self.store(), collection=self.settings.collection,
                               model=canonical_spec(self.settings.model), max_upload_bytes=self.max_upload_bytes,
                               body_timeouts=BodyTimeouts(self.body_idle_timeout_s, self.body_timeout_s),
                               segmentation=self.query_segmenter != "none",
                               result_cache=(self.settings.result_cache_size, self.settings.result_cache_ttl_s))


def build_app(args: ServeArgs) -> Application:
    """Bind the encoder and the ingress; `args` may be a dict (serve run key=value, config files)."""
    args = args if isinstance(args, ServeArgs) else ServeArgs.model_validate(args or {})
    if args.ingress_replicas > 1 and args.settings.qdrant_url is None:
        raise ValueError("the embedded store lives in one process: ingress_replicas must be 1 without qdrant_url")
    if args.encoder_replicas > 1 and args.encoder_placement == "ingress":
        raise ValueError("encoder_replicas needs encoder_placement: deployment (in the ingress, each ingress "
                         "replica has one encoder: scale ingress_replicas)")
    if args.encoder_placement == "ingress":
        ingress = SearchAPIDeployment.options(
            num_replicas=args.ingress_replicas, max_ongoing_requests=args.max_ongoing_requests,
            ray_actor_options={"num_cpus": args.ingress_cpus + args.encoder_cpus, "num_gpus": args.encoder_gpus})
        return ingress.bind(args.encoder_config(), args.search_api_config())
    encoder = QueryEncoder.options(
        num_replicas=args.encoder_replicas,
        ray_actor_options={"num_cpus": args.encoder_cpus, "num_gpus": args.encoder_gpus},
    ).bind(args.encoder_config())
    ingress = SearchAPIDeployment.options(num_replicas=args.ingress_replicas,
                                          max_ongoing_requests=args.max_ongoing_requests,
                                          ray_actor_options={"num_cpus": args.ingress_cpus})
    return ingress.bind(encoder, args.search_api_config())


def __getattr__(name: str) -> Application:
    """`serve.app:app` (what `serve build` and `serve run serve.app:app` need, an Application) is built when asked
    for, from the settings of that moment, never as a side effect of importing this module."""
    if name == "app":
        return build_app(ServeArgs())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
