"""One contract suite run against every store backend we ship: edge, qdrant-client local on disk, and in memory."""

from __future__ import annotations

import os

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from retrieval.rows import item_point
from retrieval.store.base import (CollectionMismatch, CollectionMissing, Diverse, Fuse, Nearest, Point, Recommend,
                                  Rescore, StoreError, item_ids, one_per_group)
from retrieval.store.factory import open_store
from schemas.collection import BM25_VECTOR, IMAGE_VECTOR, TERMS_VECTOR, TEXT_VECTOR, CollectionSpec
from schemas.jobs import StoreConfig

DIM = 16
N = 60
GENDERS = ("Men", "Women", "Boys", "Girls", "Unisex")
COLOURS = ("Red", "Blue", "Black")


# A real Qdrant server joins the suite when one is given (the manual check in docs/cluster.md); CI has none.
SERVER_URL = os.environ.get("QDRANT_TEST_URL")
BACKENDS = ["edge", "local", "memory"] + (["server"] if SERVER_URL else [])


@pytest.fixture(params=BACKENDS)
def store_config(request, tmp_path) -> StoreConfig:
    if request.param == "memory":
        return StoreConfig(backend="local", path=":memory:")
    if request.param == "server":
        return StoreConfig(url=SERVER_URL, api_key=os.environ.get("QDRANT_TEST_API_KEY"))
    return StoreConfig(backend=request.param, path=tmp_path / "store")


@pytest.fixture
def store(store_config):
    with open_store(store_config) as opened:
        before = set(opened.list_collections())
        yield opened
        if store_config.url:  # leave a shared server as we found it
            for name in set(opened.list_collections()) - before:
                opened.delete_collection(name)


def edge_store(path):
    return open_store(StoreConfig(backend="edge", path=path))


def make_spec(name: str = "items", model: str = "model-a", dim: int = DIM) -> CollectionSpec:
    return CollectionSpec(name=name, model=model, dim=dim, filter_fields=("gender", "baseColour"))


def make_points(n: int = N, seed: int = 0) -> list[Point]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [Point(item_id=f"item-{i}", vectors={IMAGE_VECTOR: vectors[i]},
                  payload={"gender": GENDERS[i % 5], "baseColour": COLOURS[i % 3]}) for i in range(n)]


def fill(store, points: list[Point]):
    store.create_collection(make_spec())
    store.upsert("items", points)
    return store, points


@pytest.fixture
def filled(store):
    return fill(store, make_points())


def test_create_is_idempotent_and_records_the_spec(store):
    store.create_collection(make_spec())
    store.create_collection(make_spec())
    assert store.collection_spec("items") == make_spec()
    assert store.list_collections() == ["items"]


def test_create_with_another_model_names_both(store):
    store.create_collection(make_spec())
    with pytest.raises(CollectionMismatch, match="model-a") as caught:
        store.create_collection(make_spec(model="model-b", dim=32))
    assert "model-b" in str(caught.value)


def test_missing_collection_has_no_spec_and_cannot_be_searched(store):
    assert store.collection_spec("nope") is None
    with pytest.raises(CollectionMissing):
        store.search("nope", IMAGE_VECTOR, np.ones(DIM, np.float32), limit=1)


def test_upserting_the_same_items_twice_keeps_the_count(filled):
    store, points = filled
    store.upsert("items", points)
    assert store.count("items") == N


def test_exact_match_comes_first_and_results_are_sorted(filled):
    store, points = filled
    hits = store.search("items", IMAGE_VECTOR, points[7].vectors[IMAGE_VECTOR], limit=10)
    assert hits[0].item_id == "item-7"
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].payload == {"gender": GENDERS[7 % 5], "baseColour": COLOURS[7 % 3], "item_id": "item-7"}
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and len(hits) == 10


