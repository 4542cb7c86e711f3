"""Negative words typed in the search box: "-floral" and "not floral" are refusals, read out of the words.

"summer dress, not floral" searches "summer dress" and leaves out the items whose documents have "floral", as a
request's `not_text` does (retrieval/recommend.py says why leaving out, not pushing down; docs/evaluation.md
measures it). Only a hyphen that starts a word negates it ("t-shirt" stays a word), and "not" negates the one word
after it ("not navy blue" refuses "navy"; "-navy -blue" refuses both).
"""

from __future__ import annotations

import re

from retrieval import lexical
from retrieval.store.base import SparseVector

# "-word" at the start or after a space, or "not word" ("cannot" and "knot" are not "not"); a word: letters first
NEGATED = re.compile(r"(?:(?<!\S)-|\bnot\s+)([^\W\d_][\w'&]*)", re.IGNORECASE)


def split(text: str | None) -> tuple[str | None, str | None]:
    """(the words to search, the negative words), each None when there are none; words without a negation
    come back as typed (stripped); commas left empty by a removed
    negation go too ("dress, not floral, long" -> "dress, long", "floral")."""
    refused = [m.group(1).lower() for m in NEGATED.finditer(text or "")]
    if not refused:  # the words as typed, untouched
        return (text or "").strip() or None, None
    kept = NEGATED.sub(" ", text or "")
    parts = (" ".join(part.split()) for part in kept.split(","))
    return ", ".join(p for p in parts if p) or None, " ".join(dict.fromkeys(refused)) or None


def joined(*texts: str | None) -> str | None:
    """Negative words from several places (a request's not_text and its text's negations) as one, or None."""
    return " ".join(t for t in texts if t) or None


def tokens(refused: str | None, language: str) -> SparseVector | None:
    """The negative words as BM25 tokens of the collection's language (None: none, or only stopwords)."""
    return lexical.query_vector(refused or "", language) or None


def has_any(document: str, words: SparseVector, language: str) -> bool:
    """Whether a document has any of the (BM25-tokenized) words: the same tokens its own BM25 vector holds."""
    return not set(words.indices).isdisjoint(lexical.query_vector(document, language).indices)
