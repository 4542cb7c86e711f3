"""The search orchestration (retrieval/service.py) on a real edge store: the generation and its fit are checked once,
an old collection or another model is refused with the remedy, "more like this" searches by the item's stored
vectors, words given with an item replace its own."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval import lexical
from retrieval.search import EncodedQuery, SearchParams
from retrieval.service import ItemNotFound, Searcher, merged
from retrieval.rows import item_point
from retrieval.store.base import CollectionMismatch
from schemas.collection import IMAGE_VECTOR, CollectionSpec
from tests.toys import unit

DOCS = {"a": ("red tshirt", unit(1, 0.1)), "b": ("red dress", unit(0.2, 1)), "c": ("white tshirt", unit(1, 0))}


def fill(store, name: str = "gen-1", **spec) -> None:
    spec = CollectionSpec(name=name, model="m", dim=2, **spec)
    store.create_collection(spec)
    for item, (doc, photo) in DOCS.items():
        point = item_point(item, {"text": doc}, photo, photo, lexical.document_vector(doc, 2.0))
        point.vectors = {k: v for k, v in point.vectors.items() if k in spec.vectors}  # only those the collection has
        store.upsert(name, [point])
    store.set_alias("shop", name)


def test_an_old_collection_is_refused_naming_rebuild(store):
    fill(store, vectors=(IMAGE_VECTOR,))  # what the index job wrote before documents had vectors
    with pytest.raises(CollectionMismatch, match="no text, bm25, terms vectors.*--rebuild"):
        Searcher(store, "shop", "m").begin(text="red")


def test_another_model_is_refused(store):
    fill(store)
    with pytest.raises(CollectionMismatch, match="model 'other'.*--rebuild"):
        Searcher(store, "shop", "other").begin(text="red")


def test_more_like_this_searches_by_the_items_stored_vectors(store):
    fill(store)
    searcher = Searcher(store, "shop", "m")
    pending = searcher.begin(item_id="a")
    assert pending.exclude == ("a",) and pending.image is None and pending.phrase is None
    assert np.allclose(pending.item.photo_vector, DOCS["a"][1]) and pending.item.words_bm25.values == (1.0, 1.0)
    outcome = searcher.finish(pending, EncodedQuery(), SearchParams(k=2))
    # a is "red tshirt": nothing else has both words; of those with one, the white tshirt looks more like it
    assert [r.item_id for r in outcome.results] == ["c", "b"] and outcome.mode == "image+text"
    with pytest.raises(ItemNotFound):
        searcher.begin(item_id="zzz")


def test_words_given_with_an_item_replace_its_own():
    item = EncodedQuery(photo_vector=unit(1, 0), words_vector=unit(0, 1),
                        words_bm25=lexical.query_vector("red tshirt"))
    given = EncodedQuery(words_vector=unit(1, 1), words_bm25=lexical.query_vector("dress"), phrase="dress")
    both = merged(item, given)
    assert np.allclose(both.photo_vector, item.photo_vector) and np.allclose(both.words_vector, given.words_vector)
    assert both.words_bm25 == given.words_bm25 and both.phrase == "dress"
    assert merged(item, EncodedQuery()).words_bm25 == item.words_bm25