def test_optimize_keeps_the_points(filled):
    store, points = filled
    store.optimize("items")
    assert store.count("items") == N
    assert store.search("items", IMAGE_VECTOR, points[11].vectors[IMAGE_VECTOR], limit=1)[0].item_id == "item-11"


def test_search_returns_vectors_when_asked(filled):
    store, points = filled
    hit = store.search("items", IMAGE_VECTOR, points[3].vectors[IMAGE_VECTOR], limit=1, with_vectors=True)[0]
    assert np.allclose(hit.vectors[IMAGE_VECTOR], points[3].vectors[IMAGE_VECTOR], atol=1e-5)


def test_filters_restrict_results(filled):
    store, points = filled
    query = points[0].vectors[IMAGE_VECTOR]
    one = store.search("items", IMAGE_VECTOR, query, limit=N, query_filter={"gender": "Women"})
    assert len(one) == N // 5 and {h.payload["gender"] for h in one} == {"Women"}
    many = store.search("items", IMAGE_VECTOR, query, limit=N,
                        query_filter={"gender": ["Men", "Girls"], "baseColour": "Red"})
    expected = {p.item_id for p in points
                if p.payload["gender"] in ("Men", "Girls") and p.payload["baseColour"] == "Red"}
    assert {h.item_id for h in many} == expected


def test_retrieve_returns_stored_vectors_and_skips_missing(filled):
    store, points = filled
    hits = store.retrieve("items", ["item-5", "missing", "item-2"])
    assert [h.item_id for h in hits] == ["item-5", "item-2"]
    assert np.allclose(hits[0].vectors[IMAGE_VECTOR], points[5].vectors[IMAGE_VECTOR], atol=1e-5)
    assert hits[1].payload["gender"] == GENDERS[2] and hits[1].score == 0.0


def test_scroll_pages_through_every_point_once(filled):
    store, points = filled
    assert item_ids(store, "items", page=7) == {p.item_id for p in points}
    page, offset = store.scroll("items", 5, with_vectors=True)
    assert len(page) == 5 and offset is not None and page[0].vectors[IMAGE_VECTOR].shape == (DIM,)


def test_a_changed_spec_is_recorded(store):
    store.create_collection(make_spec().model_copy(update={"complete": False}))
    store.update_spec(make_spec().model_copy(update={"complete": True, "filter_values": {"gender": {"Men": 3}}}))
    found = store.collection_spec("items")
    assert found.complete and found.filter_values == {"gender": {"Men": 3}}


