"""The index job's plan and the sink's tally, run in this process (no Ray): a salted catalog flows through read,
BM25, decode and encode correctly, every stage adds and drops the columns the row contract names, and the sink
counts what it wrote and skipped."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs.qdrant_sink import WriteTally, rows_to_points
from retrieval import lexical
from retrieval.catalogs import open_catalog
from retrieval.indexing import catalog_rows, index_stages, run_stages
from retrieval.rows import as_batch, batch_rows, columns_after
from schemas.collection import BM25_VECTOR, TERMS_VECTOR, CollectionSpec
from tests.conftest import index_config
from tests.salted import EXPECTED, GOOD_IDS


def plan(catalog, model_spec, encoder, store, segment: str = "none"):
    """The index job's stages for the salted catalog (the annotations segmenter needs no model)."""
    cfg = index_config(catalog.root, model_spec, store, segment=segment)
    spec = CollectionSpec(name="salted", model=model_spec, dim=encoder.dim,
                          bm25_avg_len=lexical.mean_length(item.text for item in catalog.items()))
    return index_stages(cfg, spec, encoder.preprocess_cfg, threads=1)


@pytest.fixture(scope="module")
def encoded(salted_catalog, encoder, model_spec, tmp_path_factory):
    catalog = open_catalog(salted_catalog)
    stages = plan(catalog, model_spec, encoder, tmp_path_factory.mktemp("unused"))
    return as_batch(run_stages(stages, catalog_rows(catalog, catalog.items())))


@pytest.mark.parametrize("segment", ["none", "annotations"])
def test_each_stage_adds_and_drops_the_columns_the_row_contract_names(salted_catalog, encoder, model_spec, tmp_path,
                                                                      segment):
    catalog = open_catalog(salted_catalog)
    batch, ran = as_batch(catalog_rows(catalog, list(catalog.items())[:4])), []
    assert set(batch) == columns_after([])
    for stage in plan(catalog, model_spec, encoder, tmp_path, segment):
        batch = stage.build()(batch)
        ran.append(stage.cls.__name__)
        assert set(batch) == columns_after(ran), ran


def test_every_row_is_accepted_or_rejected_as_expected(encoded):
    outcome = dict(zip(encoded["id"], encoded["error"]))
    for item_id in GOOD_IDS:
        assert outcome[item_id] == "", f"{item_id}: {outcome[item_id]}"
    for item_id, reason in EXPECTED.items():
        assert outcome[item_id] == (reason or ""), item_id


def test_vectors_only_for_accepted_rows(encoded, encoder):
    for error, vector in zip(encoded["error"], encoded["vector"]):
        if error:
            assert vector == b""  # nothing is made up for a rejected image
        else:
            v = np.frombuffer(vector, np.float32)
            assert v.shape == (encoder.dim,) and abs(np.linalg.norm(v) - 1) < 1e-4


def test_exif_rotated_photo_embeds_like_the_upright_original(encoded):
    vectors = {i: np.frombuffer(v, np.float32) for i, v in zip(encoded["id"], encoded["vector"]) if v}
    # exif-rotated was made from GOOD_IDS[2] turned a quarter; upright again, it must embed like the original.
    assert float(vectors["exif-rotated"] @ vectors[GOOD_IDS[2]]) > 0.97


def test_sink_rows_become_points_and_skips_are_counted(encoded):
    tally = WriteTally()
    points = rows_to_points(batch_rows(encoded), tally)
    expected_ok = len(GOOD_IDS) + sum(1 for reason in EXPECTED.values() if reason is None)
    assert len(points) == expected_ok
    assert dict(tally.skipped) == {r: 1 for r in EXPECTED.values() if r}
    assert tally.examples["missing file"] == ["missing"]
    point = next(p for p in points if p.item_id == GOOD_IDS[0])
    assert point.payload["image"] == f"images/{GOOD_IDS[0]}.jpg" and point.payload["articleType"] == "good"
    assert json.dumps(point.payload)  # payloads stay JSON-serialisable for every store
    terms = point.vectors[TERMS_VECTOR]  # one per word, scaled by the item's tie factor like its BM25 weights
    assert set(terms.values) == {lexical.tie_factor(GOOD_IDS[0])}
    assert terms.indices == point.vectors[BM25_VECTOR].indices


def test_steady_rate_leaves_out_the_first_write_and_merges_across_workers(monkeypatch):
    clock = iter([100.0, 101.0, 100.5, 104.0])
    monkeypatch.setattr("jobs.qdrant_sink.time.time", lambda: next(clock))
    first, second = WriteTally(), WriteTally()
    first.wrote(32)
    first.wrote(96)
    second.wrote(64)
    second.wrote(64)
    merged = WriteTally()
    merged.merge(second.as_dict())
    merged.merge(first.as_dict())  # the earliest first write wins, whatever the merge order
    assert merged.written == 256 and merged.first_rows == 32
    assert merged.steady_rate() == (256 - 32) / (104.0 - 100.0)
