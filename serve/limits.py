"""A budget of image pixels being decoded at once: a request holds its photo's pixel count while it decodes, and
waits (first come, first served) while others hold the rest. Decoding costs memory in proportion to pixels (3 bytes
each, twice over for conversions), so this bounds a replica's decode memory however many large photos arrive
together; small photos pass at once.

The pixels are given back when the decode itself ends, not when the request does: a client that hangs up cancels
its request, but not the worker thread already decoding its photo.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import io
from typing import Any, Callable

from PIL import Image


def pixel_count(data: bytes) -> int:
    """Width x height from the image header (nothing is decoded); 0 when the bytes are no image the decoder would
    reject anyway."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - not an image, or a broken header: the decoder says why, cheaply
        return 0
    return width * height


class PixelBudget:
    """`await budget.run(pixels, fn, *args)`: fn(*args) in a worker thread (or inline) once that many pixels (at
    most the whole budget) are free. One event loop uses it (the replica's)."""

    def __init__(self, pixels: int):
        self.total, self.free = pixels, pixels
        self._waiting: collections.deque[tuple[int, asyncio.Future]] = collections.deque()
        self.waits = 0  # requests that had to wait, for tests and benchmarks

    async def run(self, pixels: int, fn: Callable[..., Any], *args: Any, inline: bool = False) -> Any:
        """`inline`: fn runs on the caller's thread (a lone request: nothing else for the event loop to do, and the
        hop to a worker thread and back costs more than it saves), unless it had to wait for its pixels: others
        decode meanwhile, and requests may have arrived."""
        need = min(pixels, self.total)
        waited = await self._acquire(need)
        if inline and not waited:
            try:
                return fn(*args)
            finally:
                self._release(need)
        work = asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))
        work.add_done_callback(lambda _: self._release(need))
        return await asyncio.shield(work)  # a cancelled request leaves the decode (and its pixels) to finish

    async def _acquire(self, need: int) -> bool:
        """Hold `need` pixels; whether it had to wait for them."""
        if not self._waiting and self.free >= need:
            self.free -= need
            return False
        self.waits += 1
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append((need, turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # granted just as the request was cancelled: give it back
                self._release(need)
            else:
                self._waiting.remove((need, turn))
            raise
        return True

    def _release(self, need: int) -> None:
        self.free += need
        while self._waiting and self.free >= self._waiting[0][0]:
            wanted, turn = self._waiting.popleft()
            if not turn.done():
                self.free -= wanted
                turn.set_result(None)
