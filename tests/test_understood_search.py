"""hybrid_understood on a toy catalog with "Shirt" beside "T-shirt" and "Blue" beside "Dark Blue": the value the
shopper typed ranks first, with and without a photo; synonyms and a misspelt colour find it; results say why."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval import lexical
from retrieval.prepare import with_words
from retrieval.search import EncodedQuery, SearchParams, search
from retrieval.service import catalog_words
from retrieval.rows import item_point
from schemas.collection import CollectionSpec
from tests.toys import unit

# Photos: shirts and T-shirts look alike (the first axis), a colour adds its own axis. Every T-shirt's document
# also says "shirt", and every Dark Blue one "blue": loose words match both, whole values only one.
COLOURS = {"Blue": unit(0, 1, 0, 0), "Dark Blue": unit(0, 0.9, 0.3, 0), "White": unit(0, 0, 0, 1),
           "Light Pink": unit(0, 0, 1, 0)}
TYPES = {"Shirt": unit(1, 0, 0, 0), "T-shirt": unit(0.9, 0, 0, 0.1)}
ITEMS = {f"{t.lower()}-{c.lower().replace(' ', '-')}-{n}": (t, c) for t in TYPES for c in COLOURS for n in (1, 2)}


def photo(kind: str, colour: str, n: int = 1) -> np.ndarray:
    return unit(*(2 * TYPES[kind] + COLOURS[colour] + 0.01 * n))


def document(kind: str, colour: str) -> str:
    return f"{colour} {kind}" + (", a knitted shirt" if kind == "T-shirt" else "")


def clip_text(words: str) -> np.ndarray:
    """A stand-in for CLIP's text tower: the mean photo of the items whose documents share a word with `words`."""
    asked = set(lexical.query_vector(words).indices)
    near = [photo(t, c) for t, c in ITEMS.values() if asked & set(lexical.query_vector(document(t, c)).indices)]
    return unit(*np.mean(near, axis=0)) if near else unit(1, 1, 1, 1)


@pytest.fixture
def shop(store):
    docs = {item: document(t, c) for item, (t, c) in ITEMS.items()}
    avg = lexical.mean_length(docs.values())
    counts = {"type": {t: 2 * len(COLOURS) for t in TYPES}, "colour": {c: 2 * len(TYPES) for c in COLOURS}}
    store.create_collection(CollectionSpec(name="shop", model="toy", dim=4, filter_fields=("type", "colour"),
                                           filter_values=counts, bm25_avg_len=avg))
    store.upsert("shop", [item_point(item, {"text": docs[item], "type": t, "colour": c}, photo(t, c, int(item[-1])),
                                     clip_text(docs[item]), lexical.document_vector(docs[item], avg))
                          for item, (t, c) in ITEMS.items()])
    return store


def query(shop, words: str, with_photo: np.ndarray | None = None) -> EncodedQuery:
    spec = shop.collection_spec("shop")
    return with_words(EncodedQuery(photo_vector=with_photo, words_vector=clip_text(words)), words,
                      spec.bm25_language, catalog_words(shop, "shop", spec))


def top(shop, words: str, with_photo=None, k: int = 2, **params):
    return search(shop, "shop", query(shop, words, with_photo),
                  SearchParams(k=k, strategy="hybrid_understood", **params))


@pytest.mark.parametrize("with_photo", [None, photo("T-shirt", "White", 9)], ids=["words", "photo+words"])
def test_the_exact_values_rank_first(shop, with_photo):
    outcome = top(shop, "blue shirt", with_photo)
    assert {r.item_id for r in outcome.results} == {"shirt-blue-1", "shirt-blue-2"}
    assert outcome.results[0].matched_values == ["colour: Blue", "type: Shirt"]
    assert [(s.typed, s.field, s.names) for s in outcome.understood.spans] == [
        ("blue", "colour", ("Blue",)), ("shirt", "type", ("Shirt",))]


