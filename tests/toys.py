"""A toy store with exact kNN over a few named vectors, and unit vectors to fill it: strategies checked by hand."""

from __future__ import annotations

import numpy as np

from retrieval.search import EncodedQuery
from retrieval.store.base import Hit
from schemas.collection import IMAGE_VECTOR


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


class ToyStore:
    """Exact kNN over a few named vectors (no filters)."""

    def __init__(self, vectors: dict[str, np.ndarray]):
        self.vectors = vectors

    def search(self, collection, vector_name, vector, limit, query_filter=None, with_vectors=False):
        scored = sorted(((float(v @ vector), i) for i, v in self.vectors.items()), key=lambda s: -s[0])[:limit]
        return [Hit(i, s, {}, {IMAGE_VECTOR: self.vectors[i]} if with_vectors else None) for s, i in scored]


# Items along a quarter circle: "img" is the photo's own look, "txt" what the words ask for.
TOY = ToyStore({"img": unit(1, 0), "near_img": unit(0.95, 0.3), "mid": unit(1, 1), "near_txt": unit(0.3, 0.95),
                "txt": unit(0, 1)})
BOTH = EncodedQuery(photo_vector=unit(1, 0), words_vector=unit(0, 1))
