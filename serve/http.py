"""Request parsing for POST /search: JSON or multipart, size, type, encoding and depth limits, mapped to SearchRequest
or an HTTP error. Any body, however malformed, gets a 4xx that says what is wrong, never a 500."""

from __future__ import annotations

import base64
import binascii
import json

from fastapi import HTTPException, Request
from pydantic import ValidationError

from schemas.api import SearchRequest

JSON_TYPES = ("application/json",)
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
MAX_FORM_FIELDS = 16  # the form has 9 fields; more is not a search
MESSAGE_CHARS = 300  # of a parser's own message, in ours


class Refused(HTTPException):
    """An HTTP refusal with a short reason to count it by (fashion_search_rejected_total)."""

    def __init__(self, status: int, reason: str, detail: str):
        super().__init__(status, detail)
        self.reason = reason


async def parse_search(request: Request, max_bytes: int) -> tuple[SearchRequest, bytes | None]:
    """The validated request and the raw image bytes (if any); 413/415/422/400 on bad input."""
    declared = _declared_length(request)
    if declared > max_bytes:
        raise Refused(413, "too_large", f"request of {declared} bytes is over the {max_bytes}-byte limit")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in JSON_TYPES:
        return await _parse_json(request, max_bytes)
    if kind in FORM_TYPES:
        return await _parse_form(request, max_bytes)
    raise Refused(415, "unsupported_content_type",
                  f"content type {kind or '(none)'} not supported; send application/json or multipart/form-data")


def _declared_length(request: Request) -> int:
    text = request.headers.get("content-length") or "0"
    if not text.isdigit():
        raise Refused(400, "bad_body", "content-length is not a number")
    return int(text)


async def _read_limited(request: Request, max_bytes: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():  # a lying or absent content-length must not let a huge body through
        body.extend(chunk)
        if len(body) > max_bytes:
            raise Refused(413, "too_large", f"request body is over the {max_bytes}-byte limit")
    return bytes(body)


def loads(data: bytes | str, what: str) -> object:
    """JSON from untrusted bytes: bad encoding, bad syntax and absurd nesting are each a 400 that says so."""
    try:
        return json.loads(data)
    except UnicodeDecodeError as err:
        raise Refused(400, "bad_body", f"{what} is not valid UTF-8 (byte {err.start})") from err
    except json.JSONDecodeError as err:
        raise Refused(400, "bad_body", f"{what} is not valid JSON: {str(err)[:MESSAGE_CHARS]}") from err
    except RecursionError as err:  # a few KB of brackets nest deeper than any search
        raise Refused(400, "bad_body", f"{what} nests too deeply") from err


def _validate(fields: dict, strict: bool) -> SearchRequest:
    """JSON is validated strictly (`"k": true` is not a 1: the schema says integer); a form's fields are text by
    nature, so there "10" is 10."""
    try:
        return SearchRequest.model_validate(fields, strict=strict)
    except ValidationError as err:
        raise Refused(422, "invalid_request", _validation_message(err)) from err


def _validation_message(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors(include_url=False))[:2000]


async def _parse_json(request: Request, max_bytes: int) -> tuple[SearchRequest, bytes | None]:
    fields = loads(await _read_limited(request, max_bytes) or b"{}", "body")
    if not isinstance(fields, dict):
        raise Refused(422, "invalid_request", "body must be a JSON object")
    search = _validate(fields, strict=True)
    return search, _b64(search.image_base64) if search.image_base64 else None


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.split(",", 1)[-1], validate=True)  # tolerate a data: URL prefix
    except (binascii.Error, ValueError) as err:
        raise Refused(400, "bad_base64", "image_base64 is not valid base64") from err


async def _parse_form(request: Request, max_bytes: int) -> tuple[SearchRequest, bytes | None]:
    """The body is read within the limit first (with or without a Content-Length), then parsed as a form."""
    body = await _read_limited(request, max_bytes)
    try:
        form = await Request(request.scope, _replay(body)).form(max_files=1, max_fields=MAX_FORM_FIELDS,
                                                                 max_part_size=max_bytes)
    except Exception as err:  # starlette's multipart errors vary; all mean a malformed body
        raise Refused(400, "bad_body", f"malformed form body: {str(err)[:MESSAGE_CHARS]}") from err
    try:
        upload = form.get("image")
        image = await upload.read() if upload is not None and hasattr(upload, "read") else None
        fields = {k: v for k, v in form.items() if k != "image" and isinstance(v, str)}  # "" is a value, as in JSON
    finally:
        await form.close()
    if "filters" in fields:
        fields["filters"] = loads(fields["filters"], "filters")
    return _validate(fields, strict=False), image or None


def _replay(body: bytes):
    """An ASGI receive that hands over a body already read."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
