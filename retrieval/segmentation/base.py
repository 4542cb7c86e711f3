"""Segmenter base: results, errors, box geometry, the Segmenter class and the no-op one."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from retrieval.images import WHITE

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 (x2, y2 exclusive), pixels


class SegmenterError(ValueError):
    """A segmenter that cannot be built (unknown name or option, missing or wrong weights); says how to fix it."""


@dataclass(frozen=True)
class SegmentResult:
    """The garment crop, its box in the input image's pixels, and whether it fell back to the full image (why)."""

    image: Image.Image
    box: Box
    fallback: bool = False
    reason: str = ""


def _span(profile: np.ndarray, trim: float) -> tuple[int, int]:
    """Smallest [lo, hi) holding all but `trim` of the profile's mass at each end (stray specks fall outside)."""
    cumulative = np.cumsum(profile) / profile.sum()
    lo = int(np.searchsorted(cumulative, trim, side="right"))
    hi = int(np.searchsorted(cumulative, 1.0 - trim, side="left")) + 1
    return lo, max(hi, lo + 1)


def mask_box(binary: np.ndarray, trim: float = 0.002) -> Box | None:
    """Bounding box of a boolean (H, W) mask, robust to a few stray pixels; None for an empty mask."""
    if not binary.any():
        return None
    x1, x2 = _span(binary.sum(axis=0, dtype=np.float64), trim)
    y1, y2 = _span(binary.sum(axis=1, dtype=np.float64), trim)
    return x1, y1, x2, y2


def expand_box(box: Box, margin: float, size: tuple[int, int]) -> Box:
    """The box grown by `margin` x its longer side on every side, clipped to the image."""
    x1, y1, x2, y2 = box
    pad = round(margin * max(x2 - x1, y2 - y1))
    return max(0, x1 - pad), max(0, y1 - pad), min(size[0], x2 + pad), min(size[1], y2 + pad)


def pad_square(image: Image.Image, fill: tuple[int, int, int] = WHITE) -> Image.Image:
    """Centre the image on a square canvas of the fill colour, so a centre-crop preprocess loses nothing."""
    side = max(image.size)
    if image.width == image.height:
        return image
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def plain_background(image: Image.Image, fill: tuple[int, int, int] = WHITE, tolerance: int = 16,
                     share: float = 0.5) -> bool:
    """Whether at least `share` of the 2-pixel border is the fill colour: a studio shot with nothing to remove.

    The offline catalog's photos have 72-100 % of their border white (1st-50th percentile); product photos
    composited onto real photographs 0-5 %.
    """
    pixels = np.asarray(image.convert("RGB"), np.int16)
    border = np.concatenate([pixels[:2].reshape(-1, 3), pixels[-2:].reshape(-1, 3),
                             pixels[:, :2].reshape(-1, 3), pixels[:, -2:].reshape(-1, 3)])
    return float((np.abs(border - np.array(fill)).max(axis=1) <= tolerance).mean()) >= share


def left_whole(image: Image.Image) -> SegmentResult:
    """A studio shot kept as it is on purpose (skip_plain): not a fallback."""
    return SegmentResult(image, (0, 0, image.width, image.height), fallback=False, reason="plain background")


def full_image(image: Image.Image, reason: str = "") -> SegmentResult:
    """The image untouched; a fallback when a reason is given."""
    return SegmentResult(image, (0, 0, image.width, image.height), fallback=bool(reason), reason=reason)


class Segmenter:
    """Turns images into garment crops; subclasses only say where the soft mask (H, W floats in [0, 1]) comes from.

    threshold: mask value counted as garment; margin: fraction of the box's longer side kept around it;
    fill: colour replacing the background (white, as the letterbox fill and the catalog's studio backdrop);
    square: pad the crop to a square with the fill colour (the model's centre crop then cuts nothing);
    min_area: a mask below this fraction of the image, or under min_side pixels wide, falls back to the full image;
    skip_plain: leave photos whose border is already the fill colour (studio shots) whole, without running the model
    (reason "plain background", not a fallback): cropping them would only change their framing.
    """

    name = "base"

    def __init__(self, *, threshold: float = 0.5, margin: float = 0.05, fill: tuple[int, int, int] = WHITE,
                 square: bool = True, min_area: float = 0.002, min_side: int = 4, skip_plain: bool = False):
        self.threshold, self.margin, self.fill, self.square = threshold, margin, tuple(fill), square
        self.min_area, self.min_side, self.skip_plain = min_area, min_side, skip_plain

    def masks(self, images: list[Image.Image], payloads: list[dict], scales: list[float]) -> list[np.ndarray | None]:
        """One soft mask per image at the image's size, or None where there is none."""
        raise NotImplementedError

    def segment(self, images: list[Image.Image], payloads: list[dict] | None = None,
                scales: list[float] | None = None) -> list[SegmentResult]:
        """Garment crops for a batch of RGB images; payloads carry annotations, scales are decoded/original px."""
        payloads = payloads if payloads is not None else [{} for _ in images]
        scales = scales if scales is not None else [1.0] * len(images)
        todo = [i for i, image in enumerate(images) if not (self.skip_plain and plain_background(image, self.fill))]
        masks = self.masks([images[i] for i in todo], [payloads[i] for i in todo], [scales[i] for i in todo])
        by_index = dict(zip(todo, masks))
        return [self.cutout(image, by_index[i]) if i in by_index else left_whole(image)
                for i, image in enumerate(images)]

    def __call__(self, images: list[Image.Image], payloads: list[dict] | None = None,
                 scales: list[float] | None = None) -> list[SegmentResult]:
        return self.segment(images, payloads, scales)

    def cutout(self, image: Image.Image, alpha: np.ndarray | None) -> SegmentResult:
        """Background to the fill colour, crop to the mask's box plus margin; the full image if the mask is unusable."""
        box, reason = self._usable_box(alpha)
        if box is None:
            return full_image(image, reason)
        matte = Image.fromarray(np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        keyed = Image.composite(image, Image.new("RGB", image.size, self.fill), matte)
        crop_box = expand_box(box, self.margin, image.size)
        crop = keyed.crop(crop_box)
        return SegmentResult(pad_square(crop, self.fill) if self.square else crop, crop_box)

    def _usable_box(self, alpha: np.ndarray | None) -> tuple[Box | None, str]:
        if alpha is None:
            return None, "no mask"
        binary = alpha >= self.threshold
        if binary.mean() < self.min_area:
            return None, "empty mask"
        box = mask_box(binary)
        if box is None or min(box[2] - box[0], box[3] - box[1]) < self.min_side:
            return None, "degenerate mask"
        return box, ""


class NoSegmenter(Segmenter):
    """Identity: every image is its own crop (and never counts as a fallback)."""

    name = "none"

    def __init__(self, **_ignored: Any):
        super().__init__()

    def segment(self, images, payloads=None, scales=None) -> list[SegmentResult]:
        return [full_image(image) for image in images]
