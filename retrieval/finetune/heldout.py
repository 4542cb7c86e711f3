"""Held-out retrieval on the split's evaluation items, with the evaluation's own metric (retrieval.metrics):
photo -> its document and document -> photo (Recall@1/@10), and photo -> its "<colour> <type>" caption among all
held-out captions (a zero-shot attribute read). One number picks the best epoch: the mean of the three R@10."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from retrieval.metrics import recall_at

KS = (1, 10)
SCORE = "held_out_r@10"


def texts_to_photos(image_vectors: np.ndarray, text_vectors: dict[str, np.ndarray], texts: list[str],
                    ids: list[str]) -> dict[str, float]:
    """Each distinct text ranks the photos; relevant: the items with that text."""
    owners = defaultdict(dict)
    for item_id, text in zip(ids, texts):
        owners[text][item_id] = 1.0
    rankings = {t: _ranked(text_vectors[t] @ image_vectors.T, ids) for t in owners}
    return {f"r@{k}": float(np.mean([recall_at(rankings[t], owners[t], k) for t in owners])) for k in KS}


def photos_to_texts(image_vectors: np.ndarray, text_vectors: dict[str, np.ndarray], texts: list[str]) -> dict:
    """Each photo ranks the distinct texts; relevant: its own."""
    distinct = list(text_vectors)
    matrix = np.stack([text_vectors[t] for t in distinct])
    scores = image_vectors @ matrix.T
    return {f"r@{k}": float(np.mean([recall_at(_ranked(row, distinct, k), {text: 1.0}, k)
                                     for row, text in zip(scores, texts)])) for k in KS}


def _ranked(scores: np.ndarray, keys: list[str], k: int | None = None) -> list[str]:
    order = np.argsort(-scores, kind="stable")
    return [keys[i] for i in (order[:k] if k else order)]


def held_out_metrics(image_vectors: np.ndarray, encode_texts, rows: list[dict]) -> dict[str, float]:
    """The metrics for unit image vectors of `rows` (in order); `encode_texts(list) -> unit vectors`."""
    out: dict[str, float] = {}
    for kind in ("document", "caption"):
        keep = [i for i, row in enumerate(rows) if row[kind]]
        if not keep:
            continue
        texts, ids = [rows[i][kind] for i in keep], [rows[i]["id"] for i in keep]
        distinct = sorted(set(texts))
        vectors = dict(zip(distinct, encode_texts(distinct)))
        images = image_vectors[keep]
        out.update({f"{kind}_i2t_{m}": v for m, v in photos_to_texts(images, vectors, texts).items()})
        if kind == "document":
            out.update({f"{kind}_t2i_{m}": v for m, v in texts_to_photos(images, vectors, texts, ids).items()})
    scored = [out[key] for key in ("document_i2t_r@10", "document_t2i_r@10", "caption_i2t_r@10") if key in out]
    out[SCORE] = float(np.mean(scored)) if scored else 0.0
    return out
