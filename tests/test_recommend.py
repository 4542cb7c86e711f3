"""Recommendations (retrieval/recommend.py) on a real edge store: liked items and photos pull, disliked ones push,
negative words leave items out, one result per product group, MMR mixes products, and every result names its nearest
examples."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval import lexical, recommend
from retrieval.recommend import (EncodedPhotos, GroupFieldError, ItemsNotFound, NoLikedExample, RecommendParams,
                                  one_per_group)
from retrieval.rows import item_point
from retrieval.search import EncodedQuery, FilterError
from retrieval.service import Searcher
from retrieval.store.base import Hit
from schemas.collection import CollectionSpec
from tests.toys import unit

# Four products, three colours each: the colours of a product are near-duplicate photos.
PRODUCTS = {"dress": (1, 0, 0), "skirt": (0.8, 0.6, 0), "shirt": (0, 1, 0), "shoe": (0, 0, 1)}
COLOURS = {"red": (0.06, 0, 0), "blue": (0, 0.06, 0), "green": (0, 0, 0.06)}
FLORAL = {"skirt-red", "dress-green"}


def catalog() -> dict[str, tuple[dict, np.ndarray]]:
    items = {}
    for product, look in PRODUCTS.items():
        for colour, tint in COLOURS.items():
            item = f"{product}-{colour}"
            words = f"{colour} {'floral ' if item in FLORAL else ''}{product}"
            items[item] = ({"product_group": product, "baseColour": colour, "shop": "one", "text": words},
                           unit(*np.add(look, tint)))
    return items


def value_counts(fields: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """The catalog's values of each field with their item counts, as an index job records them in the spec."""
    counts: dict[str, dict[str, int]] = {}
    for payload, _ in catalog().values():
        for name in fields:
            counts.setdefault(name, {})[payload[name]] = counts.get(name, {}).get(payload[name], 0) + 1
    return counts


@pytest.fixture
def searcher(store) -> Searcher:
    """The catalog without value counts in its spec (so the liked items' shared values are off; counted_searcher has
    them)."""
    return searcher_of(store, CollectionSpec(name="gen-1", model="m", dim=3,
                                             filter_fields=("product_group", "baseColour")))


@pytest.fixture
def counted_searcher(store) -> Searcher:
    fields = ("product_group", "baseColour", "shop")
    return searcher_of(store, CollectionSpec(name="gen-1", model="m", dim=3, filter_fields=fields,
                                             filter_values=value_counts(fields)))


def searcher_of(store, spec: CollectionSpec) -> Searcher:
    store.create_collection(spec)
    store.upsert("gen-1", [item_point(i, payload, photo, photo, lexical.document_vector(payload["text"], 2.0))
                           for i, (payload, photo) in catalog().items()])
    store.set_alias("shop", "gen-1")
    return Searcher(store, "shop", "m")


def run(searcher: Searcher, words: EncodedQuery | None = None, **asked):
    params = RecommendParams(**{"k": 5, **asked})
    return recommend.finish(searcher, recommend.begin(searcher, params), words, params)


def ids(outcome) -> list[str]:
    return [r.item_id for r in outcome.results]


def test_liked_items_pull_their_look_and_are_left_out(searcher):
    outcome = run(searcher, liked=("dress-red",), k=3)
    assert sorted(ids(outcome)[:2]) == ["dress-blue", "dress-green"] and "dress-red" not in ids(outcome)
    assert {r.closest_liked for r in outcome.results} == {"dress-red"}
    first = outcome.results[0]
    assert first.closest_liked_score == pytest.approx(float(catalog()[first.item_id][1] @ catalog()["dress-red"][1]),
                                                      abs=1e-5)
    assert first.avoided_disliked is None and outcome.strategy == "average_vector"  # liked items only
    assert set(outcome.timings_ms) == {"encode_ms", "search_ms", "explain_ms", "total_ms"}


