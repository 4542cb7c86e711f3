"""Store-side strategies: every signal of the query as a kNN leg, combined by the store in one call (Qdrant's Query
API, so they run alike on the embedded engine, local mode and a server).

The legs come in two groups, one per thing the shopper gave:
- the photo: its CLIP vector against the items' photos (`image`);
- the words: their CLIP vector against the items' photos (`image`) and documents (`text`), and their BM25 vector
  against the documents (`bm25`, IDF from the collection).
Each group is fused on its own first, then the groups with each other, so a photo and its words count alike
however many legs each has ("this, but red" must match the photo *and* the words).

- hybrid_rrf: reciprocal-rank fusion at both levels (k = 60), k1 candidates per leg;
- hybrid_dbsf: distribution-based score fusion (each list's scores normalised by mean +- 3 std, summed);
- hybrid_rescore: the words' legs give the candidates, ranked by normalize((1 - w) * photo + w * words) over the
  items' photos (with only words: by the words' CLIP vector);
- bm25: the words' lexical leg alone (to measure what the others add).
"""

from __future__ import annotations

from retrieval.fusion import fused_vector
from retrieval.store.base import Fuse, Nearest, Plan, Rescore
from schemas.collection import BM25_VECTOR, IMAGE_VECTOR, TEXT_VECTOR

STRATEGIES = ("hybrid_rrf", "hybrid_dbsf", "hybrid_rescore", "bm25")


def photo_legs(query, k1: int) -> list[Plan]:
    return [Nearest(IMAGE_VECTOR, query.image, k1)] if query.image is not None else []


def word_legs(query, k1: int) -> list[Plan]:
    legs: list[Plan] = []
    if query.text is not None:
        legs += [Nearest(IMAGE_VECTOR, query.text, k1), Nearest(TEXT_VECTOR, query.text, k1)]
    if query.words:
        legs.append(Nearest(BM25_VECTOR, query.words, k1))
    return legs


def fused(groups: list[list[Plan]], method: str, limit: int) -> Plan:
    """Each group fused on its own (a single leg stays as it is), then the groups together."""
    parts = [group[0] if len(group) == 1 else Fuse(tuple(group), method, limit) for group in groups if group]
    return parts[0] if len(parts) == 1 else Fuse(tuple(parts), method, limit)


def rescored(query, k1: int, text_weight: float) -> Plan:
    candidates = word_legs(query, k1)
    if not candidates:
        return photo_legs(query, k1)[0]
    if query.image is None or query.text is None:
        vector = query.text if query.text is not None else query.image
    else:
        vector = fused_vector(query.image, query.text, text_weight)
    return Rescore(tuple(candidates), IMAGE_VECTOR, vector, len(candidates) * k1)


def plan(strategy: str, query, k1: int, text_weight: float) -> Plan:
    """The query plan of a hybrid strategy for this query's signals."""
    if strategy == "bm25":
        return Nearest(BM25_VECTOR, query.words, k1)
    if strategy == "hybrid_rescore":
        return rescored(query, k1, text_weight)
    return fused([photo_legs(query, k1), word_legs(query, k1)], strategy.removeprefix("hybrid_"), k1)
