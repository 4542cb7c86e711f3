"""The catalog formats as one table: each layout's reader, whether `--text-fields` picks its document's columns, and
for a table format (CSV, Parquet, JSON lines) the file kind the index job streams through Ray Data in blocks; `auto`
(detect the layout from its index files, base.detect_format) is the one choice beside them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from retrieval.catalogs import deepfashion, folder, magento, tabular
from retrieval.catalogs.location import Ref
from schemas.catalog import CatalogItem


@dataclass(frozen=True)
class CatalogFormat:
    name: str
    read: Callable[..., Iterator[CatalogItem]]  # (root[, text_fields]) -> the catalog's items
    text_fields: bool = False  # its documents are made of columns that --text-fields may pick
    table: tabular.TableKind | None = None  # a table the job reads in blocks; None: a reader small enough to list


FORMATS: dict[str, CatalogFormat] = {f.name: f for f in (
    CatalogFormat("csv", tabular.CSV.read, text_fields=True, table=tabular.CSV),
    CatalogFormat("parquet", tabular.PARQUET.read, text_fields=True, table=tabular.PARQUET),
    CatalogFormat("jsonl", tabular.JSONL.read, text_fields=True, table=tabular.JSONL),
    CatalogFormat("folder", folder.read_image_folder),
    CatalogFormat("deepfashion-mm", deepfashion.read_deepfashion_multimodal),
    CatalogFormat("inshop", deepfashion.read_inshop),
    CatalogFormat("magento", magento.read_magento),
)}
CHOICES = ("auto", *FORMATS)


def format_of(name: str, root: Ref) -> CatalogFormat:
    """The named format (`auto`: the one the root's files show)."""
    from retrieval.catalogs.base import CatalogError, detect_format

    if name not in CHOICES:
        raise CatalogError(f"unknown catalog format {name!r}; valid: {', '.join(CHOICES)}")
    return FORMATS[detect_format(root) if name == "auto" else name]
