"""Generations behind an alias: a writer reuses the current one only when it fits (and says how to rebuild), resumes
what a crashed run left, and publishing never loses the last good index."""

from __future__ import annotations

import pytest

from retrieval.generations import publish, target_collection
from retrieval.store.base import CollectionMismatch
from schemas.collection import IMAGE_VECTOR, CollectionSpec


def spec(**fields) -> CollectionSpec:
    return CollectionSpec(**{"name": "shop", "model": "m", "dim": 4, **fields})


def test_a_fitting_generation_is_reused_with_its_own_spec(store):
    first = target_collection(store, spec(bm25_avg_len=7.0), rebuild=False)
    store.set_alias("shop", first.name)
    again = target_collection(store, spec(bm25_avg_len=9.0), rebuild=False)
    assert first.is_new and not again.is_new and again.name == first.name
    assert again.spec.bm25_avg_len == 7.0  # the documents already there were weighed with its mean length


def test_an_old_generation_is_refused_naming_rebuild(store):
    old = spec(vectors=(IMAGE_VECTOR,)).model_copy(update={"name": "shop-old"})
    store.create_collection(old)
    store.set_alias("shop", "shop-old")
    with pytest.raises(CollectionMismatch, match="no text, bm25, terms vectors.*--rebuild"):
        target_collection(store, spec(), rebuild=False)
    target = target_collection(store, spec(), rebuild=True)
    assert target.is_new and target.name != "shop-old"


def generation(store, name: str, complete: bool, **fields) -> str:
    store.create_collection(spec(**fields).model_copy(update={"name": name, "complete": complete}))
    return name


def test_a_rebuild_resumes_the_generation_a_crashed_run_left(store):
    generation(store, "shop-1-a", True, catalog_root="/cat")
    store.set_alias("shop", "shop-1-a")
    generation(store, "shop-2-c", False, catalog_root="/cat")  # killed half-way
    target = target_collection(store, spec(catalog_root="/cat"), rebuild=True)
    assert (target.name, target.resumed, target.is_new) == ("shop-2-c", True, True)
    other = target_collection(store, spec(catalog_root="/elsewhere"), rebuild=True)
    assert not other.resumed and other.name not in ("shop-2-c", "shop-1-a")  # another catalog: a new generation
    fresh = target_collection(store, spec(catalog_root="/cat"), rebuild=True, resume=False)
    assert not fresh.resumed and not store.collection_spec(fresh.name).complete


@pytest.mark.parametrize("changed", [{"bm25_avg_len": 9.0}, {"filter_fields": ("colour",)},
                                     {"model": "other"}])
def test_a_partial_generation_read_otherwise_is_not_resumed(store, changed):
    """Its documents were weighed with another mean length, indexed for other filters, or encoded by another model:
    continuing it would mix two runs in one generation."""
    generation(store, "shop-2-c", False, catalog_root="/cat", bm25_avg_len=7.0)
    same = target_collection(store, spec(catalog_root="/cat", bm25_avg_len=7.0), rebuild=True)
    assert same.resumed and same.name == "shop-2-c"
    other = target_collection(store, spec(**{"catalog_root": "/cat", "bm25_avg_len": 7.0, **changed}), rebuild=True)
    assert not other.resumed and other.name != "shop-2-c"


def test_publish_marks_complete_keeps_the_rollback_target_and_removes_dead_partials(store):
    names = [generation(store, f"shop-{i}", complete) for i, complete in enumerate((True, True, False, False))]
    b, a, c, d = names  # b older complete, a the current one, c a dead run's partial, d this run's
    store.set_alias("shop", a)
    published = publish(store, "shop", d, keep=1)
    assert store.resolve_alias("shop") == d and store.collection_spec(d).complete
    assert published.kept == [a, d]  # keep=1 keeps d, and a stays: it is what the alias pointed at before
    assert published.dropped == [b] and published.removed_partial == [c]
    assert sorted(store.list_collections()) == [a, d]


def test_a_partial_never_displaces_a_complete_generation(store):
    a = generation(store, "shop-1", True)
    store.set_alias("shop", a)
    partial = generation(store, "shop-2", False)
    published = publish(store, "shop", generation(store, "shop-3", False), keep=2)
    assert partial in published.removed_partial and a in published.kept and not published.dropped
