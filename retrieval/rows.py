"""The index job's rows: each column with the stages that add and drop it (one table), and a finished row as a Point."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval import lexical
from retrieval.store.base import Point, SparseVector, Vector
from schemas.collection import BM25_VECTOR, IMAGE_VECTOR, TERMS_VECTOR, TEXT_VECTOR

Row = dict[str, Any]
Batch = dict[str, Any]  # column name -> numpy array (Ray Data's "numpy" batch format)
CATALOG, SINK = "catalog_rows", "QdrantDatasink"  # where rows start and where they end


@dataclass(frozen=True)
class Column:
    """One column of the pipeline's rows. A stage named in `added_by` may also rewrite a column it finds (`error`
    gains each stage's skip reason, `payload` the crop box)."""

    name: str
    type: str
    added_by: tuple[str, ...]
    dropped_by: tuple[str, ...] = ()  # empty: the column reaches the sink
    meaning: str = ""


COLUMNS = (
    Column("id", "str", (CATALOG,), meaning="the catalog item id (the point id is derived from it)"),
    Column("path", "str", (CATALOG,), meaning="the photo's absolute path or URI"),
    Column("text", "str", (CATALOG,), meaning="the item's document: its own words"),
    Column("payload", "str: a JSON object", (CATALOG, "SegmentImages"),
           meaning="the item's metadata, image and text; SegmentImages adds crop_box"),
    Column("data", "bytes", ("ReadImages",), ("DecodeImages", "DecodeRGB"), "the photo file's bytes"),
    Column("error", "str", ("ReadImages", "DecodeImages", "DecodeRGB"),
           meaning='"" for an accepted row, else why it is skipped (the sink counts it and writes no point)'),
    Column("bm25_ids", "bytes: uint32[n]", ("EmbedDocuments",), meaning="the document's BM25 token ids"),
    Column("bm25_weights", "bytes: float32[n]", ("EmbedDocuments",), meaning="their BM25 term weights"),
    Column("rgb", "bytes: uint8[h, w, 3]", ("DecodeRGB", "SegmentImages"), ("SegmentImages",),
           "the decoded photo, then the garment crop"),
    Column("rgb_size", "int64[2]", ("DecodeRGB", "SegmentImages"), ("SegmentImages",), "rgb's [w, h]"),
    Column("rgb_scale", "float64", ("DecodeRGB",), ("SegmentImages",), "decoded pixels per original pixel"),
    Column("seg_fallback", "str", ("SegmentImages",),
           meaning='"" when the garment mask was used, else why the whole photo was'),
    Column("pixels", "bytes: uint8[size, size, 3]", ("DecodeImages", "SegmentImages"), ("EncodeItems",),
           "the model's input, preprocessed as it was trained; empty for a skipped row"),
    Column("vector", "bytes: float32[dim]", ("EncodeItems",), meaning="the photo's CLIP vector; empty when skipped"),
    Column("text_vector", "bytes: float32[dim]", ("EncodeItems",),
           meaning="the document's CLIP vector; empty without words"),
    *(Column(f"t_{stage}", "float64", tuple(stages), meaning="the stage's compute seconds for this row")
      for stage, stages in (("read", ["ReadImages"]), ("bm25", ["EmbedDocuments"]),
                            ("decode", ["DecodeImages", "DecodeRGB"]), ("segment", ["SegmentImages"]),
                            ("encode", ["EncodeItems"]))),
)


def columns_after(stages: Iterable[str]) -> set[str]:
    """The columns a row holds once the catalog's rows went through `stages` (stage class names), by the table."""
    held: set[str] = set()
    for stage in (CATALOG, *stages):
        held |= {c.name for c in COLUMNS if stage in c.added_by}
        held -= {c.name for c in COLUMNS if stage in c.dropped_by}
    return held


def as_batch(rows: list[Row]) -> Batch:
    """Rows as a column batch, the shape Ray Data hands the pipeline stages."""
    batch = {}
    for key in rows[0]:
        batch[key] = np.empty(len(rows), dtype=object)
        batch[key][:] = [row[key] for row in rows]
    return batch


def batch_rows(batch: Batch) -> list[Row]:
    """A column batch as rows, the shape the sink reads."""
    return [dict(zip(batch, values)) for values in zip(*batch.values())]


def row_point(row: Row) -> Point:
    """An accepted row (empty `error`) as the store's Point."""
    words = None
    if row.get("bm25_ids"):
        words = SparseVector(tuple(np.frombuffer(row["bm25_ids"], np.uint32).tolist()),
                             tuple(np.frombuffer(row["bm25_weights"], np.float32).tolist()))
    text = np.frombuffer(row["text_vector"], np.float32) if row.get("text_vector") else None
    return item_point(row["id"], json.loads(row["payload"]), np.frombuffer(row["vector"], np.float32), text, words)


def item_point(item_id: str, payload: dict[str, Any], image: np.ndarray, text: np.ndarray | None = None,
               words: SparseVector | None = None) -> Point:
    """An item as the store holds it: the photo's vector; the document's CLIP vector and its words' `bm25` and
    `terms` vectors (scaled by the item's tie factor) where it has words, none made up where it has not."""
    vectors: dict[str, Vector] = {IMAGE_VECTOR: image}
    if text is not None:
        vectors[TEXT_VECTOR] = text
    if words:
        vectors[BM25_VECTOR], vectors[TERMS_VECTOR] = lexical.item_vectors(words, item_id)
    return Point(item_id=item_id, vectors=vectors, payload=payload)
