"""Images from anywhere (retrieval/files.py), no network: a catalog whose photos live on an object store (pyarrow over
an in-memory fsspec filesystem, and pyarrow's local one through file:// URIs) indexes exactly as its local copy; a
missing, slow or flaky object is counted or retried, never a crash; the page proxies an object-store photo."""

from __future__ import annotations

import csv
import io
import json
import shutil
import threading
import time
from pathlib import Path

import fsspec
import numpy as np
import pytest
from pyarrow.fs import FSSpecHandler, PyFileSystem

from jobs.qdrant_sink import WriteTally, rows_to_points
from retrieval import files, lexical
from retrieval.catalogs import open_catalog, safe_image_path
from retrieval.catalogs.base import CatalogError
from retrieval.files import FetchConfig, fetch, fetch_all
from retrieval.indexing import ReadImages, catalog_rows, index_stages, run_stages
from retrieval.rows import as_batch
from retrieval.store.base import Nearest
from schemas.collection import IMAGE_VECTOR, CollectionSpec
from tests.conftest import index_config

BUCKET = "shop"
ITEMS = 36  # real photos of the offline catalog, plus one row naming an object that is not there
QUICK = FetchConfig(timeout_s=5.0, retries=3, threads=4, backoff_s=0.01)


class Handler(FSSpecHandler):
    """The in-memory filesystem as an object store can behave: `fail` transient errors first, `delay` seconds per
    open; `opens` counts the attempts."""

    def __init__(self, fs, fail: int = 0, delay: float = 0.0, error: str = "AWS Error NETWORK_CONNECTION"):
        super().__init__(fs)
        self.fail, self.delay, self.error, self.opens = fail, delay, error, 0
        self.released = threading.Event()  # set: the delay ends at once

    def open_input_stream(self, path):
        self.opens += 1
        self.released.wait(self.delay)
        if self.opens <= self.fail:
            raise OSError(f"{self.error} during GetObject operation")
        return super().open_input_stream(path)


@pytest.fixture
def memory():
    """An empty in-memory store (fsspec's memory filesystem is one per process: emptied after each test)."""
    store = fsspec.filesystem("memory")
    yield store
    store.rm(f"/{BUCKET}", recursive=True) if store.exists(f"/{BUCKET}") else None


def mounted(store, prefix: str = f"mem://{BUCKET}", **behaviour) -> Handler:
    handler = Handler(store, **behaviour)
    files.mount(prefix, PyFileSystem(handler))
    return handler


@pytest.fixture(autouse=True)
def _unmount():
    yield
    for prefix in (f"mem://{BUCKET}", "slow://shop", "flaky://shop"):
        files.unmount(prefix)


def test_a_uri_reads_the_bytes_of_the_local_file(memory, offline_catalog):
    local = offline_catalog / "images" / "10000.jpg"
    memory.pipe(f"/{BUCKET}/images/10000.jpg", local.read_bytes())
    mounted(memory)
    refs = [str(local), local.as_uri(), f"mem://{BUCKET}/images/10000.jpg"]
    assert fetch_all(refs, QUICK) == [(local.read_bytes(), "")] * 3


def test_a_missing_object_is_a_missing_file_at_once(memory, tmp_path):
    handler = mounted(memory)
    refs = [f"mem://{BUCKET}/images/gone.jpg", str(tmp_path / "gone.jpg"), (tmp_path / "gone.jpg").as_uri()]
    assert fetch_all(refs, QUICK) == [(b"", "missing file")] * 3
    assert handler.opens == 1  # not retried: a retry finds nothing more


def test_a_transient_error_is_retried_then_read(memory):
    memory.pipe(f"/{BUCKET}/a.jpg", b"photo")
    handler = mounted(memory, fail=2)
    assert fetch(f"mem://{BUCKET}/a.jpg", QUICK) == (b"photo", "")
    assert handler.opens == 3


def test_retries_give_up_and_a_refusal_is_not_retried(memory):
    memory.pipe(f"/{BUCKET}/a.jpg", b"photo")
    flaky = mounted(memory, fail=10)
    assert fetch(f"mem://{BUCKET}/a.jpg", QUICK) == (b"", "unreadable file (OSError after 4 tries)")
    assert flaky.opens == 4
    refused = mounted(memory, fail=10, error="AWS Error ACCESS_DENIED")
    assert fetch(f"mem://{BUCKET}/a.jpg", QUICK) == (b"", "unreadable file (permission denied)")
    assert refused.opens == 1


