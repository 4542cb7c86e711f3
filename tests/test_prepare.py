"""Query preparation, the one path from a shopper's bytes and words to vectors: empty queries refused in one place,
the collection's letterbox flag applied, and the same vectors whichever caller batches the model call."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from retrieval.images import ImageRejected
from retrieval.prepare import checked_query, encode_query, prepare_pixels, query_segmenter
from retrieval.search import QueryError


def test_an_empty_query_is_refused_and_words_are_stripped():
    assert checked_query(None, "  red dress ") == (None, "red dress")
    assert checked_query(b"jpeg", "   ") == (b"jpeg", None)
    for image, text in ((None, None), (b"", "  "), (None, "")):
        with pytest.raises(QueryError, match="needs an image, a text, or both"):
            checked_query(image, text)


def test_letterbox_is_chosen_in_one_place(encoder):
    cfg = encoder.preprocess_cfg
    assert cfg.with_letterbox(False) is cfg
    assert cfg.with_letterbox(True).resize_mode == "longest" and cfg.with_letterbox(True).image_size == cfg.image_size


def test_nothing_given_is_nothing_encoded(encoder):
    """A search by a catalog item alone encodes nothing: its stored vectors stand for the photo and the words."""
    for empty in ({}, {"text": "   "}, {"image": b"", "text": None}):
        query = encode_query(encoder, **empty)
        assert query.photo_vector is None and query.words_vector is None and not query.words_bm25


def test_query_vectors_equal_the_batched_path(encoder, offline_catalog):
    photo = (offline_catalog / "images" / "10003.jpg").read_bytes()
    for letterbox in (False, True):
        single = encode_query(encoder, photo, " red tshirt ", letterbox=letterbox)
        pixels = prepare_pixels(photo, encoder.preprocess_cfg.with_letterbox(letterbox), max_pixels=80_000_000)
        batched = encoder.encode_images(np.stack([pixels, pixels]))[0]
        assert np.allclose(single.photo_vector, batched, atol=1e-5)
        assert np.allclose(single.words_vector, encoder.encode_texts(["red tshirt"])[0], atol=1e-5)
    tall = tall_photo(photo)
    cropped = encode_query(encoder, tall, letterbox=False).photo_vector
    padded = encode_query(encoder, tall, letterbox=True).photo_vector
    assert float(cropped @ padded) < 0.999  # the flag reaches the pixels


def tall_photo(photo: bytes) -> bytes:
    """The photo stretched to 1:2 (the offline catalog's are square, where crop and letterbox agree)."""
    image = Image.open(io.BytesIO(photo)).convert("RGB")
    out = io.BytesIO()
    image.resize((image.width, image.height * 2)).save(out, "JPEG")
    return out.getvalue()


def test_bad_bytes_are_rejected_with_a_reason(encoder):
    with pytest.raises(ImageRejected, match="not an image"):
        encode_query(encoder, b"definitely not a photo", None)


def test_query_segmenter_by_name():
    assert query_segmenter("none") is None
    assert type(query_segmenter("u2netp", threads=1)).__name__ == "U2NetP"
