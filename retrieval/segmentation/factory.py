"""The segmenters as one table (name, class, the options each takes from a job's flags and on a shopper's photo),
and building one by name with clear errors listing the valid names and options."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.segmentation.annotations import AnnotationSegmenter
from retrieval.segmentation.base import NoSegmenter, Segmenter, SegmenterError
from retrieval.segmentation.maskrcnn import MaskRCNNSegmenter
from retrieval.segmentation.u2netp import U2NetP


@dataclass(frozen=True)
class SegmenterKind:
    """A segmenter: its class (which loads no model until built), the options it takes from a job's flags
    (threads, catalog_root, device, weights), and those it takes on a shopper's photo (None: it cannot run on one,
    needing the catalog's annotations or a GPU model)."""

    name: str
    cls: type[Segmenter]
    job_options: Callable[..., dict[str, Any]]
    query_options: Callable[[int], dict[str, Any]] | None = None


def _annotation_options(catalog_root: str | Path | None, **_: Any) -> dict[str, Any]:
    """The catalog's folder, whose parsing masks it reads: a local one (masks are not read from an object store)."""
    from retrieval.files import is_uri

    if catalog_root is not None and is_uri(catalog_root):
        raise SegmenterError(f"annotations segmentation reads the catalog's masks from a local folder, not "
                             f"{catalog_root}")
    return {"root": str(catalog_root)} if catalog_root is not None else {}


def _maskrcnn_options(threads: int, device: str, weights: str | None, **_: Any) -> dict[str, Any]:
    return {"threads": threads, "device": device, "weights": weights}


# skip_plain on queries: a white-background photo is already a clean garment, and cropping it would change its
# framing against the indexed items (-44 points of Recall@1 measured).
SEGMENTERS: dict[str, SegmenterKind] = {s.name: s for s in (
    SegmenterKind("none", NoSegmenter, lambda **_: {}, query_options=lambda threads: {}),
    SegmenterKind("u2netp", U2NetP, lambda threads, **_: {"threads": threads},
                  query_options=lambda threads: {"threads": threads, "skip_plain": True}),
    SegmenterKind("annotations", AnnotationSegmenter, _annotation_options),
    SegmenterKind("maskrcnn", MaskRCNNSegmenter, _maskrcnn_options),
)}
SEGMENTER_NAMES = tuple(SEGMENTERS)
QUERY_SEGMENTER_NAMES = tuple(name for name, kind in SEGMENTERS.items() if kind.query_options is not None)


def kind_of(name: str) -> SegmenterKind:
    kind = SEGMENTERS.get(str(name).strip().lower())
    if kind is None:
        raise SegmenterError(f"unknown segmenter {name!r}; valid names: {', '.join(SEGMENTER_NAMES)}")
    return kind


def make_segmenter(name: str, **options: Any) -> Segmenter:
    """The segmenter called `name` (one of SEGMENTERS) built with its options."""
    kind = kind_of(name)
    try:
        return kind.cls(**options)
    except TypeError as err:  # an unknown option: name the segmenter, not a constructor
        raise SegmenterError(f"segmenter {name!r}: {err}") from err


def segmenter_options(name: str, *, threads: int = 1, catalog_root: str | Path | None = None, device: str = "cpu",
                      weights: str | None = None) -> dict[str, Any]:
    """From a job's flags, the options the named segmenter takes (each takes only its own)."""
    return kind_of(name).job_options(threads=threads, catalog_root=catalog_root, device=device, weights=weights)


def query_options(name: str, threads: int) -> dict[str, Any]:
    """The options the named segmenter takes on a shopper's photo; an error for one that cannot run on it."""
    kind = kind_of(name)
    if kind.query_options is None:
        raise SegmenterError(f"segmenter {name!r} does not run on a shopper's photo; valid: "
                             f"{', '.join(QUERY_SEGMENTER_NAMES)}")
    return kind.query_options(threads)
