"""Search: fusion arithmetic, each strategy on small stores checked by hand (client-side on a toy store, hybrid on a
real edge store), parameter defaults and filter validation, and real retrieval quality on the full offline index."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest

from retrieval import lexical, strategies
from retrieval.fusion import fuse, rrf_scores, zscore
from retrieval.search import (EncodedQuery, FilterError, QueryError, SearchParams, search,
                              validate_filters)
from retrieval.rows import item_point
from retrieval.store.base import Hit
from schemas.api import STRATEGIES
from schemas.collection import CollectionSpec
from tests.toys import BOTH, TOY, unit


def test_zscore_and_fuse():
    assert np.allclose(zscore(np.array([1.0, 2.0, 3.0])), [-1.2247, 0.0, 1.2247], atol=1e-4)
    assert np.allclose(zscore(np.array([0.5, 0.5])), [0.0, 0.0])  # no spread: no signal, not a division by 0
    image, text = np.array([0.9, 0.8, 0.7]), np.array([0.1, 0.2, 0.3])
    assert np.argmax(fuse(image, text, 0.0)) == 0 and np.argmax(fuse(image, text, 1.0)) == 2


def test_filters_must_name_indexed_fields_and_list_values():
    validate_filters({"gender": "Women", "articleType": ["Tops"]}, ("gender", "articleType"))
    with pytest.raises(FilterError, match="colour"):
        validate_filters({"colour": "Red"}, ("gender", "articleType"))
    with pytest.raises(FilterError, match="at least one"):
        validate_filters({"gender": []}, ("gender",))


def test_unset_knobs_take_the_evaluated_defaults_of_the_mode():
    assert set(strategies.defaults()) == {"text", "image", "image+text"}
    for mode, strategy in strategies.defaults().items():
        resolved = SearchParams(k=30).resolved(mode)
        assert resolved.strategy == strategy and resolved.k1 >= 30 and 0 <= resolved.text_weight <= 1
    mine = SearchParams(strategy="two_stage", k1=7, text_weight=0.2).resolved("text")
    assert (mine.strategy, mine.k1, mine.text_weight) == ("two_stage", 10, 0.2)  # k1 is at least k


def test_query_mode_follows_its_signals():
    words = lexical.query_vector("red")
    assert EncodedQuery(photo_vector=unit(1, 0)).mode == "image"
    assert EncodedQuery(words_vector=unit(1, 0)).mode == EncodedQuery(words_bm25=words).mode == "text"
    assert EncodedQuery(photo_vector=unit(1, 0), words_bm25=words).mode == "image+text"
    with pytest.raises(QueryError, match="needs an image, a text"):
        _ = EncodedQuery(words_bm25=lexical.query_vector("the of")).mode  # stopwords only: nothing to search by


def ranking(strategy: str, **kw) -> list[str]:
    params = SearchParams(k=kw.pop("k", 5), k1=kw.pop("k1", 5), strategy=strategy, explain=False, **kw)
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
    assert set(ranking("two_stage_image", k=2, k1=2, text_weight=1.0)) == {"img", "near_img"}
    assert ranking("two_stage", k=2, k1=2, text_weight=1.0)[0] == "txt"  # the union has the text kNN's top 2


def test_rrf_is_the_standard_sum_at_equal_weights():
    a, b = [Hit("x", 0, {}), Hit("y", 0, {})], [Hit("y", 0, {})]
    scores = rrf_scores([a, b], [0.5, 0.5])
    assert scores["x"] == pytest.approx(1 / 61) and scores["y"] == pytest.approx(1 / 62 + 1 / 61)


def test_strategy_errors():
    with pytest.raises(QueryError, match="unknown strategy"):
        SearchParams(strategy="magic")
    with pytest.raises(QueryError, match="photo"):
        search(TOY, "c", EncodedQuery(words_vector=unit(0, 1)), SearchParams(strategy="image_knn", explain=False))
    only_text = search(TOY, "c", EncodedQuery(words_vector=unit(0, 1)),
                       SearchParams(k=1, strategy="rrf", explain=False))
    assert [r.item_id for r in only_text.results] == ["txt"]  # one modality: every client-side fusion is its kNN


# ------------------------------------------------------------------------------------ hybrid, on a real store
# A shop of five: the photos lie on a circle (a white tee's photo is nearest the white tee, then the red tee, the
# red dress is far), the documents say what each item is.

SHOP = {"white-tee": ("white tshirt", unit(1, 0.05, 0)), "red-tee": ("red tshirt", unit(1, 0.3, 0.1)),
        "red-dress": ("red dress", unit(0, 1, 0.2)), "blue-jeans": ("blue jeans denim", unit(0.1, 0, 1)),
        "black-tee": ("black tshirt", unit(1, 0.1, 0.3))}


def clip_text(words: str) -> np.ndarray:
    """A stand-in for CLIP's text tower: the mean of the photos of the items whose documents hold the words."""
    hits = [photo for doc, photo in SHOP.values() if set(words.split()) & set(doc.split())]
    return unit(*np.mean(hits, axis=0))


