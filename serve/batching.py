"""Continuous batching for the query encoder: a batch is formed when the model is free, from every waiting request.

Why not `@serve.batch`: in Ray 2.60 its loop seals a batch as soon as its wait ends, even while the previous batch
still runs, so with a short wait batches stay at one request under load, and a long wait taxes every lone request.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Callable


class ContinuousBatcher:
    """`await batcher(item)`: items that arrive while `fn` runs (in a worker thread) form its next call."""

    def __init__(self, fn: Callable[[list], list], max_batch_size: int,
                 on_batch: Callable[[int, int], None] | None = None):
        """`on_batch(size, still_waiting)` is told of each model call (metrics)."""
        self.fn, self.max_batch_size, self.on_batch = fn, max_batch_size, on_batch
        self.batch_sizes: Counter = Counter()  # how full the batches were, for benchmarks and tests
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    async def __call__(self, item: Any) -> Any:
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not asyncio.get_running_loop():
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(self._queue))
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _run(self, queue: asyncio.Queue) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            batch = [(item, future) for item, future in batch if not future.done()]  # callers that gave up
            if batch:
                await self._call(batch, queue.qsize())

    async def _call(self, batch: list[tuple[Any, asyncio.Future]], waiting: int) -> None:
        self.batch_sizes[len(batch)] += 1
        if self.on_batch is not None:
            self.on_batch(len(batch), waiting)
        try:
            # A worker thread: torch releases the GIL, so the event loop keeps taking requests meanwhile.
            results = await asyncio.to_thread(self.fn, [item for item, _ in batch])
        except Exception as err:  # noqa: BLE001 - one model call failed: every caller in it hears why
            results = [err] * len(batch)
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_exception(result) if isinstance(result, Exception) else future.set_result(result)
