"""The Catalog type and the one entry point that picks a reader by format (formats.py) or detects it."""

from __future__ import annotations

import contextlib
import csv
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from retrieval.files import is_local_uri, is_uri, local_path
from schemas.catalog import CatalogItem


class CatalogError(ValueError):
    """The catalog cannot be read: wrong layout, missing index file, bad columns."""


@dataclass(frozen=True)
class Catalog:
    """A readable catalog: its root folder and a function yielding its items (image paths relative to root)."""

    root: Path
    format: str
    reader: Callable[[Path], Iterator[CatalogItem]]
    table: Any = None  # tabular.TableKind of a table catalog (the index job streams it), else None
    source: Path | None = None  # what the reader reads: the root, or the table file given directly
    text_fields: tuple[str, ...] | None = None  # --text-fields (table catalogs)

    def items(self) -> Iterator[CatalogItem]:
        return self.reader(self.root)

    def table_file(self) -> Path | None:
        """The table the index job streams (None: not a table catalog)."""
        return self.table.path(self.source or self.root) if self.table else None

    def columns(self):
        """The table's tabular.Columns: id, image and document columns (read from its header)."""
        return self.table.columns(self.source or self.root, self.text_fields)

    def image_path(self, item: CatalogItem) -> Path | str:
        return image_location(self.root, item.image)


def image_location(root: Path, image: str) -> Path | str:
    """Where an image column's value points: a URI as the catalog gives it (retrieval/files.py reads it), else a
    path, a relative one under the catalog root. The one rule for every reader and the index rows."""
    if is_uri(image):
        return image
    path = Path(image)
    return path if path.is_absolute() else root / path


def safe_image_path(root: str | Path | None, image: str | None) -> Path | str | None:
    """An item's image for the page, or None: a local one (a path, or a file:// URI) only inside the catalog root,
    so that nothing else on the machine is ever served; an object-store URI as the catalog named it (the page
    reads it through retrieval.files.page_image, image types only, bounded)."""
    if not root or not image:
        return None
    if is_uri(image) and not is_local_uri(image):
        return image
    base = Path(root).resolve()
    path = (base / (local_path(image) if is_uri(image) else image)).resolve()
    return path if path.is_relative_to(base) and path.is_file() else None


@contextlib.contextmanager
def csv_rows(path: Path) -> Iterator[csv.DictReader]:
    """A UTF-8 CSV file's rows by its header; a missing file is a CatalogError."""
    if not path.is_file():
        raise CatalogError(f"{path} not found")
    with path.open(newline="", encoding="utf-8") as handle:
        yield csv.DictReader(handle)


def detect_format(root: Path) -> str:
    """Guess the layout from the index files present."""
    from retrieval.catalogs import magento

    if magento.is_export(root):  # a Magento export is a CSV too: its header tells it apart
        return "magento"
    from retrieval.catalogs.formats import FORMATS

    for layout in FORMATS.values():
        if layout.table and layout.table.holds(root):
            return layout.name
    if (root / "captions.json").is_file() or (root / "labels" / "shape" / "shape_anno_all.txt").is_file():
        return "deepfashion-mm"
    if (root / "list_eval_partition.txt").is_file() or (root / "Eval" / "list_eval_partition.txt").is_file():
        return "inshop"
    return "folder"


def open_catalog(root: str | Path, fmt: str = "auto", text_fields: Sequence[str] | None = None) -> Catalog:
    """A Catalog for `root`; the format is detected when `fmt` is auto. `text_fields` (table formats only) picks the
    columns that make each item's document."""
    root = Path(root).expanduser().resolve()
    if not root.exists():
        raise CatalogError(f"catalog {root} does not exist")
    from retrieval.catalogs.formats import format_of  # the readers import this module

    layout = format_of(fmt, root)
    reader = layout.read
    if text_fields is not None:
        if not layout.text_fields:
            raise CatalogError(f"--text-fields picks a table's columns; a {layout.name} catalog builds its documents "
                               "itself")
        reader = functools.partial(reader, text_fields=tuple(text_fields))
    fields = tuple(text_fields) if text_fields is not None else None
    given_directly = root.is_file() or layout.table is not None and root.suffix in layout.table.suffixes
    if given_directly:  # a table file (or a folder of Parquet part files) given directly: its folder is the image root
        return Catalog(root.parent, layout.name, lambda _root, f=root: reader(f), layout.table, root, fields)
    return Catalog(root, layout.name, reader, layout.table, root, fields)
