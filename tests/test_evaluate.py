"""The evaluation: its kNN memo, encoding and scoring, the dev-set generator, and the evaluation job on a slice."""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import islice

import numpy as np
import pytest

from jobs import evaluate, make_queries
from retrieval.catalogs import open_catalog
from retrieval.search import EncodedQuery, Result, SearchOutcome, search
from schemas.collection import IMAGE_VECTOR
from schemas.settings import SHARED_ROOT
from tests.toys import BOTH, TOY, unit


def test_the_memo_changes_no_ranking():
    memo = evaluate.MemoKnn(TOY, {i: {IMAGE_VECTOR: v} for i, v in TOY.vectors.items()})
    for config in evaluate.grid("image+text", list(evaluate.KNOBS), [0.0, 0.35, 1.0], [4, 2]):
        params = replace(config.params(("near_img",)), k=3)
        ranked = [[(r.item_id, r.score) for r in search(store, "c", BOTH, params).results] for store in (TOY, memo)]
        assert ranked[0] == ranked[1], config


def test_batched_encoding_matches_the_service_path(encoder, offline_catalog):
    from retrieval.prepare import encode_query

    queries = [evaluate.Query("a", "image+text", " in red ", "images/10003.jpg", {}, ()),
               evaluate.Query("b", "text", "blue jeans", None, {}, ())]
    for letterbox in (False, True):
        batched = evaluate.encode_queries(encoder, queries, offline_catalog, letterbox, 80_000_000)
        for q, got in zip(queries, batched):
            image = (offline_catalog / q.image).read_bytes() if q.image else None
            want = encode_query(encoder, image, q.text, letterbox=letterbox)
            assert np.allclose(got.text, want.text, atol=1e-5)
            assert (got.image is None) == (want.image is None)
            assert want.image is None or np.allclose(got.image, want.image, atol=1e-5)


def test_an_oracle_ranking_scores_one():
    queries = [evaluate.Query("q1", "text", "red", None, {"a": 2, "b": 1}, ()),
               evaluate.Query("q2", "image+text", "in red", "x.jpg", {"c": 1}, ("z",)),
               evaluate.Query("q3", "image+text", "in blue", "y.jpg", {}, ())]
    encoded = [EncodedQuery(text=unit(1, 0)), EncodedQuery(unit(1, 0), unit(0, 1)), EncodedQuery(unit(1, 0), unit(0, 1))]
    truth = {id(e): q.relevant for q, e in zip(queries, encoded)}

    def oracle(store, collection, query, params):
        best = sorted(truth[id(query)], key=lambda i: -truth[id(query)][i])
        return SearchOutcome([Result(i, 1.0, 1.0, None, {}) for i in best])

    configs = {m: evaluate.grid(m, ["two_stage", "rrf"], [0.5], [50]) for m in ("text", "image+text")}
    rows = evaluate.rows_of(evaluate.run_grid(evaluate.MemoKnn(None, {}), "c", queries, encoded, configs, search_fn=oracle))
    assert {(r["mode"], r["strategy"]) for r in rows} == {("text", "text_knn"), ("image+text", "two_stage"),
                                                          ("image+text", "rrf")}
    for row in rows:
        assert row["ndcg@10"] == row["mrr@10"] == row["recall@10"] == 1.0
        assert row["n_queries"] == 1 and row["n_no_relevant"] == (1 if row["mode"] == "image+text" else 0)


@pytest.fixture(scope="module")
def slice_queries(tmp_path_factory, offline_catalog):
    """About 20 dev queries whose query and relevant items all lie in the catalog's first 300 items."""
    first = {item.id for item in islice(open_catalog(offline_catalog).items(), 300)}
    items = {i: v for i, v in make_queries.load_items(offline_catalog).items() if i in first}
    split = json.loads((SHARED_ROOT / "models" / "fashion-clip-mini" / "split.json").read_text())
    queries = make_queries.make_queries(items, split["test_ids"], seed=0, max_per_mode=7)
    path = tmp_path_factory.mktemp("queries") / "queries.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in queries))
    return path


def test_make_queries_is_deterministic_and_uses_held_out_items(offline_catalog):
    items = make_queries.load_items(offline_catalog)
    test_ids = sorted(items)[:40]
    first, again = (make_queries.make_queries(items, test_ids, seed=3) for _ in range(2))
    assert first == again and {q["mode"] for q in first} == {"text", "image", "image+text"}
    for q in first:
        assert q["relevant"] and all(g > 0 for g in q["relevant"].values())
        if q["image"]:
            item_id = q["exclude"][0]
            assert item_id in test_ids and item_id not in q["relevant"]


@pytest.mark.ray
def test_evaluate_job_on_a_slice(ray_cluster, tmp_path, offline_catalog, model_spec, slice_queries, capsys):
    out = tmp_path / "eval"
    argv = ["--catalog", str(offline_catalog), "--queries", str(slice_queries), "--limit", "300",
            "--out-dir", str(out), "--model", model_spec, "--device", "cpu", "--weights", "0", "0.5", "1",
            "--depths", "50", "200", "--latency-queries", "3"]
    assert evaluate.main(argv) == 0
    assert (out / "results.md").read_text().startswith("# Retrieval evaluation")
    assert (out / "ndcg_vs_weight.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "results.json").read_text())
    assert report["run"]["points"] == 300 and report["run"]["judged_items_not_in_collection"] == 0
    assert set(report["run"]["phases_s"]) == {"index_s", "encode_s", "grid_s", "latency_s"}
    assert set(report["best"]) == {"text", "image", "image+text"}
    strategies = {r["strategy"] for r in report["rows"] if r["mode"] == "image+text"}
    assert strategies == set(evaluate.KNOBS)
    for row in report["rows"]:
        assert 0.0 <= row["ndcg@10"] <= 1.0 and row["n_queries"] + row["n_no_relevant"] == 7
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("best | text:")
    # a second run reuses the collection instead of indexing again
    assert evaluate.main(argv) == 0
    assert "reused" in json.loads((out / "results.json").read_text())["run"]["index"]
