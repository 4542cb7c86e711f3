"""Table catalogs (CSV, Parquet, JSON lines): an id column, an image column, every other column becomes payload; the
words of the text fields become the item's document. One record -> item conversion serves the readers here and the
Ray Data stages that read the same files in blocks (retrieval/catalogs/streamed.py)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from retrieval.catalogs import location
from retrieval.catalogs.base import CatalogError, csv_rows
from retrieval.catalogs.location import Ref
from schemas.catalog import CatalogItem

ID_COLUMNS = ("id", "item_id", "sku")
IMAGE_COLUMNS = ("image", "image_path", "path", "filename")

# A read task's share of a core: Ray's default (1 CPU) deadlocks a 2-CPU cluster whose Serve replicas hold CPUs.
READ_RESOURCES = {"num_cpus": 0.25}


@dataclass(frozen=True)
class Columns:
    """Which columns of a table are the id, the image and (in order) the document's words."""

    id: str
    image: str
    text: tuple[str, ...]

    @classmethod
    def of(cls, header: Sequence[str], text_fields: Sequence[str] | None, path: Ref) -> Columns:
        """From the table's header; `text_fields` None: every column but the id and the image, in file order."""
        header = [h for h in header if h]
        id_col, image_col = _pick(header, ID_COLUMNS, "id", path), _pick(header, IMAGE_COLUMNS, "image", path)
        return cls(id_col, image_col, _text_fields(header, text_fields, (id_col, image_col), path))


def _pick(header: list[str], choices: tuple[str, ...], what: str, path: Ref) -> str:
    for name in choices:
        if name in header:
            return name
    raise CatalogError(f"{path}: no {what} column; expected one of {', '.join(choices)}, found {', '.join(header)}")


def _text_fields(header: list[str], asked: Sequence[str] | None, skip: tuple[str, str], path: Ref) -> tuple[str, ...]:
    if asked is None:
        return tuple(name for name in header if name not in skip)
    unknown = [name for name in asked if name not in header]
    if unknown:
        raise CatalogError(f"{path}: no column {', '.join(unknown)} for --text-fields; columns: {', '.join(header)}")
    return tuple(asked)


def payload_value(value: Any) -> Any:
    """A cell as payload, None to drop it: text stripped (digits become an int, so year 2011 filters as one in every
    format), empty text, nulls and NaN dropped, numpy scalars and arrays as Python values, lists cleaned likewise."""
    if hasattr(value, "tolist"):  # numpy scalar or array (Ray Data's batches)
        value = value.tolist()
    if isinstance(value, str):
        text = value.strip()
        return (int(text) if text.isdigit() else text) if text else None
    if isinstance(value, (list, tuple)):
        cleaned = [v for v in map(payload_value, value) if v is not None]
        return cleaned or None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


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


def record_item(record: dict[str, Any], columns: Columns) -> CatalogItem | None:
    """One table row as a CatalogItem; None for a row without id or image (it cannot be indexed, and the reader is
    not the place to count it)."""
    item_id, image = _cell_text(record.get(columns.id)), _cell_text(record.get(columns.image))
    if not item_id or not image:
        return None
    metadata = {k: v for k, cell in record.items()
                if k and k not in (columns.id, columns.image) and (v := payload_value(cell)) is not None}
    return CatalogItem(id=item_id, image=image, metadata=metadata, text=document(metadata, columns.text))


def _cell_text(value: Any) -> str:
    """An id or image cell as text, as written ("007" stays "007"; a Parquet int64 id becomes its digits)."""
    value = value.tolist() if hasattr(value, "tolist") else value
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()


def table_items(records: Iterable[dict[str, Any]], columns: Columns) -> Iterator[CatalogItem]:
    return (item for item in (record_item(r, columns) for r in records) if item is not None)


@dataclass(frozen=True)
class TableKind:
    """One table format: its default file name in a catalog folder, the suffixes of a file given directly, its
    header reader and record reader (both streaming, for the in-memory path), and its Ray Data datasource."""

    file: str
    suffixes: tuple[str, ...]
    header: Any  # (path) -> column names in file order
    records: Any  # (path) -> Iterator[dict]
    datasource: Any  # (path, header) -> ray.data.Dataset of the raw records, read in blocks
    block_records: Any = None  # (pyarrow block of that dataset) -> its records; None: the block's rows

    def dataset(self, path: Ref):
        return self.datasource(path, self.header(path))

    def records_of(self, block) -> list[dict]:
        """The records of one block of `dataset`."""
        return (self.block_records or _table_block)(block)

    folders: bool = False  # a folder of part files may stand for the file (Parquet: Spark's and warehouses' exports)

    def path(self, root: Ref) -> Ref:
        path = root if location.suffix(root) in self.suffixes else location.join(root, self.file)
        found = location.kind(path)
        if not (found == "file" or self.folders and parts(path)):
            raise CatalogError(f"{path} not found" + (" (or is a folder without .parquet part files)"
                                                      if self.folders and found == "dir" else ""))
        return path

    def holds(self, root: Ref) -> bool:
        """Whether `root` is this kind's table, or a folder with one under its default name."""
        path = location.join(root, self.file)
        return (location.suffix(root) in self.suffixes or location.kind(path) == "file"
                or (self.folders and bool(parts(path))))

    def columns(self, root: Ref, text_fields: Sequence[str] | None = None) -> Columns:
        path = self.path(root)
        return Columns.of(self.header(path), text_fields, path)

    def read(self, root: Ref, text_fields: Sequence[str] | None = None) -> Iterator[CatalogItem]:
        """The catalog's items, one record at a time."""
        yield from table_items(self.records(self.path(root)), self.columns(root, text_fields))


