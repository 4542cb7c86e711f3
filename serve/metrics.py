"""The service's Prometheus metrics, through Ray's metrics API: exported with Ray Serve's own `ray_serve_*` metrics on
each node's metrics port (Ray prefixes them `ray_`), tagged by deployment and replica. Outside Ray they are no-ops.

Names (the Grafana dashboard in cluster/grafana/ queries each one; tests/test_observability.py checks it):
- fashion_search_requests_total{mode, strategy, status}: searches answered, by HTTP status (a recommendation is
  one of mode "recommend", its strategy the recommend strategy);
- fashion_search_rejected_total{reason}: searches refused, by why (too_large, undecodable_image, bad_body, ...);
- fashion_search_stage_seconds{stage}: time per stage (parse, encode, search, explain, total);
- fashion_encoder_batch_size{kind}: requests per model call (image, text), a histogram;
- fashion_encoder_requests_total{kind}: requests the model encoded: the mean batch size is its rate over the
  histogram's count rate, because Ray 2.60 exports a histogram's `_sum` rebuilt from bucket midpoints (a batch of
  one would read 0.5);
- fashion_encoder_queue_length{kind}: requests waiting for the model, read from the queue every few seconds
  (retrieval/gauges.py: Ray drops a gauge not set for ~20 s, so an idle encoder's 0 would vanish);
- fashion_query_cache_total{kind, result}: encoded-query cache lookups (kind text or image, result hit or miss):
  the hit rate is the hits' rate over all lookups' (retrieval/query_cache.py).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

from retrieval import gauges

SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
BATCH = [1, 2, 4, 8, 16, 32]
STAGES = ("parse_ms", "encode_ms", "search_ms", "explain_ms", "total_ms")


class ServiceMetrics:
    """One set per process (Ray refuses two metrics of one name with different shapes)."""

    def __init__(self):
        from ray.serve import metrics

        self.requests = metrics.Counter("fashion_search_requests_total", description="Searches answered",
                                        tag_keys=("mode", "strategy", "status"))
        self.rejected = metrics.Counter("fashion_search_rejected_total", description="Searches refused, by reason",
                                        tag_keys=("reason",))
        self.stage = metrics.Histogram("fashion_search_stage_seconds", description="Time per search stage",
                                       boundaries=SECONDS, tag_keys=("stage",))
        self.batch = metrics.Histogram("fashion_encoder_batch_size", description="Requests per model call",
                                       boundaries=BATCH, tag_keys=("kind",))
        self.encoded = metrics.Counter("fashion_encoder_requests_total", description="Requests the model encoded",
                                       tag_keys=("kind",))
        self.cache = metrics.Counter("fashion_query_cache_total", description="Encoded-query cache lookups",
                                     tag_keys=("kind", "result"))
        self.queue = metrics.Gauge("fashion_encoder_queue_length", description="Requests waiting for the model",
                                   tag_keys=("kind",))

    def searched(self, mode: str, strategy: str, status: int, timings_ms: dict[str, float]) -> None:
        self.requests.inc(1, tags={"mode": mode, "strategy": strategy or "none", "status": str(status)})
        for name in STAGES:
            if name in timings_ms:
                self.stage.observe(timings_ms[name] / 1000, tags={"stage": name.removesuffix("_ms")})

    def refused(self, mode: str, status: int, reason: str) -> None:
        self.requests.inc(1, tags={"mode": mode, "strategy": "none", "status": str(status)})
        self.rejected.inc(1, tags={"reason": reason})

    def cached(self, kind: str, hit: bool) -> None:
        self.cache.inc(1, tags={"kind": kind, "result": "hit" if hit else "miss"})

    def batched(self, kind: str, size: int, waiting: int) -> None:
        self.batch.observe(size, tags={"kind": kind})
        self.encoded.inc(size, tags={"kind": kind})
        self.queue.set(waiting, tags={"kind": kind})

    def queued(self, kind: str, waiting: Callable[[], int]) -> None:
        """Report `waiting()` as the queue length of `kind` while its owner lives."""
        gauges.watch(self.queue, {"kind": kind}, waiting)


class NoMetrics:
    """FASHION_METRICS=0: the same calls, recording nothing (bench.serving measures what metrics cost)."""

    def searched(self, *args) -> None:
        pass

    refused = batched = cached = queued = searched


@lru_cache(maxsize=1)
def service_metrics() -> ServiceMetrics | NoMetrics:
    from schemas.settings import get_settings

    return ServiceMetrics() if get_settings().metrics else NoMetrics()
