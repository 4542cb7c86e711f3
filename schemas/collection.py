"""The collection spec: named vectors, distance, payload indexes and the model that made the vectors."""

from __future__ import annotations

from pydantic import BaseModel, Field

IMAGE_VECTOR = "image"

# Fields shoppers filter by in the catalogs we read (Fashion Product Images CSV, DeepFashion-MultiModal, In-shop);
# each gets a keyword payload index. An index on a field a catalog lacks costs nothing.
DEFAULT_FILTER_FIELDS: tuple[str, ...] = (
    "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage",
    "category", "sleeve_length", "neckline", "upper_fabric", "lower_fabric", "upper_pattern", "lower_pattern",
    "inshop_item_id", "split",
)


class CollectionSpec(BaseModel):
    """What a collection must look like; opening it with another model or dimension is an error."""

    name: str = Field(min_length=1)
    model: str = Field(min_length=1, description="The model spec string that produced the vectors.")
    dim: int = Field(gt=0)
    vectors: tuple[str, ...] = (IMAGE_VECTOR,)
    distance: str = "cosine"
    letterbox: bool = False  # queries must be preprocessed as the items were
    segmentation: str = "none"  # how item photos were isolated before encoding
    catalog_root: str | None = None  # where the item images lie, so the service can show them
    filter_fields: tuple[str, ...] = DEFAULT_FILTER_FIELDS

    def mismatch(self, other: "CollectionSpec") -> str | None:
        """Why `other` (found in the store) cannot be used in place of this spec, or None."""
        for field in ("model", "dim", "distance", "letterbox", "segmentation"):
            mine, theirs = getattr(self, field), getattr(other, field)
            if mine != theirs:
                return f"{field}: the collection has {theirs!r}, this run uses {mine!r}"
        missing = set(self.vectors) - set(other.vectors)
        return f"vectors missing from the collection: {sorted(missing)}" if missing else None
