"""Request parsing for POST /search: JSON or multipart, size, time, type, encoding and depth limits, mapped to
SearchRequest or an HTTP error (and for POST /recommend: JSON only, the same limits). Any body, however malformed,
gets a 4xx that says what is wrong, never a 500; a client that hangs up is a 499 (nginx's convention), its own
outcome and not a server error."""

from __future__ import annotations

import asyncio
import base64
import binascii
import difflib
import json
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request
from typing import AsyncIterator, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, Headers
from starlette.formparsers import MultiPartParser, parse_options_header
from starlette.requests import ClientDisconnect

from schemas.api import SearchRequest

Model = TypeVar("Model", bound=BaseModel)
JSON_TYPES = ("application/json",)
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
MAX_FORM_FIELDS = 16  # the form has 9 fields; more is not a search
FORM_BOOLEANS = {"true": True, "false": False}  # a boolean as form text (pydantic would also take 0, yes, on, ...)
MESSAGE_CHARS = 300  # of a parser's own message, in ours
CLIENT_GONE = 499  # nginx's status for a client that closed the connection before the answer
# A body over the limit but within this many times it is read to its end and dropped before the 413, so the client's
# connection stays usable (see _refuse_too_large); the cost is that of a few searches' uploads.
DRAIN_FACTOR = 4


@dataclass(frozen=True)
class BodyTimeouts:
    """How long a body may take: `idle_s` without a byte arriving, `total_s` in all. A stalled client then holds a
    replica's request slot for a bounded time (408) instead of until the proxy's hour-long client timeout. The
    defaults let a phone on a poor network through: 10 MB in 120 s is 0.7 Mbit/s, and 20 s of silence is longer
    than a cell handover."""

    idle_s: float = 20.0
    total_s: float = 120.0


BODY_TIMEOUTS = BodyTimeouts()


class Refused(HTTPException):
    """An HTTP refusal with a short reason to count it by (fashion_search_rejected_total); `close` when the body was
    left unread (the connection cannot serve another request: without it the server would wait for the rest)."""

    def __init__(self, status: int, reason: str, detail: str, close: bool = False):
        super().__init__(status, detail, headers={"Connection": "close"} if close else None)
        self.reason = reason


async def parse_search(request: Request, max_bytes: int,
                       timeouts: BodyTimeouts = BODY_TIMEOUTS) -> tuple[SearchRequest, bytes | None]:
    """The validated request and the raw image bytes (if any); 413/415/422/400/408 on bad input, 499 when the
    client hangs up."""
    kind = await _media_type(request, max_bytes, timeouts)
    if kind in JSON_TYPES:
        return await _parse_json(await read_body(request, max_bytes, timeouts))
    if kind in FORM_TYPES:
        return await _parse_form(request, await read_body(request, max_bytes, timeouts), max_bytes)
    raise Refused(415, "unsupported_content_type",
                  f"content type {kind or '(none)'} not supported; send application/json or multipart/form-data")


async def _media_type(request: Request, max_bytes: int, timeouts: BodyTimeouts) -> str:
    """The body's media type, once its declared length is known to be within the limit (else 413)."""
    declared = _declared_length(request)
    if declared > max_bytes:
        detail = f"request of {declared} bytes is over the {max_bytes}-byte limit"
        if declared > DRAIN_FACTOR * max_bytes or _awaits_continue(request):
            raise Refused(413, "too_large", detail, close=True)
        await _refuse_too_large(request.stream(), 0, max_bytes, _deadline(timeouts), timeouts, detail)
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _awaits_continue(request: Request) -> bool:
    """The client waits for a 100 Continue before sending its body: refused now, it sends none (nothing to drain,
    and reading would invite the upload only to drop it)."""
    return request.headers.get("expect", "").lower() == "100-continue"


def _declared_length(request: Request) -> int:
    text = request.headers.get("content-length") or "0"
    if not text.isdigit():
        raise Refused(400, "bad_body", "content-length is not a number")
    return int(text)


