"""SearchAPI, the HTTP surface of search: what each route does over the shared retrieval code (the routes themselves
are serve/routes.py), plain for tests and as the Serve ingress deployment (the store is opened in one process; the
encoder is in this process or a handle)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Callable
from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve.handle import DeploymentHandle

from retrieval import files, inspection, recommend, strategies
from retrieval.model import public_name
from retrieval.search import FilterError, QueryError, SearchParams, StrategyError, mode_of
from retrieval.service import ItemNotFound, Searcher
from retrieval.store.base import StoreError
from retrieval.store.factory import open_store
from schemas.api import (STRATEGIES, InspectResponse, ItemInspection, ReadyResponse, RecommendedItem,
                         RecommendRequest, RecommendResponse, ResultItem, SearchRequest, SearchResponse,
                         Understood)
from schemas.jobs import StoreConfig
from serve.encoder import SEGMENTATION_OFF, EncoderClient, EncoderConfig
from serve.result_cache import ResultCache, request_key
from serve.http import BODY_TIMEOUTS, CLIENT_GONE, BodyTimeouts, Refused, parse_json_body, parse_search, photo_bytes
from serve.metrics import service_metrics
from serve.openapi import Deployment
from serve.routes import create_app

log = logging.getLogger("fashion.search")
RECOMMEND_MODE = "recommend"  # the metrics' and the request log's mode label of a recommendation
IMAGE_CACHE = {"Cache-Control": "public, max-age=3600"}
TEXT_LOGGED = 40  # characters of the query words in the log line: enough to debug, not a record of what people type


def request_mode(search: SearchRequest, image: bytes | None) -> str:
    """The query's mode as the request states it (a catalog item stands for a photo)."""
    return mode_of(image is not None or bool(search.item_id), bool((search.text or "").strip()))


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", "") or ""


# `later(fn, *args)` has fn(*args) awaited once the response is sent (the route's BackgroundTasks.add_task).
Later = Callable[..., None]


def log_search(record: dict) -> None:
    """One JSON line per search: id, mode, strategy, k, result count, stage timings, status (no image bytes)."""
    log.info("%s", json.dumps(record, sort_keys=True))


class ToServeLog(logging.Handler):
    """Hands a search line to Serve's replica log handler and writes it out at once: under
    RAY_SERVE_THROUGHPUT_OPTIMIZED Serve buffers 1,000 lines, and the last of them never reach the file when the
    replica stops."""

    def __init__(self, serve_handler: logging.Handler):
        super().__init__()
        self.serve_handler = serve_handler

    def emit(self, record: logging.LogRecord) -> None:
        self.serve_handler.handle(record)
        self.serve_handler.flush()


def log_to_serve() -> None:
    """On a replica, Serve writes only its own `ray.serve` logger to the replica's file (logs/serve/replica_*.log
    of the Ray session): the search lines go through its handlers (with its request ids and format), at INFO."""
    log.handlers = [ToServeLog(handler) for handler in logging.getLogger("ray.serve").handlers]
    log.setLevel(logging.INFO)
    log.propagate = False


def to_params(request: SearchRequest) -> SearchParams:
    """Only what the request sets; the rest keeps SearchParams' evaluated defaults."""
    chosen = {k: v for k, v in request.model_dump(include={"k1", "text_weight", "strategy"}).items() if v is not None}
    return SearchParams(k=request.k, filters=request.filters, **chosen)


def to_item(result) -> ResultItem:
    """The one converter from a search result to the API's item (its field names are the HTTP contract's)."""
    return ResultItem(id=result.item_id, score=result.score, image_score=result.photo_score,
                      text_score=result.words_photo_score, document_score=result.words_document_score,
                      lexical_score=result.lexical_score, matched_words=result.matched_words,
                      matched_values=result.matched_values, payload=result.payload,
                      image_url=image_url(result.item_id))


