"""Ray Data Datasink writing encoded rows to the store: validated on the driver, client made lazily on the worker."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Iterable

import ray
from ray.data import Datasink
from ray.data.block import BlockAccessor
from ray.data.datasource.datasink import WriteResult

from retrieval.rows import row_point
from retrieval.store.base import Point, StoreError
from retrieval.store.factory import open_store
from schemas.jobs import StoreConfig

log = logging.getLogger(__name__)
EXAMPLES_PER_REASON = 5


class WriteTally:
    """What the sink saw: points written, rows skipped by reason, a few examples of each reason."""

    def __init__(self):
        self.written, self.skipped, self.examples = 0, Counter(), {}
        self.stage_seconds: Counter = Counter()  # compute seconds per pipeline stage, summed over workers
        self.first_write, self.last_write, self.first_rows = None, None, 0  # epoch seconds, for steady-state rates

    def wrote(self, rows: int) -> None:
        now = time.time()
        if self.first_write is None:
            self.first_write, self.first_rows = now, rows
        self.last_write, self.written = now, self.written + rows

    def steady_rate(self) -> float | None:
        """Points/s from the first write to the last, start-up (workers, model loading) excluded."""
        if self.first_write is None or self.last_write <= self.first_write:
            return None
        return (self.written - self.first_rows) / (self.last_write - self.first_write)

    def skip(self, item_id: str, reason: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < EXAMPLES_PER_REASON:
            self.examples[reason].append(item_id)

    def merge(self, other: dict[str, Any]) -> None:
        self.written += other["written"]
        if other["first_write"] is not None and (self.first_write is None or other["first_write"] < self.first_write):
            self.first_write, self.first_rows = other["first_write"], other["first_rows"]
        if other["last_write"] is not None:
            self.last_write = max(self.last_write or 0.0, other["last_write"])
        self.skipped.update(other["skipped"])
        self.stage_seconds.update(other["stage_seconds"])
        for reason, ids in other["examples"].items():
            self.examples.setdefault(reason, [])
            self.examples[reason].extend(ids[: EXAMPLES_PER_REASON - len(self.examples[reason])])

    def as_dict(self) -> dict[str, Any]:
        return {"written": self.written, "skipped": dict(self.skipped), "examples": self.examples,
                "stage_seconds": dict(self.stage_seconds),
                "first_write": self.first_write, "last_write": self.last_write, "first_rows": self.first_rows}


def rows_to_points(rows: Iterable[dict[str, Any]], tally: WriteTally) -> list[Point]:
    """Accepted rows become Points (retrieval.rows.row_point); rejected rows are only counted (no vector is ever
    made up for them); every row's stage seconds are added up."""
    points = []
    for row in rows:
        tally.stage_seconds.update({key[2:]: float(value) for key, value in row.items() if key.startswith("t_")})
        if row["error"]:
            tally.skip(row["id"], row["error"])
            continue
        points.append(row_point(row))
    return points


class EmbeddedWriter:
    """Holds the embedded store open for a whole run: opening a shard costs more as it grows (0.1 s at 10k
    points, 0.8 s at 100k), so reopening it for every block made the write cost grow with the square of the size."""

    def __init__(self, store: StoreConfig, collection: str):
        self.store, self.collection = open_store(store), collection

    def upsert(self, points: list[Point]) -> None:
        self.store.upsert(self.collection, points)

    def close(self) -> None:
        self.store.close()


class QdrantDatasink(Datasink[dict]):
    """Writes blocks of encoded rows to one collection in batches; the store's client retries transient errors.

    A server store gets a client per write task, kept for the next; the embedded store (one process, a folder
    lock) is written by one EmbeddedWriter actor that the driver starts and stops around the run.
    """

    def __init__(self, store: StoreConfig, collection: str, batch_size: int = 256):
        self.store_config, self.collection, self.batch_size = store, collection, batch_size
        self.progress = None  # an IndexProgress actor the driver attaches once Ray runs: each block is reported to it
        self.tally = WriteTally()
        self._store = None
        self._writer = None

    def __getstate__(self) -> dict:
        # Clients hold sockets, threads and file locks: never ship one to a worker (the writer's handle is fine).
        return {**self.__dict__, "_store": None}

    @property
    def supports_distributed_writes(self) -> bool:
        # The embedded store is a folder on this node with one writer at a time; a server takes writes from anywhere.
        return not self.store_config.embedded

    def on_write_start(self, schema=None) -> None:
        with open_store(self.store_config) as store:
            if store.collection_spec(self.collection) is None:
                raise StoreError(f"collection {self.collection!r} does not exist; create it before writing")
        if self.store_config.embedded:
            writer = ray.remote(EmbeddedWriter).options(num_cpus=0, max_restarts=0)
            self._writer = writer.remote(self.store_config, self.collection)

    def write(self, blocks: Iterable, ctx) -> dict:
        tally = WriteTally()
        for block in blocks:
            self._write_block(BlockAccessor.for_block(block), tally)
        return tally.as_dict()

    def _write_block(self, block: BlockAccessor, tally: WriteTally) -> None:
        block_tally = WriteTally()
        points = rows_to_points(block.iter_rows(public_row_format=False), block_tally)
        started = time.perf_counter()
        for start in range(0, len(points), self.batch_size):
            self._upsert(points[start:start + self.batch_size])
        block_tally.stage_seconds["write"] += time.perf_counter() - started
        block_tally.wrote(len(points))
        tally.merge(block_tally.as_dict())
        if self.progress is not None:
            self.progress.report.remote(len(points), dict(block_tally.skipped))

    def _upsert(self, points: list[Point]) -> None:
        if self._writer is not None:
            ray.get(self._writer.upsert.remote(points))
            return
        self._store = self._store or open_store(self.store_config)
        self._store.upsert(self.collection, points)

    def on_write_complete(self, write_result: WriteResult[dict]) -> None:
        self._stop_writer()
        for result in write_result.write_returns:
            self.tally.merge(result)

    def on_write_failed(self, error: Exception) -> None:
        self._stop_writer()

    def _stop_writer(self) -> None:
        """Release the folder lock before the driver reopens the store (counting, alias switch)."""
        if self._writer is not None:
            try:
                ray.get(self._writer.close.remote())
            finally:
                ray.kill(self._writer)
                self._writer = None
