"""Shared fixtures: offline environment, the offline kit, the real small model, a Ray cluster, a salted catalog."""

from __future__ import annotations

import os

# Before anything imports huggingface_hub or ray: fail hub lookups fast, keep Ray's token auth off.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from serve.runtime import use_fast_path  # noqa: E402

use_fast_path()  # the serving path users get from the Makefile (HAProxy where installed)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from retrieval.settings import OFFLINE_CATALOG, OFFLINE_MODEL  # noqa: E402
from tests.salted import write_salted_catalog  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """gpu tests run only where torch sees CUDA."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


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
def ray_cluster():
    """One local Ray instance for the whole session (never `ray stop`: other clusters may share the machine)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def salted_catalog(tmp_path_factory, offline_catalog) -> Path:
    """A small CSV catalog of real photos plus every kind of bad file (see tests/salted.py)."""
    return write_salted_catalog(tmp_path_factory.mktemp("salted"), offline_catalog)


@pytest.fixture(scope="session")
def full_index(ray_cluster, tmp_path_factory, offline_catalog, model_spec):
    """The whole offline catalog indexed once per session into an embedded store: (IndexConfig, summary)."""
    from jobs import index

    store = tmp_path_factory.mktemp("full-index") / "store"
    cfg = index.parse_args(["--catalog", str(offline_catalog), "--model", model_spec, "--store-path", str(store),
                            "--encode-cpus", "1"])
    return cfg, index.run(cfg)


@pytest.fixture
def search_service(full_index, model_spec):
    """In-process search over the full index (closed after each test, so other processes can open the store)."""
    from retrieval.service import SearchService

    cfg, _ = full_index
    with SearchService.open(model_spec, cfg.store, cfg.collection, device="cpu") as service:
        yield service
