"""The lexical signal: BM25 sparse vectors of item documents and query words, one tokenizer for every store backend.

qdrant-edge's offline Bm25 is the tokenizer everywhere (edge, local mode and a Qdrant server alike), so the token
ids always agree: they are fastembed's `Qdrant/bm25` ids (abs murmur3 of the lowercased, stopword-filtered,
Snowball-stemmed word; tests/test_lexical.py checks that against an independent reproduction). Documents get
BM25's term-frequency weights, queries 1.0 per word; IDF is the collection's job (the `bm25` vector is created with
the IDF modifier, so it stays right as the catalog changes).

`avg_len` is the catalog's own mean document length (fastembed's default of 256 tokens suits web pages, not
product titles of about 15 words: with it, BM25 would barely tell a long title from a short one). The index job
measures it and the collection records it.
"""

from __future__ import annotations

import string
from functools import lru_cache
from typing import Iterable

import numpy as np

from retrieval.store.base import SparseVector, read_vector

LANGUAGE = "english"
K1, B = 1.2, 0.75  # BM25's standard term-frequency saturation and length normalisation


@lru_cache(maxsize=8)
def _bm25(avg_len: float, language: str, b: float = B):
    import qdrant_edge

    return qdrant_edge.Bm25(qdrant_edge.Bm25Config(k=K1, b=b, avg_len=avg_len, language=language))


def document_vector(text: str, avg_len: float, language: str = LANGUAGE) -> SparseVector:
    """BM25 term weights of an item's document (empty for a text of only stopwords)."""
    return read_vector(_bm25(avg_len, language).embed_document(text or ""))


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
