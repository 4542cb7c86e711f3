"""Query preparation, one path for the service, the CLI and the evaluation: bytes -> upright RGB -> optional garment
isolation -> the model's preprocessing with the collection's letterbox flag -> unit vectors; and the words' BM25
vector in the collection's language.

`prepare_pixels` is the per-request part (decoding, cropping); the model call on its output is batched by callers
that serve many queries (serve/encoder.py, the evaluation) and made directly by `encode_query`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from retrieval import lexical
from retrieval.images import PreprocessConfig, load_and_preprocess
from retrieval.model import ClipEncoder
from retrieval.query_cache import QueryCache, cached, photo_key, words_key
from retrieval.search import EncodedQuery, QueryError
from retrieval.understanding import CatalogWords


def checked_query(image: bytes | None, text: str | None, item: bool = False) -> tuple[bytes | None, str | None]:
    """The query's photo and words as typed, stripped; a query with neither (nor a catalog item to start from) is
    refused here and nowhere else."""
    phrase = (text or "").strip() or None
    if not image and phrase is None and not item:
        raise QueryError("a query needs an image, a text, or both")
    return image or None, phrase


def with_words(query: EncodedQuery, phrase: str | None, language: str,
               catalog: CatalogWords | None = None) -> EncodedQuery:
    """The query with the words as typed, their BM25 vector (in the collection's language) and, given the
    catalog's words, what they name in it (the BM25 vector is then of the words as searched: typed, corrected and
    with their synonyms)."""
    if not phrase:
        return query
    understood = catalog.understand(phrase) if catalog is not None else None
    searched = understood.searched if understood is not None else phrase
    return replace(query, words_bm25=lexical.query_vector(searched, language), phrase=phrase, understood=understood)


def prepare_pixels(data: bytes, cfg: PreprocessConfig, *, max_pixels: int, segmenter=None) -> np.ndarray:
    """Photo bytes to the model's uint8 input; with a segmenter, the garment is cut out first (a street photo then
    looks like a catalog photo). Raises ImageRejected for bytes that are not a usable image."""
    if segmenter is not None:
        from retrieval.segmentation import segment_query

        data = segment_query(data, segmenter, max_pixels=max_pixels)[0]  # PNG bytes, decoded again below
    return load_and_preprocess(data, cfg, max_pixels=max_pixels)


def encode_query(encoder: ClipEncoder, image: bytes | None = None, text: str | None = None, *, letterbox: bool = False,
                 max_pixels: int = 80_000_000, segmenter=None, cache: QueryCache | None = None) -> EncodedQuery:
    """Bytes and/or words to unit vectors, unbatched (the CLI's path; the service batches the model calls), through
    `cache` when given; nothing given, nothing encoded (whether a query may be empty is `checked_query`'s to say)."""
    phrase = (text or "").strip() or None
    cfg = encoder.preprocess_cfg.with_letterbox(letterbox)

    def photo() -> np.ndarray:
        return encoder.encode_images(prepare_pixels(image, cfg, max_pixels=max_pixels, segmenter=segmenter)[None])[0]

    return EncodedQuery(
        photo_vector=cached(cache, lambda: photo_key(encoder, image, letterbox, segmenter is not None), photo)
        if image else None,
        words_vector=cached(cache, lambda: words_key(encoder, phrase), lambda: encoder.encode_texts([phrase])[0])
        if phrase else None)


def query_segmenter(name: str, threads: int = 2):
    """The query-side segmenter, or None (with the options retrieval/segmentation/factory.py gives it there)."""
    if name == "none":
        return None
    from retrieval.segmentation import make_segmenter, query_options

    return make_segmenter(name, **query_options(name, threads))
