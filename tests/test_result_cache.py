"""The ingress's result cache: a bounded LRU with a time to live, keyed by the generation and the parsed request;
a repeated search on the same generation is answered from it, Cache-Control: no-cache searches again."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from retrieval.model import canonical_spec
from serve.api import SearchAPI, SearchAPIConfig
from serve.encoder import EncoderConfig
from serve.result_cache import ResultCache, request_key
from serve.routes import create_app


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_least_recently_used_goes_first_and_old_entries_expire():
    clock = Clock()
    cache = ResultCache(2, ttl_s=10, clock=clock)
    cache.put("a", 1), cache.put("b", 2)
    assert cache.get("a") == 1  # b is now the least recently used
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("c") == 3
    clock.now = 10.5
    assert cache.get("a") is None and cache.get("c") is None  # expired
    assert (cache.stats().hits, cache.stats().misses) == (2, 3)


def test_the_capacity_counts_results_and_a_zero_time_to_live_keeps_nothing():
    cache = ResultCache(10, ttl_s=10)
    cache.put("k10", "ten results", weight=10)
    cache.put("k4", "four results", weight=4)  # 14 > 10: the older one goes
    assert cache.get("k10") is None and cache.get("k4") == "four results"
    cache.put("k20", "twenty", weight=20)  # heavier than the whole cache: not kept, nothing else dropped
    assert cache.get("k20") is None and cache.get("k4") == "four results"
    off = ResultCache(10, ttl_s=0)
    off.put("a", 1)
    assert off.get("a") is None and off.stats().entries == 0


def test_capacity_zero_keeps_nothing_and_counts_the_misses():
    cache = ResultCache(0, ttl_s=10)
    cache.put("a", 1)
    assert cache.get("a") is None and cache.stats().misses == 1 and cache.stats().entries == 0
    with pytest.raises(ValueError, match="0 or more"):
        ResultCache(-1, ttl_s=1)


def test_the_key_names_the_generation_the_request_and_the_photo():
    key = request_key("gen-1", '{"text":"red"}', None)
    assert key == request_key("gen-1", '{"text":"red"}', None)
    assert key != request_key("gen-2", '{"text":"red"}', None)  # a switched alias never answers from the last one
    assert key != request_key("gen-1", '{"text":"red","k":5}', None)
    assert request_key("gen-1", "{}", b"photo one") != request_key("gen-1", "{}", b"photo two")


@pytest.fixture(scope="module")
def cached_client(small_index, model_spec):
    encoder = EncoderConfig(model=model_spec, device="cpu", precision="fp32", threads=None, segmenter="none",
                            max_pixels=80_000_000, decode_budget=48_000_000)
    api = SearchAPI(encoder, SearchAPIConfig(store=small_index.store, collection=small_index.collection,
                                             model=canonical_spec(model_spec), max_upload_bytes=2_000_000,
                                             result_cache=(16, 60.0)))
    with TestClient(create_app(api)) as client:
        yield api, client
    api.searcher.store.close()


def _ranked(body: dict) -> list[tuple[str, float]]:
    return [(r["id"], r["score"]) for r in body["results"]]


def test_a_repeated_search_is_answered_from_the_cache_and_no_cache_searches_again(cached_client):
    api, client = cached_client
    first = client.post("/search", json={"text": "red dress", "k": 5}).json()
    again = client.post("/search", json={"text": "red dress", "k": 5}).json()
    assert "search_ms" in first["timings_ms"] and set(again["timings_ms"]) == {"total_ms"}
    assert again["cached"] and not first["cached"]
    assert _ranked(again) == _ranked(first) and again["strategy"] == first["strategy"]
    fresh = client.post("/search", json={"text": "red dress", "k": 5}, headers={"Cache-Control": "no-cache"}).json()
    assert "search_ms" in fresh["timings_ms"] and _ranked(fresh) == _ranked(first)
    other = client.post("/search", json={"text": "red dress", "k": 4}).json()
    assert "search_ms" in other["timings_ms"] and _ranked(other) == _ranked(first)[:4]
    assert api.results.stats().hits == 1


def test_refusals_are_not_kept(cached_client):
    """A photo the encoder cannot decode is refused after the cache was asked: each time, and never kept."""
    import base64

    api, client = cached_client
    before = api.results.stats()
    body = {"image_base64": base64.b64encode(b"not an image at all").decode(), "text": "red"}
    for _ in range(2):
        assert client.post("/search", json=body).status_code == 400
    after = api.results.stats()
    assert after.entries == before.entries and after.misses == before.misses + 2


def test_no_store_searches_and_keeps_nothing(cached_client):
    api, client = cached_client
    before = api.results.stats().entries
    for _ in range(2):
        answer = client.post("/search", json={"text": "black shoes"}, headers={"Cache-Control": "no-store"}).json()
        assert not answer["cached"] and "search_ms" in answer["timings_ms"]
    assert api.results.stats().entries == before
    client.post("/search", json={"text": "black shoes"}, headers={"Pragma": "no-cache"})  # HTTP/1.0's no-cache
    assert client.post("/search", json={"text": "black shoes"}).json()["cached"]