def _csv_header(path: Ref) -> list[str]:
    with csv_rows(path) as reader:
        return list(reader.fieldnames or [])


def _csv_records(path: Ref) -> Iterator[dict]:
    with csv_rows(path) as reader:
        yield from reader


def parts(path: Ref) -> list[Ref]:
    """A Parquet table's files: the file itself, or a folder's part files in name order (part-00000...), leaving out
    what is under a hidden or underscored name, as pyarrow does (_SUCCESS, a failed job's _temporary/, Delta's
    _delta_log/, .spark-staging/); Hive partition folders' names are not read as columns. [] for neither."""
    found = location.kind(path)
    return [path] if found == "file" else location.files_under(path, ".parquet") if found == "dir" else []


def _parquet_header(path: Ref) -> list[str]:
    import pyarrow.parquet as pq

    with location.open_binary(parts(path)[0]) as handle:
        return list(pq.read_schema(handle).names)


def _parquet_records(path: Ref, batch_rows: int = 4096) -> Iterator[dict]:
    import pyarrow.parquet as pq

    for part in parts(path):
        with location.open_binary(part) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_rows):
                yield from batch.to_pylist()


def _jsonl_header(path: Ref) -> list[str]:
    """The first record's keys: a JSON lines catalog's columns, in that record's order."""
    first = next(_jsonl_records(path), None)
    return list(first or {})


def _jsonl_records(path: Ref) -> Iterator[dict]:
    with location.open_text(path) as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield _json_object(line, f"{path}:{number}")


def _json_object(line: str, where: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise CatalogError(f"{where}: not JSON ({err})") from err
    if not isinstance(record, dict):
        raise CatalogError(f"{where}: a catalog line is a JSON object, not {type(record).__name__}")
    return record


def _ray_csv(path: Ref, header: list[str]):
    """Every column read as text, as the csv module reads it (a cell keeps "007"; payload_value makes numbers), and
    quoted newlines allowed (shops' descriptions hold them)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import ray

    paths, filesystem = location.for_ray([path])
    return ray.data.read_csv(paths, filesystem=filesystem, convert_options=pacsv.ConvertOptions(
        column_types={name: pa.string() for name in header}, strings_can_be_null=False),
        parse_options=pacsv.ParseOptions(newlines_in_values=True), ray_remote_args=READ_RESOURCES)


def _ray_parquet(path: Ref, header: list[str]):
    """The file, or the folder's part files read in parallel (a read task per file), in name order."""
    import ray

    paths, filesystem = location.for_ray(parts(path))
    return ray.data.read_parquet(paths, filesystem=filesystem, ray_remote_args=READ_RESOURCES)


def _ray_jsonl(path: Ref, header: list[str]):
    """The file's lines as text, parsed per block by _jsonl_block (Ray Data's JSON readers type each column once:
    pyarrow's refuses a field that is a string in one record and a list in another, pandas' makes numbers of digit
    strings, "007" -> 7)."""
    import ray

    paths, filesystem = location.for_ray([path])
    return ray.data.read_text(paths, filesystem=filesystem, drop_empty_lines=True, ray_remote_args=READ_RESOURCES)


def _jsonl_block(block) -> list[dict]:
    lines = block.column("text").to_pylist()
    return [_json_object(line, f"the JSON lines catalog's line {line[:60]!r}") for line in lines]


def _table_block(block) -> list[dict]:
    return block.to_pylist()


CSV = TableKind("catalog.csv", (".csv",), _csv_header, _csv_records, _ray_csv)
PARQUET = TableKind("catalog.parquet", (".parquet", ".pq"), _parquet_header, _parquet_records, _ray_parquet,
                    folders=True)
JSONL = TableKind("catalog.jsonl", (".jsonl", ".ndjson"), _jsonl_header, _jsonl_records, _ray_jsonl, _jsonl_block)


def read_csv_catalog(root: Ref, text_fields: Sequence[str] | None = None) -> Iterator[CatalogItem]:
    """Items of `root/catalog.csv` (or of the CSV file `root` itself)."""
    return CSV.read(root, text_fields)
