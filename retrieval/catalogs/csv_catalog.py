"""Generic CSV catalog: an id column, an image path column, every other column becomes payload."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

from retrieval.catalogs.base import CatalogError
from schemas.catalog import CatalogItem

ID_COLUMNS = ("id", "item_id", "sku")
IMAGE_COLUMNS = ("image", "image_path", "path", "filename")


def _pick(header: list[str], choices: tuple[str, ...], what: str, path: Path) -> str:
    for name in choices:
        if name in header:
            return name
    raise CatalogError(f"{path}: no {what} column; expected one of {', '.join(choices)}, found {', '.join(header)}")


def _value(text: str):
    """Numbers stay numbers in the payload (year 2011 filters as an int); empty cells are dropped."""
    if text.isdigit():
        return int(text)
    return text


def read_csv_catalog(root: Path) -> Iterator[CatalogItem]:
    """Items of `root/catalog.csv` (or of the CSV file `root` itself)."""
    path = root if root.suffix == ".csv" else root / "catalog.csv"
    if not path.is_file():
        raise CatalogError(f"{path} not found")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        id_col, image_col = _pick(header, ID_COLUMNS, "id", path), _pick(header, IMAGE_COLUMNS, "image", path)
        for row in reader:
            item_id, image = (row.get(id_col) or "").strip(), (row.get(image_col) or "").strip()
            if not item_id or not image:
                continue  # a row without id or image cannot be indexed; the reader is not the place to count it
            metadata = {k: _value(v.strip()) for k, v in row.items() if k not in (id_col, image_col) and k and v and v.strip()}
            yield CatalogItem(id=item_id, image=image, metadata=metadata)
