"""Pipeline stages around segmentation (decode to RGB, segment, preprocess) and query-side isolation."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
from PIL import Image

from retrieval.images import ImageRejected, PreprocessConfig, decode_image, preprocess
from retrieval.indexing import column, timed
from retrieval.rows import Batch
from retrieval.segmentation.base import SegmentResult, Segmenter
from retrieval.segmentation.factory import make_segmenter


def rgb_to_bytes(image: Image.Image) -> tuple[bytes, tuple[int, int]]:
    return image.tobytes(), image.size


def rgb_from_bytes(data: bytes, size: Sequence[int]) -> Image.Image:
    return Image.frombytes("RGB", (int(size[0]), int(size[1])), data)


def png_bytes(image: Image.Image) -> bytes:
    """Lossless bytes of an image, for code that takes encoded image bytes (the query path)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode_for_segmentation(data: bytes, *, max_pixels: int, min_side: int = 512,
                            max_side: int = 1024) -> tuple[Image.Image, float]:
    """Bytes to an upright RGB image of moderate size and its scale (decoded px per original px)."""
    image = decode_image(data, max_pixels=max_pixels, draft_size=min_side)  # rejects bad bytes with a reason
    with Image.open(io.BytesIO(data)) as header:
        original_long = max(header.size)  # before the JPEG draft; the longer side does not care about EXIF turns
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image, max(image.size) / max(original_long, 1)


class DecodeRGB:
    """CPU-task stage: `data` -> `rgb` (raw RGB bytes), `rgb_size` ([w, h]) and `rgb_scale`; rejects go to `error`."""

    def __init__(self, max_pixels: int, min_side: int = 512, max_side: int = 1024):
        self.max_pixels, self.min_side, self.max_side = max_pixels, min_side, max_side

    @timed("decode")
    def __call__(self, batch: Batch) -> Batch:
        decoded = [self._decode(data, error) for data, error in zip(batch["data"], batch["error"])]
        raw = [rgb_to_bytes(image) if image is not None else (b"", (0, 0)) for image, _, _ in decoded]
        out = {k: v for k, v in batch.items() if k != "data"}
        return {**out, "rgb": column([data for data, _ in raw]),
                "rgb_size": np.array([size for _, size in raw], np.int64).reshape(-1, 2),
                "rgb_scale": np.array([scale for _, scale, _ in decoded], np.float64),
                "error": column([error for _, _, error in decoded])}

    def _decode(self, data: bytes, error: str) -> tuple[Image.Image | None, float, str]:
        if error:
            return None, 0.0, error
        try:
            image, scale = decode_for_segmentation(data, max_pixels=self.max_pixels, min_side=self.min_side,
                                                   max_side=self.max_side)
            return image, scale, ""
        except ImageRejected as err:
            return None, 0.0, err.reason


class SegmentImages:
    """Actor-pool stage (model loaded once per actor): `rgb` -> the garment crop.

    `name` is a segmenter name and its options (what Ray ships to each actor), or a built Segmenter (in-process).
    Adds `crop_box` ([x1, y1, x2, y2] in original pixels) to each row's `payload` JSON and a `seg_fallback`
    column (the reason, "" when the mask was used). With `preprocess_cfg`, it also preprocesses: the crop leaves as
    `pixels` (the model's uint8 input, as DecodeImages makes it) and `rgb` is dropped.
    """

    def __init__(self, name: str | Segmenter, preprocess_cfg: PreprocessConfig | None = None, **options: Any):
        self.segmenter = name if isinstance(name, Segmenter) else make_segmenter(name, **options)
        self.preprocess_cfg = preprocess_cfg

    @timed("segment")
    def __call__(self, batch: Batch) -> Batch:
        ok = [i for i, error in enumerate(batch["error"]) if not error]
        images = [rgb_from_bytes(batch["rgb"][i], batch["rgb_size"][i]) for i in ok]
        payloads = [json.loads(batch["payload"][i]) for i in ok]
        scales = [float(batch["rgb_scale"][i]) or 1.0 for i in ok]
        results = self.segmenter.segment(images, payloads, scales) if ok else []
        return self._columns(batch, ok, results, payloads, scales)

    def _columns(self, batch: Batch, ok: list[int], results: list[SegmentResult], payloads: list[dict],
                 scales: list[float]) -> Batch:
        n = len(batch["error"])
        payload, fallback = list(batch["payload"]), [""] * n
        rgb, sizes = list(batch["rgb"]), np.array(batch["rgb_size"], np.int64).reshape(-1, 2)
        for i, result, item, scale in zip(ok, results, payloads, scales):
            payload[i] = json.dumps({**item, "crop_box": [round(v / scale) for v in result.box]})
            fallback[i] = result.reason
            rgb[i], sizes[i] = rgb_to_bytes(result.image)
        out = {**batch, "payload": column(payload), "seg_fallback": column(fallback), "rgb": column(rgb),
               "rgb_size": sizes}
        return out if self.preprocess_cfg is None else PreprocessRGB(self.preprocess_cfg)(out)


class PreprocessRGB:
    """CPU-task stage: `rgb` -> `pixels`, the model's uint8 input as raw bytes (empty for rejected rows)."""

    def __init__(self, cfg: PreprocessConfig):
        self.cfg = cfg

    def __call__(self, batch: Batch) -> Batch:
        pixels = [preprocess(rgb_from_bytes(raw, size), self.cfg).tobytes() if raw else b""
                  for raw, size in zip(batch["rgb"], batch["rgb_size"])]
        rest = {k: v for k, v in batch.items() if k not in ("rgb", "rgb_size", "rgb_scale")}
        return {**rest, "pixels": column(pixels)}


def segment_query(data: bytes, segmenter: Segmenter, *, max_pixels: int = 80_000_000) -> tuple[bytes, SegmentResult]:
    """Query path: photo bytes -> the garment crop as PNG bytes (feed them to encode_query) and the result."""
    image, scale = decode_for_segmentation(data, max_pixels=max_pixels)
    result = segmenter.segment([image])[0]
    box = tuple(round(v / (scale or 1.0)) for v in result.box)  # in the photo's own pixels
    return png_bytes(result.image), replace(result, box=box)