async def read_body(request: Request, max_bytes: int, timeouts: BodyTimeouts) -> bytes:
    """The whole body within the size and time limits; a lying or absent content-length must not let a huge body
    through, and a client that stops sending must not hold the request forever."""
    body, chunks, deadline = bytearray(), request.stream(), _deadline(timeouts)
    while (chunk := await _next_chunk(chunks, deadline, timeouts)) is not None:
        body.extend(chunk)
        if len(body) > max_bytes:
            seen = len(body)
            body.clear()  # not kept while the rest is drained
            await _refuse_too_large(chunks, seen, max_bytes, deadline, timeouts,
                                    f"request body is over the {max_bytes}-byte limit")
    return bytes(body)


async def _refuse_too_large(chunks: AsyncIterator[bytes], seen: int, max_bytes: int, deadline: float,
                            timeouts: BodyTimeouts, detail: str) -> NoReturn:
    """A 413 (a 499 if the client hangs up meanwhile). A proxy in front (Serve's HAProxy) drops our `Connection:
    close` and may then close the client's connection after the answer without a word, so a client's next request
    on it fails. A body within DRAIN_FACTOR times the limit is therefore read to its end and dropped first (the
    connection stays good). Past that bound, or past the body's time limits, the rest is left unread, with
    `Connection: close`: still a 413, the body's size being what is wrong. `seen`: the bytes already read."""
    while seen <= DRAIN_FACTOR * max_bytes:
        try:
            chunk = await _next_chunk(chunks, deadline, timeouts)
        except Refused as refusal:
            if refusal.status_code != 408:
                raise
            break
        if chunk is None:
            raise Refused(413, "too_large", detail)
        seen += len(chunk)
    raise Refused(413, "too_large", detail, close=True)


def _deadline(timeouts: BodyTimeouts) -> float:
    """When the whole body must be in, on the loop's clock."""
    return asyncio.get_running_loop().time() + timeouts.total_s


async def _next_chunk(chunks, deadline: float, timeouts: BodyTimeouts) -> bytes | None:
    """The next piece of the body, None at its end; 408 past either deadline, 499 when the client hangs up."""
    wait = min(timeouts.idle_s, deadline - asyncio.get_running_loop().time())
    try:
        async with asyncio.timeout(max(wait, 0)):
            return await anext(chunks, None)
    except TimeoutError as err:
        raise Refused(408, "body_timeout", f"the request body did not arrive in time (limits: {timeouts.idle_s:g} "
                                           f"s without data, {timeouts.total_s:g} s in all)", close=True) from err
    except ClientDisconnect as err:
        raise Refused(CLIENT_GONE, "client_disconnected", "the client closed the connection mid-body") from err


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


def _validate(fields: dict, strict: bool, model: type[Model] = SearchRequest) -> Model:
    """JSON is validated strictly (`"k": true` is not a 1: the schema says integer); a form's fields are text by
    nature, so there "10" is 10."""
    try:
        return model.model_validate(fields, strict=strict)
    except ValidationError as err:
        raise Refused(422, "invalid_request", _validation_message(err, model)) from err


def _validation_message(err: ValidationError, model: type[BaseModel]) -> str:
    return "; ".join(_error_message(e, model) for e in err.errors(include_url=False))[:2000]


def _error_message(error: dict, model: type[BaseModel]) -> str:
    """pydantic's message, but an unknown top-level field (a typo such as `filter`) names the closest known one."""
    where = ".".join(map(str, error["loc"]))
    if error["type"] != "extra_forbidden" or len(error["loc"]) != 1:
        return f"{where}: {error['msg']}"
    close = difflib.get_close_matches(str(error["loc"][0]), list(model.model_fields), n=1)
    return f"{where}: unknown field" + (f" (did you mean {close[0]!r}?)" if close else "")


def _json_object(body: bytes, model: type[Model]) -> Model:
    fields = loads(body or b"{}", "body")
    if not isinstance(fields, dict):
        raise Refused(422, "invalid_request", "body must be a JSON object")
    return _validate(fields, strict=True, model=model)


async def _parse_json(body: bytes) -> tuple[SearchRequest, bytes | None]:
    search = _json_object(body, SearchRequest)
    return search, photo_bytes(search.image_base64) if search.image_base64 else None


