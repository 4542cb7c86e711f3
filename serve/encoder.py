"""Query encoding: the model loaded once per process, image and text encoding batched across requests.

`QueryEncoderCore` is plain (it runs inside the ingress when `encoder_placement: ingress`); `QueryEncoder` is the
same code as its own deployment (GPU replicas, scaling apart from the ingress). Both are built from one
`EncoderConfig` (serve/app.py's ServeArgs makes it); `EncoderClient` hides which one the ingress talks to.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

import numpy as np
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve.handle import DeploymentHandle

from retrieval.images import ImageRejected
from retrieval.model import load_model
from retrieval.prepare import prepare_pixels, query_segmenter
from retrieval.query_cache import CacheStats, QueryCache, photo_key, words_key
from retrieval.search import EncodedQuery
from serve.batching import ContinuousBatcher
from serve.limits import PixelBudget, pixel_count
from serve.metrics import service_metrics

SEGMENTATION_OFF = "garment isolation is not enabled on this service (query_segmenter: none)"


class EncoderConfig(BaseModel):
    """What a query encoder is built from: the model, and the limits on the query photos it decodes."""

    model_config = ConfigDict(frozen=True)

    model: str
    device: str
    precision: str
    threads: int | None  # torch threads (None: torch's own choice)
    segmenter: str
    max_pixels: int  # larger query photos are refused from their header
    decode_budget: int  # query pixels decoded at once (serve/limits.py)
    cache_size: int = 0  # encoded queries kept (retrieval/query_cache.py)


# A lone photo up to this size decodes on the event loop (a shop's photo, 1-2 Mpx, in a few ms); a phone's 12 Mpx
# photo or a segmented one takes far longer, and the loop would hold every request that arrives meanwhile.
INLINE_PIXELS = 4_000_000


class QueryEncoderCore:
    """Decodes per request (each with its own options), then batches only the model calls, which take no options."""

    def __init__(self, config: EncoderConfig, alone: Callable[[], bool] | None = None):
        """`alone()`: whether the request being encoded is the only one this process serves; then its model call
        runs on the event loop (serve/batching.py). The ingress counts its requests from their first byte; without
        it (an encoder deployment), every call is batched: calls arriving together are not in flight yet when the
        first one asks."""
        import torch

        if config.threads:
            torch.set_num_threads(config.threads)
        self.encoder = load_model(config.model, device=config.device, precision=config.precision)
        self.segmenter = query_segmenter(config.segmenter, threads=config.threads or 1)
        self.max_pixels, self.budget = config.max_pixels, PixelBudget(config.decode_budget)
        self.cache, self.metrics, self.alone = QueryCache(config.cache_size), service_metrics(), alone
        self.encoding = 0  # encode calls running here: a recommendation encodes its photos and words at once
        self.images = ContinuousBatcher(lambda batch: list(self.encoder.encode_images(np.stack(batch))), 16,
                                        functools.partial(self.metrics.batched, "image"), inline=alone)
        self.texts = ContinuousBatcher(lambda batch: list(self.encoder.encode_texts(batch)), 32,
                                       functools.partial(self.metrics.batched, "text"), inline=alone)
        self.metrics.queued("image", self.images.waiting)
        self.metrics.queued("text", self.texts.waiting)

    def model_spec(self) -> str:
        return self.encoder.spec

    async def encode(self, image: bytes | None, text: str | None, letterbox: bool = False,
                     segment: bool = False) -> tuple[EncodedQuery | None, tuple[str, str] | None]:
        """The query vectors, or why the image was rejected as (reason code, message): a value, so no traceback
        crosses processes."""
        if segment and self.segmenter is None:
            return None, ("segmentation_disabled", SEGMENTATION_OFF)
        self.encoding += 1
        try:
            image_vector, text_vector = await self._both(image, text, letterbox, segment)
        except ImageRejected as err:
            reason = "image_too_large" if err.reason == "decompression bomb" else "undecodable_image"
            return None, (reason, f"the image cannot be used: {err}")
        finally:
            self.encoding -= 1
        return EncodedQuery(photo_vector=image_vector, words_vector=text_vector), None

    async def _both(self, image: bytes | None, text: str | None, letterbox: bool,
                    segment: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The photo and the words; one of them alone is awaited as it is (gather's tasks cost a turn of the event
        loop each). Words the model must read are read while a worker thread decodes the photo."""
        if not (image and text):
            return (await self._photo(image, letterbox, segment) if image else None,
                    await self._words(text) if text else None)
        key, words = self._kept_words(text)
        if words is not None:
            return await self._photo(image, letterbox, segment), words
        return tuple(await asyncio.gather(self._photo(image, letterbox, segment, may_inline=False),
                                          self._encoded_words(key, text)))

    def _kept_words(self, text: str) -> tuple[str, np.ndarray | None]:
        """The words' cache key and their vector if cached (counted as one lookup)."""
        key = words_key(self.encoder, text)
        vector = self.cache.get(key)
        self.metrics.cached("text", vector is not None)
        return key, vector

    async def _words(self, text: str) -> np.ndarray:
        """A cached vector answers on the event loop, with no batch and no thread hop."""
        key, vector = self._kept_words(text)
        return vector if vector is not None else await self._encoded_words(key, text)

    async def _encoded_words(self, key: str, text: str) -> np.ndarray:
        return self.cache.put(key, await self.texts(text))

    async def _photo(self, data: bytes, letterbox: bool, segment: bool, may_inline: bool = True) -> np.ndarray:
        """The same photo again (a shopper refining the words under it) is not decoded nor encoded again."""
        key = photo_key(self.encoder, data, letterbox, segment)
        vector = self.cache.get(key)
        self.metrics.cached("image", vector is not None)
        if vector is not None:
            return vector
        return self.cache.put(key, await self._image(data, letterbox, segment, may_inline))

    def cache_stats(self) -> CacheStats:
        return self.cache.stats()

    async def _image(self, data: bytes, letterbox: bool, segment: bool, may_inline: bool) -> np.ndarray:
        """Decoding is per request (each has its own options), within the pixel budget: on the event loop for a
        lone photo of a shop's size, as its model call (the hop to a worker thread and back cost 0.5-0.8 ms of a
        ~10 ms new photo, docs/performance.md), else off it; the model call is batched."""
        size = pixel_count(data)
        prepare = functools.partial(prepare_pixels, data, self.encoder.preprocess_cfg.with_letterbox(letterbox),
                                    max_pixels=self.max_pixels, segmenter=self.segmenter if segment else None)
        inline = may_inline and not segment and size <= INLINE_PIXELS and await self._still_alone()
        # A photo too large holds no pixels: the decoder refuses it from its header, cheaply.
        pixels = await self.budget.run(size if size <= self.max_pixels else 0, prepare, inline=inline)
        return await self.images(pixels)

    async def _still_alone(self) -> bool:
        """Whether this is the only encoding of the only request, after one turn of the event loop: requests that
        arrived meanwhile start (and count themselves) first, or a request that never waits would always look
        alone."""
        if self.alone is None or not (self.alone() and self.encoding == 1):
            return False
        await asyncio.sleep(0)
        return self.alone() and self.encoding == 1


@serve.deployment(ray_actor_options={"num_cpus": 1.0}, max_ongoing_requests=64)
class QueryEncoder(QueryEncoderCore):
    """The encoder as its own deployment: replicas placed on GPUs and scaled apart from the ingress."""


class EncoderClient:
    """The ingress's view of the encoder: given its config, the core built in this process; else a handle to the
    QueryEncoder deployment."""

    def __init__(self, target: EncoderConfig | DeploymentHandle, alone: Callable[[], bool] | None = None):
        """`alone`: see QueryEncoderCore (a remote encoder batches every call)."""
        self.local = isinstance(target, EncoderConfig)
        self.target = QueryEncoderCore(target, alone) if self.local else target

    async def encode(self, image: bytes | None, text: str | None, letterbox: bool,
                     segment: bool) -> tuple[EncodedQuery | None, tuple[str, str] | None]:
        if self.local:
            return await self.target.encode(image, text, letterbox, segment)
        return await self.target.encode.remote(image, text, letterbox, segment)

    async def model_spec(self) -> str:
        return self.target.model_spec() if self.local else await self.target.model_spec.remote()

    async def cache_stats(self) -> CacheStats:
        return self.target.cache_stats() if self.local else await self.target.cache_stats.remote()
