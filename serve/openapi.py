"""This deployment's OpenAPI document: the generic one, narrowed to what its live collection and encoder accept."""

# The generic document cannot know which payload fields a collection indexes or whether the service isolates
# garments, so a client (or a schema-driven test) reading it would send requests that are refused with a 422/400.
# The served document says it: `filters` names only the collection's filter fields, `group_by` only its keyword
# fields, `segment` is only false without a segmenter. It is rebuilt when the alias moves to another generation.

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Callable

from schemas.api import MAX_FILTER_VALUES

BODIES = ("/search", "/recommend")  # the routes whose request bodies name filter fields
# A filter value as JSON text: a word (no escapes, no control characters), an integer of I-JSON's range, or a list of
# words; bounded as schemas/api.py bounds them.
_WORD = r'"[^"\\\x00-\x1f]{1,200}"'
_VALUE = rf"(?:{_WORD}|-?(?:0|[1-9][0-9]{{0,14}})|\[ ?{_WORD}(?:, ?{_WORD}){{0,{MAX_FILTER_VALUES - 1}}} ?\])"


@dataclass(frozen=True)
class Deployment:
    """What narrows the document: the live collection, its filter fields, and whether photos can be segmented."""

    collection: str
    filter_fields: tuple[str, ...]
    segmentation: bool


def narrowed(document: dict, deployment: Deployment) -> dict:
    """A copy of `document` that accepts only what this deployment serves."""
    doc = copy.deepcopy(document)
    for path in BODIES:
        content = doc["paths"].get(path, {}).get("post", {}).get("requestBody", {}).get("content", {})
        for media in content.values():
            _narrow_properties(media.get("schema", {}).get("properties", {}), deployment)
    return doc


def _narrow_properties(properties: dict, deployment: Deployment) -> None:
    fields = list(deployment.filter_fields)
    for branch in _branches(properties.get("filters"), "object"):
        branch.update({"propertyNames": {"enum": fields}} if fields else {"maxProperties": 0})
    for branch in _branches(properties.get("filters"), "string"):  # the form's filters: a JSON object as text
        branch["pattern"] = filters_pattern(fields)
    for branch in _branches(properties.get("group_by"), "string"):
        branch.update({"enum": fields} if fields else {"not": {}})
    if not deployment.segmentation:
        for branch in _branches(properties.get("segment"), "boolean"):
            branch["enum"] = [False]


def filters_pattern(fields: list[str]) -> str:
    """A JSON object of these fields, each with a filter value, as one line. (Not bounded to MAX_FILTER_FIELDS
    entries: a counted repetition of the entry is past the size the validators compile.)"""
    if not fields:
        return r"^\{\}$"
    entry = rf'"(?:{"|".join(_literal(f) for f in fields)})": ?{_VALUE}'
    return rf"^\{{(?:{entry}(?:, ?{entry})*)?\}}$"


def _literal(text: str) -> str:
    r"""`text` as a regular expression in both Python's and ECMA 262's syntax (re.escape's `\-` is not ECMA's)."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", text)


def _branches(schema: dict | None, kind: str) -> list[dict]:
    """The parts of a property's schema of one JSON type (its non-null branch, or itself)."""
    if not schema:
        return []
    return [b for b in schema.get("anyOf", [schema]) if b.get("type") == kind]


def install(app: Any, deployment: Callable[[], Deployment | None]) -> None:
    """Serve the narrowed document from `app.openapi()`, rebuilt when the deployment changes; the generic one while
    the deployment cannot be read (a store not ready yet)."""
    generic, cache = app.openapi, {}

    def openapi() -> dict:
        current = deployment()
        if current is None:
            return generic()
        if cache.get("key") != current:
            cache.update(key=current, doc=narrowed(generic(), current))
        return cache["doc"]

    app.openapi = openapi