def test_a_slow_object_times_out_and_the_others_are_read(memory):
    memory.pipe(f"/{BUCKET}/fast.jpg", b"fast")
    mounted(memory)
    slow = mounted(memory, prefix="slow://shop", delay=30.0)
    started = time.monotonic()
    out = fetch_all([f"mem://{BUCKET}/fast.jpg", "slow://shop/fast.jpg"], FetchConfig(0.3, 3, 4))
    assert out == [(b"fast", ""), (b"", "timed out (0.3 s)")]
    assert time.monotonic() - started < 2.0  # the hung read is left behind, not waited for
    left = [thread for thread in threading.enumerate() if thread.name == "read-uri"]
    assert len(left) == 1 and slow.opens == 1  # a timeout is not retried: the file's budget is spent
    slow.released.set()  # end it before the interpreter does: a thread inside a Python handler must not outlive it
    left[0].join(5)


def test_a_uri_without_a_filesystem_is_a_reason_not_a_crash():
    refs = ["https://example.com/a.jpg", "s3://[bad/a.jpg"]
    assert [error for _, error in fetch_all(refs, QUICK)] == ["unreadable URI (ArrowInvalid)",
                                                               "unreadable URI (ValueError)"]


def test_an_object_larger_than_the_bound_is_refused(memory):
    memory.pipe(f"/{BUCKET}/big.jpg", b"x" * 5000)
    mounted(memory)
    with pytest.raises(files.Unreadable, match="larger than 4096 bytes"):
        files.read_uri(f"mem://{BUCKET}/big.jpg", FetchConfig(5.0, 0, 1, max_bytes=4096))


def test_one_filesystem_per_authority_per_process(monkeypatch, tmp_path):
    built = []
    real = files._connect
    monkeypatch.setattr(files, "_connect", lambda parts: built.append(parts.netloc) or real(parts))
    monkeypatch.setattr(files, "_filesystems", {})
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(name.encode())
    assert [data for data, _ in fetch_all([(tmp_path / n).as_uri() for n in "abc"], QUICK)] == [b"a", b"b", b"c"]
    assert built == [""]  # file:///...: one LocalFileSystem for all three


def test_references_and_the_page_path_rules(tmp_path):
    (tmp_path / "in.jpg").write_bytes(b"x")
    assert not files.is_uri("C:/photos/a.jpg") and not files.is_uri("images/a.jpg") and files.is_uri("s3://b/k")
    assert safe_image_path(tmp_path, "s3://bucket/a.jpg") == "s3://bucket/a.jpg"  # read by the page's proxy
    assert safe_image_path(tmp_path, (tmp_path / "in.jpg").as_uri()) == (tmp_path / "in.jpg").resolve()
    assert safe_image_path(tmp_path, "file:///etc/passwd") is None  # a local file outside the root: never
    # A catalog root on an object store: a relative photo is read from under it, never from beside it.
    assert safe_image_path("s3://shop/export?region=x", "images/a.jpg") == "s3://shop/export/images/a.jpg?region=x"
    assert [safe_image_path("s3://shop/export", bad) for bad in ("../secret.jpg", "/etc/passwd")] == [None, None]
    assert safe_image_path(tmp_path.as_uri(), "in.jpg") == (tmp_path / "in.jpg").resolve()  # file:// root: local


def test_a_catalog_flag_keeps_an_object_store_uri(tmp_path):
    from jobs.index import parse_args

    assert parse_args(["--catalog", "s3://shop/export/catalog.parquet"]).catalog == "s3://shop/export/catalog.parquet"
    assert parse_args(["--catalog", str(tmp_path)]).catalog == tmp_path  # a path stays a Path
    with pytest.raises(CatalogError, match="reads a local catalog"):
        open_catalog("s3://shop/export/catalog.parquet")  # only the index job reads one on an object store
    with pytest.raises(CatalogError, match="cannot be read: Unrecognized filesystem"):
        open_catalog("nowhere://shop/catalog.csv", remote=True)
    cfg = parse_args(["--catalog", "s3://shop/export/catalog.parquet", "--store-path", str(tmp_path)])
    assert type(cfg).model_validate_json(cfg.model_dump_json()).catalog == cfg.catalog  # a URI survives JSON too


