"""A budget of image pixels being decoded at once: a request holds its photo's pixel count while it decodes, and
waits while others hold the rest. Decoding costs memory in proportion to pixels (3 bytes each, twice over for
conversions), so this bounds a replica's decode memory however many large photos arrive together; small photos
pass at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from typing import AsyncIterator

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
    """`async with budget.hold(pixels):` waits until that many pixels (at most the whole budget) are free."""

    def __init__(self, pixels: int):
        self.total, self.free = pixels, pixels
        self._changed: asyncio.Condition | None = None
        self.waits = 0  # requests that had to wait, for tests and benchmarks

    @contextlib.asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        need = min(pixels, self.total)
        changed = self._condition()
        async with changed:
            if self.free < need:
                self.waits += 1
            await changed.wait_for(lambda: self.free >= need)
            self.free -= need
        try:
            yield
        finally:
            async with changed:
                self.free += need
                changed.notify_all()

    def _condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        if self._changed is None or getattr(self._changed, "_loop", loop) is not loop:
            self._changed = asyncio.Condition()
        return self._changed
