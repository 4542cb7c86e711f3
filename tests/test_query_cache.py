"""The encoded-query cache: hits and misses counted, bounded (least recently used dropped), keyed by the model and by
what it reads, thread-safe, and a search answers the same with and without it (in process and in the serve encoder)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from retrieval.query_cache import QueryCache, cached, photo_key, words_key


def test_hits_and_misses_are_counted():
    cache = QueryCache(4)
    assert cache.get("a") is None
    cache.put("a", np.ones(3))
    assert cache.get("a") is not None and cache.get("a") is not None
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries, stats.capacity) == (2, 1, 1, 4)
    assert stats.hit_rate == pytest.approx(2 / 3)
    assert stats.since(QueryCache(4).stats()).hits == 2


def test_the_bound_drops_the_least_recently_used():
    cache = QueryCache(2)
    cache.put("a", np.zeros(2))
    cache.put("b", np.zeros(2))
    cache.get("a")  # a is now the most recent
    cache.put("c", np.zeros(2))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.stats().entries == 2


def test_no_capacity_keeps_nothing_and_still_counts():
    cache, calls = QueryCache(0), []
    for _ in range(3):
        cached(cache, lambda: "k", lambda: calls.append(1) or np.ones(2))
    assert len(calls) == 3 and (cache.stats().misses, cache.stats().entries) == (3, 0)
    with pytest.raises(ValueError, match="0 or more"):
        QueryCache(-1)


def test_cached_vectors_are_read_only_copies():
    cache, given = QueryCache(2), np.ones(3, dtype=np.float32)
    kept = cache.put("a", given)
    given[0] = 5.0
    assert cache.get("a")[0] == 1.0
    with pytest.raises(ValueError):
        kept[0] = 2.0


def test_threads_share_one_cache_and_the_counts_add_up():
    cache, rounds = QueryCache(50), 2000

    def worker(offset: int) -> None:
        for i in range(rounds):
            key, vector = (offset + i) % 40, np.full(4, i, dtype=np.float32)  # 40 keys fit: every thread hits
            cached(cache, lambda: key, lambda: vector)  # noqa: B023 - called at once, in this iteration

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = cache.stats()
    # A key misses at most once per thread (two threads may both miss it before either puts it).
    assert stats.hits + stats.misses == 8 * rounds and stats.entries == 40 and stats.misses <= 8 * 40


def test_words_are_keyed_by_model_and_by_what_the_model_reads(encoder):
    """The tokenizer's own folding (case, spacing) makes one key; another model (a reload with other weights under
    another spec) never gets this model's vectors."""
    from retrieval.model import ClipEncoder

    assert words_key(encoder, "Blue  Jeans") == words_key(encoder, "blue jeans")
    assert words_key(encoder, "blue jeans") != words_key(encoder, "blue jean")
    other = ClipEncoder(encoder.model, encoder.tokenizer, spec="local-dir:/elsewhere", device="cpu", precision="fp32")
    cache = QueryCache(8)
    cached(cache, lambda: words_key(encoder, "red dress"), lambda: encoder.encode_texts(["red dress"])[0])
    assert cache.get(words_key(other, "red dress")) is None
    assert photo_key(encoder, b"x", False, False) != photo_key(other, b"x", False, False)
    assert photo_key(encoder, b"x", False, False) != photo_key(encoder, b"x", True, False)


@pytest.mark.parametrize("query", [{"text": "blue jeans"}, {"text": "Red  TSHIRT for men"},
                                   {"photo": "10003"}, {"photo": "10127", "text": "in red"}])
def test_a_search_answers_the_same_with_and_without_the_cache(small_index, model_spec, offline_catalog, query):
    from retrieval.search import SearchParams
    from retrieval.service import SearchService

    given = {"text": query.get("text"),
             "image": (offline_catalog / "images" / f"{query['photo']}.jpg").read_bytes() if "photo" in query else None}
    answers = {}
    for size in (0, 16):
        with SearchService.open(model_spec, small_index.store, small_index.collection, device="cpu",
                                cache_size=size) as service:
            runs = [service.search(params=SearchParams(k=5), **given) for _ in range(2)]
            answers[size] = [[(r.item_id, round(r.score, 5)) for r in o.results] for o in runs]
            stats = service.cache.stats()
        lookups = sum(v is not None for v in given.values())  # per search: the words, the photo
        assert (stats.hits, stats.misses) == ((lookups, lookups) if size else (0, 2 * lookups))
    assert answers[0][0] == answers[0][1] == answers[16][0] == answers[16][1]


def test_the_serve_encoder_answers_a_repeat_from_the_cache_without_the_model(model_spec, offline_catalog):
    from serve.app import ServeArgs
    from serve.encoder import QueryEncoderCore

    core = QueryEncoderCore(ServeArgs(model=model_spec, device="cpu", encoder_threads=1, query_segmenter="none",
                                      query_cache_size=4).encoder_config())
    photo = (offline_catalog / "images" / "10003.jpg").read_bytes()
    first, _ = asyncio.run(core.encode(photo, "blue jeans"))
    again, _ = asyncio.run(core.encode(photo, "BLUE jeans"))
    np.testing.assert_array_equal(first.words_vector, again.words_vector)
    np.testing.assert_array_equal(first.photo_vector, again.photo_vector)
    assert sum(core.texts.batch_sizes.values()) == sum(core.images.batch_sizes.values()) == 1  # one model call each
    stats = core.cache_stats()
    assert (stats.hits, stats.misses, stats.entries, stats.capacity) == (2, 2, 2, 4)