def test_facets_count_a_fields_values_and_aliases_are_listed(filled):
    store, points = filled
    counts = store.facet("items", "gender", 10)
    assert counts == {g: N // 5 for g in GENDERS} and list(counts.values()) == sorted(counts.values(), reverse=True)
    store.set_alias("current", "items")
    assert store.aliases() == {"current": "items"}


def test_alias_switches(store):
    for name in ("gen-1", "gen-2"):
        store.create_collection(make_spec(name))
    store.set_alias("items", "gen-1")
    assert store.resolve_alias("items") == "gen-1"
    store.set_alias("items", "gen-2")
    assert store.resolve_alias("items") == "gen-2"
    assert store.resolve_alias("other") is None


def test_delete_collection(filled):
    store, _ = filled
    store.delete_collection("items")
    store.delete_collection("items")  # absent: no error
    assert store.collection_spec("items") is None and store.list_collections() == []


def test_reopening_keeps_points_spec_and_aliases(store_config, filled):
    if str(store_config.path) == ":memory:":
        pytest.skip("an in-memory store does not outlive its client")
    store, points = filled
    store.set_alias("current", "items")
    store.close()
    with open_store(store_config) as reopened:
        assert reopened.count("items") == N
        assert reopened.collection_spec("items") == make_spec()
        assert reopened.resolve_alias("current") == "items"
        assert reopened.search("items", IMAGE_VECTOR, points[9].vectors[IMAGE_VECTOR], limit=1)[0].item_id == "item-9"


def test_a_with_block_closes_the_store_however_it_ends(store_config):
    """`with open_store(config) as store:` releases the store's folder lock (edge, local) even when the block
    raises, so the next open in this process gets it and finds the points written."""
    if str(store_config.path) == ":memory:":
        pytest.skip("an in-memory store does not outlive its client")
    with pytest.raises(RuntimeError, match="boom"), open_store(store_config) as store:
        store.create_collection(make_spec("with-block"))
        store.upsert("with-block", make_points(5))
        raise RuntimeError("boom")
    with open_store(store_config) as reopened:
        assert reopened.count("with-block") == 5
        reopened.delete_collection("with-block")  # a shared server is left as found


def test_threads_can_search_while_another_upserts(filled):
    store, points = filled

    def nearest(i: int) -> str:
        return store.search("items", IMAGE_VECTOR, points[i].vectors[IMAGE_VECTOR], limit=1)[0].item_id

    with ThreadPoolExecutor(4) as pool:
        writing = pool.submit(store.upsert, "items", points)
        assert list(pool.map(nearest, range(N))) == [p.item_id for p in points]
        writing.result()


def test_a_second_edge_store_cannot_open_a_shard_in_use(tmp_path):
    # A second EdgeShard.load on an open shard damages it (see edge_store.py), so the lock must refuse first.
    with edge_store(tmp_path) as first, edge_store(tmp_path) as second:
        first.create_collection(make_spec())
        first.upsert("items", make_points(5))
        with pytest.raises(StoreError, match="another process"):
            second.count("items")
        first.close()
        assert second.count("items") == 5


def test_unknown_backend_lists_the_choices(tmp_path):
    with pytest.raises(ValueError, match="edge, local"):
        open_store(StoreConfig(backend="faiss", path=tmp_path))


def test_edge_reader_follows_the_alias_to_a_generation_the_writer_closed(tmp_path):
    # Two EdgeStores on one folder hold separate file locks, exactly like a server process and an index job.
    with edge_store(tmp_path) as server, edge_store(tmp_path) as job:
        for generation, seed in (("gen-1", 0), ("gen-2", 1)):
            job.create_collection(make_spec(generation))
            job.upsert(generation, make_points(10, seed))
            job.close()
            job.set_alias("items", generation)
            query = make_points(10, seed)[4].vectors[IMAGE_VECTOR]
            hit = server.search("items", IMAGE_VECTOR, query, limit=1)[0]
            assert (hit.item_id, round(hit.score, 4)) == ("item-4", 1.0)
        job.delete_collection("gen-1")  # the server let go of gen-1 when the alias left it
        assert job.list_collections() == ["gen-2"]
        with pytest.raises(StoreError, match="another process"):
            job.delete_collection("gen-2")


class FlakyClient:
    """Stands in for QdrantClient: fails its first upserts with the given HTTP status."""

    def __init__(self, status: int, failures: int):
        self.status, self.failures, self.calls = status, failures, 0

    def upsert(self, collection, points, wait):
        from httpx import Headers
        from qdrant_client.http.exceptions import UnexpectedResponse

        self.calls += 1
        if self.calls <= self.failures:
            raise UnexpectedResponse(self.status, "boom", b"{}", Headers())


def test_upsert_retries_server_errors_but_not_client_errors():
    from retrieval.store.qdrant_store import QdrantStore

    flaky = FlakyClient(503, failures=2)
    QdrantStore(flaky, backoff_s=0).upsert("items", make_points(3))
    assert flaky.calls == 3
    wrong = FlakyClient(400, failures=1)
    with pytest.raises(StoreError, match="400"):
        QdrantStore(wrong, backoff_s=0).upsert("items", make_points(3))
    assert wrong.calls == 1


def test_an_unreachable_server_is_a_store_error():
    import socket

    from qdrant_client import QdrantClient

    from retrieval.store.qdrant_store import QdrantStore

    with socket.socket() as probe:  # a port that was free a moment ago refuses connections
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with QdrantStore(QdrantClient(url=f"http://127.0.0.1:{port}", timeout=2, check_compatibility=False)) as store, \
            pytest.raises(StoreError):
        store.list_collections()


# ---------------------------------------------------------------------------------------------- hybrid queries
# Documents with BM25 sparse vectors (the real tokenizer) next to two dense vectors, as the index job writes them.

WORDS = ("red shirt", "blue shirt", "green casual shirt", "black formal shirt collar", "white shirt", "red dress",
         "blue jeans denim", "black leather shoes", "red leather handbag", "white sports shoes running")


def hybrid_points(n: int = N, seed: int = 1) -> list[Point]:
    from retrieval import lexical

    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(2, n, DIM)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=2, keepdims=True)
    docs = [WORDS[i % len(WORDS)] + " item" * i for i in range(n)]  # every length differs: no tied BM25 scores
    avg = lexical.mean_length(docs)
    return [item_point(f"item-{i}", {"gender": GENDERS[i % 5], "baseColour": COLOURS[i % 3], "text": doc},
                       dense[0, i], dense[1, i], lexical.document_vector(doc, avg)) for i, doc in enumerate(docs)]


