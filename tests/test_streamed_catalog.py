"""The streamed catalog: table records -> the pipeline's rows, statistics merged per block equal to the whole
catalog's, Parquet and JSON lines read like CSV, and a resumed run's held ids skipped in the pipeline."""

from __future__ import annotations

import csv
import json
from itertools import islice

import numpy as np
import pyarrow as pa
import pytest

from jobs.indexer import collection_spec
from retrieval import held
from retrieval.catalogs import CatalogError, open_catalog
from retrieval.catalogs.fields import MAX_VALUES, FieldStats, filter_fields, item_stats, top_values
from retrieval.catalogs.streamed import BlockStats, CatalogSource, ItemRows
from retrieval.indexing import catalog_rows
from retrieval.rows import as_batch
from retrieval.store.base import Point
from schemas.collection import IMAGE_VECTOR, CollectionSpec
from schemas.settings import SHARED_ROOT
from tests.conftest import index_config

LUMA = SHARED_ROOT / "datasets" / "luma-sample"


def _csv_records(offline_catalog, n=None) -> list[dict]:
    with (offline_catalog / "catalog.csv").open(newline="", encoding="utf-8") as handle:
        return list(islice(csv.DictReader(handle), n))


def _typed(record: dict) -> dict:
    """A record as a JSON or Parquet export types it: numbers as numbers, an empty cell as null."""
    return {k: (int(v) if v.isdigit() and k not in ("id", "productDisplayName") else v or None)
            for k, v in record.items()}


PARTS = "parquet-parts"  # catalog.parquet as a folder of part files, as Spark and warehouses export a table