async def parse_json_body(request: Request, model: type[Model], max_bytes: int,
                          timeouts: BodyTimeouts = BODY_TIMEOUTS) -> Model:
    """A JSON-only route's body (POST /recommend) as `model`, within the same size, time and encoding limits as a
    search's (413/415/422/400/408, 499 when the client hangs up)."""
    kind = await _media_type(request, max_bytes, timeouts)
    if kind not in JSON_TYPES:
        raise Refused(415, "unsupported_content_type", f"content type {kind or '(none)'} not supported; send "
                                                       "application/json")
    return _json_object(await read_body(request, max_bytes, timeouts), model)


def photo_bytes(text: str, name: str = "image_base64") -> bytes:
    """A base64 photo's bytes (a search's, a recommendation's); not base64 is a 400 naming it (`name`: its field, or
    which of a list)."""
    try:
        return base64.b64decode(text.split(",", 1)[-1], validate=True)  # tolerate a data: URL prefix
    except (binascii.Error, ValueError) as err:
        raise Refused(400, "bad_base64", f"{name} is not valid base64") from err


async def _parse_form(request: Request, body: bytes, max_bytes: int) -> tuple[SearchRequest, bytes | None]:
    """The body, read within the limits first (with or without a Content-Length), parsed as a form. An empty field
    is a field not given (a browser sends every input of a form, filled or not)."""
    form = await _form(request.headers, body, max_bytes)
    try:
        upload = form.get("image")
        image = await upload.read() if upload is not None and hasattr(upload, "read") else None
        fields = {k: v for k, v in form.items() if k != "image" and isinstance(v, str) and v != ""}
    finally:
        await form.close()
    if "filters" in fields:
        fields["filters"] = loads(fields["filters"], "filters")
    if "segment" in fields:
        fields["segment"] = _form_boolean("segment", fields["segment"])
    return _validate(fields, strict=False), image or None


def _form_boolean(name: str, text: str) -> bool:
    """The schema says boolean: in a form that is `true` or `false`."""
    if text.lower() not in FORM_BOOLEANS:
        raise Refused(422, "invalid_request", f"{name}: Input should be true or false, not {text[:20]!r}")
    return FORM_BOOLEANS[text.lower()]


async def _form(headers: Headers, body: bytes, max_bytes: int) -> FormData:
    """Multipart or urlencoded, with the JSON body's rule for text: UTF-8 or a 400 (starlette would read bad bytes
    as Latin-1 or as replacement characters, and search for them)."""
    if not headers.get("content-type", "").lower().startswith("multipart/"):
        return _urlencoded(body)
    _check_complete(headers, body)
    try:
        return await StrictMultiPart(headers, _chunks(body), max_files=1, max_fields=MAX_FORM_FIELDS,
                                     max_part_size=max_bytes).parse()
    except UnicodeDecodeError as err:
        raise Refused(400, "bad_body", f"a form field is not valid UTF-8 (byte {err.start})") from err
    except Exception as err:  # starlette's multipart errors vary; all mean a malformed body
        raise Refused(400, "bad_body", f"malformed form body: {str(err)[:MESSAGE_CHARS]}") from err


def _urlencoded(body: bytes) -> FormData:
    try:
        return FormData(parse_qsl(body.decode("utf-8"), keep_blank_values=True, encoding="utf-8", errors="strict",
                                  max_num_fields=MAX_FORM_FIELDS))
    except UnicodeDecodeError as err:
        raise Refused(400, "bad_body", f"a form field is not valid UTF-8 (byte {err.start})") from err
    except ValueError as err:  # more fields than a search has
        raise Refused(400, "bad_body", f"malformed form body: {str(err)[:MESSAGE_CHARS]}") from err


def _check_complete(headers: Headers, body: bytes) -> None:
    """A multipart body ends with its closing boundary; without it the body was cut short (the parser would return
    the parts it saw, and the search would miss the rest without a word)."""
    boundary = parse_options_header(headers["content-type"])[1].get(b"boundary")
    if boundary and b"--" + boundary + b"--" not in body:
        raise Refused(400, "truncated_body", "the multipart body is truncated: it lacks its closing boundary")


class StrictMultiPart(MultiPartParser):
    """starlette's parser, with a text part's bytes required to be UTF-8 (it falls back to Latin-1)."""

    def on_part_end(self) -> None:
        if self._current_part.file is None:
            bytes(self._current_part.data).decode("utf-8")
        super().on_part_end()


async def _chunks(body: bytes):
    yield body