def test_each_result_names_the_liked_item_it_is_closest_to_and_the_disliked_one_it_avoided(searcher):
    outcome = run(searcher, liked=("dress-red", "shoe-red"), disliked=("shirt-red", "skirt-blue"), k=6)
    for result in outcome.results:
        product = result.item_id.split("-")[0]
        assert result.closest_liked == {"dress": "dress-red", "shoe": "shoe-red"}.get(product, result.closest_liked)
        assert result.avoided_disliked in ("shirt-red", "skirt-blue") and result.avoided_disliked_score is not None
    assert {"dress", "shoe"} == {i.split("-")[0] for i in ids(outcome)[:4]}


@pytest.mark.parametrize("strategy", ["best_score", "sum_scores"])  # average_vector: in the store contract tests
def test_a_disliked_item_pushes_its_look_down(searcher, strategy):
    # The skirt looks like the dress: liking the dress brings the skirts next; disliking a skirt sends them away.
    plain = ids(run(searcher, liked=("dress-red",), k=5, strategy=strategy))
    pushed = ids(run(searcher, liked=("dress-red",), disliked=("skirt-blue",), k=5, strategy=strategy))
    assert "skirt-red" in plain[:3] and "skirt-red" not in pushed[:3]


def test_what_two_liked_items_share_ranks_first_and_one_liked_item_has_no_tier(counted_searcher):
    """A liked red dress and a liked red shirt: the red items come first, though the other dresses look more like the
    dress; a value every item has (shop) says nothing. One liked item says nothing of which of its values mattered."""
    outcome = run(counted_searcher, liked=("dress-red", "shirt-red"), k=4)
    assert outcome.shared_values == {"baseColour": "red"}
    assert sorted(ids(outcome)[:2]) == ["shoe-red", "skirt-red"]
    plain = ids(run(counted_searcher, liked=("dress-red", "shirt-red"), k=4, shared_values=False))
    assert not set(plain[:2]) & {"shoe-red", "skirt-red"}
    single = run(counted_searcher, liked=("dress-red",), k=4)
    assert single.shared_values is None and ids(single) == ids(run(counted_searcher, liked=("dress-red",), k=4,
                                                                   shared_values=False))


def test_a_disliked_item_that_differs_from_the_liked_ones_sends_its_value_last(counted_searcher):
    """Liked red dress and shirt, disliked blue dress: after the red items, the green ones before any blue one."""
    liked = ("dress-red", "shirt-red")
    plain = ids(run(counted_searcher, liked=liked, k=8))
    avoiding = ids(run(counted_searcher, liked=liked, disliked=("dress-blue",), k=8, strategy="average_vector"))
    assert any(i.endswith("-blue") for i in plain[:6])
    assert [i.split("-")[1] for i in avoiding] == ["red"] * 2 + ["green"] * 4 + ["blue"] * 2


def test_one_result_per_product_group(searcher):
    outcome = run(searcher, liked=("dress-red",), k=4, group_by="product_group")
    assert [r.group for r in outcome.results][:2] == ["dress", "skirt"] and len({r.group for r in outcome.results}) == 4
    assert ids(outcome)[0] in ("dress-blue", "dress-green")


GROUPED = [{"liked": ("dress-red",)}, {"liked": ("dress-red", "shirt-red")},  # the second: a red tier first
           {"liked": ("dress-red", "shirt-red"), "diversity": 0.5},
           {"liked": ("shoe-blue",), "disliked": ("shirt-green",)}]


@pytest.mark.parametrize("asked", GROUPED)
def test_the_store_keeps_one_per_group_alike_on_every_backend(counted_searcher, asked):
    """One result per product on the edge store (the deeper list) and on qdrant-client (Qdrant's grouping query where
    the plan allows it), the liked items' red tier first: the same groups, order and scores (this toy catalog has
    exact ties, dress-blue and dress-green for one: either may stand for its group, tied groups in either order)."""
    from retrieval.store.factory import open_store
    from schemas.jobs import StoreConfig

    edge = run(counted_searcher, k=4, group_by="product_group", **asked)
    with open_store(StoreConfig(backend="local", path=":memory:")) as memory:
        memory.group_in_engine = True  # as a server does (local mode's own default is the deeper list)
        fields = ("product_group", "baseColour", "shop")
        client = run(searcher_of(memory, CollectionSpec(name="gen-1", model="m", dim=3, filter_fields=fields,
                                                        filter_values=value_counts(fields))),
                     k=4, group_by="product_group", **asked)
    def ranked(outcome) -> list[tuple[float, str]]:
        return sorted(((round(r.score, 5), r.group) for r in outcome.results), key=lambda s: (-s[0], s[1]))

    assert ranked(client) == ranked(edge)
    assert [r.score for r in client.results] == pytest.approx([r.score for r in edge.results], abs=1e-5)
    assert len({r.group for r in edge.results}) == len(edge.results) == 4
    if edge.shared_values:  # the red items of two other products, then the other products
        assert [r.payload["baseColour"] for r in edge.results][:2] == ["red", "red"]


