"""The search ingress: handlers over the shared retrieval code (the HTTP routes are serve/routes.py), and the Serve
deployment that holds them (the store is opened in one process; the encoder is in this process or a handle)."""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.responses import FileResponse
from ray import serve

from retrieval.search import DEFAULT_STRATEGY, FilterError, QueryError, SearchParams, StrategyError
from retrieval.service import ItemNotFound, Searcher
from retrieval.store.base import StoreError
from retrieval.store.factory import open_store
from schemas.api import STRATEGIES, ReadyResponse, ResultItem, SearchRequest, SearchResponse
from schemas.jobs import StoreConfig
from serve.encoder import EncoderClient
from serve.http import parse_search
from serve.routes import create_app

log = logging.getLogger(__name__)


def to_params(request: SearchRequest) -> SearchParams:
    """Only what the request sets; the rest keeps SearchParams' evaluated defaults."""
    chosen = {k: v for k, v in request.model_dump(include={"k1", "text_weight", "strategy"}).items() if v is not None}
    return SearchParams(k=request.k, filters=request.filters, **chosen)


def to_item(result) -> ResultItem:
    """The one converter from a search result to the API's item."""
    return ResultItem(id=result.item_id, score=result.score, image_score=result.image_score,
                      text_score=result.text_score, document_score=result.document_score,
                      lexical_score=result.lexical_score, matched_words=result.matched_words, payload=result.payload,
                      image_url=f"/items/{quote(result.item_id, safe='')}/image")


class SearchHandlers:
    """What each route does, without Ray: the store and the alias (Searcher) and the encoder (EncoderClient)."""

    def __init__(self, encoder, store: StoreConfig, collection: str, model: str, max_upload_bytes: int):
        self.encoder, self.max_upload_bytes = EncoderClient(encoder), max_upload_bytes
        self.searcher = Searcher(open_store(store), collection, model)

    async def ready(self) -> ReadyResponse:
        try:
            collection, spec = self.searcher.current()
            points = self.searcher.store.count(collection)
            await self.encoder.model_spec()
        except StoreError as err:
            raise HTTPException(503, f"store not ready: {err}") from err
        return ReadyResponse(status="ready", collection=collection, points=points, model=spec.model,
                             filter_fields=list(spec.filter_fields), filter_values=spec.filter_values,
                             default_strategy=DEFAULT_STRATEGY, strategies=list(STRATEGIES))

    async def search(self, request: Request) -> SearchResponse:
        started = time.perf_counter()
        search, image = await parse_search(request, self.max_upload_bytes)
        try:
            return await self._search(search, image, started)
        except ItemNotFound as err:
            raise HTTPException(404, str(err)) from err
        except (FilterError, StrategyError) as err:
            raise HTTPException(422, str(err)) from err
        except QueryError as err:
            raise HTTPException(400, str(err)) from err
        except StoreError as err:
            raise HTTPException(503, f"store unavailable: {err}") from err

    async def _search(self, search: SearchRequest, image: bytes | None, started: float) -> SearchResponse:
        """The shared orchestration (retrieval/service.py), with the batching encoder between its two halves."""
        pending = self.searcher.begin(image, search.text, search.item_id)
        query, rejected = await self.encoder.encode(pending.image, pending.text, pending.spec.letterbox,
                                                    search.segment and pending.image is not None)
        if rejected:
            raise HTTPException(400, rejected)
        outcome = self.searcher.finish(pending, query, to_params(search))
        timings = {"parse_ms": (pending.started - started) * 1000, **outcome.timings_ms}
        timings["total_ms"] = (time.perf_counter() - started) * 1000
        return SearchResponse(collection=pending.collection, strategy=outcome.strategy,
                              results=[to_item(r) for r in outcome.results], timings_ms=timings)

    def item_image(self, item_id: str) -> FileResponse:
        try:
            path = self.searcher.item_image_path(item_id, *self.searcher.current())
        except StoreError as err:
            raise HTTPException(503, f"store unavailable: {err}") from err
        if path is None:
            raise HTTPException(404, f"no image for catalog item {item_id!r}")
        return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


class SearchIngress(SearchHandlers):
    """The handlers as a Serve ingress: Serve calls this after the constructor, on the replica."""

    def __serve_build_asgi_app__(self):
        return create_app(self)


SearchAPI = serve.deployment(name="SearchAPI", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)(
    serve.ingress()(SearchIngress))