def test_a_partial_match_follows_the_exact_ones(shop):
    """Past the two light pink shirts, the light pink T-shirts (one value of two) come before other shirts."""
    outcome = top(shop, "light pink shirt", photo("Shirt", "White", 9), k=4)
    ids = [r.item_id for r in outcome.results]
    assert set(ids[:2]) == {"shirt-light-pink-1", "shirt-light-pink-2"}
    assert all(r.matched_values for r in outcome.results[:2])


def test_the_photo_orders_the_items_with_the_named_values(shop):
    """"this, but dark blue": among the dark blue items, the photo's kind first."""
    outcome = top(shop, "dark blue", photo("T-shirt", "White", 9), k=4)
    ids = [r.item_id for r in outcome.results]
    assert all("dark-blue" in i for i in ids) and ids[0].startswith("t-shirt")


def test_synonyms_and_a_misspelt_colour_find_the_items(shop):
    tees = top(shop, "blue tees")
    assert {r.item_id for r in tees.results} == {"t-shirt-blue-1", "t-shirt-blue-2"}
    assert tees.understood.spans[1].typed == "tees" and tees.understood.spans[1].names == ("T-shirt",)
    misspelt = top(shop, "bleu shirt")
    assert misspelt.understood.corrections == {"bleu": "blue"}
    assert {r.item_id for r in misspelt.results} == {"shirt-blue-1", "shirt-blue-2"}


def test_named_values_never_filter(shop):
    """A tier, not a filter: past the items with the named values come the others, and the caller's filters
    still hold on every tier."""
    outcome = top(shop, "blue shirt", k=6)
    assert len(outcome.results) == 6 and not outcome.results[-1].matched_values == ["colour: Blue", "type: Shirt"]
    filtered = top(shop, "blue shirt", k=6, filters={"type": "T-shirt"})
    assert {r.payload["type"] for r in filtered.results} == {"T-shirt"}
    contradicted = top(shop, "blue shirt", k=2, filters={"colour": "White"})
    assert [r.payload["colour"] for r in contradicted.results] == ["White", "White"]


def test_the_photo_says_what_most_of_its_neighbours_share_and_the_catalog_does_not():
    from retrieval.evidence import agreed
    from retrieval.store.base import Hit

    def hits(*values):
        return [Hit(str(i), 1.0, {"type": v, "sizes": ["S", "M"]}) for i, v in enumerate(values)]

    catalog = {"Shirt": 10, "T-shirt": 10, "Jeans": 80}
    assert agreed(hits(*["Shirt"] * 7, *["Jeans"] * 3), "type", catalog) == "Shirt"  # 0.7 of them, 0.1 of all
    assert agreed(hits(*["Shirt"] * 5, *["Jeans"] * 5), "type", catalog) is None  # no majority
    assert agreed(hits(*["Jeans"] * 9, "Shirt"), "type", catalog) is None  # 0.9, but 0.8 of the catalog is Jeans
    assert agreed(hits("Shirt"), "sizes", {"S": 5}) is None  # a list-valued field does not vote


def test_the_photos_values_make_the_first_tier_and_the_words_win(shop):
    """"this, but blue" with a photo its neighbours agree is a T-shirt: blue T-shirts, then the other blue items;
    on this catalog of 16 the 20 neighbours are every item, which agree on nothing, so the photo adds no tier."""
    from dataclasses import replace

    from retrieval import evidence

    understood = query(shop, "blue", photo("T-shirt", "White", 9))
    voted = replace(understood, photo_values={"type": "T-shirt", "colour": "White"})
    tiers = evidence.plans(voted, 10, 0.5)
    assert [t.narrowed for t in tiers[:3]] == [{"type": "T-shirt", "colour": "Blue"}, {"colour": "Blue"}, None]
    assert evidence.with_photo_values(shop, "shop", understood, SearchParams()).photo_values is None
