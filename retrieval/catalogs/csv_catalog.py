"""Generic CSV catalog: an id column, an image path column, every other column becomes payload; the words of the
text fields become the item's document."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from retrieval.catalogs.base import CatalogError, csv_rows
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


def _is_words(value) -> bool:
    """A cell worth searching by: a string that is not a number (a year or a price says nothing to BM25 or CLIP)."""
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return True
    return False


def document(metadata: dict, fields: Sequence[str]) -> str:
    """The item's document: the words of these fields, in this order."""
    return " ".join(str(metadata[f]) for f in fields if _is_words(metadata.get(f)))


def read_csv_catalog(root: Path, text_fields: Sequence[str] | None = None) -> Iterator[CatalogItem]:
    """Items of `root/catalog.csv` (or of the CSV file `root` itself). The document is made of `text_fields`
    (default: every column but the id and the image, in file order; numbers left out)."""
    path = root if root.suffix == ".csv" else root / "catalog.csv"
    with csv_rows(path) as reader:
        header = list(reader.fieldnames or [])
        id_col, image_col = _pick(header, ID_COLUMNS, "id", path), _pick(header, IMAGE_COLUMNS, "image", path)
        fields = _text_fields(header, text_fields, (id_col, image_col), path)
        for row in reader:
            item_id, image = (row.get(id_col) or "").strip(), (row.get(image_col) or "").strip()
            if not item_id or not image:
                continue  # a row without id or image cannot be indexed; the reader is not the place to count it
            metadata = {k: _value(v.strip()) for k, v in row.items()
                        if k not in (id_col, image_col) and k and v and v.strip()}
            yield CatalogItem(id=item_id, image=image, metadata=metadata, text=document(metadata, fields))


def _text_fields(header: list[str], asked: Sequence[str] | None, skip: tuple[str, str], path: Path) -> list[str]:
    if asked is None:
        return [name for name in header if name and name not in skip]
    unknown = [name for name in asked if name not in header]
    if unknown:
        raise CatalogError(f"{path}: no column {', '.join(unknown)} for --text-fields; columns: {', '.join(header)}")
    return list(asked)
