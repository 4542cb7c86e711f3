"""The lexical signal: BM25 sparse vectors of item documents and query words, one tokenizer for every store backend.

qdrant-edge's offline Bm25 is the tokenizer everywhere (edge, local mode and a Qdrant server alike), so the token
ids always agree: they are fastembed's `Qdrant/bm25` ids (abs murmur3 of the lowercased, stopword-filtered,
Snowball-stemmed word; tests/test_lexical.py checks that against an independent reproduction). Documents get
BM25's term-frequency weights, queries 1.0 per word; IDF is the collection's job (the `bm25` vector is created with
the IDF modifier, so it stays right as the catalog changes).

Items whose documents score exactly alike (same words, same length: common in a catalog) would otherwise be
ranked in the order the store happened to write them, so a copy or a reindex of the same catalog could cut a
candidate list at a different place. Each item's lexical vectors carry a factor just above 1 fixed by its id
(`item_vectors`): ties break the same way in every store.

`avg_len` is the catalog's own mean document length (fastembed's default of 256 tokens suits web pages, not
product titles of about 15 words: with it, BM25 would barely tell a long title from a short one). The index job
measures it and the collection records it.
"""

from __future__ import annotations

import hashlib
import string
from functools import lru_cache
from typing import Iterable

import numpy as np

from retrieval.store.base import SparseVector, read_vector

LANGUAGE = "english"
K1, B = 1.2, 0.75  # BM25's standard term-frequency saturation and length normalisation
# Relative size of the tie-break: far below any difference in BM25 that means something, far above float32's
# resolution (1e-7), so ~8,000 distinct factors.
TIE_BREAK = 1e-3


@lru_cache(maxsize=8)
def _bm25(avg_len: float, language: str, b: float = B):
    import qdrant_edge

    return qdrant_edge.Bm25(qdrant_edge.Bm25Config(k=K1, b=b, avg_len=avg_len, language=language))


def document_vector(text: str, avg_len: float, language: str = LANGUAGE) -> SparseVector:
    """BM25 term weights of an item's document (empty for a text of only stopwords)."""
    return read_vector(_bm25(avg_len, language).embed_document(text or ""))


def tie_factor(item_id: str) -> float:
    """1 + TIE_BREAK x a fraction in [0, 1) fixed by the item id (a hash, not Python's salted one)."""
    digest = hashlib.blake2b(str(item_id).encode(), digest_size=8).digest()
    return 1.0 + TIE_BREAK * int.from_bytes(digest, "big") / 2**64


def item_vectors(weights: SparseVector, item_id: str) -> tuple[SparseVector, SparseVector]:
    """An item's `bm25` vector (its BM25 weights) and `terms` vector (1 per word), both scaled by its tie factor."""
    factor = tie_factor(item_id)
    return (SparseVector(weights.indices, tuple(w * factor for w in weights.values)),
            SparseVector(weights.indices, (factor,) * len(weights.indices)))


def query_vector(text: str | None, language: str = LANGUAGE) -> SparseVector:
    """The query's words, 1.0 each (IDF comes from the collection)."""
    return read_vector(_bm25(1.0, language).embed_query(text or ""))


def document_length(text: str, language: str = LANGUAGE) -> int:
    """Tokens BM25 counts in a document: after stopwords, repeats included. Read from the tokenizer itself: with
    b = 0 a token's weight is tf (k + 1) / (tf + k), whatever the length, so each tf follows from its weight."""
    weights = _bm25(1.0, language, 0.0).embed_document(text or "").values
    return sum(round(K1 * w / (K1 + 1 - w)) for w in weights)


def mean_length(texts: Iterable[str], language: str = LANGUAGE) -> float:
    """The catalog's mean document length in BM25 tokens (at least 1, so an empty catalog still has a value)."""
    lengths = [document_length(t, language) for t in texts]
    return max(1.0, float(np.mean(lengths))) if lengths else 1.0


def matched_words(query: str | None, document: str, language: str = LANGUAGE) -> list[str]:
    """The query's words that the document contains after stemming ("dresses" matches "Dress"), in query order."""
    if not query or not document:
        return []
    have = set(query_vector(document, language).indices)
    words = dict.fromkeys(w.strip(string.punctuation) for w in query.split())
    return [word for word in words if (ids := query_vector(word, language).indices) and set(ids) <= have]
