"""Shared fixtures: offline environment, the offline kit, the real small model, a Ray cluster, a salted catalog, the
full offline index and the HTTP app over it.

Markers (declared in pyproject.toml): a test using the full offline index is `slow` and `ray` (Ray Data indexes
9,583 images once per session), so `pytest -m "not slow"` really skips that run; `gpu` tests are skipped where
torch sees no CUDA.
"""

from __future__ import annotations

import os

# Before anything imports huggingface_hub or ray: fail hub lookups fast, keep Ray's token auth off.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from serve.runtime import use_fast_path

use_fast_path()  # the serving path users get from the Makefile (HAProxy where installed)

import contextlib  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from schemas.jobs import IndexConfig  # noqa: E402
from schemas.settings import OFFLINE_CATALOG, OFFLINE_MODEL  # noqa: E402
from tests.salted import write_salted_catalog  # noqa: E402

FULL_INDEX_FIXTURES = {"full_index", "search_service", "server"}


def pytest_collection_modifyitems(config, items):
    """Tests on the full offline index are slow and run Ray; gpu tests run only where torch sees CUDA."""
    import torch

    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if FULL_INDEX_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.ray)  # the index is built by the Ray Data job
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def offline_catalog() -> Path:
    assert (OFFLINE_CATALOG / "catalog.csv").is_file(), f"offline catalog missing at {OFFLINE_CATALOG}"
    return OFFLINE_CATALOG


@pytest.fixture(scope="session")
def model_spec() -> str:
    return OFFLINE_MODEL


@pytest.fixture(scope="session")
def encoder(model_spec):
    from retrieval.model import load_model

    return load_model(model_spec, device="cpu")


@pytest.fixture(scope="session")
def metrics_port() -> int:
    """The session cluster's Prometheus port (Ray's metrics agent)."""
    return free_port()


@pytest.fixture(scope="session")
def ray_cluster(metrics_port):
    """One local Ray instance for the whole session (never `ray stop`: other clusters may share the machine)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
             _metrics_export_port=metrics_port)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def salted_catalog(tmp_path_factory, offline_catalog) -> Path:
    """A small CSV catalog of real photos plus every kind of bad file (see tests/salted.py)."""
    return write_salted_catalog(tmp_path_factory.mktemp("salted"), offline_catalog)


def index_config(catalog: Path, model: str, store: Path, **overrides) -> IndexConfig:
    """An index run of `catalog` into an embedded store of its own, sized for this 2-CPU machine."""
    return IndexConfig.from_settings(catalog=catalog, model=model, store_path=store,
                                     **{"encode_cpus": 0.5, "batch_size": 16, **overrides})


@pytest.fixture(scope="session")
def full_index(ray_cluster, tmp_path_factory, offline_catalog, model_spec):
    """The whole offline catalog indexed once per session into an embedded store: (IndexConfig, summary)."""
    from jobs import indexer

    cfg = index_config(offline_catalog, model_spec, tmp_path_factory.mktemp("full-index") / "store",
                       encode_cpus=1, batch_size=64)
    return cfg, indexer.run(cfg)


@pytest.fixture
def search_service(full_index, model_spec):
    """In-process search over the full index (closed after each test, so other processes can open the store)."""
    from retrieval.service import SearchService

    cfg, _ = full_index
    with SearchService.open(model_spec, cfg.store, cfg.collection, device="cpu") as service:
        yield service


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_status(client, path: str, status: int = 200, seconds: int = 120) -> None:
    """Poll `path` until it answers `status` (bounded), for apps and agents that take a while to start."""
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if client.get(path).status_code == status:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{path} never answered {status}")


@pytest.fixture(scope="module")
def server(full_index, model_spec):
    """The app on a free loopback port over the session's full index; shut down (store released) after the module."""
    from serve.app import build_app

    cfg, _ = full_index
    with served(build_app({"model": model_spec, "store_path": cfg.store.path, "encoder_cpus": 0.5,
                           "max_upload_bytes": 2_000_000})) as client:
        yield client


@contextlib.contextmanager
def served(app, **run_options):
    """`app` on Serve at a free loopback port: a client once /readyz answers; Serve shut down after."""
    import httpx
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app, blocking=False, **run_options)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        wait_for_status(client, "/readyz")
        yield client
    finally:
        client.close()
        serve.shutdown()


@pytest.fixture
def store(tmp_path):
    """An empty edge store in a temp folder (a module that tests every backend has its own `store`)."""
    from retrieval.store.factory import open_store
    from schemas.jobs import StoreConfig

    with open_store(StoreConfig(backend="edge", path=tmp_path)) as opened:
        yield opened


SMALL_INDEX_ITEMS = 80


@pytest.fixture(scope="session")
def small_index(tmp_path_factory, offline_catalog, model_spec) -> IndexConfig:
    """The first 80 items of the offline catalog through the index job's own plan and sink conversion, run in this
    process without Ray, into an embedded store behind the alias `fashion`: for tests of what reads an index (API,
    inspection, copy)."""
    from itertools import islice

    from jobs.indexer import collection_spec, model_info
    from jobs.qdrant_sink import WriteTally, rows_to_points
    from retrieval.catalogs import open_catalog
    from retrieval.catalogs.fields import item_stats
    from retrieval.indexing import catalog_rows, index_stages, run_stages
    from retrieval.store.factory import open_store

    cfg = index_config(offline_catalog, model_spec, tmp_path_factory.mktemp("small-index") / "store")
    catalog = open_catalog(offline_catalog)
    items = list(islice(catalog.items(), SMALL_INDEX_ITEMS))
    model, dim, preprocess_cfg = model_info(cfg)
    spec = collection_spec(cfg, model, dim, catalog.root, item_stats(items)).model_copy(update={"name": "gen-1"})
    rows = run_stages(index_stages(cfg, spec, preprocess_cfg), catalog_rows(catalog, items), cfg.batch_size)
    with open_store(cfg.store) as store:
        store.create_collection(spec)
        store.upsert("gen-1", rows_to_points(rows, WriteTally()))
        store.set_alias(cfg.collection, "gen-1")
    return cfg
