"""Store-side strategies: every signal of the query as a kNN leg, combined by the store in one call (Qdrant's Query
API, so they run alike on the embedded engine, local mode and a server).

The legs, grouped by what they are evidence of, so that each kind of evidence counts once however many legs it has:
- the photo: its CLIP vector against the items' photos (`image`);
- the words, matched lexically: their BM25 vector against the items' documents (`bm25`, IDF from the collection);
- the words, matched by meaning: their CLIP vector against the items' photos (`image`) and documents (`text`).
The two kinds of word evidence are fused first (the words group), then the words with the photo.

- hybrid_dbsf: distribution-based score fusion at every level (each list's scores normalised by its mean +- 3
  standard deviations, then summed), k1 candidates per leg;
- hybrid_rrf: reciprocal-rank fusion at every level (k = 60);
- hybrid_rescore: the words pick the candidates (their lexical matches, or, when the words match no document,
  their CLIP neighbours), and two views of the photo rank them, fused by DBSF: how each candidate looks
  (normalize((1 - w) * photo + w * words) against its photo) and how it is described (the photo against its
  document, CLIP's image-to-text side). "This, but red" looks among the red items for the one most like the photo.
  Every candidate has both scores, so the fusion never rewards being in one list only;
- bm25: the lexical leg alone (to measure what the others add).
"""

from __future__ import annotations

from retrieval.fusion import fused_vector
from retrieval.store.base import Fuse, Nearest, Plan, Rescore
from schemas.collection import BM25_VECTOR, IMAGE_VECTOR, TEXT_VECTOR

STRATEGIES = ("hybrid_rrf", "hybrid_dbsf", "hybrid_rescore", "bm25")


def photo_legs(query, k1: int) -> list[Plan]:
    return [Nearest(IMAGE_VECTOR, query.image, k1)] if query.image is not None else []


def lexical_legs(query, k1: int) -> list[Plan]:
    return [Nearest(BM25_VECTOR, query.words, k1)] if query.words else []


def meaning_legs(query, k1: int) -> list[Plan]:
    if query.text is None:
        return []
    return [Nearest(IMAGE_VECTOR, query.text, k1), Nearest(TEXT_VECTOR, query.text, k1)]


def fused(groups: list[list[Plan]], method: str, limit: int) -> Plan:
    """Each group fused on its own (a single leg stays as it is), then the groups together."""
    parts = [group[0] if len(group) == 1 else Fuse(tuple(group), method, limit) for group in groups if group]
    return parts[0] if len(parts) == 1 else Fuse(tuple(parts), method, limit)


def words_group(query, method: str, k1: int) -> list[Plan]:
    """The words' evidence as one list: lexical and by meaning, fused (or whichever the query has)."""
    parts = [fused([lexical_legs(query, k1)], method, k1)] if query.words else []
    parts += [fused([meaning_legs(query, k1)], method, k1)] if query.text is not None else []
    return parts


def rescored(query, k1: int, text_weight: float, lexical: bool = True) -> Plan:
    """Candidates from the words (lexical, or by meaning), ranked by how they look and how they are described."""
    candidates = tuple(lexical_legs(query, k1) if lexical and query.words else meaning_legs(query, k1))
    if not candidates:
        return photo_legs(query, k1)[0]
    probe = query.image if query.image is not None else query.text  # what the candidates are compared with
    look = fused_vector(query.image, query.text, text_weight) if query.image is not None and query.text is not None \
        else probe
    limit = len(candidates) * k1
    return Fuse((Rescore(candidates, IMAGE_VECTOR, look, limit), Rescore(candidates, TEXT_VECTOR, probe, limit)),
                "dbsf", limit)


def plan(strategy: str, query, k1: int, text_weight: float) -> Plan:
    """The query plan of a hybrid strategy for this query's signals."""
    if strategy == "bm25":
        return Nearest(BM25_VECTOR, query.words, k1)
    if strategy == "hybrid_rescore":
        return rescored(query, k1, text_weight)
    method = strategy.removeprefix("hybrid_")
    words = words_group(query, method, k1)
    return fused([photo_legs(query, k1), [fused([words], method, k1)] if words else []], method, k1)


def fallback(strategy: str, query, k1: int, text_weight: float) -> Plan | None:
    """hybrid_rescore when the words matched no document: candidates by the words' meaning instead."""
    if strategy != "hybrid_rescore" or not query.words or query.text is None:
        return None
    return rescored(query, k1, text_weight, lexical=False)
