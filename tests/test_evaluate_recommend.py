"""The recommendations' evaluation: the dev modes jobs.make_queries --recommend generates (deterministic, held-out,
relevant sets as documented), the measures and the diversity rule (retrieval/recommend_evaluation.py), and the job
on a slice of the offline catalog."""

from __future__ import annotations

import json
from itertools import islice

import numpy as np
import pytest

from jobs import evaluate_recommend, make_queries
from retrieval import recommend_evaluation as rec
from retrieval.catalogs import open_catalog
from schemas.settings import SHARED_ROOT
from tests.test_recommend import catalog as toy_catalog
from tests.test_recommend import searcher  # noqa: F401 (the fixture: four products in three colours)

SPLIT = SHARED_ROOT / "models" / "fashion-clip-mini" / "split.json"


@pytest.fixture(scope="module")
def myntra(offline_catalog):
    return make_queries.load_items(offline_catalog), json.loads(SPLIT.read_text())["test_ids"]


def test_the_recommendation_modes_are_seeded_and_leave_the_others_as_they_are(myntra):
    items, test_ids = myntra
    first, again = (make_queries.recommend_queries(items, test_ids, seed=0) for _ in range(2))
    assert first == again and [q["mode"] for q in first] == sorted(
        (q["mode"] for q in first), key=["liked", "more-like-this", "liked+disliked", "words+not"].index)
    assert make_queries.recommend_queries(items, test_ids, seed=1) != first
    sample = make_queries.recommend_queries(items, test_ids, seed=0, max_per_mode=5)
    bases = {q["qid"] for q in sample if q["mode"] == "liked"}
    assert len(bases) == 5 and all(q.get("base", q["qid"]) in bases for q in sample if q["mode"] != "words+not")


def test_liked_queries_judge_the_other_items_of_the_liked_type_and_colour(myntra):
    items, test_ids = myntra
    queries = make_queries.recommend_queries(items, test_ids)
    by_qid = {q["qid"]: q for q in queries}
    for q in (q for q in queries if q["mode"] != "words+not"):
        base = by_qid[q.get("base", q["qid"])]
        liked = base["liked"]
        kind = {(items[i]["type"], items[i]["colour"]) for i in liked}
        assert 2 <= len(liked) <= 3 and set(liked) <= set(test_ids) and len(kind) == 1
        want = {i for i, item in items.items() if (item["type"], item["colour"]) in kind} - set(liked)
        assert set(q["relevant"]) == want and set(q["exclude"]) >= set(liked)
        if q["mode"] == "more-like-this":
            assert q["liked"] == liked[:1]
        if q["mode"] == "liked+disliked":
            (disliked,) = q["disliked"]
            assert q["liked"] == liked and disliked in test_ids and disliked in q["exclude"]
            assert items[disliked]["type"] == items[liked[0]]["type"]
            assert items[disliked]["colour"] == q["avoid_colour"] != items[liked[0]]["colour"]


def test_words_not_queries_judge_the_type_in_the_colours_without_the_word(myntra):
    items, test_ids = myntra
    queries = [q for q in make_queries.recommend_queries(items, test_ids) if q["mode"] == "words+not"]
    assert len(queries) > 100
    for q in queries:
        article = next(items[i]["type"] for i in q["relevant"])
        assert q["text"] == f"{article.lower()}, not {q['not_word']}" and " " not in q["not_word"]
        want = {i for i, item in items.items() if item["type"] == article
                and q["not_word"] not in item["colour"].lower().split()}
        assert set(q["relevant"]) == want
    navy = next(q for q in queries if q["qid"] == "words+not:Tshirts:Blue")
    assert not any(items[i]["colour"] == "Navy Blue" for i in navy["relevant"])  # "not blue" is not navy blue


def toy_view() -> rec.Catalog:
    items = {i: {"type": i.split("-")[0], "colour": i.split("-")[1], "group": i.split("-")[0]} for i in toy_catalog()}
    photos = {i: photo for i, (_, photo) in toy_catalog().items()}
    return rec.Catalog(items, photos, {i: p["text"] for i, (p, _) in toy_catalog().items()}, "english",
                       "product_group")


def test_the_measures_of_a_top_ten():
    view = toy_view()
    query = rec.RecQuery("q", "liked", {"dress-blue": 1.0}, not_word="floral")
    got = rec.measures(["dress-blue", "dress-green", "skirt-red", "shoe-red"], query, view, avoid="green")
    assert got["ndcg@10"] == 1.0 and got["groups"] == 3.0 and got["avoid_share"] == 0.1
    assert got["word_share"] == 0.2  # dress-green and skirt-red are floral
    assert got["near_dups"] == 1.0  # the two dresses' photos (cosine 0.996); the skirt is 0.8 from them
    assert rec.measures(["x"], rec.RecQuery("q", "liked", {}), view, None) is None


