"""An index run's progress while it runs: writers report each block to one small actor, which exports Prometheus
metrics through Ray (so a Prometheus scraping the cluster sees a reindex advance), and the driver logs a plain
progress line with the rate and an ETA every few seconds (a log file gets lines, not carriage returns).

Metrics (Ray prefixes them `ray_`): fashion_index_items_total{outcome, reason}, fashion_index_items_expected,
fashion_index_images_per_second, fashion_index_eta_seconds; tagged with the collection being built.
"""

from __future__ import annotations

import logging
import threading
import time

from jobs.progress import eta_text, seconds_left, share_text
from retrieval import gauges

log = logging.getLogger("jobs.index")


class IndexProgress:
    """The running totals of one index run (a Ray actor in the job; plain in tests)."""

    def __init__(self, collection: str, expected: int):
        from ray.util import metrics

        self.collection, self.expected, self.started = collection, expected, time.time()
        self.indexed, self.skipped_total = 0, 0
        tags = ("collection",)
        self._items = metrics.Counter("fashion_index_items_total", description="Items an index run has handled",
                                      tag_keys=("collection", "outcome", "reason"))
        self._expected = metrics.Gauge("fashion_index_items_expected", description="Items the run will handle",
                                       tag_keys=tags)
        self._rate = metrics.Gauge("fashion_index_images_per_second", description="Items indexed per second",
                                   tag_keys=tags)
        self._eta = metrics.Gauge("fashion_index_eta_seconds", description="Seconds left, at the rate so far",
                                  tag_keys=tags)
        # Read, not set: Ray drops a gauge not set for ~20 s, and a run's blocks can be further apart than that.
        for gauge, read in ((self._expected, self.expected_items), (self._rate, self.rate), (self._eta, self.eta_s)):
            gauges.watch(gauge, {"collection": collection}, read)

    def report(self, indexed: int, skipped: dict[str, int]) -> None:
        """A writer's block: points written, rows skipped by reason."""
        self.indexed += indexed
        self._items.inc(indexed, tags={"collection": self.collection, "outcome": "indexed", "reason": ""}) \
            if indexed else None
        for reason, count in skipped.items():
            self.skipped_total += count
            self._items.inc(count, tags={"collection": self.collection, "outcome": "skipped", "reason": reason})
        tags = {"collection": self.collection}  # at once too: the rate and ETA move with each block
        self._rate.set(self.rate(), tags=tags)
        self._eta.set(self.eta_s(), tags=tags)

    def expected_items(self) -> float:
        return self.expected

    def done(self) -> int:
        return self.indexed + self.skipped_total

    def rate(self) -> float:
        elapsed = time.time() - self.started
        return self.indexed / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float:
        """Seconds left; -1 while unknown (a gauge has no None)."""
        left = seconds_left(self.done(), self.expected, time.time() - self.started)
        return -1.0 if left is None else left

    def line(self) -> str:
        left = self.eta_s()
        return (f"indexed {self.indexed}, skipped {self.skipped_total} of {self.expected}"
                f"{share_text(self.done(), self.expected)}, {self.rate():.1f} images/s, "
                f"ETA {eta_text(left) if left >= 0 else '?'}")


class ProgressLogger:
    """On the driver: asks the progress actor for its line every `every_s` seconds while the pipeline runs."""

    def __init__(self, actor, every_s: float = 10.0):
        self.actor, self.every_s = actor, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="index-progress", daemon=True)

    def __enter__(self) -> "ProgressLogger":
        self._thread.start()
        return self

    def _run(self) -> None:
        import ray

        while not self._stop.wait(self.every_s):
            try:
                log.info("%s", ray.get(self.actor.line.remote(), timeout=5))
            except Exception as err:  # noqa: BLE001 - progress is best effort: the run goes on without it
                log.debug("no progress line: %s", err)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
