"""The evaluation: its kNN memo, encoding and scoring, the query file, the default rule, the dev-set generator, and
the evaluation job on a slice."""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import islice

import numpy as np
import pytest

from jobs import evaluate, make_queries
from retrieval import evaluation
from retrieval.catalogs import open_catalog
from retrieval.prepare import with_words
from retrieval.search import EncodedQuery, Result, SearchOutcome, search
from schemas.collection import IMAGE_VECTOR, CollectionSpec
from schemas.settings import SHARED_ROOT
from tests.toys import BOTH, TOY, unit


def test_the_memo_changes_no_ranking():
    memo = evaluation.MemoKnn(TOY, {i: {IMAGE_VECTOR: v} for i, v in TOY.vectors.items()})
    client_side = [s for s in evaluation.KNOBS if not s.startswith("hybrid") and s != "bm25"]
    for config in evaluation.grid("image+text", client_side, [0.0, 0.35, 1.0], [4, 2]):
        params = replace(config.params(("near_img",)), k=3)
        ranked = [[(r.item_id, r.score) for r in search(store, "c", BOTH, params).results] for store in (TOY, memo)]
        assert ranked[0] == ranked[1], config


def test_batched_encoding_matches_the_service_path(encoder, offline_catalog):
    from retrieval.prepare import encode_query

    queries = [evaluation.Query("a", "image+text", "in red", "images/10003.jpg", {}, ()),
               evaluation.Query("b", "text", "blue jeans", None, {}, ())]
    for letterbox in (False, True):
        spec = CollectionSpec(name="c", model="m", dim=encoder.dim, letterbox=letterbox)
        batched = evaluate.encode_queries(encoder, queries, offline_catalog, spec, 80_000_000)
        for q, got in zip(queries, batched):
            image = (offline_catalog / q.image).read_bytes() if q.image else None
            want = with_words(encode_query(encoder, image, q.text, letterbox=letterbox), q.text, "english")
            assert np.allclose(got.text, want.text, atol=1e-5) and got.words == want.words and got.words
            assert (got.image is None) == (want.image is None)
            assert want.image is None or np.allclose(got.image, want.image, atol=1e-5)


def test_an_oracle_ranking_scores_one():
    queries = [evaluation.Query("q1", "text", "red", None, {"a": 2, "b": 1}, ()),
               evaluation.Query("q2", "image+text", "in red", "x.jpg", {"c": 1}, ("z",)),
               evaluation.Query("q3", "image+text", "in blue", "y.jpg", {}, ())]
    encoded = [EncodedQuery(text=unit(1, 0)), EncodedQuery(unit(1, 0), unit(0, 1)),
               EncodedQuery(unit(1, 0), unit(0, 1))]
    truth = {id(e): q.relevant for q, e in zip(queries, encoded)}

    def oracle(store, collection, query, params):
        best = sorted(truth[id(query)], key=lambda i: -truth[id(query)][i])
        return SearchOutcome([Result(i, 1.0, {}) for i in best])

    configs = {m: evaluation.grid(m, ["text_knn", "two_stage", "rrf"], [0.5], [50]) for m in ("text", "image+text")}
    memo = evaluation.MemoKnn(None, {})
    rows = evaluation.rows_of(evaluation.run_grid(memo, "c", queries, encoded, configs, search_fn=oracle))
    assert {(r["mode"], r["strategy"]) for r in rows} == {("text", "text_knn"), ("image+text", "text_knn"),
                                                          ("image+text", "two_stage"), ("image+text", "rrf")}
    for row in rows:
        assert row["ndcg@10"] == row["mrr@10"] == row["recall@10"] == 1.0
        assert row["n_queries"] == 1 and row["n_no_relevant"] == (1 if row["mode"] == "image+text" else 0)


def test_a_query_line_without_mode_gets_it_from_its_image_and_text(tmp_path):
    path = tmp_path / "q.jsonl"
    lines = [{"qid": "a", "text": "red"}, {"image": "x.jpg"}, {"image": "x.jpg", "text": " in red "},
             {"mode": "text", "text": "blue", "relevant": {"1": 1}}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    queries = evaluation.load_queries([path], None)
    assert [q.mode for q in queries] == ["text", "image", "image+text", "text"]
    assert queries[2].text == "in red" and queries[1].qid.endswith(":2") and queries[3].relevant == {"1": 1}
    path.write_text(json.dumps({"qid": "empty"}) + "\n")
    with pytest.raises(evaluation.QueryFileError, match=":1: mode None"):
        evaluation.load_queries([path], None)


def test_the_default_must_use_every_signal_and_earn_its_cost():
    row = lambda strategy, ndcg, delta: {"strategy": strategy, "label": strategy, "ndcg@10": ndcg,  # noqa: E731
                                         "all_signals": strategy in evaluation.ALL_SIGNALS["image+text"],
                                         "delta_vs_best": delta}
    comparison = [row("two_stage", 0.60, (0.05, 0.03, 0.07)), row("hybrid_dbsf", 0.55, (0, 0, 0)),
                  row("hybrid_rrf", 0.54, (-0.01, -0.02, 0.001)), row("hybrid_rescore", 0.40, (-0.15, -0.2, -0.1))]
    latency = {"two_stage": 1.0, "hybrid_dbsf": 5.0, "hybrid_rrf": 3.0, "hybrid_rescore": 0.5}
    assert evaluation.recommend(comparison, latency)["strategy"] == "hybrid_rrf"  # not worse, and faster


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
    assert strategies == set(evaluation.KNOBS)
    for mode in ("text", "image+text"):
        default = report["choices"][mode]["recommended"]
        assert default["strategy"] in evaluation.ALL_SIGNALS[mode], default
    for row in report["rows"]:
        assert 0.0 <= row["ndcg@10"] <= 1.0 and row["n_queries"] + row["n_no_relevant"] == 7
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("best | text:")
    # a second run reuses the collection instead of indexing again
    assert evaluate.main(argv) == 0
    assert "reused" in json.loads((out / "results.json").read_text())["run"]["index"]


def test_a_strategy_settles_on_the_cheapest_depth_and_the_middle_of_its_plateau():
    from retrieval.metrics import METRICS

    good, worse = dict.fromkeys(METRICS, 1.0), dict.fromkeys(METRICS, 0.0)
    configs = {(0.1, 50): [worse] * 20, (0.1, 500): [good] * 20, (0.3, 500): [good] * 19 + [worse],
               (0.5, 500): [good] * 20, (0.9, 500): [worse] * 20, (0.5, 1000): [good] * 20}
    scores = {("image+text", evaluation.Config("hybrid_rescore", k1, w)): per for (w, k1), per in configs.items()}
    rows = evaluation.rows_of(scores)
    chosen = evaluation.settled(scores, rows, "image+text", "hybrid_rescore")
    assert (chosen["k1"], chosen["text_weight"]) == (500, 0.3)  # 50 is worse; 0.1-0.5 tie at 500: their middle