def write_tables(root, offline_catalog, n: int) -> dict[str, object]:
    """The offline catalog's first n rows as catalog.csv, catalog.parquet, catalog.jsonl and a catalog.parquet folder
    of three part files (and Spark's _SUCCESS marker), each in a folder of its own beside the offline photos."""
    import pyarrow.parquet as pq

    records = _csv_records(offline_catalog, n)
    folders = {fmt: root / fmt for fmt in ("csv", "parquet", "jsonl", PARTS)}
    for folder in folders.values():
        folder.mkdir()
        (folder / "images").symlink_to(offline_catalog / "images")
    with (folders["csv"] / "catalog.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    pq.write_table(pa.Table.from_pylist([_typed(r) for r in records]), folders["parquet"] / "catalog.parquet")
    (folders["jsonl"] / "catalog.jsonl").write_text("".join(json.dumps(_typed(r)) + "\n" for r in records))
    table = folders[PARTS] / "catalog.parquet"
    table.mkdir()
    (table / "_SUCCESS").write_text("")
    (table / "_temporary" / "0").mkdir(parents=True)  # a failed job's leftovers: never read
    pq.write_table(pa.Table.from_pylist([_typed(r) for r in records[:2]]), table / "_temporary" / "0" / "p.parquet")
    for i, start in enumerate(range(0, n, -(-n // 3))):  # three parts, in catalog order by name
        part = records[start:start + -(-n // 3)]
        pq.write_table(pa.Table.from_pylist([_typed(r) for r in part]), table / f"part-{i:05d}.parquet")
    return folders


# ---------------------------------------------------------------- without Ray


def test_item_rows_make_the_rows_the_in_memory_reader_makes(offline_catalog):
    catalog = open_catalog(offline_catalog)
    records = pa.Table.from_pylist(_csv_records(offline_catalog, 50) + [{"id": "", "image": "x.jpg"}])
    rows = ItemRows(catalog, catalog.columns())(records)
    expected = as_batch(catalog_rows(catalog, islice(catalog.items(), 50)))
    assert {k: list(v) for k, v in rows.items()} == {k: list(v) for k, v in expected.items()}


def test_parquet_and_jsonl_readers_give_the_csv_items(tmp_path, offline_catalog):
    folders = write_tables(tmp_path, offline_catalog, 30)
    read = {fmt: list(open_catalog(folder).items()) for fmt, folder in folders.items()}
    assert {fmt: open_catalog(folder).format for fmt, folder in folders.items()} == {
        **{f: f for f in folders}, PARTS: "parquet"}
    assert read["parquet"] == read["csv"] == read["jsonl"] == read[PARTS] and len(read["csv"]) == 30
    given = open_catalog(folders[PARTS] / "catalog.parquet")  # the folder given directly: its parent holds the photos
    assert list(given.items()) == read["csv"] and given.root == folders[PARTS]
    empty = tmp_path / "empty" / "catalog.parquet"
    empty.mkdir(parents=True)
    (empty / "_SUCCESS").write_text("")
    with pytest.raises(CatalogError, match="folder without .parquet part files"):
        list(open_catalog(empty.parent, "parquet").items())
    assert read["csv"][0].metadata["year"] == 2011 and read["csv"][0].id == "10000"


@pytest.mark.parametrize("catalog", ["offline", "luma"])
def test_statistics_merged_per_block_equal_the_whole_catalog(catalog, offline_catalog):
    items = list(open_catalog(offline_catalog if catalog == "offline" else LUMA).items())
    whole = item_stats(items)
    merged = FieldStats()
    for start in range(0, len(items), 97):
        merged.merge(item_stats(items[start:start + 97]))
    fields = filter_fields(whole)
    assert filter_fields(merged) == fields and merged.mean_length() == whole.mean_length()
    assert [list(v.items()) for v in top_values(merged, fields).values()] == \
        [list(v.items()) for v in top_values(whole, fields).values()]  # the same values in the same order


def test_block_stats_count_a_block_of_rows_as_its_items(offline_catalog):
    catalog = open_catalog(offline_catalog)
    items = list(islice(catalog.items(), 200))
    import pickle

    (blob,) = BlockStats()(as_batch(catalog_rows(catalog, items)))["stats"]
    assert pickle.loads(blob) == item_stats(items)


def test_an_identifier_field_stops_being_counted_unless_asked():
    items = [{"sku": f"s{i}", "colour": ("Red", "Blue")[i % 2]} for i in range(MAX_VALUES + 2)]
    counted, kept = FieldStats(), FieldStats(keep=("sku",))
    for metadata in items:
        counted.add(metadata, "")
        kept.add(metadata, "")
    assert counted.counts["sku"] is None and filter_fields(counted) == ("colour",)
    assert len(kept.counts["sku"]) == MAX_VALUES + 2 and filter_fields(kept, ["sku"]) == ("sku",)
    assert top_values(kept, ["sku"])["sku"]["s0"] == 1


def _fill(store, ids: list[str]) -> None:
    store.create_collection(CollectionSpec(name="items", model="toy", dim=4))
    vector = np.ones(4, np.float32) / 2
    store.upsert("items", [Point(item_id=i, vectors={IMAGE_VECTOR: vector}, payload={}) for i in ids])


def test_held_keys_page_through_the_store_and_skip_held_drops_their_rows(store):
    _fill(store, [f"item-{i}" for i in range(0, 50, 2)])
    keys = held.held_keys(store, "items", page=7)
    assert len(keys) == 25 and keys.dtype == np.dtype("S16") and list(keys) == sorted(keys)
    batch = {"id": np.array([f"item-{i}" for i in range(50)], dtype=object), "text": np.arange(50)}
    kept = held.SkipHeld(keys)(batch)
    assert list(kept["id"]) == [f"item-{i}" for i in range(1, 50, 2)] and list(kept["text"]) == list(range(1, 50, 2))
    assert not held.is_held(np.empty(0, "S16"), ["item-0"]).any()


# ---------------------------------------------------------------- on Ray


@pytest.mark.ray
@pytest.mark.parametrize("catalog", ["offline", "luma-as-jsonl"])
def test_streamed_statistics_give_the_in_memory_spec(ray_cluster, catalog, offline_catalog, model_spec, tmp_path):
    """The spec's fields from the per-block statistics equal those from the catalog listed in memory (today's):
    the offline CSV, and Luma's items (lists of sizes, long names) exported as JSON lines."""
    if catalog == "offline":
        root = offline_catalog
    else:
        root = tmp_path / "luma.jsonl"
        root.write_text("".join(json.dumps({"id": i.id, "image": i.image, **i.metadata}) + "\n"
                                for i in open_catalog(LUMA).items()))
    source = CatalogSource(open_catalog(root, text_fields=["type", "color", "name"] if catalog != "offline" else None))
    assert source.streamed
    cfg = index_config(root, model_spec, tmp_path / "store")
    streamed = collection_spec(cfg, "m", 4, root, source.stats())
    in_memory = collection_spec(cfg, "m", 4, root, item_stats(source.catalog.items()))
    assert streamed == in_memory and streamed.filter_fields and streamed.bm25_avg_len > 1
    assert list(streamed.filter_values[streamed.filter_fields[0]].items()) == \
        list(in_memory.filter_values[in_memory.filter_fields[0]].items())


@pytest.mark.ray
def test_a_limit_takes_the_first_items_in_both_passes(ray_cluster, offline_catalog):
    source = CatalogSource(open_catalog(offline_catalog), limit=300)
    from retrieval.catalogs.streamed import ordered

    with ordered():
        ids = [row["id"] for row in source.dataset().iter_rows()]
    first = list(islice(open_catalog(offline_catalog).items(), 300))
    assert ids == [item.id for item in first] and source.stats() == item_stats(first)


@pytest.mark.ray
def test_every_format_reaches_the_pipeline_in_blocks_of_about_rows_per_block(ray_cluster, offline_catalog, tmp_path):
    """Many blocks, not one of the whole catalog: the encode stage runs in parallel and the index job reports
    progress as blocks are written (a killed run must have written part of its catalog)."""
    from retrieval.catalogs.streamed import ROWS_PER_BLOCK, ordered

    for fmt, folder in write_tables(tmp_path, offline_catalog, 2000).items():
        with ordered():
            sizes = [len(batch["id"]) for batch in CatalogSource(open_catalog(folder), limit=1500).dataset()
                     .iter_batches(batch_size=None, batch_format="numpy")]
        assert sum(sizes) == 1500 and len(sizes) >= 1500 // (2 * ROWS_PER_BLOCK), (fmt, sizes)
        assert max(sizes) <= 2 * ROWS_PER_BLOCK, (fmt, sizes)


@pytest.mark.ray
def test_skip_held_in_a_ray_pipeline(ray_cluster, store, offline_catalog):
    catalog = open_catalog(offline_catalog)
    first = [item.id for item in islice(catalog.items(), 40)]
    _fill(store, first[:15])
    ds = CatalogSource(catalog, limit=40).dataset().map_batches(held.SkipHeld(held.held_keys(store, "items")),
                                                                batch_format="numpy", batch_size=None)
    assert sorted(row["id"] for row in ds.iter_rows()) == sorted(first[15:])


def _vector(vector) -> list:
    """A dense or sparse vector as comparable lists (5 decimals)."""
    if hasattr(vector, "indices"):
        return [list(vector.indices), np.asarray(vector.values).round(5).tolist()]
    return np.asarray(vector).round(5).tolist()


@pytest.mark.ray
def test_parquet_and_jsonl_catalogs_index_to_the_csv_results(ray_cluster, offline_catalog, model_spec, tmp_path):
    from jobs import indexer
    from retrieval.store.factory import open_store

    found = {}
    for fmt, folder in write_tables(tmp_path, offline_catalog, 24).items():
        cfg = index_config(folder, model_spec, tmp_path / f"store-{fmt}")
        summary = indexer.run(cfg)
        assert (summary["read"], summary["indexed"], summary["skipped"]) == (24, 24, {}), fmt
        with open_store(cfg.store) as opened:
            spec = opened.collection_spec(summary["collection"])
            hits = opened.retrieve(summary["collection"], [r["id"] for r in _csv_records(offline_catalog, 24)],
                                   with_vectors=True)
        found[fmt] = (spec.model_copy(update={"name": "", "catalog_root": ""}),
                      {h.item_id: (h.payload, {k: _vector(v) for k, v in h.vectors.items()}) for h in hits})
    assert found["parquet"] == found["csv"] == found["jsonl"] == found[PARTS] and len(found["csv"][1]) == 24


def test_the_driver_memory_benchmark_catalog_reuses_the_offline_photos(tmp_path):
    from bench import driver_memory

    catalog = open_catalog(driver_memory.write_catalog(tmp_path, 12_000))
    items = list(catalog.items())
    assert len({item.id for item in items}) == 12_000 and all(catalog.image_path(i).is_file() for i in items[::997])
    memory = driver_memory.held_ids_memory(20_000)
    assert 0 < memory["array_mb"] < memory["set_mb"]


@pytest.mark.ray
def test_a_folder_catalog_is_listed_on_the_driver_and_indexed(ray_cluster, offline_catalog, model_spec, tmp_path):
    import shutil

    from jobs import indexer

    photos = sorted((offline_catalog / "images").glob("*.jpg"))[:6]
    for i, photo in enumerate(photos):
        (tmp_path / "shop" / ("tops" if i % 2 else "shoes")).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, tmp_path / "shop" / ("tops" if i % 2 else "shoes") / photo.name)
    source = CatalogSource(open_catalog(tmp_path / "shop"))
    assert not source.streamed and source.stats().items == 6
    summary = indexer.run(index_config(tmp_path / "shop", model_spec, tmp_path / "store"))
    assert (summary["read"], summary["indexed"], summary["skipped"]) == (6, 6, {})
