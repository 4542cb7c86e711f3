"""Magento product export reader: one item per product-colour photo, with its parent's words and its variants' sizes."""

from __future__ import annotations

import csv
import html
import re
from collections import defaultdict
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from retrieval.catalogs import location
from retrieval.catalogs.base import CatalogError, csv_rows
from retrieval.catalogs.location import Ref
from schemas.catalog import CatalogItem

MAPPING_FILE = "catalog-mapping.yaml"
SIGNATURE = {"sku", "product_type", "additional_attributes"}  # columns that say "a Magento export"
# A `key=` that starts the next pair: values may hold commas ("Cotton, organic"), keys never do.
PAIR_START = re.compile(r",(?=[A-Za-z_][A-Za-z0-9_]*=)")
BLOCK_TAGS = {"p", "br", "li", "ul", "ol", "div", "tr", "td", "h1", "h2", "h3", "h4", "h5", "h6"}


class Mapping(BaseModel):
    """Which columns of the export mean what, and the item fields they become."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = "products.csv"
    id: str = "sku"
    image: str = "base_image"
    image_root: str = "images"  # where `image` paths start (Magento: relative to pub/media/catalog/product)
    row_type: str = "product_type"
    parent_type: str = "configurable"
    variants: str = "configurable_variations"  # on a parent: sku=..,size=..,color=..|sku=..
    attributes: str = "additional_attributes"  # key=value pairs, multi-values split by |
    skip_attributes: tuple[str, ...] = ("has_options", "required_options")  # store mechanics, not product facts
    variant_lists: tuple[str, ...] = ("size",)  # variant attributes listed even when a photo has one value
    categories: str = "categories"  # comma-separated paths
    category_root: str = "Default Category"
    category_levels: tuple[str, ...] = ("gender", "department", "type")  # fields of a path as deep as this
    category_other: str = "collections"  # the leaves of shallower paths (Collections/Eco Friendly, Promotions/...)
    columns: dict[str, str] = {"name": "name", "description": "description", "price": "price"}  # field: column
    html_fields: tuple[str, ...] = ("description",)
    group_field: str = "product_group"
    variant_ids_field: str = "variant_skus"
    # The document: attribute values first (short, what a shopper types), the free text last.
    document: tuple[str, ...] = ("type", "color", "gender", "department", "style_general", "style_bottom",
                                 "material", "pattern", "climate", "collections", "name", "description")


MAGENTO = Mapping()


def load_mapping(folder: Path) -> Mapping:
    """The preset, with the keys of `folder/catalog-mapping.yaml` (when there is one) replacing its own."""
    path = folder / MAPPING_FILE
    if not path.is_file():
        return MAGENTO
    try:
        given = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return Mapping(**{**MAGENTO.model_dump(), **given})
    except (yaml.YAMLError, TypeError, ValidationError) as err:
        raise CatalogError(f"{path}: not a catalog mapping ({err})") from err


def export_path(root: Path) -> Path:
    """The export file of a catalog root (or the CSV file given itself)."""
    return root if root.suffix == ".csv" else root / load_mapping(root).file


def is_export(root: Ref) -> bool:
    """A folder with a catalog mapping, or a CSV (products.csv in a folder) whose header is Magento's; on an object
    store too, so that one is refused rather than read as a plain table."""
    if location.kind(root) == "dir" and location.kind(location.join(root, MAPPING_FILE)) == "file":
        return True
    path = root if location.suffix(root) == ".csv" else location.join(root, MAGENTO.file)
    if location.kind(path) != "file":
        return False
    with location.open_text(path) as handle:
        return SIGNATURE <= set(next(csv.reader(handle), []))


class _Text(HTMLParser):
    """The text of an HTML fragment, block tags read as spaces (entities decoded by the parser)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.parts.append(" " if tag in BLOCK_TAGS else "")

    def handle_endtag(self, tag):
        self.parts.append(" " if tag in BLOCK_TAGS else "")

    def handle_data(self, data):
        self.parts.append(data)


def strip_html(text: str) -> str:
    parser = _Text()
    parser.feed(text)
    parser.close()
    return " ".join("".join(parser.parts).split())


def parse_pairs(text: str) -> dict[str, str | list[str]]:
    """`material=Wool|Fleece,pattern=Solid` -> {material: [Wool, Fleece], pattern: Solid}; entities decoded."""
    out: dict[str, str | list[str]] = {}
    for pair in PAIR_START.split(text.strip()):
        key, sep, value = pair.partition("=")
        values = [html.unescape(v).strip() for v in value.split("|") if v.strip()] if sep else []
        if key.strip() and values:
            out[key.strip()] = values if len(values) > 1 else values[0]
    return out


def category_fields(cell: str, mapping: Mapping) -> dict[str, str | list[str]]:
    """Paths as deep as the levels fill them (gender/department/type); shallower ones add their leaf to the
    `category_other` list; the bare root adds nothing."""
    levels: dict[str, list[str]] = defaultdict(list)
    for path in (p.strip() for p in cell.split(",") if p.strip()):
        parts = [p.strip() for p in path.split("/")]
        parts = parts[1:] if parts[0] == mapping.category_root else parts
        if len(parts) == len(mapping.category_levels):
            named = list(zip(mapping.category_levels, parts))
        else:
            named = [(mapping.category_other, parts[-1])] if parts else []
        for field, value in named:
            if value not in levels[field]:
                levels[field].append(value)
    return {field: values[0] if len(values) == 1 else values for field, values in levels.items()}


