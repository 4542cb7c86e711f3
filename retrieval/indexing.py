"""Index stages as callable classes on column batches, and their plan: Ray maps it, run_stages runs it in-process."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

import numpy as np

from retrieval import lexical
from retrieval.files import FetchConfig, fetch_all
from retrieval.images import ImageRejected, PreprocessConfig, load_and_preprocess
from retrieval.rows import Batch, Row, as_batch, batch_rows

if TYPE_CHECKING:
    from schemas.collection import CollectionSpec
    from schemas.jobs import IndexConfig

log = logging.getLogger(__name__)


def column(values: list, dtype=object) -> np.ndarray:
    out = np.empty(len(values), dtype=dtype)
    out[:] = values
    return out


def timed(stage: str) -> Callable:
    """Decorate a stage's __call__: the batch's compute time, shared out per row, in the column `t_<stage>` (the
    sink adds them up into the run's per-stage seconds, across however many workers ran the stage)."""

    def decorate(call: Callable[[Any, Batch], Batch]) -> Callable[[Any, Batch], Batch]:
        @functools.wraps(call)
        def run(self, batch: Batch) -> Batch:
            started = time.perf_counter()
            out = call(self, batch)
            rows = len(next(iter(out.values()))) if out else 0
            return {**out, f"t_{stage}": np.full(rows, (time.perf_counter() - started) / max(rows, 1))}

        return run

    return decorate


class ReadImages:
    """Adds `data` (file bytes) and `error` columns from the `path` column (a local path or a URI, see
    retrieval/files.py); a missing, unreadable or timed-out file is an error, not a crash."""

    def __init__(self, fetch: FetchConfig | None = None):
        self.fetch = fetch or FetchConfig.of()

    @timed("read")
    def __call__(self, batch: Batch) -> Batch:
        read = fetch_all([str(path) for path in batch["path"]], self.fetch)
        return {**batch, "data": column([data for data, _ in read]), "error": column([error for _, error in read])}


class DecodeImages:
    """Turns `data` into `pixels`: the model's uint8 input as raw bytes (empty where the image was rejected)."""

    def __init__(self, cfg: PreprocessConfig, max_pixels: int):
        self.cfg, self.max_pixels = cfg, max_pixels

    @timed("decode")
    def __call__(self, batch: Batch) -> Batch:
        pixels, errors = [], []
        for data, error in zip(batch["data"], batch["error"]):
            array, error = self._decode(data, error)
            pixels.append(array.tobytes() if array is not None else b"")
            errors.append(error)
        out = {k: v for k, v in batch.items() if k != "data"}  # the file bytes are not needed past this stage
        return {**out, "pixels": column(pixels), "error": column(errors)}

    def _decode(self, data: bytes, error: str) -> tuple[np.ndarray | None, str]:
        if error:
            return None, error
        try:
            return load_and_preprocess(data, self.cfg, max_pixels=self.max_pixels), ""
        except ImageRejected as err:
            return None, err.reason


class EmbedDocuments:
    """CPU-task stage: `text` -> `bm25_ids` and `bm25_weights` (uint32 and float32 bytes), the document's BM25
    term weights with the catalog's mean length; empty for a document without words."""

    def __init__(self, avg_len: float, language: str = lexical.LANGUAGE):
        self.avg_len, self.language = avg_len, language

    @timed("bm25")
    def __call__(self, batch: Batch) -> Batch:
        vectors = [lexical.document_vector(text, self.avg_len, self.language) for text in batch["text"]]
        return {**batch, "bm25_ids": column([np.asarray(v.indices, np.uint32).tobytes() for v in vectors]),
                "bm25_weights": column([np.asarray(v.values, np.float32).tobytes() for v in vectors])}


class EncodeItems:
    """Loads the CLIP model once (per actor); for the accepted rows, `pixels` -> `vector` (the photo) and `text` ->
    `text_vector` (the document, in the same space; empty without one), float32 bytes."""

    def __init__(self, model_spec: str, device: str = "auto", precision: str = "fp32", threads: int | None = None,
                 allow_random: bool = False):
        import torch

        from retrieval.model import load_model

        if threads:
            torch.set_num_threads(threads)
        self.encoder = load_model(model_spec, device=device, precision=precision, allow_random=allow_random)
        self.size = self.encoder.preprocess_cfg.image_size

    @timed("encode")
    def __call__(self, batch: Batch) -> Batch:
        ok = [i for i, error in enumerate(batch["error"]) if not error]
        out = {k: v for k, v in batch.items() if k != "pixels"}
        return {**out, "vector": column(self._images(batch, ok)), "text_vector": column(self._texts(batch, ok))}

    def _images(self, batch: Batch, ok: list[int]) -> list[bytes]:
        vectors = [b""] * len(batch["error"])
        if ok:
            shape = (self.size, self.size, 3)
            pixels = np.stack([np.frombuffer(batch["pixels"][i], np.uint8).reshape(shape) for i in ok])
            for i, vector in zip(ok, self.encoder.encode_images(pixels)):
                vectors[i] = vector.tobytes()
        return vectors

    def _texts(self, batch: Batch, ok: list[int]) -> list[bytes]:
        vectors = [b""] * len(batch["error"])
        with_words = [i for i in ok if str(batch["text"][i]).strip()]
        if with_words:
            for i, vector in zip(with_words, self.encoder.encode_texts([batch["text"][i] for i in with_words])):
                vectors[i] = vector.tobytes()
        return vectors


def catalog_rows(catalog, items) -> list[dict[str, str]]:
    """Catalog items as the pipeline's input rows: id, absolute path, document, payload as JSON (Arrow-friendly;
    the payload keeps the document too, for display and for showing which words matched)."""
    return [
        {"id": item.id, "path": str(catalog.image_path(item)), "text": item.text,
         "payload": json.dumps({**item.metadata, "image": item.image, "text": item.text})}
        for item in items
    ]


@dataclass(frozen=True)
class Stage:
    """One step of the plan: a stage class and its arguments, and where it runs: `pool` None is a stateless CPU
    task (built once, shipped as an instance), else the actor pool ("segment", "encode") that loads its model once
    per actor."""

    cls: type
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    pool: Literal["segment", "encode"] | None = None

    def build(self) -> Callable[[Batch], Batch]:
        return self.cls(*self.args, **self.kwargs)


def index_stages(cfg: IndexConfig, spec: CollectionSpec, preprocess_cfg: PreprocessConfig, *, device: str = "cpu",
                 threads: int | None = None, segment_options: dict[str, Any] | None = None) -> list[Stage]:
    """The index plan in order: read, weigh the documents for BM25, decode (or decode, segment and preprocess),
    encode photos and documents."""
    encode = Stage(EncodeItems, (cfg.model, device, cfg.precision, threads, cfg.allow_random_weights), pool="encode")
    return [Stage(ReadImages, (FetchConfig.of(cfg),)), Stage(EmbedDocuments, (spec.bm25_avg_len, spec.bm25_language)),
            *_decode_stages(cfg, preprocess_cfg, segment_options or {}), encode]


def _decode_stages(cfg: IndexConfig, preprocess_cfg: PreprocessConfig, segment_options: dict) -> list[Stage]:
    """Decode straight to model pixels, or decode to RGB and let the segmentation actors crop and preprocess."""
    if cfg.segment == "none":
        return [Stage(DecodeImages, (preprocess_cfg, cfg.max_image_pixels))]
    from retrieval.segmentation import DecodeRGB, SegmentImages

    return [Stage(DecodeRGB, (cfg.max_image_pixels,), {"min_side": 320, "max_side": 640}),
            Stage(SegmentImages, (cfg.segment,), {"preprocess_cfg": preprocess_cfg, **segment_options},
                  pool="segment")]


def run_stages(stages: Sequence[Stage], rows: list[Row], batch_size: int = 64) -> list[Row]:
    """The plan in this process, without Ray: each stage built once (models loaded once), the rows in batches;
    returns the finished rows, as the sink would receive them."""
    built = [stage.build() for stage in stages]
    finished = []
    for start in range(0, len(rows), batch_size):
        batch = as_batch(rows[start:start + batch_size])
        for stage in built:
            batch = stage(batch)
        finished.extend(batch_rows(batch))
    return finished
