"""A catalog as the index job's Ray Data input, and its statistics, without the driver holding the catalog.

A table catalog (CSV, Parquet, JSON lines) is read by Ray Data's own datasource in blocks, and ItemRows turns each
block into the pipeline's input rows through the same conversion as the in-memory readers (tabular.record_item, then
indexing.catalog_rows). Its statistics take one pass more: BlockStats counts each block (fields.FieldStats) and the
driver merges the partial counts in catalog order, holding the counts, never the rows. The other readers (folder,
DeepFashion, Magento, whose export groups rows across the file) list their small catalogs on the driver as before.
"""

from __future__ import annotations

import contextlib
import json
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

from retrieval.catalogs.base import Catalog
from retrieval.catalogs.fields import FieldStats, item_stats
from retrieval.catalogs.tabular import READ_RESOURCES, Columns, table_items
from retrieval.indexing import catalog_rows, column
from retrieval.rows import Batch
from schemas.catalog import CatalogItem

ROW_COLUMNS = ("id", "path", "text", "payload")  # indexing.catalog_rows' columns: what the pipeline starts from
NOT_METADATA = ("image", "text")  # what catalog_rows adds to an item's metadata in its payload
ROWS_PER_BLOCK = 256  # a catalog's rows per block (parallelism and progress without tiny tasks)
RECORDS_PER_BATCH = 4096  # table records turned into rows at once: a worker never holds a whole block as items


class ItemRows:
    """Map-batches stage: a block of table records (pyarrow) -> the pipeline's input rows; a record without id or
    image is dropped, as the in-memory reader drops it."""

    def __init__(self, catalog: Catalog, columns: Columns):
        self.catalog, self.columns = catalog, columns

    def __call__(self, batch) -> Batch:
        rows = catalog_rows(self.catalog, table_items(self.catalog.table.records_of(batch), self.columns))
        return {name: column([row[name] for row in rows]) for name in ROW_COLUMNS}


class BlockStats:
    """Map-batches stage: a block of input rows -> one row holding the block's FieldStats (pickled), for the driver
    to merge in catalog order."""

    def __init__(self, keep: Sequence[str] = ()):
        self.keep = tuple(keep)

    def __call__(self, batch: Batch) -> Batch:
        stats = FieldStats(keep=self.keep)
        for text, payload in zip(batch["text"], batch["payload"]):
            stats.add({k: v for k, v in json.loads(payload).items() if k not in NOT_METADATA}, str(text))
        return {"stats": column([pickle.dumps(stats)])}


@contextlib.contextmanager
def ordered(on: bool = True) -> Iterator[None]:
    """Ray Data keeps the blocks in catalog order while this holds (statistics merge in first-seen order; a --limit
    takes the catalog's first items in every pass)."""
    from ray.data import DataContext

    options = DataContext.get_current().execution_options
    before, options.preserve_order = options.preserve_order, options.preserve_order or on
    try:
        yield
    finally:
        options.preserve_order = before


def light_repartition(ds, rows_per_block: int):
    """Blocks of `rows_per_block` rows by Ray's streaming repartition, asking the read's share of a core: by default
    it asks 1 CPU, which a 2-CPU cluster whose Serve replicas hold CPUs never grants (the index job hung in
    tests/test_serve.py), and Ray Data 2.60 has no public knob for a repartition's resources."""
    ds = ds.repartition(target_num_rows_per_block=rows_per_block)
    ds._logical_plan.dag.ray_remote_args.update(READ_RESOURCES)
    return ds


@dataclass
class CatalogSource:
    """The index job's view of a catalog: its rows as a Ray Data dataset and its statistics, a table catalog read in
    blocks, any other listed once on the driver (`limit`: the first N items only)."""

    catalog: Catalog
    limit: int | None = None
    _items: list[CatalogItem] | None = field(default=None, repr=False)

    @property
    def streamed(self) -> bool:
        return self.catalog.table is not None

    def items(self) -> list[CatalogItem]:
        """An in-memory catalog's items (listed once)."""
        if self._items is None:
            self._items = list(islice(self.catalog.items(), self.limit))
        return self._items

    def dataset(self):
        """The catalog's input rows as a Ray Data dataset in blocks of ROWS_PER_BLOCK rows, so the stages after it
        run in parallel and report progress as they go (call it inside `ordered()` when a limit is set)."""
        import ray

        if not self.streamed:
            rows = catalog_rows(self.catalog, self.items())
            return ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // ROWS_PER_BLOCK, 400)))
        return self._table_rows()

    def _table_rows(self):
        """A table catalog's input rows in blocks of ROWS_PER_BLOCK (streamed, never all at once). Without the
        repartition a map stage's outputs are merged up to 128 MB: one block of a whole small catalog, encoded by one
        actor and written at its end (no progress until then)."""
        columns = self.catalog.columns()
        ds = self.catalog.table.dataset(self.catalog.table_file())
        ds = ds.map_batches(ItemRows(self.catalog, columns), batch_format="pyarrow", batch_size=RECORDS_PER_BATCH,
                            **READ_RESOURCES)
        ds = light_repartition(ds, ROWS_PER_BLOCK)
        return ds.limit(self.limit) if self.limit else ds

    def stats(self, keep: Sequence[str] = ()) -> FieldStats:
        """The catalog's statistics (fields.FieldStats): merged from per-block counts for a table catalog."""
        if not self.streamed:
            return item_stats(self.items(), keep)
        merged = FieldStats(keep=tuple(keep))
        with ordered():
            blocks = self._table_rows().map_batches(BlockStats(keep), batch_format="numpy", batch_size=None,
                                                               **READ_RESOURCES)
            for batch in blocks.iter_batches(batch_size=None, batch_format="numpy"):
                for blob in batch["stats"]:
                    merged.merge(pickle.loads(blob))
        return merged