def test_groups_are_kept_by_the_store_unless_the_service_drops_or_reorders_hits(counted_searcher, monkeypatch):
    """Negative words dropped from the candidates, or avoided values sent last, need the deeper list (a group's best
    hit dropped leaves its next one); otherwise each tier is one grouped store call."""
    calls = []
    grouping = counted_searcher.store.query_groups
    monkeypatch.setattr(counted_searcher.store, "query_groups", lambda *a, **kw: calls.append(a) or grouping(*a, **kw))
    tiered = run(counted_searcher, liked=("dress-red", "shirt-red"), k=4, group_by="product_group")
    assert len(calls) == 2 and len({r.group for r in tiered.results}) == 4
    calls.clear()
    refused = run(counted_searcher, liked=("dress-red",), k=4, group_by="product_group", not_text="floral")
    avoiding = run(counted_searcher, liked=("dress-red", "shirt-red"), disliked=("dress-blue",), k=4,
                   group_by="product_group")
    assert not calls and FLORAL.isdisjoint(ids(refused)) and len({r.group for r in refused.results}) == 4
    assert len({r.group for r in avoiding.results}) == 4


def test_diversity_mixes_products_and_zero_keeps_the_plain_order(searcher):
    plain = run(searcher, liked=("dress-red",), k=4)
    assert ids(run(searcher, liked=("dress-red",), k=4, diversity=0.0)) == ids(plain)
    mixed = run(searcher, liked=("dress-red",), k=4, diversity=0.7)

    def products(outcome) -> int:
        return len({i.split("-")[0] for i in ids(outcome)})

    assert products(mixed) > products(plain)
    assert {r.closest_liked for r in mixed.results} == {"dress-red"}  # MMR's results bring their vectors too


def test_negative_words_leave_out_the_items_that_have_them(searcher):
    outcome = run(searcher, liked=("dress-red",), k=10, not_text="floral")
    assert FLORAL.isdisjoint(ids(outcome)) and len(ids(outcome)) == 12 - 1 - len(FLORAL)


def test_negative_words_in_more_documents_than_the_store_lists_are_still_left_out(searcher, monkeypatch):
    monkeypatch.setattr(recommend, "NOT_WORDS_LIMIT", 1)  # the store leaves out one; the service drops the other
    outcome = run(searcher, liked=("dress-red",), k=10, not_text="floral")
    assert FLORAL.isdisjoint(ids(outcome)) and len(ids(outcome)) == 12 - 1 - len(FLORAL)


def test_words_pull_their_items_in(searcher):
    words = EncodedQuery(words_vector=unit(0, 0, 1))  # what the words' CLIP vector would be: shoes
    outcome = run(searcher, words, liked=("dress-red",), text="shoe", k=4)
    assert {"shoe-red", "shoe-blue", "shoe-green"} & set(ids(outcome)[:2])
    assert all(r.closest_liked == "dress-red" and r.closest_liked_score > -1 for r in outcome.results)


def test_filters_hold(searcher):
    outcome = run(searcher, liked=("dress-red",), filters={"baseColour": "green"}, k=5)
    assert {r.payload["baseColour"] for r in outcome.results} == {"green"} and len(outcome.results) == 4


