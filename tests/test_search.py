"""Search strategies: fusion arithmetic and each strategy on a toy store, filter validation, and real retrieval
quality on the full offline index."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from retrieval.search import EncodedQuery, QueryError, SearchParams, fuse, rrf_scores, search, validate_filters, zscore
from retrieval.store.base import Hit
from tests.toys import BOTH, TOY, unit


def test_zscore_and_fuse():
    assert np.allclose(zscore(np.array([1.0, 2.0, 3.0])), [-1.2247, 0.0, 1.2247], atol=1e-4)
    assert np.allclose(zscore(np.array([0.5, 0.5])), [0.0, 0.0])  # no spread: no signal, not a division by 0
    image, text = np.array([0.9, 0.8, 0.7]), np.array([0.1, 0.2, 0.3])
    assert np.argmax(fuse(image, text, 0.0)) == 0 and np.argmax(fuse(image, text, 1.0)) == 2


def test_unknown_filter_field_is_an_error():
    validate_filters({"gender": "Women"}, ("gender", "articleType"))
    with pytest.raises(QueryError, match="colour"):
        validate_filters({"colour": "Red"}, ("gender", "articleType"))


def ranking(strategy: str, **kw) -> list[str]:
    params = SearchParams(k=5, k1=kw.pop("k1", 5), strategy=strategy, **kw)
    return [r.item_id for r in search(TOY, "c", BOTH, params).results]


def test_single_modality_strategies_ignore_the_other_vector():
    assert ranking("image_knn")[0] == "img"
    assert ranking("text_knn")[0] == "txt"


def test_fusion_strategies_follow_the_text_weight():
    for strategy in ("two_stage", "two_stage_image", "vector_fusion", "rrf"):
        assert ranking(strategy, text_weight=0.0)[0] == "img", strategy
        assert ranking(strategy, text_weight=1.0)[0] == "txt", strategy
    assert ranking("vector_fusion", text_weight=0.5)[0] == "mid"  # normalize(image + text)


def test_two_stage_image_only_reranks_the_image_candidates():
    # k1 = 2: stage 1 by image keeps img and near_img, so the text cannot bring txt back
    assert set(ranking("two_stage_image", k1=2, text_weight=1.0)) == {"img", "near_img"}
    assert ranking("two_stage", k1=2, text_weight=1.0)[0] == "txt"  # the union has the text kNN's top 2


def test_rrf_is_the_standard_sum_at_equal_weights():
    a, b = [Hit("x", 0, {}), Hit("y", 0, {})], [Hit("y", 0, {})]
    scores = rrf_scores([a, b], [0.5, 0.5])
    assert scores["x"] == pytest.approx(1 / 61) and scores["y"] == pytest.approx(1 / 62 + 1 / 61)


def test_strategy_errors():
    with pytest.raises(QueryError, match="unknown strategy"):
        SearchParams(strategy="magic")
    with pytest.raises(QueryError, match="image"):
        search(TOY, "c", EncodedQuery(text=unit(0, 1)), SearchParams(strategy="image_knn"))
    only_text = search(TOY, "c", EncodedQuery(text=unit(0, 1)), SearchParams(k=1, strategy="rrf"))
    assert [r.item_id for r in only_text.results] == ["txt"]  # one modality: every fusion is its kNN


@pytest.fixture(scope="module")
def catalog_rows(offline_catalog):
    return {row["id"]: row for row in csv.DictReader((offline_catalog / "catalog.csv").open())}


def _types(outcome, rows):
    return [rows[r.item_id]["articleType"] for r in outcome.results]




@pytest.mark.ray
def test_text_blue_jeans_finds_jeans(search_service, catalog_rows):
    outcome = search_service.search(text="blue jeans", params=SearchParams(k=5))
    assert "Jeans" in _types(outcome, catalog_rows)
    assert [r.score for r in outcome.results] == sorted((r.score for r in outcome.results), reverse=True)


@pytest.mark.ray
def test_shoe_photo_finds_shoes(search_service, catalog_rows, offline_catalog):
    shoe = "10127"  # a catalog casual-shoe photo
    outcome = search_service.search(image=(offline_catalog / "images" / f"{shoe}.jpg").read_bytes(),
                                    params=SearchParams(k=5, exclude=(shoe,)))
    assert shoe not in [r.item_id for r in outcome.results]
    assert any("Shoes" in t for t in _types(outcome, catalog_rows))


@pytest.mark.ray
def test_filters_restrict_stage_one(search_service, catalog_rows):
    params = SearchParams(k=10, filters={"gender": "Women", "articleType": ["Tops", "Dresses"]})
    outcome = search_service.search(text="red", params=params)
    assert outcome.results
    for r in outcome.results:
        assert catalog_rows[r.item_id]["gender"] == "Women"
        assert catalog_rows[r.item_id]["articleType"] in ("Tops", "Dresses")


@pytest.mark.ray
def test_text_moves_an_image_query_towards_the_words(search_service, catalog_rows, offline_catalog):
    """A white t-shirt photo plus 'red': the rerank brings red items up compared with the photo alone."""
    tee = next(i for i, r in catalog_rows.items() if r["articleType"] == "Tshirts" and r["baseColour"] == "White")
    photo = (offline_catalog / "images" / f"{tee}.jpg").read_bytes()
    alone = search_service.search(image=photo, params=SearchParams(k=10, exclude=(tee,)))
    with_text = search_service.search(image=photo, text="red tshirt", params=SearchParams(k=10, exclude=(tee,)))
    red = lambda o: sum(catalog_rows[r.item_id]["baseColour"] == "Red" for r in o.results)  # noqa: E731
    assert red(with_text) > red(alone)
    assert all(r.text_score is not None for r in with_text.results)


@pytest.mark.ray
def test_empty_query_is_refused(search_service):
    with pytest.raises(QueryError):
        search_service.search(text="   ")