@pytest.fixture
def shop(store):
    avg = lexical.mean_length(doc for doc, _ in SHOP.values())
    store.create_collection(CollectionSpec(name="shop", model="toy", dim=3, filter_fields=("kind",),
                                           bm25_avg_len=avg))
    store.upsert("shop", [item_point(item, {"text": doc, "kind": doc.split()[-1]}, photo, clip_text(doc),
                                     lexical.document_vector(doc, avg)) for item, (doc, photo) in SHOP.items()])
    return store


def composed(words: str) -> EncodedQuery:
    """The white tee's photo, and words."""
    return EncodedQuery(photo_vector=SHOP["white-tee"][1], words_vector=clip_text(words),
                        words_bm25=lexical.query_vector(words), phrase=words)


@pytest.mark.parametrize("strategy", ["hybrid_rrf", "hybrid_dbsf", "hybrid_rescore"])
def test_this_but_red_matches_the_photo_and_the_words(shop, strategy):
    """"This t-shirt, but red": the photo alone finds white tees, the words alone red things; together, the red tee."""
    outcome = search(shop, "shop", composed("red"), SearchParams(k=3, k1=5, strategy=strategy,
                                                                  exclude=("white-tee",)))
    first = outcome.results[0]
    assert first.item_id == "red-tee", [r.item_id for r in outcome.results]
    assert first.matched_words == ["red"] and first.lexical_score > 0
    assert first.photo_score == pytest.approx(float(SHOP["red-tee"][1] @ SHOP["white-tee"][1]), abs=1e-4)
    assert first.words_photo_score is not None and first.words_document_score is not None
    assert "white-tee" not in {r.item_id for r in outcome.results}


def test_several_words_pick_the_items_that_have_them_all(shop):
    """"This, but a red dress": the red t-shirt looks more like the photo, but only the red dress has both words."""
    outcome = search(shop, "shop", composed("red dress"), SearchParams(k=1, k1=5, strategy="hybrid_rescore"))
    assert [r.item_id for r in outcome.results] == ["red-dress"]
    assert outcome.results[0].matched_words == ["red", "dress"]
    wider = search(shop, "shop", composed("red dress"), SearchParams(k=3, k1=5, strategy="hybrid_rescore",
                                                                     exclude=("white-tee",)))
    assert [r.item_id for r in wider.results][0] == "red-dress" and len(wider.results) == 3  # then any word


def test_words_in_no_document_fall_back_to_their_meaning(shop):
    """hybrid_rescore takes its candidates from the words' lexical matches; with none, from their CLIP neighbours."""
    query = EncodedQuery(photo_vector=SHOP["white-tee"][1], words_vector=clip_text("red"),
                         words_bm25=lexical.query_vector("crimson"), phrase="crimson")
    outcome = search(shop, "shop", query, SearchParams(k=2, k1=2, strategy="hybrid_rescore", exclude=("white-tee",)))
    assert outcome.results[0].item_id == "red-tee" and outcome.results[0].matched_words == []