@pytest.fixture
def hybrid(store):
    return fill(store, hybrid_points())


def test_exact_lexical_ties_break_by_item_id_whatever_the_write_order(store):
    """Thirty items with the same document: BM25 and `terms` rank them by their ids' tie factors, so a copy or a
    reindex that writes them in another order cuts the list at the same place."""
    from retrieval import lexical

    weights, words = lexical.document_vector("Blue Jeans", 2.0), lexical.query_vector("blue jeans")
    points = [item_point(f"tie-{i}", {}, np.eye(DIM, dtype=np.float32)[0], words=weights) for i in range(30)]
    by_factor = sorted((p.item_id for p in points), key=lexical.tie_factor, reverse=True)[:5]
    for name, order in (("forward", points), ("reversed", points[::-1])):
        store.create_collection(make_spec(name))
        store.upsert(name, order)
        for plan in (Nearest(BM25_VECTOR, words, 5), Nearest(TERMS_VECTOR, words, 5, 1.5)):
            assert [h.item_id for h in store.query(name, plan, 5)] == by_factor, (name, plan.using)


def test_sparse_vectors_are_stored_as_given(hybrid):
    store, points = hybrid
    (hit,) = store.retrieve("items", ["item-3"])
    for name in (BM25_VECTOR, TERMS_VECTOR):  # the same token ids on every backend, the same float32 weights
        stored, given = hit.vectors[name], points[3].vectors[name]
        assert stored.indices == given.indices, name
        assert np.array_equal(np.float32(stored.values), np.float32(given.values)), name
    assert np.allclose(hit.vectors[TEXT_VECTOR], points[3].vectors[TEXT_VECTOR], atol=1e-5)


def test_bm25_applies_the_collections_idf(hybrid):
    from retrieval import lexical

    store, _ = hybrid
    rare = store.query("items", Nearest(BM25_VECTOR, lexical.query_vector("collar"), N), N)
    assert {h.item_id for h in rare} == {f"item-{i}" for i in range(3, N, len(WORDS))}
    common = store.query("items", Nearest(BM25_VECTOR, lexical.query_vector("shirt"), N), N)
    assert common and rare[0].score > 2 * common[0].score  # a word in half the items says less than a rare one