def test_what_an_object_store_catalog_cannot_be(memory, tmp_path, capsys):
    """Refused before any work: a Magento export (read as a plain table it would lose its mapping), annotations
    segmentation (its masks are read from a local folder), the demo (it reads the catalog's photos itself)."""
    from jobs import demo
    from retrieval.segmentation import SegmenterError, segmenter_options

    memory.pipe(f"/{BUCKET}/magento/products.csv", b"sku,product_type,additional_attributes,base_image\n")
    mounted(memory)
    with pytest.raises(CatalogError, match="Magento export is read from a local folder"):
        open_catalog(f"mem://{BUCKET}/magento", remote=True)
    with pytest.raises(CatalogError, match="Magento export is read from a local folder"):
        open_catalog(f"mem://{BUCKET}/magento/products.csv", remote=True)
    with pytest.raises(SegmenterError, match="from a local folder"):
        segmenter_options("annotations", catalog_root=f"mem://{BUCKET}/export")
    assert demo.main(["--catalog", "s3://shop/export/catalog.csv", "--store-path", str(tmp_path)]) == 2
    assert "reads a local catalog" in capsys.readouterr().err and not any(tmp_path.iterdir())  # before indexing


def test_the_index_flags_reach_the_read_stage(encoder, model_spec, tmp_path):
    from jobs.index import parse_args

    cfg = parse_args(["--image-timeout-s", "7.5", "--image-retries", "0", "--image-read-threads", "3",
                      "--store-path", str(tmp_path)])
    spec = CollectionSpec(name="x", model=model_spec, dim=encoder.dim)
    read = index_stages(cfg, spec, encoder.preprocess_cfg)[0].build()
    assert isinstance(read, ReadImages) and read.fetch == FetchConfig(7.5, 0, 3)


# --- a catalog on the object store, indexed as its local copy -------------------------------------------------