def test_words_alone_rank_by_every_word_signal(shop):
    outcome = search(shop, "shop", EncodedQuery(words_vector=clip_text("blue jeans"),
                                                words_bm25=lexical.query_vector("jeans"), phrase="jeans"),
                     SearchParams(k=2))
    assert outcome.strategy == strategies.defaults()["text"] and outcome.results[0].item_id == "blue-jeans"
    assert outcome.results[0].photo_score is None and outcome.results[0].matched_words == ["jeans"]


def test_bm25_alone_and_filters_on_every_leg(shop):
    query = composed("red tshirt")
    lexical_only = search(shop, "shop", query, SearchParams(k=5, strategy="bm25"))
    assert lexical_only.results[0].item_id == "red-tee"  # both words
    filtered = search(shop, "shop", query, SearchParams(k=5, filters={"kind": "dress"}))
    assert [r.item_id for r in filtered.results] == ["red-dress"]


def test_every_strategy_runs_on_a_composed_query(shop):
    for strategy in STRATEGIES:
        outcome = search(shop, "shop", composed("red tshirt"), SearchParams(k=3, k1=5, strategy=strategy))
        assert len(outcome.results) == 3 and outcome.strategy == strategy
        if strategy != "hybrid_rescore":  # its items with all the words come first, whatever their score
            assert [r.score for r in outcome.results] == sorted((r.score for r in outcome.results), reverse=True)




class CountingStore:
    """A store that counts the calls it forwards."""

    def __init__(self, store):
        self.store, self.calls = store, Counter()

    def __getattr__(self, name):
        self.calls[name] += 1
        return getattr(self.store, name)


@pytest.mark.parametrize("strategy", ["hybrid_rescore", "image_knn", "two_stage"])
def test_results_are_explained_from_the_vectors_the_search_read(shop, strategy):
    """The search brings its results' vectors along: explaining them reads no point again, and says the same."""
    counting = CountingStore(shop)
    outcome = search(counting, "shop", composed("red"), SearchParams(k=3, k1=5, strategy=strategy))
    assert counting.calls["retrieve"] == 0, counting.calls
    first = outcome.results[0]
    doc, photo = SHOP[first.item_id]
    assert first.photo_score == pytest.approx(float(photo @ SHOP["white-tee"][1]), abs=1e-4)
    assert first.words_document_score == pytest.approx(float(clip_text(doc) @ clip_text("red")), abs=1e-4)


@pytest.mark.parametrize("written", ["in id order", "reversed"])
@pytest.mark.parametrize("strategy", ["image_knn", "hybrid_rescore"])
def test_duplicate_photos_rank_by_item_id_whatever_the_write_order(shop, written, strategy):
    """Three copies of the red tee's listing score exactly as it does; all four come back in id order, as they
    would from a copy of the store."""
    doc, photo = SHOP["red-tee"]
    copies = [item_point(f"copy-{i}", {"text": doc, "kind": "tshirt"}, photo, clip_text(doc),
                         lexical.document_vector(doc, 2.0)) for i in range(3)]
    shop.upsert("shop", copies if written == "in id order" else copies[::-1])
    params = SearchParams(k=4, k1=5, strategy=strategy, explain=False, exclude=("white-tee",))
    outcome = search(shop, "shop", composed("red"), params)
    assert [r.item_id for r in outcome.results] == ["copy-0", "copy-1", "copy-2", "red-tee"]
    assert len({r.score for r in outcome.results}) == 1


# ------------------------------------------------------------------------------- the full offline index (slow)


@pytest.fixture(scope="module")
def catalog_rows(offline_catalog):
    return {row["id"]: row for row in csv.DictReader((offline_catalog / "catalog.csv").open())}