def test_liked_items_and_diversity_through_the_service(searcher):  # noqa: F811
    view = toy_view()
    queries = [rec.RecQuery("liked:a", "liked", {"dress-blue": 1.0, "dress-green": 1.0}, ("dress-red", "skirt-red")),
               rec.RecQuery("more-like-this:a", "more-like-this", {"dress-blue": 1.0, "dress-green": 1.0},
                            ("dress-red",), base="liked:a"),
               rec.RecQuery("liked+disliked:a", "liked+disliked", {"dress-blue": 1.0, "dress-green": 1.0},
                            ("dress-red", "skirt-red"), ("skirt-blue",), base="liked:a", avoid_colour="blue")]
    scores = rec.run(searcher, None, queries, view, (0.0, 0.5))
    assert set(scores) == {(m, v, d) for m in rec.LIKED_MODES for v, d in
                           (("recommend", 0.0), ("recommend", 0.5), ("group_by", 0.0), ("sum_scores", 0.0),
                            ("average_vector", 0.0), ("no_shared_values 0", 0.0))}  # 0.3's twin: not measured here
    assert scores[("liked", "group_by", 0.0)]["liked:a"]["groups"] == 4.0  # one result per product
    assert scores[("liked", "recommend", 0.0)]["liked:a"]["avoid_share"] is not None
    comparisons = rec.comparisons(queries, scores)
    assert not np.isnan(comparisons["liked - more-like-this"][0])
    assert not np.isnan(comparisons["liked+disliked - liked: avoid_share"][0])
    assert not np.isnan(comparisons["liked - liked without shared values"][0])
    rows = rec.rows_of(scores)
    assert all(r["n_queries"] == 1 for r in rows)


def test_the_diversity_rule_takes_the_largest_value_that_is_cheap_and_diverse_on_every_catalog():
    def costs(*per_value):
        return {"liked": {d: {"delta": (delta, delta - 0.01, delta + 0.01), "groups": groups}
                          for d, delta, groups in per_value}}

    luma = costs((0.1, -0.001, 6.0), (0.2, -0.01, 8.2), (0.5, -0.05, 9.5))
    myntra = costs((0.1, 0.0, 0.0), (0.2, -0.015, 0.0), (0.5, -0.03, 0.0))  # 0.5 costs too much here
    assert rec.meets_rule(luma, 0.2, True) and not rec.meets_rule(luma, 0.1, True)
    assert rec.diversity_on([(luma, True), (myntra, False)], (0.0, 0.1, 0.2, 0.5)) == 0.2
    myntra_dear = costs((0.1, -0.03, 0.0), (0.2, -0.03, 0.0), (0.5, -0.03, 0.0))
    assert rec.diversity_on([(luma, True), (myntra_dear, False)], (0.0, 0.1, 0.2, 0.5)) is None


@pytest.fixture(scope="module")
def slice_queries(tmp_path_factory, offline_catalog):
    """Recommendation queries whose items all lie in the catalog's first 300 items."""
    first = {item.id for item in islice(open_catalog(offline_catalog).items(), 300)}
    items = {i: v for i, v in make_queries.load_items(offline_catalog).items() if i in first}
    queries = make_queries.recommend_queries(items, json.loads(SPLIT.read_text())["test_ids"], max_per_mode=4)
    path = tmp_path_factory.mktemp("queries") / "recommend.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in queries))
    return path


@pytest.mark.ray
def test_evaluate_recommend_job_on_a_slice(ray_cluster, tmp_path, offline_catalog, model_spec, slice_queries, capsys):
    out = tmp_path / "eval"
    argv = ["--catalog", str(offline_catalog), "--queries", str(slice_queries), "--limit", "300",
            "--out-dir", str(out), "--model", model_spec, "--device", "cpu", "--diversity", "0.5"]
    assert evaluate_recommend.main(argv) == 0
    report = json.loads((out / "recommend.json").read_text())
    assert report["run"]["points"] == 300 and (out / "recommend.md").read_text().startswith("# Recommendation")
    modes = {(r["mode"], r["variant"], r["diversity"]) for r in report["rows"]}
    assert ("liked", "recommend", 0.5) in modes and ("words+not", "push_down", 0.0) in modes
    excluded = next(r for r in report["rows"] if (r["mode"], r["variant"]) == ("words+not", "exclude"))
    assert excluded["word_share"] == 0.0 and excluded["n_queries"] > 0
    for row in report["rows"]:
        assert row["ndcg@10"] is None or 0.0 <= row["ndcg@10"] <= 1.0
    assert "liked - more-like-this" in report["comparisons"] and "liked" in report["diversity"]["costs"]
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("liked - more-like-this")