def _number(text: str):
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        return text


def own_fields(row: dict[str, str], mapping: Mapping) -> dict[str, object]:
    """A product row's payload: mapped columns (HTML stripped where asked), category levels, attributes."""
    fields: dict[str, object] = {}
    for field, column in mapping.columns.items():
        value = (row.get(column) or "").strip()
        if value:
            fields[field] = strip_html(value) if field in mapping.html_fields else _number(value)
    fields.update(category_fields(row.get(mapping.categories) or "", mapping))
    fields.update(attribute_fields(row, mapping))
    return fields


def attribute_fields(row: dict[str, str], mapping: Mapping) -> dict[str, str | list[str]]:
    pairs = parse_pairs(row.get(mapping.attributes) or "")
    return {k: v for k, v in pairs.items() if k not in mapping.skip_attributes}


def variant_fields(rows: list[dict[str, str]], mapping: Mapping) -> dict[str, object]:
    """What the variants of one photo share becomes a field (color); what differs, and the `variant_lists`, a list
    in row order (size: XS, S, M, L, XL)."""
    values: dict[str, list] = defaultdict(list)
    for row in rows:
        for key, value in attribute_fields(row, mapping).items():
            if value not in values[key]:
                values[key].append(value)
    return {k: v[0] if len(v) == 1 and k not in mapping.variant_lists else v for k, v in values.items()}


def document(fields: dict[str, object], mapping: Mapping) -> str:
    words = []
    for name in mapping.document:
        value = fields.get(name)
        words += [str(v) for v in (value if isinstance(value, list) else [value]) if isinstance(v, str) and v]
    return " ".join(words)


def image_of(row: dict[str, str], mapping: Mapping) -> str:
    value = (row.get(mapping.image) or "").strip().lstrip("/")
    return f"{mapping.image_root}/{value}" if value and mapping.image_root else value


def read_rows(path: Path, mapping: Mapping) -> list[dict[str, str]]:
    """The export's product rows (a row with a store view code only overrides another row's words for one store)."""
    with csv_rows(path) as reader:
        missing = {mapping.id, mapping.image, mapping.row_type} - set(reader.fieldnames or [])
        if missing:
            raise CatalogError(f"{path}: no column {', '.join(sorted(missing))}; a mapping names the columns "
                               f"({MAPPING_FILE} beside the export)")
        return [row for row in reader if not (row.get("store_view_code") or "").strip()]


def parent_of(rows: list[dict[str, str]], mapping: Mapping) -> dict[str, str]:
    """variant sku -> parent sku, from each parent's list of variants."""
    out = {}
    for row in rows:
        if row.get(mapping.row_type) == mapping.parent_type:
            for variant in (row.get(mapping.variants) or "").split("|"):
                sku = parse_pairs(variant).get("sku")
                if isinstance(sku, str):
                    out[sku] = row[mapping.id]
    return out


def photo_groups(rows: list[dict[str, str]], mapping: Mapping) -> dict[tuple[str, str], list[dict[str, str]]]:
    """(parent sku, photo) -> the variant rows showing it, in file order; rows without a parent group alone."""
    parents = parent_of(rows, mapping)
    with_variants = {parents[row[mapping.id]] for row in rows if row.get(mapping.id) in parents}
    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        sku, image = row.get(mapping.id, "").strip(), image_of(row, mapping)
        if not sku or not image or sku in with_variants:
            continue  # no id or no photo cannot be indexed; a parent with variants is shown by its variants' photos
        groups[(parents.get(sku, sku), image)].append(row)
    return groups


def item_of(key: tuple[str, str], variants: list[dict[str, str]], product: dict[str, str],
            mapping: Mapping) -> CatalogItem:
    fields = own_fields(product, mapping)
    shared = variant_fields(variants, mapping) if variants[0] is not product else {}
    fields.update(shared)
    fields[mapping.group_field] = key[0]
    fields[mapping.variant_ids_field] = [row[mapping.id] for row in variants]
    suffix = "-".join(v for v in shared.values() if isinstance(v, str))
    item_id = f"{key[0]}-{suffix}" if suffix else variants[0][mapping.id]
    return CatalogItem(id=item_id, image=key[1], metadata=fields, text=document(fields, mapping))


def read_magento(root: Path) -> Iterator[CatalogItem]:
    """Items of `root/products.csv` (or of the CSV file `root`), one per product photo; image paths under
    `image_root` beside the export.

    A Magento export has a `configurable` parent row per product (name, HTML description, category paths,
    `key=value` attributes) and a `simple` row per size and colour whose `base_image` is the colour's photo.
    Shoppers search photos, so the variants that share a photo make one item: the parent's fields, what the
    variants share (their colour) as fields, what differs (their sizes) as lists, and the parent sku as
    `product_group` so that results can be grouped by product. A row with no parent is an item of its own. The
    columns and field names come from a Mapping: MAGENTO, overridden key by key by a `catalog-mapping.yaml`
    beside the export."""
    path = export_path(root)
    mapping = load_mapping(path.parent)
    rows = read_rows(path, mapping)
    by_sku = {row[mapping.id]: row for row in rows}
    seen: set[str] = set()
    for key, variants in photo_groups(rows, mapping).items():
        item = item_of(key, variants, by_sku.get(key[0], variants[0]), mapping)
        if item.id in seen:  # two photos of one colour: the second is told apart by its first variant's sku
            item = item.model_copy(update={"id": variants[0][mapping.id]})
        seen.add(item.id)
        yield item