def _field(outcome, rows, name: str = "articleType") -> list[str]:
    return [rows[r.item_id][name] for r in outcome.results]


def test_words_naming_a_colour_and_a_type_find_both(search_service, catalog_rows):
    """The top 5 are that type in that colour (or all there are of them: the catalog has 3 red dresses)."""
    for words, colour, kind in (("black trousers", "Black", "Trousers"), ("red dress", "Red", "Dresses"),
                                ("white casual shoes", "White", "Casual Shoes")):
        outcome = search_service.search(text=words, params=SearchParams(k=5))
        pairs = list(zip(_field(outcome, catalog_rows, "baseColour"), _field(outcome, catalog_rows)))
        exist = sum((r["baseColour"], r["articleType"]) == (colour, kind) for r in catalog_rows.values())
        assert pairs[:min(5, exist)] == [(colour, kind)] * min(5, exist), (words, pairs)


def test_shoe_photo_finds_shoes(search_service, catalog_rows, offline_catalog):
    shoe = "10127"  # a catalog casual-shoe photo
    outcome = search_service.search(image=(offline_catalog / "images" / f"{shoe}.jpg").read_bytes(),
                                    params=SearchParams(k=5, exclude=(shoe,)))
    assert shoe not in [r.item_id for r in outcome.results]
    assert any("Shoes" in t for t in _field(outcome, catalog_rows))


def test_filters_restrict_every_leg(search_service, catalog_rows):
    params = SearchParams(k=10, filters={"gender": "Women", "articleType": ["Tops", "Dresses"]})
    outcome = search_service.search(text="red", params=params)
    assert outcome.results
    for r in outcome.results:
        assert catalog_rows[r.item_id]["gender"] == "Women"
        assert catalog_rows[r.item_id]["articleType"] in ("Tops", "Dresses")


def test_this_tshirt_but_red(search_service, catalog_rows, offline_catalog):
    """A white t-shirt photo plus words: "but in red" finds red things that look like it, "red tshirt" red
    t-shirts (the items with all the words come first), where the photo alone finds white ones. Every "but in red"
    result has the word in its document, which is not always its colour (the brand Red Tape makes white shoes)."""
    tee = "10003"  # Nike Women As Nike Eleme White T-Shirt
    photo = (offline_catalog / "images" / f"{tee}.jpg").read_bytes()
    alone = search_service.search(image=photo, params=SearchParams(k=10, exclude=(tee,)))
    but_red = search_service.search(image=photo, text="but in red", params=SearchParams(k=10, exclude=(tee,)))
    red_tee = search_service.search(image=photo, text="red tshirt", params=SearchParams(k=10, exclude=(tee,)))
    colours = lambda o: _field(o, catalog_rows, "baseColour")  # noqa: E731
    assert colours(but_red).count("Red") >= 8 and colours(alone).count("Red") < 5
    assert all(r.matched_words == ["red"] for r in but_red.results)
    assert all(None not in (r.photo_score, r.words_photo_score, r.words_document_score)
               for r in but_red.results)  # explained
    assert list(zip(colours(red_tee), _field(red_tee, catalog_rows))) == [("Red", "Tshirts")] * 10


def test_more_like_this_uses_the_items_stored_vectors(search_service, catalog_rows):
    shoe = "10127"
    outcome = search_service.search(item_id=shoe, params=SearchParams(k=5))
    assert shoe not in [r.item_id for r in outcome.results]
    assert set(_field(outcome, catalog_rows, "masterCategory")) == {"Footwear"}
    assert outcome.results[0].photo_score > 0.5 and outcome.results[0].words_document_score is not None
    with pytest.raises(QueryError, match="no catalog item"):
        search_service.search(item_id="no-such-item")


def test_empty_query_is_refused(search_service):
    with pytest.raises(QueryError):
        search_service.search(text="   ")
