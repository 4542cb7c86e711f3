"""Generations behind an alias: a writer reuses the current one only when it fits, and says how to rebuild."""

from __future__ import annotations

import pytest

from retrieval.generations import target_collection
from retrieval.store.base import CollectionMismatch
from retrieval.store.factory import open_store
from schemas.collection import IMAGE_VECTOR, CollectionSpec
from schemas.jobs import StoreConfig


@pytest.fixture
def store(tmp_path):
    opened = open_store(StoreConfig(backend="edge", path=tmp_path))
    yield opened
    opened.close()


def spec(**fields) -> CollectionSpec:
    return CollectionSpec(name="shop", model="m", dim=4, **fields)


def test_a_fitting_generation_is_reused_with_its_own_spec(store):
    name, created, is_new = target_collection(store, spec(bm25_avg_len=7.0), rebuild=False)
    store.set_alias("shop", name)
    again, found, again_new = target_collection(store, spec(bm25_avg_len=9.0), rebuild=False)
    assert is_new and not again_new and again == name
    assert found.bm25_avg_len == 7.0  # the documents already there were weighed with its mean length


def test_an_old_generation_is_refused_naming_rebuild(store):
    old = spec(vectors=(IMAGE_VECTOR,)).model_copy(update={"name": "shop-old"})
    store.create_collection(old)
    store.set_alias("shop", "shop-old")
    with pytest.raises(CollectionMismatch, match="no text, bm25 vectors.*--rebuild"):
        target_collection(store, spec(), rebuild=False)
    name, _, is_new = target_collection(store, spec(), rebuild=True)
    assert is_new and name != "shop-old"
