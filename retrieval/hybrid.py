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
- hybrid_rescore: the words pick the candidates: the items whose documents have all of them (the `terms` vector:
  the document's words at 1.0 times the item's tie factor, so n query words score n, within 0.1 %, on those),
  then, while fewer than k results came back, those with any of them (BM25), then the words' CLIP neighbours (when
  the words are in no document, or a filter leaves too few). The photo nudged by the words,
  normalize((1 - w) * photo + w * words), ranks them by two views fused by DBSF: how each candidate looks (against
  its photo) and how it is described (against its document, CLIP's image-to-text side). "This, but red" looks
  among the red items for the one most like the photo; "this, but a red t-shirt" among the red t-shirts. Every
  candidate has both scores, so the fusion never rewards being in one list only;
- bm25: the lexical leg alone (to measure what the others add).
"""

from __future__ import annotations

from retrieval.fusion import fused_vector
from retrieval.store.base import Fuse, Nearest, Plan, Rescore
from schemas.collection import BM25_VECTOR, IMAGE_VECTOR, TERMS_VECTOR, TEXT_VECTOR

CANDIDATES = ("all_words", "any_word", "meaning")  # hybrid_rescore's candidate sources, narrowest first
# Items with all the words score alike on `terms` (n, times their tie factors), so a limit of k1 would keep k1 of
# them chosen by id, not relevance: take up to ALL_WORDS_LIMIT and let BM25 keep the k1 best. The limit costs store
# time even when few items match (~1.5 ms per 1,000 at 10k items, 6 ms at 100,000); at 1,000 the dev set scored
# exactly as at 100,000, and text queries (k1 50) 0.005 nDCG@10 above limit = k1.
# Words that more than 1,000 items share narrow little; BM25 then ranks 1,000 of those items chosen by id.
ALL_WORDS_LIMIT = 1000


def photo_legs(query, k1: int) -> list[Plan]:
    return [Nearest(IMAGE_VECTOR, query.photo_vector, k1)] if query.photo_vector is not None else []


def lexical_legs(query, k1: int) -> list[Plan]:
    return [Nearest(BM25_VECTOR, query.words_bm25, k1)] if query.words_bm25 else []


def meaning_legs(query, k1: int) -> list[Plan]:
    if query.words_vector is None:
        return []
    return [Nearest(IMAGE_VECTOR, query.words_vector, k1), Nearest(TEXT_VECTOR, query.words_vector, k1)]


def fused(groups: list[list[Plan]], method: str, limit: int) -> Plan:
    """Each group fused on its own (a single leg stays as it is), then the groups together."""
    parts = [group[0] if len(group) == 1 else Fuse(tuple(group), method, limit) for group in groups if group]
    return parts[0] if len(parts) == 1 else Fuse(tuple(parts), method, limit)


def candidate_legs(query, k1: int, source: str) -> list[Plan]:
    """Where hybrid_rescore's candidates come from (CANDIDATES): the k1 best by BM25 among the lexical ones."""
    if source == "all_words" and query.words_bm25 and len(query.words_bm25.indices) > 1:  # one word: all = any
        every = len(query.words_bm25.indices) - 0.5  # scores are whole numbers of words: n - 0.5 keeps exactly n
        having_all = Nearest(TERMS_VECTOR, query.words_bm25.as_query(), max(k1, ALL_WORDS_LIMIT), every)
        return [Rescore((having_all,), BM25_VECTOR, query.words_bm25, k1)]
    if source == "any_word":
        return lexical_legs(query, k1)
    return meaning_legs(query, k1) if source == "meaning" else []


def rescored(query, k1: int, text_weight: float, source: str = "all_words") -> Plan | None:
    """Candidates from `source`, ranked by how they look and how they are described; None if the query has no such
    candidates (no words, or no CLIP vector of them)."""
    candidates = tuple(candidate_legs(query, k1, source))
    if not candidates:
        return None
    if query.photo_vector is not None and query.words_vector is not None:
        probe = fused_vector(query.photo_vector, query.words_vector, text_weight)
    else:
        probe = query.photo_vector if query.photo_vector is not None else query.words_vector
    limit = len(candidates) * k1
    return Fuse((Rescore(candidates, IMAGE_VECTOR, probe, limit), Rescore(candidates, TEXT_VECTOR, probe, limit)),
                "dbsf", limit)


def bm25_plans(query, k1: int, text_weight: float) -> list[Plan]:
    return [Nearest(BM25_VECTOR, query.words_bm25, k1)]


def rescore_plans(query, k1: int, text_weight: float) -> list[Plan]:
    """hybrid_rescore's plans: one per candidate source, narrowest first (a photo alone is its kNN)."""
    found = [p for p in (rescored(query, k1, text_weight, source) for source in CANDIDATES) if p is not None]
    return found or photo_legs(query, k1)


def fused_plans(method: str, query, k1: int, text_weight: float) -> list[Plan]:
    """hybrid_dbsf's or hybrid_rrf's plan: the photo, and the words' lexical and meaning evidence fused into one
    list, fused."""
    words = [lexical_legs(query, k1), meaning_legs(query, k1)]
    return [fused([photo_legs(query, k1), [fused(words, method, k1)] if any(words) else []], method, k1)]
