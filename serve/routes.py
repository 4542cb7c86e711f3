"""The HTTP API as a plain FastAPI app over a SearchAPI (serve/api.py): what the Serve ingress returns from
`__serve_build_asgi_app__`, and what tests (schemathesis among them) drive in-process without Ray.

(No `from __future__ import annotations`: FastAPI must see real types.)

The OpenAPI document says what the API really does: every status each route answers, the image content types,
the bounds of the multipart form (the same as the JSON body's), a required body.
"""

import re
import uuid
from pathlib import Path
from typing import Any

from fastapi import BackgroundTasks, FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse

from retrieval.inspection import FACET_VALUES
from serve import openapi
from schemas.api import (MAX_FACET_VALUES, MAX_FILTER_FIELDS, SIGNAL_FIELDS, ErrorResponse, InspectResponse,
                         ItemInspection, ReadyResponse, RecommendRequest, RecommendResponse, SearchRequest,
                         SearchResponse, strategy_needs)

STATIC = Path(__file__).parent / "static"
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # a caller's id is echoed only if it is a plain token


def errors(*codes: int) -> dict[int, dict]:
    return {code: {"model": ErrorResponse} for code in codes}


SEARCH_ERRORS = errors(400, 404, 408, 413, 415, 422, 503)


NOT_GIVEN = {"enum": [""], "description": "Empty: not given (a browser sends unfilled inputs)"}


def form_field(schema: dict) -> dict:
    """A JSON body field as a form field: its non-null branch with the field's bounds, or empty for not given (a form
    field has no null), with the field's description and default."""
    branch = next((b for b in schema.get("anyOf", [schema]) if b.get("type") != "null"), schema)
    return {**{k: v for k, v in schema.items() if k in ("description", "default")}, "anyOf": [branch, NOT_GIVEN]}


# The JSON body's fields with their bounds (the same validation runs on both), but the photo is a file and the
# filters are JSON text.
FORM_FIELDS = {
    "image": {"type": "string", "format": "binary", "description": "A photo (JPEG, PNG, WebP, ...)"},
    **{name: form_field(schema) for name, schema in SearchRequest.model_json_schema()["properties"].items()
       if name not in ("image_base64", "filters")},
    "filters": {"anyOf": [{"type": "string"}, NOT_GIVEN],
                "description": f"JSON object of payload filters (at most {MAX_FILTER_FIELDS} fields), as in the JSON "
                               "body"},
}
PHOTO_TYPES = ("image/jpeg", "image/png", "image/webp")  # what the form's photo part says it is (any PIL reads)
FORM_SIGNAL_FIELDS = {**SIGNAL_FIELDS, "photo": ("image", "item_id")}


def form_given(field: str, schema: dict | None = None) -> dict:
    """A form field that is given: a file is there; a text field is there and not empty (an empty one is not given)."""
    if field == "image":
        return {"required": [field]}
    return {"required": [field], "properties": {field: FORM_FIELDS[field]["anyOf"][0]}}


SEARCH_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": SearchRequest.model_json_schema(ref_template="#/components/schemas/{model}")},
    "multipart/form-data": {"schema": {"type": "object", "properties": FORM_FIELDS, "additionalProperties": False,
                                       "anyOf": [form_given(name) for name in ("image", "text", "item_id")],
                                       "allOf": strategy_needs(FORM_SIGNAL_FIELDS, form_given, "")},
                            "encoding": {"image": {"contentType": ", ".join(PHOTO_TYPES)}}},
}}}
RECOMMEND_ERRORS = errors(400, 404, 408, 413, 415, 422, 503)
RECOMMEND_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": RecommendRequest.model_json_schema(ref_template="#/components/schemas/{model}")},
}}}
IMAGE_RESPONSE = {200: {"description": "The item's image file", "content": {"image/*": {}}},
                  **errors(404, 502, 504)}  # 502/504: an object-store catalog's photo the store did not give


class RequestIds:
    """ASGI middleware: the request's `state.request_id` is its X-Request-ID, the caller's (if it is a sane token)
    or a new one, for the log line; with `echo`, the response carries it. Under Ray Serve, Serve (or its HAProxy)
    has already set the request header and echoes it itself, so `echo` is off there."""

    def __init__(self, app, echo: bool = True):
        self.app, self.echo = app, echo

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or ()).get(b"x-request-id", b"").decode("latin-1")
        rid = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        return await self.app(scope, receive, send_with_id if self.echo else send)


def create_app(api: Any, echo_request_ids: bool = True) -> FastAPI:
    """The routes, each a thin call into `api` (serve/api.py's SearchAPI or anything shaped like it)."""
    app = FastAPI(title="Fashion search", description="Search a fashion catalog by photo, words, or both.",
                  version="0.2.0")
    app.add_middleware(RequestIds, echo=echo_request_ids)
    if hasattr(api, "deployment"):
        openapi.install(app, api.deployment)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text())

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=ReadyResponse, responses=errors(503))
    async def readyz() -> ReadyResponse:
        return await api.ready()

    @app.post("/search", response_model=SearchResponse, responses=SEARCH_ERRORS, openapi_extra=SEARCH_BODY)
    async def search(request: Request, after_response: BackgroundTasks) -> SearchResponse:
        return await api.search(request, after_response.add_task)

    @app.get("/inspect", response_model=InspectResponse, responses=errors(503))
    async def inspect(facet_limit: int = Query(FACET_VALUES, ge=1, le=MAX_FACET_VALUES,
                                               description="Values shown per filter field")) -> InspectResponse:
        return await api.inspect(facet_limit)

    @app.get("/inspect/items/{item_id:path}", response_model=ItemInspection, responses=errors(404, 503))
    async def inspect_item(item_id: str) -> ItemInspection:
        return await api.inspect_item(item_id)

    @app.post("/recommend", response_model=RecommendResponse, responses=RECOMMEND_ERRORS,
              openapi_extra=RECOMMEND_BODY)
    async def recommend(request: Request, after_response: BackgroundTasks) -> RecommendResponse:
        """More like the liked catalog items, less like the disliked ones (404 names unknown ids)."""
        return await api.recommend(request, after_response.add_task)

    @app.get("/items/{item_id:path}/image", response_class=FileResponse, responses=IMAGE_RESPONSE)
    def item_image(item_id: str) -> FileResponse:
        return api.item_image(item_id)

    return app
