"""Query encoding: the same decoder, preprocessing and model as indexing, so queries and items share one space."""

from __future__ import annotations

from retrieval.images import load_and_preprocess
from retrieval.model import ClipEncoder
from retrieval.search import EncodedQuery, QueryError


def encode_query(encoder: ClipEncoder, image: bytes | None = None, text: str | None = None, *,
                 max_pixels: int = 80_000_000, letterbox: bool = False, segmenter=None) -> EncodedQuery:
    """Bytes and/or text to unit vectors; raises ImageRejected for an undecodable image.

    With a segmenter, the garment is cut out of the photo first (a street photo then looks like a catalog photo).
    """
    text = (text or "").strip() or None
    if not image and text is None:
        raise QueryError("a query needs an image, a text, or both")
    if image and segmenter is not None:
        image = isolate_garment(image, segmenter, max_pixels)
    cfg = encoder.preprocess_cfg.letterboxed() if letterbox else encoder.preprocess_cfg
    image_vector = encoder.encode_images(load_and_preprocess(image, cfg, max_pixels=max_pixels)[None])[0] if image else None
    text_vector = encoder.encode_texts([text])[0] if text else None
    return EncodedQuery(image=image_vector, text=text_vector)


def isolate_garment(image: bytes, segmenter, max_pixels: int) -> bytes:
    """The photo's garment crop as PNG bytes (decoded again by the usual path, so every check still applies)."""
    from retrieval.segmentation import segment_query

    return segment_query(image, segmenter, max_pixels=max_pixels)[0]
