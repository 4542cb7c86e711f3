"""The Catalog type and the one entry point that picks a reader by format (formats.py) or detects it."""

from __future__ import annotations

import contextlib
import csv
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from retrieval.catalogs import location
from retrieval.catalogs.location import Ref
from retrieval.files import is_local_uri, is_uri, local_path
from schemas.catalog import CatalogItem


class CatalogError(ValueError):
    """The catalog cannot be read: wrong layout, missing index file, bad columns."""


@dataclass(frozen=True)
class Catalog:
    """A readable catalog: its root folder (a Path, or a URI on an object store: location.py) and a function yielding
    its items (image paths relative to root)."""

    root: Ref
    format: str
    reader: Callable[[Ref], Iterator[CatalogItem]]
    table: Any = None  # tabular.TableKind of a table catalog (the index job streams it), else None
    source: Ref | None = None  # what the reader reads: the root, or the table file given directly
    text_fields: tuple[str, ...] | None = None  # --text-fields (table catalogs)

    def items(self) -> Iterator[CatalogItem]:
        return self.reader(self.root)

    def table_file(self) -> Ref | None:
        """The table the index job streams (None: not a table catalog)."""
        return self.table.path(self.source or self.root) if self.table else None

    def columns(self):
        """The table's tabular.Columns: id, image and document columns (read from its header)."""
        return self.table.columns(self.source or self.root, self.text_fields)

    def image_path(self, item: CatalogItem) -> Path | str:
        return image_location(self.root, item.image)


def image_location(root: Ref, image: str) -> Path | str:
    """Where an image column's value points: a URI as the catalog gives it (retrieval/files.py reads it), else a
    path, a relative one under the catalog root (a URI when the root is one). The one rule for every reader and the
    index rows."""
    if is_uri(image):
        return image
    path = Path(image)
    return path if path.is_absolute() else location.join(root, image)


def safe_image_path(root: str | Path | None, image: str | None) -> Path | str | None:
    """An item's image for the page, or None: a local one (a path, or a file:// URI) only inside the catalog root,
    so that nothing else on the machine is ever served; an object-store URI as the catalog named it, or a relative
    path under a catalog root on an object store (the page reads both through retrieval.files.page_image, image
    types only, bounded)."""
    if not root or not image:
        return None
    if is_uri(image) and not is_local_uri(image):
        return image
    if is_uri(root) and not is_local_uri(root):
        return None if is_uri(image) or Path(image).is_absolute() else location.under(str(root), image)
    base = Path(local_path(str(root)) if is_uri(root) else root).resolve()
    path = (base / (local_path(image) if is_uri(image) else image)).resolve()
    return path if path.is_relative_to(base) and path.is_file() else None


@contextlib.contextmanager
def csv_rows(path: Ref) -> Iterator[csv.DictReader]:
    """A UTF-8 CSV file's rows by its header; a missing file is a CatalogError."""
    if location.kind(path) != "file":
        raise CatalogError(f"{path} not found")
    with location.open_text(path) as handle:
        yield csv.DictReader(handle)


def detect_format(root: Ref) -> str:
    """Guess the layout from the index files present (on an object store: a table's only)."""
    from retrieval.catalogs import magento

    if magento.is_export(root):  # a Magento export is a CSV too: its header tells it apart
        if not isinstance(root, Path):
            raise CatalogError(f"{root}: a Magento export is read from a local folder (its mapping beside it)")
        return "magento"
    if not isinstance(root, Path):
        return _table_format(root) or _no_table(root)
    if table := _table_format(root):
        return table
    if (root / "captions.json").is_file() or (root / "labels" / "shape" / "shape_anno_all.txt").is_file():
        return "deepfashion-mm"
    if (root / "list_eval_partition.txt").is_file() or (root / "Eval" / "list_eval_partition.txt").is_file():
        return "inshop"
    return "folder"


def _table_format(root: Ref) -> str | None:
    """The table format whose file `root` is or holds, None for none."""
    from retrieval.catalogs.formats import FORMATS

    return next((layout.name for layout in FORMATS.values() if layout.table and layout.table.holds(root)), None)


def _no_table(root: str) -> str:
    from retrieval.catalogs.formats import FORMATS

    tables = ", ".join(layout.table.file for layout in FORMATS.values() if layout.table)
    raise CatalogError(f"no {tables} at {root}: a catalog on an object store is a table; name its file")


def open_catalog(root: str | Path, fmt: str = "auto", text_fields: Sequence[str] | None = None, *,
                 remote: bool = False) -> Catalog:
    """A Catalog for `root`; the format is detected when `fmt` is auto. `text_fields` (table formats only) picks the
    columns that make each item's document. `remote`: the caller reads a table catalog on an object store (a URI;
    the index job does), which other commands refuse with a clear error."""
    root = location.normal(root)
    if not isinstance(root, Path) and not remote:
        raise CatalogError(f"{root}: this command reads a local catalog (the index job reads one on an object "
                           "store); copy it to a folder")
    with _reading(root):
        found = location.kind(root)
        if found is None:
            raise CatalogError(f"catalog {root} does not exist")
        layout = _layout(fmt, root)
    reader = layout.read
    if text_fields is not None:
        if not layout.text_fields:
            raise CatalogError(f"--text-fields picks a table's columns; a {layout.name} catalog builds its documents "
                               "itself")
        reader = functools.partial(reader, text_fields=tuple(text_fields))
    fields = tuple(text_fields) if text_fields is not None else None
    given_directly = found == "file" or layout.table is not None and location.suffix(root) in layout.table.suffixes
    if given_directly:  # a table file (or a folder of Parquet part files) given directly: its folder is the image root
        return Catalog(location.parent(root), layout.name, lambda _root, f=root: reader(f), layout.table, root, fields)
    return Catalog(root, layout.name, reader, layout.table, root, fields)


def _layout(fmt: str, root: Ref):
    """The catalog's formats.CatalogFormat: on an object store, a table's only."""
    from retrieval.catalogs.formats import format_of  # the readers import this module

    layout = format_of(fmt, root)
    if not isinstance(root, Path) and layout.table is None:
        raise CatalogError(f"{root}: a catalog on an object store is a table (CSV, Parquet, JSON lines), not "
                           f"{layout.name}")
    return layout


@contextlib.contextmanager
def _reading(root: Ref) -> Iterator[None]:
    """A store's refusal or failure, a scheme pyarrow has no filesystem for, or an undecodable file, met while
    finding the catalog, as a CatalogError naming it."""
    from pyarrow import ArrowException

    try:
        yield
    except CatalogError:
        raise
    except (OSError, ValueError, ArrowException) as err:
        raise CatalogError(f"catalog {root} cannot be read: {err}") from err
