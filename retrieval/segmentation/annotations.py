"""Segmentation from a catalog's own annotations: DeepFashion-MM parsing masks, In-shop boxes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

from retrieval.segmentation.base import Segmenter, SegmenterError

log = logging.getLogger(__name__)

# DeepFashion-MultiModal human parsing classes (its README); 0 is background.
PARSING_CLASSES = ("background", "top", "outer", "skirt", "dress", "pants", "leggings", "headwear", "eyeglass",
                   "neckwear", "belt", "footwear", "bag", "hair", "face", "skin", "ring", "wrist wearing", "socks",
                   "gloves", "necklace", "rompers", "earrings", "tie")
GARMENT_LABELS = (1, 2, 3, 4, 5, 6, 21)  # top, outer, skirt, dress, pants, leggings, rompers


class AnnotationSegmenter(Segmenter):
    """Masks and boxes shipped with the dataset, read from each item's payload.

    `segm`: a DeepFashion-MultiModal human-parsing PNG, relative to the catalog `root` (label 0 = background);
    `labels` keeps "person" (every non-zero label), "garments" (GARMENT_LABELS) or the given label ids.
    `bbox`: an In-shop box [x1, y1, x2, y2] in original pixels (scaled by the image's decode scale).
    Items with neither fall back to the full image.
    """

    name = "annotations"

    def __init__(self, root: str | Path | None = None, *, labels: str | Iterable[int] = "person", **common: Any):
        super().__init__(**common)
        self.root = Path(root) if root is not None else Path(".")
        self.labels = _label_set(labels)

    def masks(self, images, payloads, scales) -> list[np.ndarray | None]:
        return [self._mask(image, payload, scale) for image, payload, scale in zip(images, payloads, scales)]

    def _mask(self, image: Image.Image, payload: dict, scale: float) -> np.ndarray | None:
        if payload.get("segm"):
            return self._parsing_mask(self.root / payload["segm"], image.size)
        if payload.get("bbox"):
            return box_mask(payload["bbox"], image.size, scale)
        return None

    def _parsing_mask(self, path: Path, size: tuple[int, int]) -> np.ndarray | None:
        try:
            with Image.open(path) as segm:
                labels = segm if segm.mode in ("P", "L") else segm.convert("L")
                labels = labels.resize(size, Image.Resampling.NEAREST) if labels.size != size else labels
                labels = np.asarray(labels)
        except (OSError, ValueError) as err:
            log.warning("unreadable parsing mask %s: %s", path, err)
            return None
        keep = labels != 0 if self.labels is None else np.isin(labels, self.labels)
        return keep.astype(np.float32)


def _label_set(labels: str | Iterable[int]) -> tuple[int, ...] | None:
    if labels == "person":
        return None
    if labels == "garments":
        return GARMENT_LABELS
    if isinstance(labels, str):
        raise SegmenterError(f"labels must be 'person', 'garments' or label ids, not {labels!r}")
    return tuple(int(label) for label in labels)


def box_mask(bbox: Sequence[float], size: tuple[int, int], scale: float = 1.0) -> np.ndarray:
    """A (H, W) mask of ones inside [x1, y1, x2, y2] (given in original pixels, `scale` = decoded/original)."""
    x1, y1, x2, y2 = (int(round(v * scale)) for v in bbox)
    mask = np.zeros((size[1], size[0]), np.float32)
    mask[max(0, y1):max(0, y2), max(0, x1):max(0, x2)] = 1.0
    return mask
