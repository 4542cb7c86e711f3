"""The collection spec: named vectors, distance, payload indexes and the model that made the vectors."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

IMAGE_VECTOR = "image"
# Distance names as the spec records them, and as Qdrant (server, local mode and edge) spells them.
DISTANCES = {"cosine": "Cosine", "dot": "Dot", "euclid": "Euclid", "manhattan": "Manhattan"}

# Fields shoppers filter by in the catalogs we read (Fashion Product Images CSV, DeepFashion-MultiModal, In-shop);
# each gets a keyword payload index. An index on a field a catalog lacks costs nothing.
DEFAULT_FILTER_FIELDS: tuple[str, ...] = (
    "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage",
    "category", "sleeve_length", "neckline", "upper_fabric", "lower_fabric", "upper_pattern", "lower_pattern",
    "inshop_item_id", "split",
)
# What must agree between a collection and the run writing into it (the vectors are checked apart).
INDEX_FIELDS = ("model", "dim", "distance", "letterbox", "segmentation")


class CollectionSpec(BaseModel):
    """What a collection must look like; opening it with another model or dimension is an error."""

    name: str = Field(min_length=1)
    model: str = Field(min_length=1, description="The model spec string that produced the vectors.")
    dim: int = Field(gt=0)
    vectors: tuple[str, ...] = (IMAGE_VECTOR,)
    distance: Literal["cosine", "dot", "euclid", "manhattan"] = "cosine"
    letterbox: bool = False  # queries must be preprocessed as the items were
    segmentation: str = "none"  # how item photos were isolated before encoding
    catalog_root: str | None = None  # where the item images lie, so the service can show them
    filter_fields: tuple[str, ...] = DEFAULT_FILTER_FIELDS

    def problem(self, **wanted: object) -> str | None:
        """Why this collection (as found in the store) cannot serve what is asked, or None: the one decision on fit.

        A writer asks for every INDEX_FIELD and its vectors (`wanted_by_writer`); the service for its model and the
        vectors its searches read (it takes letterbox and segmentation from the collection)."""
        for field, asked in wanted.items():
            if field == "vectors":
                missing = [v for v in asked if v not in self.vectors]
                if missing:
                    return f"it has no {', '.join(missing)} vectors (it was built by an older version)"
            elif getattr(self, field) != asked:
                return f"{field}: the collection has {getattr(self, field)!r}, this run uses {asked!r}"
        return None

    def wanted_by_writer(self) -> dict[str, object]:
        """What a run writing with this spec needs an existing collection to agree on."""
        return {field: getattr(self, field) for field in (*INDEX_FIELDS, "vectors")}
