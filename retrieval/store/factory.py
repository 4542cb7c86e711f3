"""Open the configured store: a Qdrant server when a URL is given, else an embedded store in a folder."""

from __future__ import annotations

import math
from pathlib import Path

from retrieval.store.base import StoreError, VectorStore
from schemas.jobs import STORE_BACKENDS, StoreConfig

MEMORY = ":memory:"


def open_store(config: StoreConfig) -> VectorStore:
    """The store for this config; the clients are imported here so that importing this module stays cheap."""
    if config.url is not None:
        return _server_store(config.url, config.api_key, config.prefer_grpc, config.timeout_s)
    if config.backend not in STORE_BACKENDS:
        raise ValueError(f"unknown store backend {config.backend!r}; choose one of {', '.join(STORE_BACKENDS)}")
    if config.path is None:
        raise StoreError("an embedded store needs a folder (store_path / --store-path / FASHION_STORE_PATH)")
    if config.backend == "edge":
        from retrieval.store.edge_store import EdgeStore

        return EdgeStore(Path(config.path))
    return _local_store(config.path)


def _server_store(url: str, api_key: str | None, prefer_grpc: bool, timeout_s: float) -> VectorStore:
    from qdrant_client import QdrantClient

    from retrieval.store.qdrant_store import QdrantStore

    if "://" not in url:  # qdrant-client guesses https for a bare host when an API key is set: be explicit
        raise StoreError(f"Qdrant URL {url!r} has no scheme; write http://{url} or https://{url}")
    try:
        client = QdrantClient(url=url, api_key=api_key, prefer_grpc=prefer_grpc, timeout=math.ceil(timeout_s))
    except Exception as exc:  # a bad URL or unreachable server is a store error to the caller
        raise StoreError(f"cannot open Qdrant at {url}: {exc}") from exc
    return QdrantStore(client)


def _local_store(path: Path | str) -> VectorStore:
    from qdrant_client import QdrantClient

    from retrieval.store.qdrant_store import QdrantStore

    location = str(path)
    try:
        if location == MEMORY:
            client = QdrantClient(location=MEMORY)
        else:
            # QdrantStore serialises local-mode calls itself, so SQLite may be used from the service's threads.
            client = QdrantClient(path=location, force_disable_check_same_thread=True)
    except RuntimeError as exc:  # the folder is locked by another process
        raise StoreError(f"cannot open the local Qdrant store at {location}: {exc}") from exc
    return QdrantStore(client)
