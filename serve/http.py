"""Request parsing for POST /search: JSON or multipart, size and type limits, mapped to SearchRequest or an HTTP error."""

from __future__ import annotations

import base64
import binascii
import json

from fastapi import HTTPException, Request
from pydantic import ValidationError

from schemas.api import SearchRequest

JSON_TYPES = ("application/json",)
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


async def parse_search(request: Request, max_bytes: int) -> tuple[SearchRequest, bytes | None]:
    """The validated request and the raw image bytes (if any); 413/415/422/400 on bad input."""
    declared = int(request.headers.get("content-length") or 0)
    if declared > max_bytes:
        raise HTTPException(413, f"request of {declared} bytes is over the {max_bytes}-byte limit")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in JSON_TYPES:
        return await _parse_json(request, max_bytes)
    if kind in FORM_TYPES:
        return await _parse_form(request, max_bytes)
    raise HTTPException(415, f"content type {kind or '(none)'} not supported; send application/json or multipart/form-data")


async def _read_limited(request: Request, max_bytes: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():  # a lying or absent content-length must not let a huge body through
        body.extend(chunk)
        if len(body) > max_bytes:
            raise HTTPException(413, f"request body is over the {max_bytes}-byte limit")
    return bytes(body)


def _validate(fields: dict) -> SearchRequest:
    try:
        return SearchRequest.model_validate(fields)
    except ValidationError as err:
        raise HTTPException(422, _validation_message(err)) from err


def _validation_message(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors(include_url=False))


async def _parse_json(request: Request, max_bytes: int) -> tuple[SearchRequest, bytes | None]:
    try:
        fields = json.loads(await _read_limited(request, max_bytes) or b"{}")
    except json.JSONDecodeError as err:
        raise HTTPException(400, f"body is not valid JSON: {err}") from err
    if not isinstance(fields, dict):
        raise HTTPException(422, "body must be a JSON object")
    search = _validate(fields)
    return search, _b64(search.image_base64) if search.image_base64 else None


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.split(",", 1)[-1], validate=True)  # tolerate a data: URL prefix
    except (binascii.Error, ValueError) as err:
        raise HTTPException(400, "image_base64 is not valid base64") from err


async def _parse_form(request: Request, max_bytes: int) -> tuple[SearchRequest, bytes | None]:
    form = await request.form(max_part_size=max_bytes)
    upload = form.get("image")
    image = await upload.read() if upload is not None and hasattr(upload, "read") else None
    if image is not None and len(image) > max_bytes:
        raise HTTPException(413, f"image is over the {max_bytes}-byte limit")
    fields = {k: v for k, v in form.items() if k != "image" and isinstance(v, str) and v != ""}
    if "filters" in fields:
        try:
            fields["filters"] = json.loads(fields["filters"])
        except json.JSONDecodeError as err:
            raise HTTPException(422, f"filters: not valid JSON: {err}") from err
    return _validate(fields), image or None