def to_recommend_params(body: RecommendRequest) -> recommend.RecommendParams:
    """The request as retrieval/recommend.py's params, the photos' base64 decoded (a 400 naming one that is not)."""
    def photos(side: str, given: list[str]) -> tuple[bytes, ...]:
        return tuple(photo_bytes(text, recommend.photo_name(side, i)) for i, text in enumerate(given))

    return recommend.RecommendParams(
        liked=tuple(body.liked), disliked=tuple(body.disliked), text=body.text, not_text=body.not_text,
        filters=body.filters, k=body.k, diversity=body.diversity, group_by=body.group_by, strategy=body.strategy,
        shared_values=body.shared_values, liked_photos=photos("liked", body.liked_photos),
        disliked_photos=photos("disliked", body.disliked_photos))


def to_recommended(result: recommend.Recommended) -> RecommendedItem:
    """The one converter from a recommendation to the API's item."""
    return RecommendedItem(id=result.item_id, score=result.score, closest_liked=result.closest_liked,
                           closest_liked_score=result.closest_liked_score, avoided_disliked=result.avoided_disliked,
                           avoided_disliked_score=result.avoided_disliked_score, group=result.group,
                           payload=result.payload, image_url=image_url(result.item_id))


def image_url(item_id: str) -> str:
    return f"/items/{quote(item_id, safe='')}/image"


def understood_of(understood) -> dict:
    """What the words were read as, in the response's terms."""
    if understood is None:
        return {}
    return {"understood": [Understood(words=s.typed, field=s.field, values=list(s.names)) for s in understood.spans],
            "did_you_mean": understood.did_you_mean()}


async def read_store(read, *args):
    """A read of the store off the event loop (facets count points; a slow Qdrant must not stall the searches this
    replica is parsing); the store unavailable is a 503."""
    try:
        return await asyncio.to_thread(read, *args)
    except StoreError as err:
        raise HTTPException(503, f"store unavailable: {err}") from err


class SearchAPIConfig(BaseModel):
    """What SearchAPI is built from, besides its encoder (serve/app.py's ServeArgs makes it)."""

    model_config = ConfigDict(frozen=True)

    store: StoreConfig
    collection: str  # the alias searched
    model: str  # the canonical model spec the collection must have been built with
    max_upload_bytes: int
    body_timeouts: BodyTimeouts = BODY_TIMEOUTS
    segmentation: bool = False  # whether the encoder isolates garments (segment=true), for the OpenAPI document
    result_cache: tuple[int, float] = (0, 0.0)  # whole responses kept, and for how many seconds (0: none)


def cache_directives(request: Request) -> set[str]:
    """The request's Cache-Control directives (and Pragma: no-cache, HTTP/1.0's), lower case."""
    given = f'{request.headers.get("cache-control", "")},{request.headers.get("pragma", "")}'
    return {d.strip().lower() for d in given.split(",") if d.strip()}


def wants_fresh(request: Request) -> tuple[bool, bool]:
    """(search now, keep the answer): no-cache or max-age=0 asks for an answer searched now (RFC 9111); no-store
    also asks that it not be kept."""
    directives = cache_directives(request)
    return bool(directives & {"no-cache", "no-store", "max-age=0"}), "no-store" not in directives