def write_catalog(folder: Path, rows: list[dict], image_of) -> Path:
    folder.mkdir(parents=True)
    with (folder / "catalog.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "image": image_of(row)} for row in rows)
    return folder


@pytest.fixture
def twin_catalogs(tmp_path, offline_catalog, memory):
    """The same items twice: a local folder with its images, and a catalog whose image column holds mem:// URIs
    of the same photos on the in-memory store; both name one photo that is not there."""
    with (offline_catalog / "catalog.csv").open(newline="") as handle:
        rows = [row for _, row in zip(range(ITEMS), csv.DictReader(handle))]
    rows.append({**rows[0], "id": "gone", "image": "images/gone.jpg"})
    local = write_catalog(tmp_path / "local", rows, lambda row: row["image"])
    (local / "images").mkdir()
    for row in rows[:-1]:
        shutil.copy(offline_catalog / row["image"], local / row["image"])
        memory.pipe(f"/{BUCKET}/{row['image']}", (offline_catalog / row["image"]).read_bytes())
    mounted(memory)
    remote = write_catalog(tmp_path / "remote", rows, lambda row: f"mem://{BUCKET}/{row['image']}")
    return open_catalog(local), open_catalog(remote)


def index_in_process(catalog, model_spec, encoder, store_path: Path) -> tuple[CollectionSpec, list[dict]]:
    cfg = index_config(catalog.root, model_spec, store_path)
    items = list(catalog.items())
    name = Path(str(catalog.root).rstrip("/")).name or "bucket"
    spec = CollectionSpec(name=name, model=model_spec, dim=encoder.dim, catalog_root=str(catalog.root),
                          bm25_avg_len=lexical.mean_length(item.text for item in items))
    return spec, run_stages(index_stages(cfg, spec, encoder.preprocess_cfg, threads=1), catalog_rows(catalog, items))


def test_a_catalog_on_an_object_store_indexes_as_its_local_copy(twin_catalogs, model_spec, encoder, store, tmp_path):
    (local, local_rows), (remote, remote_rows) = (index_in_process(c, model_spec, encoder, tmp_path)
                                                  for c in twin_catalogs)
    assert [r["path"] for r in remote_rows][:1] == [f"mem://{BUCKET}/images/10000.jpg"]
    for column in ("id", "error", "vector", "text_vector", "bm25_ids", "bm25_weights"):
        assert [r[column] for r in remote_rows] == [r[column] for r in local_rows], column  # to the bit
    tallies = {}
    for spec, rows in ((local, local_rows), (remote, remote_rows)):
        store.create_collection(spec)
        store.upsert(spec.name, rows_to_points(rows, tallies.setdefault(spec.name, WriteTally())))
    assert [dict(t.skipped) for t in tallies.values()] == [{"missing file": 1}] * 2
    for row in local_rows[:5]:
        query = Nearest(IMAGE_VECTOR, np.frombuffer(row["vector"], np.float32), 10)
        found = [[(h.item_id, h.score) for h in store.query(spec.name, query, 10)] for spec in (local, remote)]
        assert found[0] == found[1] and found[0][0][0] == row["id"]  # the same items, the same scores


def test_a_read_stage_batch_mixes_local_paths_and_uris(twin_catalogs):
    local, remote = twin_catalogs
    batch = as_batch(catalog_rows(remote, list(remote.items())[-3:]) + catalog_rows(local, list(local.items())[-3:]))
    out = ReadImages(QUICK)(batch)
    assert list(out["error"]) == ["", "", "missing file"] * 2
    assert list(out["data"][:2]) == list(out["data"][3:5]) and out["data"][0][:2] == b"\xff\xd8"  # JPEG bytes


def test_the_page_shows_an_object_store_photo(twin_catalogs, model_spec, encoder, tmp_path):
    """The SearchAPI over the remote catalog's index: an item photo comes from the object store, bounded."""
    from starlette.testclient import TestClient

    from retrieval.model import canonical_spec
    from retrieval.store.factory import open_store
    from serve.api import SearchAPI, SearchAPIConfig
    from serve.encoder import EncoderConfig
    from serve.routes import create_app

    _, remote = twin_catalogs
    spec, rows = index_in_process(remote, model_spec, encoder, tmp_path / "store")
    cfg = index_config(remote.root, model_spec, tmp_path / "store")
    with open_store(cfg.store) as store:
        store.create_collection(spec)
        store.upsert(spec.name, rows_to_points(rows, WriteTally()))
        store.set_alias(cfg.collection, spec.name)
    encoder_cfg = EncoderConfig(model=model_spec, device="cpu", precision="fp32", threads=None, segmenter="none",
                                max_pixels=80_000_000, decode_budget=48_000_000)
    api = SearchAPI(encoder_cfg, SearchAPIConfig(store=cfg.store, collection=cfg.collection,
                                                 model=canonical_spec(model_spec), max_upload_bytes=1_000_000))
    try:
        with TestClient(create_app(api)) as client:
            shown = client.get(f"/items/{rows[0]['id']}/image")
            assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
            assert shown.content == fsspec.filesystem("memory").cat(f"/{BUCKET}/images/{rows[0]['id']}.jpg")
            fsspec.filesystem("memory").rm(f"/{BUCKET}/images/{rows[1]['id']}.jpg")  # gone since it was indexed
            assert client.get(f"/items/{rows[1]['id']}/image").status_code == 404
            fsspec.filesystem("memory").pipe(f"/{BUCKET}/images/{rows[2]['id']}.jpg", b"AWS_SECRET=...")  # replaced
            refused = client.get(f"/items/{rows[2]['id']}/image")
            assert refused.status_code == 404 and "AWS_SECRET" not in refused.text  # only an image is ever shown
    finally:
        api.searcher.store.close()


# --- the catalog itself on the object store, photos named relative to it ---------------------------------------


def bucket_tables(memory, local) -> dict[str, str]:
    """The local twin's table in the bucket beside its photos (mem://shop/images/...), as CSV, JSON lines and a
    Spark-style folder of Parquet part files (with its _SUCCESS marker): format -> the URI to open."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    memory.pipe(f"/{BUCKET}/catalog.csv", (local.root / "catalog.csv").read_bytes())
    with (local.root / "catalog.csv").open(newline="") as handle:
        records = list(csv.DictReader(handle))
    memory.pipe(f"/{BUCKET}/export/catalog.jsonl", "\n".join(json.dumps(r) for r in records).encode())
    half = len(records) // 2
    for number, part in enumerate((records[:half], records[half:])):
        out = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(part), out)
        memory.pipe(f"/{BUCKET}/parts/catalog.parquet/part-{number:05d}.parquet", out.getvalue())
    memory.pipe(f"/{BUCKET}/parts/catalog.parquet/_SUCCESS", b"")
    return {"csv": f"mem://{BUCKET}/catalog.csv", "jsonl": f"mem://{BUCKET}/export/catalog.jsonl",
            "parquet": f"mem://{BUCKET}/parts"}


def test_a_table_catalog_on_an_object_store_reads_as_its_local_copy(twin_catalogs, memory):
    local, _ = twin_catalogs
    expected = [item.model_dump() for item in local.items()]
    for fmt, uri in bucket_tables(memory, local).items():
        remote = open_catalog(uri, fmt if fmt == "parquet" else "auto", remote=True)
        assert remote.format == fmt
        assert [item.model_dump() for item in remote.items()] == expected, fmt
    remote = open_catalog(f"mem://{BUCKET}/catalog.csv", remote=True)
    assert remote.root == f"mem://{BUCKET}/" and remote.image_path(local_first := next(local.items())) == \
        f"mem://{BUCKET}/{local_first.image}"  # relative photos: under the table's folder in the bucket
    with pytest.raises(CatalogError, match="does not exist"):
        open_catalog(f"mem://{BUCKET}/nothing.csv", remote=True)
    with pytest.raises(CatalogError, match="is a table"):
        open_catalog(f"mem://{BUCKET}/images", remote=True)  # photos alone: no folder reader on an object store


def test_a_table_catalog_on_an_object_store_indexes_as_its_local_copy(twin_catalogs, memory, model_spec, encoder,
                                                                      tmp_path):
    local, _ = twin_catalogs
    remote = open_catalog(bucket_tables(memory, local)["csv"], remote=True)
    (_, local_rows), (_, remote_rows) = (index_in_process(c, model_spec, encoder, tmp_path) for c in (local, remote))
    assert remote_rows[0]["path"] == f"mem://{BUCKET}/images/10000.jpg"
    for column in ("id", "error", "vector", "text_vector", "bm25_ids", "bm25_weights"):
        assert [r[column] for r in remote_rows] == [r[column] for r in local_rows], column  # to the bit


@pytest.mark.ray
def test_the_index_job_on_ray_reads_a_catalog_by_uri(ray_cluster, offline_catalog, model_spec, encoder, tmp_path):
    """The job itself, with Ray Data's own reads of a Parquet table named by URI (file://: pyarrow's local
    filesystem, read as an object store's is) and photos named relative to it: the vectors of the local copy."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs import indexer
    from retrieval.store.factory import open_store

    with (offline_catalog / "catalog.csv").open(newline="") as handle:
        rows = [row for _, row in zip(range(12), csv.DictReader(handle))]
    rows.append({**rows[0], "id": "gone", "image": "images/gone.jpg"})
    shop = write_catalog(tmp_path / "shop", rows, lambda row: row["image"])
    (shop / "images").symlink_to(offline_catalog / "images")
    pq.write_table(pa.Table.from_pylist(rows), shop / "catalog.parquet")
    cfg = index_config((shop / "catalog.parquet").as_uri(), model_spec, tmp_path / "store", max_skip_fraction=0.1)
    summary = indexer.run(cfg)
    assert (summary["indexed"], summary["skipped"]) == (12, {"missing file": 1})
    _, expected = index_in_process(open_catalog(shop), model_spec, encoder, tmp_path)
    with open_store(cfg.store) as store:
        assert store.collection_spec(summary["collection"]).catalog_root == shop.as_uri()
        stored = {h.item_id: h.vectors[IMAGE_VECTOR] for h in store.retrieve(summary["collection"],
                                                                              [r["id"] for r in rows], True)}
    assert set(stored) == {r["id"] for r in expected if not r["error"]}
    for row in expected[:-1]:
        assert np.allclose(np.asarray(stored[row["id"]]), np.frombuffer(row["vector"], np.float32), atol=1e-5)


@pytest.mark.ray
def test_the_index_job_on_ray_reads_file_uris_as_local_paths(ray_cluster, offline_catalog, model_spec, encoder,
                                                             tmp_path):
    """The job itself (Ray Data, read tasks in other processes, each with its own filesystem): a catalog naming its
    photos by file:// URI gives the vectors of the same catalog by path; the missing one is counted."""
    from jobs import indexer
    from retrieval.store.factory import open_store

    with (offline_catalog / "catalog.csv").open(newline="") as handle:
        rows = [row for _, row in zip(range(12), csv.DictReader(handle))]
    rows.append({**rows[0], "id": "gone", "image": "images/gone.jpg"})
    by_uri = write_catalog(tmp_path / "uri", rows, lambda row: (offline_catalog / row["image"]).as_uri())
    by_path = open_catalog(write_catalog(tmp_path / "path", rows, lambda row: str(offline_catalog / row["image"])))
    cfg = index_config(by_uri, model_spec, tmp_path / "store", max_skip_fraction=0.1)
    summary = indexer.run(cfg)
    assert (summary["indexed"], summary["skipped"]) == (12, {"missing file": 1})
    _, expected = index_in_process(by_path, model_spec, encoder, tmp_path)
    with open_store(cfg.store) as store:
        stored = {h.item_id: h.vectors[IMAGE_VECTOR] for h in store.retrieve(summary["collection"],
                                                                              [r["id"] for r in rows], True)}
    assert set(stored) == {r["id"] for r in expected if not r["error"]}
    for row in expected[:-1]:
        assert np.allclose(np.asarray(stored[row["id"]]), np.frombuffer(row["vector"], np.float32), atol=1e-5)