def test_terms_count_the_words_an_item_has_and_a_floor_keeps_those_with_all(hybrid):
    from retrieval import lexical

    store, _ = hybrid
    words = lexical.query_vector("red leather").as_query()
    hits = store.query("items", Nearest(TERMS_VECTOR, words, N), N)
    # No IDF, no length: a count of words (times the item's tie factor, under 1.001).
    assert {round(h.score / lexical.tie_factor(h.item_id), 5) for h in hits} == {1.0, 2.0}
    both = store.query("items", Rescore((Nearest(TERMS_VECTOR, words, N, 1.5),), IMAGE_VECTOR,
                                        np.ones(DIM, np.float32), N), N)
    assert {h.item_id for h in both} == {f"item-{i}" for i in range(8, N, len(WORDS))}  # "red leather handbag"


def test_fusion_rescoring_and_filters_hold_at_every_level(hybrid):
    from retrieval import lexical

    store, points = hybrid
    legs = (Nearest(IMAGE_VECTOR, points[0].vectors[IMAGE_VECTOR], 20),
            Nearest(BM25_VECTOR, lexical.query_vector("red"), 20))
    for plan in (Fuse(legs, "rrf", 20), Fuse(legs, "dbsf", 20),
                 Rescore(legs, TEXT_VECTOR, points[5].vectors[TEXT_VECTOR], 40),
                 Fuse((Fuse(legs, "dbsf", 20), Nearest(TEXT_VECTOR, points[1].vectors[TEXT_VECTOR], 20)), "rrf", 40)):
        hits = store.query("items", plan, 10, {"gender": ["Men", "Women"]}, exclude=["item-0"])
        assert hits and all(h.payload["gender"] in ("Men", "Women") for h in hits), plan
        assert "item-0" not in {h.item_id for h in hits}
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    only = store.query("items", legs[1], 10, only=["item-0", "item-5", "item-7"])
    assert {h.item_id for h in only} == {"item-0", "item-5"}  # item-7 ("black leather shoes") has no "red"


def run_on_every_backend(tmp_path, plan, limit: int) -> dict[str, list[tuple[str, float]]]:
    results = {}
    for name, config in (("edge", StoreConfig(backend="edge", path=tmp_path / "edge")),
                         ("local", StoreConfig(backend="local", path=tmp_path / "local")),
                         ("memory", StoreConfig(backend="local", path=":memory:"))):
        with open_store(config) as store:
            store.create_collection(make_spec())
            store.upsert("items", hybrid_points())
            results[name] = [(h.item_id, round(h.score, 4)) for h in store.query("items", plan, limit)]
    return results


@pytest.mark.parametrize("method", ["rrf", "dbsf"])
def test_every_backend_fuses_alike(tmp_path, method):
    """One hybrid plan, exact search, the same ranking and scores on edge, local mode on disk and in memory."""
    from retrieval import lexical

    points = hybrid_points()
    legs = (Nearest(IMAGE_VECTOR, points[2].vectors[IMAGE_VECTOR], 30),
            Nearest(TEXT_VECTOR, points[2].vectors[TEXT_VECTOR], 30),
            Nearest(BM25_VECTOR, lexical.query_vector("red leather"), 30))
    results = run_on_every_backend(tmp_path, Fuse(legs, method, 30), 10)
    scores = {name: [s for _, s in hits] for name, hits in results.items()}
    assert scores["edge"] == scores["local"] == scores["memory"] and len(scores["edge"]) == 10
    for name, hits in results.items():  # equal scores may come in any order (edge's fusion orders ties freely)
        assert sorted(hits) == sorted(results["edge"]), name


# ------------------------------------------------------------------------------------ recommendation and diversity
# Example vectors (liked and disliked items' stored photo vectors) and maximal marginal relevance, on every backend.

def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def cosines(hits, vector: np.ndarray, points: list[Point]) -> list[float]:
    by_id = {p.item_id: p.vectors[IMAGE_VECTOR] for p in points}
    return [float(by_id[h.item_id] @ vector) for h in hits]


