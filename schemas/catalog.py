"""The catalog item: what a reader yields and what a Qdrant point carries as payload (its document included)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, PlainValidator


def catalog_ref(value: str | Path) -> Path | str:
    """A --catalog value: a URI stays text (a Path would fold s3://shop into s3:/shop), anything else is a Path."""
    from retrieval.files import is_uri

    return value if isinstance(value, str) and is_uri(value) else Path(value)


# A catalog's place: a local path, or a table on an object store (s3://shop/export/catalog.parquet) for the index job.
# The validator is the whole parse (a JSON round trip keeps the URI, which a Path | str union would turn into a Path).
CatalogRef = Annotated[Path | str, PlainValidator(catalog_ref)]


class CatalogItem(BaseModel):
    """One product: a stable id, where its image lies, and free-form metadata for the payload."""

    id: str = Field(min_length=1, description="Stable catalog id; the Qdrant point id is derived from it.")
    image: str = Field(description="Image path relative to the catalog root, absolute, or a URI (s3://...).")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Everything else: becomes payload.")
    text: str = Field("", description="The item's own words (title, type, colour, caption...): its document for "
                                      "lexical and CLIP-text search; empty when the catalog has none.")
