"""Continuous batching for the query encoder: a batch is formed when the model is free, from every waiting request.

Why not `@serve.batch`: in Ray 2.60 its loop seals a batch as soon as its wait ends, even while the previous batch
still runs, so with a short wait batches stay at one request under load, and a long wait taxes every lone request.
A lone request on an idle replica skips the queue and the worker thread (`inline`): there is nothing to batch it
with, and nothing for the event loop to do meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Callable


class ContinuousBatcher:
    """`await batcher(item)`: items that arrive while `fn` runs (in a worker thread) form its next call."""

    def __init__(self, fn: Callable[[list], list], max_batch_size: int,
                 on_batch: Callable[[int, int], None] | None = None, inline: Callable[[], bool] | None = None):
        """`on_batch(size, still_waiting)` is told of each model call (metrics); when `inline()` says the caller is
        alone and no batch is running, its call runs on the caller's thread (blocking its event loop meanwhile)."""
        self.fn, self.max_batch_size, self.on_batch, self.inline = fn, max_batch_size, on_batch, inline
        self.batch_sizes: Counter = Counter()  # how full the batches were, for benchmarks and tests
        self.inline_calls = 0
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._running = False  # a batch is in the worker thread

    async def __call__(self, item: Any) -> Any:
        if self._may_inline():
            await asyncio.sleep(0)  # requests that arrived meanwhile start (and count themselves) first
            if self._may_inline():
                return self._call_inline(item)
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not asyncio.get_running_loop():
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(self._queue))
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    def waiting(self) -> int:
        """Calls queued for the next model call (the metrics' queue length)."""
        return self._queue.qsize() if self._queue is not None else 0

    async def _run(self, queue: asyncio.Queue) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            batch = [(item, future) for item, future in batch if not future.done()]  # callers that gave up
            if batch:
                await self._call(batch, queue.qsize())

    def _may_inline(self) -> bool:
        """No batch running or waiting, and the caller alone (asked last: the cheap checks first)."""
        idle = not self._running and (self._queue is None or self._queue.empty())
        return self.inline is not None and idle and self.inline()

    def _call_inline(self, item: Any) -> Any:
        self.inline_calls += 1
        self._counted(1, 0)
        return self.fn([item])[0]

    def _counted(self, size: int, waiting: int) -> None:
        self.batch_sizes[size] += 1
        if self.on_batch is not None:
            self.on_batch(size, waiting)

    async def _call(self, batch: list[tuple[Any, asyncio.Future]], waiting: int) -> None:
        self._counted(len(batch), waiting)
        self._running = True
        try:
            # A worker thread: torch releases the GIL, so the event loop keeps taking requests meanwhile.
            results = await asyncio.to_thread(self.fn, [item for item, _ in batch])
        except Exception as err:  # noqa: BLE001 - one model call failed: every caller in it hears why
            results = [err] * len(batch)
        finally:
            self._running = False
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_exception(result) if isinstance(result, Exception) else future.set_result(result)