@pytest.mark.parametrize("strategy", ["best_score", "sum_scores", "average_vector"])
def test_a_positive_example_pulls_its_neighbours_first(filled, strategy):
    store, points = filled
    liked = points[4].vectors[IMAGE_VECTOR]
    hits = store.query("items", Recommend(IMAGE_VECTOR, (liked,), (), 10, strategy), 10)
    nearest = store.search("items", IMAGE_VECTOR, liked, limit=10)
    assert [h.item_id for h in hits] == [h.item_id for h in nearest]  # one example: its own kNN


@pytest.mark.parametrize("strategy", ["best_score", "sum_scores", "average_vector"])
def test_a_negative_example_pushes_its_neighbours_away(filled, strategy):
    store, points = filled
    liked = points[4].vectors[IMAGE_VECTOR]
    near = store.search("items", IMAGE_VECTOR, liked, limit=2)[1]  # disliked: the liked item's nearest neighbour
    disliked = points[int(near.item_id.split("-")[1])].vectors[IMAGE_VECTOR]

    def recommend(negatives: tuple) -> list:
        return store.query("items", Recommend(IMAGE_VECTOR, (liked,), negatives, 10, strategy), 10,
                           {"baseColour": ["Red", "Blue"]}, exclude=["item-4", near.item_id])

    plain, pushed = recommend(()), recommend((disliked,))
    assert np.mean(cosines(pushed, disliked, points)) < np.mean(cosines(plain, disliked, points)) - 0.05
    assert all(h.payload["baseColour"] in ("Red", "Blue") for h in pushed)
    assert {"item-4", near.item_id}.isdisjoint(h.item_id for h in pushed)
    if strategy == "best_score":  # every item nearer the liked than the disliked one comes before any other
        closer = [c > d for c, d in zip(cosines(pushed, liked, points), cosines(pushed, disliked, points))]
        assert closer == sorted(closer, reverse=True)


