"""HTTP API contracts: search request (JSON form) and response, with bounds the service enforces as 422s."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

MAX_K = 100
MAX_K1 = 1000
STRATEGIES = ("two_stage", "two_stage_image", "vector_fusion", "rrf", "image_knn", "text_knn")


class SearchRequest(BaseModel):
    """A JSON search: text and/or a base64 image, with ranking knobs and payload filters."""

    text: str | None = Field(None, max_length=500, description="What the shopper typed")
    image_base64: str | None = Field(None, description="A photo, base64-encoded (JPEG, PNG, WebP, ...)")
    item_id: str | None = Field(None, description="Search by a catalog item's own photo (excluded from results)")
    k: int = Field(10, ge=1, le=MAX_K, description="Results to return")
    k1: int | None = Field(None, ge=1, le=MAX_K1, description="Stage-1 candidates (two_stage, rrf); default 1000")
    text_weight: float | None = Field(None, ge=0.0, le=1.0, description="Weight of the text in the fusion; "
                                      "default 0.55 (chosen by the evaluation, docs/evaluation.md)")
    strategy: Literal[STRATEGIES] | None = Field(  # type: ignore[valid-type]
        None, description="How image and text combine; default vector_fusion (docs/evaluation.md)")
    filters: dict[str, str | list[str] | int] | None = Field(
        None, description='Payload filters, e.g. {"gender": "Women", "articleType": ["Dresses", "Tops"]}')
    segment: bool = Field(False, description="Isolate the garment in the photo first (a street photo, not a packshot)")


class ResultItem(BaseModel):
    id: str
    score: float
    stage1_score: float
    text_score: float | None
    payload: dict[str, Any]
    image_url: str


class SearchResponse(BaseModel):
    collection: str
    results: list[ResultItem]
    timings_ms: dict[str, float]


class ErrorResponse(BaseModel):
    detail: str
