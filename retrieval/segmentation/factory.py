"""Build a segmenter by name with clear errors listing the valid names and options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retrieval.segmentation.annotations import AnnotationSegmenter
from retrieval.segmentation.base import NoSegmenter, SEGMENTER_NAMES, Segmenter, SegmenterError
from retrieval.segmentation.maskrcnn import MaskRCNNSegmenter
from retrieval.segmentation.u2netp import U2NetP


_CLASSES = {"none": NoSegmenter, "u2netp": U2NetP, "annotations": AnnotationSegmenter,
            "maskrcnn": MaskRCNNSegmenter}


def make_segmenter(name: str, **options: Any) -> Segmenter:
    """The segmenter called `name` (none, u2netp, annotations, maskrcnn) built with its options."""
    cls = _CLASSES.get(str(name).strip().lower())
    if cls is None:
        raise SegmenterError(f"unknown segmenter {name!r}; valid names: {', '.join(SEGMENTER_NAMES)}")
    try:
        return cls(**options)
    except TypeError as err:  # an unknown option: name the segmenter, not a constructor
        raise SegmenterError(f"segmenter {name!r}: {err}") from err


def segmenter_options(name: str, *, threads: int = 1, catalog_root: str | Path | None = None, device: str = "cpu",
                      weights: str | None = None) -> dict[str, Any]:
    """From a job's flags, the options the named segmenter takes (each takes only its own)."""
    name = str(name).strip().lower()
    if name == "u2netp":
        return {"threads": threads}
    if name == "annotations":
        return {"root": str(catalog_root)} if catalog_root is not None else {}
    if name == "maskrcnn":
        return {"threads": threads, "device": device, "weights": weights}
    return {}
