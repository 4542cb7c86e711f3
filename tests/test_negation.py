"""Negative words typed with the words (retrieval/negation.py): "-floral" and "not floral" are read out of the search
box's text, and /search and /recommend leave out the items whose documents have them."""

from __future__ import annotations

import pytest

from retrieval import lexical, negation, recommend
from retrieval.recommend import RecommendParams
from retrieval.search import EncodedQuery, QueryError, SearchParams
from tests.test_recommend import searcher  # noqa: F401 (the fixture: four products in three colours)
from tests.test_service import fill
from tests.toys import unit


@pytest.mark.parametrize("typed, words, refused", [
    ("summer dress, not floral", "summer dress", "floral"),
    ("summer dress -floral", "summer dress", "floral"),
    ("Red T-shirt -Stripes", "Red T-shirt", "stripes"),  # a hyphen inside a word is no negation
    ("dress, not floral, long", "dress, long", "floral"),
    ("-floral not lace dress", "dress", "floral lace"),
    ("NOT blue", None, "blue"),
    ("cannot knot", "cannot knot", None),  # "not" inside a word is no negation
    ("red  dress ", "red  dress", None),  # without a negation the words stay as typed
    ("-20 off", "-20 off", None),  # a number is no word to refuse
    ("not", "not", None),
    ("", None, None),
    (None, None, None),
])
def test_negations_are_read_out_of_the_words(typed, words, refused):
    assert negation.split(typed) == (words, refused)


def test_a_document_has_a_word_by_its_bm25_tokens():
    refused = lexical.query_vector("floral")
    assert negation.has_any("Blue Florals dress", refused, "english")  # stemmed as the index stems it
    assert not negation.has_any("blue dress", refused, "english")


def test_search_leaves_out_the_documents_with_a_typed_negative_word(store):
    from retrieval.service import Searcher

    fill(store)  # a: red tshirt, b: red dress, c: white tshirt
    over_words = Searcher(store, "shop", "m")
    for typed in ("red -tshirt", "red, not tshirt"):
        pending = over_words.begin(text=typed)
        assert (pending.phrase, pending.not_text) == ("red", "tshirt")
        outcome = over_words.finish(pending, EncodedQuery(words_vector=unit(1, 1)), SearchParams(k=3))
        assert [r.item_id for r in outcome.results] == ["b"]
    plain = over_words.finish(over_words.begin(text="red"), EncodedQuery(words_vector=unit(1, 1)), SearchParams(k=3))
    assert {r.item_id for r in plain.results} >= {"a", "b"}
    alone = over_words.begin(text="-tshirt")  # refusals alone are no query: searched as typed
    assert (alone.phrase, alone.not_text) == ("-tshirt", None)
    with_item = over_words.begin(text="-tshirt", item_id="b")
    assert (with_item.phrase, with_item.not_text) == (None, "tshirt")
    with pytest.raises(QueryError):
        over_words.begin(text="  ")


def test_recommend_reads_negations_in_its_text_as_not_text(searcher):  # noqa: F811
    params = RecommendParams(liked=("dress-red",), text="-floral", not_text="stripes", k=11)
    assert recommend.with_typed_negations(params).not_text == "stripes floral"
    assert recommend.with_typed_negations(params).text is None
    outcome = recommend.finish(searcher, recommend.begin(searcher, params), None, params)
    got = {r.item_id for r in outcome.results}
    assert got and not got & {"skirt-red", "dress-green"}  # the floral ones
    typed_again = recommend.with_typed_negations(recommend.with_typed_negations(params))
    assert typed_again == recommend.with_typed_negations(params)