class SearchAPI:
    """What each route does, plain (tests drive it without Ray): the store and the alias (Searcher) and the encoder
    (EncoderClient: its config, to build it here, or a QueryEncoder handle)."""

    def __init__(self, encoder: EncoderConfig | DeploymentHandle, config: SearchAPIConfig):
        self.metrics = service_metrics()
        self.in_flight = 0  # searches and recommendations this replica is serving (from their first byte)
        # A lone request's model call runs on the event loop: no other request's work waits for it there.
        self.encoder = EncoderClient(encoder, alone=lambda: self.in_flight <= 1)
        self.max_upload_bytes = config.max_upload_bytes
        self.body_timeouts = config.body_timeouts
        # An encoder built here says whether it segments; a remote one's config is passed along (serve/app.py).
        self.segmentation = self.encoder.target.segmenter is not None if self.encoder.local else config.segmentation
        self.searcher = Searcher(open_store(config.store), config.collection, config.model)
        self.inline_store = config.store.embedded and config.store.backend == "edge"
        self.results = ResultCache(*config.result_cache)

    def __serve_build_asgi_app__(self):
        """Serve calls this on the replica, after the constructor: the routes over this object."""
        log_to_serve()
        return create_app(self, echo_request_ids=False)  # Serve echoes X-Request-ID itself

    def deployment(self) -> Deployment | None:
        """What this deployment's OpenAPI document is narrowed to (serve/openapi.py); None while the store is not
        ready."""
        try:
            collection, spec = self.searcher.current()
        except StoreError:
            return None
        return Deployment(collection, tuple(spec.filter_fields), self.segmentation)

    async def ready(self) -> ReadyResponse:
        try:
            collection, spec = self.searcher.current()
            points = self.searcher.store.count(collection)
        except StoreError as err:
            raise HTTPException(503, f"store not ready: {err}") from err
        try:
            await self.encoder.model_spec()
        except Exception as err:  # an encoder replica that is down or starting: not ready
            raise HTTPException(503, f"encoder not ready: {type(err).__name__}: {err}") from err
        return ReadyResponse(status="ready", collection=collection, points=points, model=public_name(spec.model),
                             filter_fields=list(spec.filter_fields), filter_values=spec.filter_values,
                             default_strategy=strategies.defaults(), strategies=list(STRATEGIES))

    async def query_cache(self) -> dict[str, float]:
        """The encoded-query cache's counts (a Serve handle call: bench.serving states the hit rate of each load)."""
        stats, results = await self.encoder.cache_stats(), self.results.stats()
        return {"hits": stats.hits, "misses": stats.misses, "entries": stats.entries, "capacity": stats.capacity,
                "result_hits": results.hits, "result_misses": results.misses}

    async def search(self, request: Request, later: Later | None = None) -> SearchResponse:
        """Parse, search, and account for it: metrics by outcome and one log line, whatever the outcome (an answer's
        through `later`: the route runs it once the response is sent)."""
        started, record = time.perf_counter(), {"request_id": request_id(request), "mode": "unknown"}

        async def answer() -> tuple[SearchResponse, str]:
            search, image = await parse_search(request, self.max_upload_bytes, self.body_timeouts)
            record.update(mode=request_mode(search, image), k=search.k, text=(search.text or "")[:TEXT_LOGGED])
            return await self._search(search, image, started, *wants_fresh(request))

        return await self._accounted(record, answer, later)

    async def _accounted(self, record: dict, answer, later: Later | None = None) -> Any:
        """Run `answer` (which fills in `record` as it learns the request) and account for it, whatever the outcome:
        metrics by mode and status, and one log line. A refusal is accounted for at once; an answer through `later`
        if given, off the shopper's wait (~0.1 ms of metrics and log line in a replica, docs/performance.md)."""
        self.in_flight += 1
        try:
            response, mode = await answer()
        except Refused as refusal:
            self.metrics.refused(record["mode"], refusal.status_code, refusal.reason)
            log_search({**record, "status": refusal.status_code, "reason": refusal.reason})
            raise
        except asyncio.CancelledError:  # Serve cancels a request whose client hung up: the client's doing, not ours
            self.metrics.refused(record["mode"], CLIENT_GONE, "client_disconnected")
            log_search({**record, "status": CLIENT_GONE, "reason": "client_disconnected"})
            raise
        except Exception as err:  # a bug or a dead encoder replica: counted and logged, then Serve answers 500
            self.metrics.refused(record["mode"], 500, "internal_error")
            log_search({**record, "status": 500, "reason": "internal_error", "error": type(err).__name__})
            raise
        finally:
            self.in_flight -= 1
        if later is None:
            await self._answered(record, mode, response)
        else:
            later(self._answered, record, mode, response)
        return response

    async def _answered(self, record: dict, mode: str, response: SearchResponse | RecommendResponse) -> None:
        self.metrics.searched(mode, response.strategy, 200, response.timings_ms)
        log_search({**record, "mode": mode, "status": 200, "strategy": response.strategy,
                    "results": len(response.results),
                    "timings_ms": {k: round(v, 2) for k, v in response.timings_ms.items()}})

    async def _search(self, search: SearchRequest, image: bytes | None, started: float, fresh: bool = False,
                      keep: bool = True) -> tuple[SearchResponse, str]:
        try:
            return await self._run(search, image, started, fresh, keep)
        except ItemNotFound as err:
            raise Refused(404, "unknown_item", str(err)) from err
        except FilterError as err:
            raise Refused(422, "unknown_filter", str(err)) from err
        except StrategyError as err:
            raise Refused(422, "strategy_needs_signal", str(err)) from err
        except QueryError as err:  # no image, no words, no item (the schema says so too)
            raise Refused(400, "empty_query", str(err)) from err
        except StoreError as err:
            raise Refused(503, "store_unavailable", f"store unavailable: {err}") from err

    async def _run(self, search: SearchRequest, image: bytes | None, started: float, fresh: bool = False,
                   keep: bool = True) -> tuple[SearchResponse, str]:
        """The shared orchestration (retrieval/service.py), with the batching encoder between its two halves; the
        response and the mode searched (an item alone searches by its photo and its words). The same request on the
        same generation is answered from the result cache unless `fresh`, and its answer kept there if `keep`
        (serve/result_cache.py)."""
        if search.segment and not self.segmentation:  # refused whatever else the request has, as its schema says
            raise Refused(400, "segmentation_disabled", SEGMENTATION_OFF)
        pending = await self._on_store(self.searcher.begin, image, search.text, search.item_id, started,
                                       search.filters)
        key = request_key(pending.collection, search.model_dump_json(exclude={"image_base64"}), image)
        if not fresh and (cached := self._cached(key, started)) is not None:
            return cached
        query, rejected = await self.encoder.encode(pending.image, pending.phrase, pending.spec.letterbox,
                                                    search.segment and pending.image is not None)
        if rejected:
            raise Refused(400, *rejected)
        outcome = await self._on_store(self.searcher.finish, pending, query, to_params(search))
        timings = {"parse_ms": (pending.parsed - started) * 1000, **outcome.timings_ms}
        response = SearchResponse(collection=pending.collection, strategy=outcome.strategy,
                                  results=[to_item(r) for r in outcome.results], timings_ms=timings,
                                  **understood_of(outcome.understood))
        if keep:
            self.results.put(key, (response, outcome.mode), weight=len(response.results))
        return response, outcome.mode

    def _cached(self, key: tuple, started: float) -> tuple[SearchResponse, str] | None:
        """The response to the same request on the same generation, if kept (its timings: this answer's total)."""
        found = self.results.get(key)
        self.metrics.cached("results", found is not None)
        if found is None:
            return None
        response, mode = found
        timings = {"total_ms": (time.perf_counter() - started) * 1000}
        return response.model_copy(update={"timings_ms": timings, "cached": True}), mode

    async def _on_store(self, work, *args):
        """A search's or a recommendation's half whose waits are the store's: off the event loop for a server (a
        slow Qdrant must not stall the requests this replica is parsing); on it for the embedded engine, whose
        calls are in-process work, cheaper there than the hop to a worker thread and back (docs/performance.md:
        faster at one client and more requests a second at 8 and 16)."""
        return work(*args) if self.inline_store else await asyncio.to_thread(work, *args)

    async def inspect(self, facet_limit: int) -> InspectResponse:
        """What the service serves from (the alias, its generations, the live one's spec, count and value counts),
        read through its own open store: an embedded store serves one process, so no other could read it."""
        return InspectResponse.model_validate(await read_store(self._inspected, facet_limit))

    def _inspected(self, facet_limit: int) -> dict:
        collection, spec = self.searcher.current()
        return inspection.served(self.searcher.store, self.searcher.alias, collection, spec, facet_limit)

    async def inspect_item(self, item_id: str) -> ItemInspection:
        """One item's point in the live generation: its payload and the named vectors it holds."""
        collection, view = await read_store(self._item_point, item_id)
        if view is None:
            raise HTTPException(404, f"no catalog item {item_id!r} in collection {collection}")
        return ItemInspection.model_validate(view)

    def _item_point(self, item_id: str) -> tuple[str, dict | None]:
        collection, _ = self.searcher.current()
        return collection, inspection.point_detail(self.searcher.store, collection, item_id)

    # -------------------------------------------------------------------------- recommendations (POST /recommend)
    async def recommend(self, request: Request, later: Later | None = None) -> RecommendResponse:
        """Parse, recommend, and account for it as a search of mode "recommend" (metrics and the log line)."""
        started, record = time.perf_counter(), {"request_id": request_id(request), "mode": RECOMMEND_MODE}

        async def answer() -> tuple[RecommendResponse, str]:
            body = await parse_json_body(request, RecommendRequest, self.max_upload_bytes, self.body_timeouts)
            record.update(k=body.k, liked=len(body.liked), disliked=len(body.disliked),
                          liked_photos=len(body.liked_photos), disliked_photos=len(body.disliked_photos),
                          text=(body.text or "")[:TEXT_LOGGED])
            return await self._recommend(body, started), RECOMMEND_MODE

        return await self._accounted(record, answer, later)

    async def _recommend(self, body: RecommendRequest, started: float) -> RecommendResponse:
        params = to_recommend_params(body)
        try:
            pending = await self._on_store(recommend.begin, self.searcher, params, started)
            words, photos = await self._recommend_encoded(pending, params)
            outcome = await self._on_store(recommend.finish, self.searcher, pending, words, params, photos)
        except recommend.NoLikedExample as err:
            raise Refused(422, "no_liked_example", str(err)) from err
        except recommend.ItemsNotFound as err:
            raise Refused(404, "unknown_item", str(err)) from err
        except recommend.GroupFieldError as err:
            raise Refused(422, "unknown_group_field", str(err)) from err
        except FilterError as err:
            raise Refused(422, "unknown_filter", str(err)) from err
        except StoreError as err:
            raise Refused(503, "store_unavailable", f"store unavailable: {err}") from err
        timings = {"parse_ms": (pending.parsed - started) * 1000, **outcome.timings_ms}
        return RecommendResponse(collection=pending.collection, strategy=outcome.strategy,
                                 shared_values=outcome.shared_values,
                                 results=[to_recommended(r) for r in outcome.results], timings_ms=timings)

    async def _recommend_encoded(self, pending: recommend.PendingRecommend, params: recommend.RecommendParams):
        """The words and the shopper's photos, encoded at once: each photo decoded as a search's is (its limits, the
        collection's letterbox), the model calls batched; the first unusable photo is a 400 naming it."""
        letterbox, named = pending.spec.letterbox, recommend.photos_of(params)
        words, *encoded = await asyncio.gather(
            self.encoder.encode(None, pending.phrase, letterbox, False) if pending.phrase else no_encoding(),
            *(self.encoder.encode(data, None, letterbox, False) for _, data in named))
        for (name, _), (_, rejected) in zip(named, encoded):
            if rejected:
                raise Refused(400, rejected[0], f"{name}: {rejected[1]}")
        return words[0], recommend.EncodedPhotos.of(params, [query.photo_vector for query, _ in encoded])

    def item_image(self, item_id: str) -> Response:
        try:
            path = self.searcher.item_image_path(item_id, *self.searcher.current())
        except StoreError as err:
            raise HTTPException(503, f"store unavailable: {err}") from err
        if path is None:
            raise HTTPException(404, f"no image for catalog item {item_id!r}")
        if isinstance(path, str):  # on an object store: read through the index job's code, bounded (retrieval/files)
            return object_image(path)
        return FileResponse(path, headers=IMAGE_CACHE)


async def no_encoding() -> tuple[None, None]:
    return None, None


def object_image(uri: str) -> Response:
    """A catalog photo on an object store, proxied: 404 when it is gone (or not an image type), 504 when the store
    is too slow, 502 on its other errors."""
    try:
        data, media_type = files.page_image(uri)
    except files.Unreadable as err:
        raise HTTPException({"missing": 404, "timeout": 504}.get(err.kind, 502), f"image: {err.reason}") from err
    return Response(data, media_type=media_type, headers=IMAGE_CACHE)


# SearchAPI as the Serve ingress, under its own name: the manifests' `deployments` and the metrics' `deployment` tag
# say SearchAPI. Its request slots are ServeArgs.max_ongoing_requests (a slow upload holds one for a bounded time).
SearchAPIDeployment = serve.deployment(name=SearchAPI.__name__, ray_actor_options={"num_cpus": 0.25},
                                       max_ongoing_requests=256)(serve.ingress()(SearchAPI))