def duplicate_points(groups: int = 8, copies: int = 5, seed: int = 3) -> list[Point]:
    """`groups` products with `copies` near-identical photos each (cosine ~0.99 within a group)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, DIM))
    return [Point(item_id=f"g{g}-{c}", vectors={IMAGE_VECTOR: unit(centres[g] + 0.1 * rng.normal(size=DIM))},
                  payload={"gender": GENDERS[g % 5], "baseColour": COLOURS[c % 3]})
            for g in range(groups) for c in range(copies)]


def groups_of(hits) -> list[str]:
    return [h.item_id.split("-")[0] for h in hits]


def copy_pairs(hits) -> int:
    """Pairs of results that are photos of one product (near-duplicates)."""
    groups = groups_of(hits)
    return sum(groups[i] == groups[j] for i in range(len(groups)) for j in range(i))


def test_mmr_without_diversity_is_the_knn_and_with_it_mixes_products(store):
    points = fill(store, duplicate_points())[1]
    query = unit(points[0].vectors[IMAGE_VECTOR] + 0.3 * points[5].vectors[IMAGE_VECTOR])  # not a stored point
    nearest = store.search("items", IMAGE_VECTOR, query, limit=6)
    plain = store.query("items", Diverse(IMAGE_VECTOR, query, 0.0, 30, 6), 6)
    assert [h.item_id for h in plain] == [h.item_id for h in nearest]
    assert len(set(groups_of(nearest))) <= 2  # five copies of the nearest product, then the next one
    mixed = store.query("items", Diverse(IMAGE_VECTOR, query, 0.5, 30, 6), 6)
    assert mixed[0].item_id == nearest[0].item_id and len(set(groups_of(mixed))) >= 3
    assert copy_pairs(mixed) < copy_pairs(nearest)
    scores = cosines(mixed, query, points)
    assert [round(h.score, 4) for h in mixed] == [round(s, 4) for s in scores]  # relevance, in pick order


def test_mmr_over_a_recommendation_keeps_filters_and_exclusions(store):
    points = fill(store, duplicate_points())[1]
    liked = (points[0].vectors[IMAGE_VECTOR], points[11].vectors[IMAGE_VECTOR])
    disliked = (points[30].vectors[IMAGE_VECTOR],)
    examples = Recommend(IMAGE_VECTOR, liked, disliked, 20)
    plan = Diverse(IMAGE_VECTOR, unit(sum(liked)), 0.6, 20, 8, (examples,))
    hits = store.query("items", plan, 8, {"gender": ["Men", "Boys", "Girls", "Unisex"]}, exclude=["g0-0", "g2-1"])
    assert hits and {"g0-0", "g2-1"}.isdisjoint(h.item_id for h in hits)
    assert all(h.payload["gender"] != "Women" for h in hits)  # group 1's gender
    plain = store.query("items", examples, 8, {"gender": ["Men", "Boys", "Girls", "Unisex"]}, exclude=["g0-0", "g2-1"])
    assert copy_pairs(hits) < copy_pairs(plain)


@pytest.mark.parametrize("strategy", ["best_score", "sum_scores", "average_vector"])
def test_every_backend_recommends_alike(tmp_path, strategy):
    points = hybrid_points()
    plan = Recommend(IMAGE_VECTOR, (points[2].vectors[IMAGE_VECTOR], points[7].vectors[IMAGE_VECTOR]),
                     (points[3].vectors[IMAGE_VECTOR],), 10, strategy)
    results = {backend: sorted(hits, key=lambda hit: (-hit[1], hit[0]))  # equal scores come in any order
               for backend, hits in run_on_every_backend(tmp_path, plan, 10).items()}
    assert results["edge"] == results["local"] == results["memory"] and len(results["edge"]) == 10


# ------------------------------------------------------------------------------------------ one hit per group
# Products of one to five near-identical photos each; a quarter of the products' photos lack the group field, so each
# of those is a group of its own.

GROUP_FIELD = "product"


def grouped_points(products: int = 16, seed: int = 5) -> list[Point]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(products, DIM))
    points = []
    for g in range(products):
        for c in range(1 + g % 5):
            i = len(points)
            payload = {"gender": GENDERS[i % 5], "baseColour": COLOURS[i % 3]}
            points.append(Point(f"p{g}-{c}", {IMAGE_VECTOR: unit(centres[g] + 0.1 * rng.normal(size=DIM))},
                                payload if g % 4 == 3 else {**payload, GROUP_FIELD: f"p{g}"}))
    return points


def fill_grouped(store) -> list[Point]:
    """The grouped catalog in the store; a qdrant-client store groups in the engine even in local mode (by default
    only a server does), so that the call a server gets is tested."""
    if hasattr(store, "group_in_engine"):
        store.group_in_engine = True
    points = grouped_points()
    store.create_collection(make_spec().model_copy(update={"filter_fields": ("gender", "baseColour", GROUP_FIELD)}))
    store.upsert("items", points)
    return points


def group_plans(points: list[Point]) -> dict[str, object]:
    """A kNN and recommendations (grouped by a Qdrant backend's engine), fusion and MMR (by the deeper list)."""
    vector = {p.item_id: p.vectors[IMAGE_VECTOR] for p in points}
    query = unit(vector["p3-0"] + 0.5 * vector["p1-0"] + 0.3 * vector["p4-2"])  # near a field-less product first
    liked, disliked = (vector["p3-0"], vector["p6-1"]), (vector["p1-1"],)  # the liked items are left out (below)
    return {"nearest": Nearest(IMAGE_VECTOR, query, 40),
            "best_score": Recommend(IMAGE_VECTOR, liked, disliked, 40, "best_score"),
            "average_vector": Recommend(IMAGE_VECTOR, liked, disliked, 40, "average_vector"),
            "dbsf": Fuse((Nearest(IMAGE_VECTOR, query, 40), Nearest(IMAGE_VECTOR, liked[1], 40)), "dbsf", 40),
            "mmr": Diverse(IMAGE_VECTOR, query, 0.3, 40, 20)}


GROUP_FILTER = {"gender": ["Men", "Women", "Boys", "Girls"]}
GROUP_EXCLUDE = ("p3-0", "p6-1")


@pytest.mark.parametrize("kind", ["nearest", "best_score", "average_vector", "dbsf", "mmr"])
def test_groups_are_the_best_hit_of_each_group_in_the_plans_order(store, kind):
    """query_groups is one_per_group over the plan's whole list (this catalog's groups all fit the deeper list), the
    filter and the exclusions holding; the items without the field come each as a group of its own."""
    plan = group_plans(fill_grouped(store))[kind]
    full = store.query("items", plan, 200, GROUP_FILTER, exclude=GROUP_EXCLUDE)
    grouped = store.query_groups("items", plan, GROUP_FIELD, 6, GROUP_FILTER, exclude=GROUP_EXCLUDE)
    expected = one_per_group(full, GROUP_FIELD, 6)
    assert [h.item_id for h in grouped] == [h.item_id for h in expected]
    assert [h.score for h in grouped] == pytest.approx([h.score for h in expected], abs=1e-5)
    assert all(h.payload["gender"] != "Unisex" for h in grouped)
    assert not set(GROUP_EXCLUDE) & {h.item_id for h in grouped}
    alone = [h.item_id for h in grouped if GROUP_FIELD not in h.payload]
    assert len(alone) >= 2 and len({i.split("-")[0] for i in alone}) < len(alone)  # two photos of one such product


def test_groups_bring_vectors_when_asked_and_stop_at_the_groups_there_are(store):
    points = fill_grouped(store)
    plan = group_plans(points)["best_score"]
    grouped = store.query_groups("items", plan, GROUP_FIELD, 3, {"baseColour": "Red"}, with_vectors=True)
    assert len(grouped) == 3 and all(h.vectors[IMAGE_VECTOR].shape == (DIM,) for h in grouped)
    every = store.query_groups("items", plan, GROUP_FIELD, 100)
    groups = {p.payload.get(GROUP_FIELD, p.item_id) for p in points}
    assert len(every) == len(groups) and {h.payload.get(GROUP_FIELD, h.item_id) for h in every} == groups


def test_only_a_server_groups_in_the_engine_by_default(store_config):
    """Local mode's grouping query is a pure-Python pass over every point: slower than the deeper list."""
    from retrieval.store.qdrant_store import QdrantStore

    with open_store(store_config) as store:
        assert getattr(store, "group_in_engine", False) is bool(store_config.url)
    assert QdrantStore(FlakyClient(503, failures=0)).group_in_engine


@pytest.mark.parametrize("kind", ["nearest", "best_score", "average_vector", "dbsf", "mmr"])
def test_every_backend_groups_alike(tmp_path, kind):
    """The same groups, best hits, order and scores on edge (the deeper list), local mode on disk and in memory
    (Qdrant's grouping query where the plan allows it); equal scores may come in either order (ids break ties)."""
    results = {}
    for name, config in (("edge", StoreConfig(backend="edge", path=tmp_path / "edge")),
                         ("local", StoreConfig(backend="local", path=tmp_path / "local")),
                         ("memory", StoreConfig(backend="local", path=":memory:"))):
        with open_store(config) as store:
            plan = group_plans(fill_grouped(store))[kind]
            hits = store.query_groups("items", plan, GROUP_FIELD, 6, GROUP_FILTER, exclude=GROUP_EXCLUDE)
            ordered = hits if kind == "mmr" else sorted(hits, key=lambda h: (-round(h.score, 5), h.item_id))
            results[name] = [(h.item_id, h.score) for h in ordered]
    for name in ("local", "memory"):
        assert [i for i, _ in results[name]] == [i for i, _ in results["edge"]], name
        assert [s for _, s in results[name]] == pytest.approx([s for _, s in results["edge"]], abs=1e-5), name
    assert len(results["edge"]) == 6
