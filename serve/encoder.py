"""Query-encoder deployment: the model loaded once per replica, image and text encoding batched across requests."""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from retrieval.images import ImageRejected, load_and_preprocess
from retrieval.model import load_model
from retrieval.query import isolate_garment
from retrieval.search import EncodedQuery
from retrieval.service import query_segmenter


@serve.deployment(ray_actor_options={"num_cpus": 1.0}, max_ongoing_requests=64)
class QueryEncoder:
    """Decodes per request (each with its own options), then batches only the model calls, which take no options."""

    def __init__(self, model: str, device: str = "auto", precision: str = "fp32", max_pixels: int = 80_000_000,
                 threads: int | None = None, segmenter: str = "none"):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.encoder = load_model(model, device=device, precision=precision)
        self.segmenter = query_segmenter(segmenter, threads=threads or 1)
        self.max_pixels = max_pixels

    def model_spec(self) -> str:
        return self.encoder.spec

    async def encode(self, image: bytes | None, text: str | None, letterbox: bool = False,
                     segment: bool = False) -> tuple[EncodedQuery | None, str | None]:
        """The query vectors, or the reason the image was rejected (a value, so no traceback crosses processes)."""
        if segment and self.segmenter is None:
            return None, "garment isolation is not enabled on this service (query_segmenter: none)"
        image_task = self._image(image, letterbox, segment) if image else _none()
        text_task = self._texts(text) if text else _none()
        try:
            image_vector, text_vector = await asyncio.gather(image_task, text_task)
        except ImageRejected as err:
            return None, f"the image cannot be used: {err}"
        return EncodedQuery(image=image_vector, text=text_vector), None

    async def _image(self, data: bytes, letterbox: bool, segment: bool) -> np.ndarray:
        if segment:  # per request, before the batch: each request has its own option
            data = isolate_garment(data, self.segmenter, self.max_pixels)
        cfg = self.encoder.preprocess_cfg.letterboxed() if letterbox else self.encoder.preprocess_cfg
        return await self._pixels(load_and_preprocess(data, cfg, max_pixels=self.max_pixels))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _pixels(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        return list(self.encoder.encode_images(np.stack(batch)))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _texts(self, batch: list[str]) -> list[np.ndarray]:
        return list(self.encoder.encode_texts(batch))


async def _none() -> None:
    return None