def test_photos_are_examples_named_by_their_labels_and_not_left_out(searcher):
    """A shopper's photo of the red dress pulls like the item does, but the dress itself is no example item to leave
    out: it comes first. The disliked photo of a shirt is what every result avoided."""
    params = RecommendParams(liked_photos=(b"jpeg bytes",), disliked_photos=(b"more",), k=4)
    photos = EncodedPhotos(liked=(catalog()["dress-red"][1],), disliked=(catalog()["shirt-blue"][1],))
    outcome = recommend.finish(searcher, recommend.begin(searcher, params), None, params, photos)
    assert ids(outcome)[0] == "dress-red" and {r.closest_liked for r in outcome.results} == {"liked photo 1"}
    assert outcome.results[0].closest_liked_score == pytest.approx(1.0, abs=1e-5)
    assert {r.avoided_disliked for r in outcome.results} == {"disliked photo 1"}
    assert outcome.strategy == "best_score"  # a disliked photo counts as a disliked item


def test_items_and_photos_together_each_result_names_its_nearest(searcher):
    params = RecommendParams(liked=("shoe-red",), liked_photos=(b"a",), k=6, strategy="best_score")
    photos = EncodedPhotos(liked=(catalog()["dress-red"][1],))
    outcome = recommend.finish(searcher, recommend.begin(searcher, params), None, params, photos)
    assert "shoe-red" not in ids(outcome) and "dress-red" in ids(outcome)  # only the item is left out
    for result in outcome.results:
        product = result.item_id.split("-")[0]
        assert result.closest_liked == {"dress": "liked photo 1", "shoe": "shoe-red"}.get(product, result.closest_liked)


def test_photos_are_named_where_the_request_has_them_and_split_back_by_side():
    params = RecommendParams(liked=("x",), liked_photos=(b"a", b"b"), disliked_photos=(b"c",))
    assert recommend.photos_of(params) == [("liked_photos[0] (liked photo 1)", b"a"),
                                           ("liked_photos[1] (liked photo 2)", b"b"),
                                           ("disliked_photos[0] (disliked photo 1)", b"c")]
    vectors = [unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)]
    encoded = EncodedPhotos.of(params, vectors)
    assert encoded.liked == tuple(vectors[:2]) and encoded.disliked == (vectors[2],)


@pytest.mark.parametrize("asked", [{}, {"disliked": ("shirt-red",)}, {"disliked_photos": (b"x",)}])
def test_nothing_liked_is_refused_before_anything_is_read(searcher, asked):
    with pytest.raises(NoLikedExample, match="at least one liked item .liked. or liked photo .liked_photos."):
        recommend.begin(searcher, RecommendParams(**asked))


def test_unknown_items_are_named_together(searcher):
    with pytest.raises(ItemsNotFound, match="'nope-1', 'nope-2'"):
        run(searcher, liked=("dress-red", "nope-1"), disliked=("nope-2",))


def test_unknown_group_and_filter_fields_name_the_keyword_fields(searcher):
    with pytest.raises(GroupFieldError, match="'brand'.*product_group, baseColour"):
        run(searcher, liked=("dress-red",), group_by="brand")
    with pytest.raises(FilterError, match="colour"):
        run(searcher, liked=("dress-red",), filters={"colour": "red"})


def test_one_per_group_keeps_the_first_of_each_and_items_without_the_field_alone():
    hits = [Hit("a", 3, {"g": "x"}), Hit("b", 2, {"g": "x"}), Hit("c", 1, {}), Hit("d", 1, {}),
            Hit("e", 0, {"g": ["x", "y"]})]
    assert [h.item_id for h in one_per_group(hits, "g", 10)] == ["a", "c", "d", "e"]
    assert [h.item_id for h in one_per_group(hits, None, 2)] == ["a", "b"]


def test_the_group_by_field_is_not_a_shared_value_so_every_group_can_come(counted_searcher):
    """Two liked red items grouped by colour: red is not made a tier (it would fill it, one red result per group)."""
    outcome = run(counted_searcher, liked=("dress-red", "shirt-red"), k=3, group_by="baseColour")
    assert outcome.shared_values is None and len(outcome.results) == 3
    assert sorted(r.group for r in outcome.results) == ["blue", "green", "red"]


def test_shared_values_a_filter_contradicts_make_no_tier_and_are_not_reported(counted_searcher):
    outcome = run(counted_searcher, liked=("dress-red", "shirt-red"), k=3, filters={"baseColour": "blue"})
    assert outcome.shared_values is None and {r.payload["baseColour"] for r in outcome.results} == {"blue"}
