"""VectorStore on qdrant-client: a Qdrant server in production, or its pure-Python local mode on one machine."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Callable, Sequence, TypeVar

from retrieval.store.base import (
    REBUILD, check_fits, hit_from_record, keyword_fields, one_per_group, vector_params,
    ITEM_ID_FIELD, CollectionMismatch, CollectionMissing, Filter, Hit, Plan, Point, StoreError, VectorStore, point_id,
)
from retrieval.store.qdrant_query import (create_args, engine_groups, point_struct, query_args, search_params,
                                          to_qdrant_filter, without_field)
from schemas.collection import CollectionSpec

log = logging.getLogger(__name__)
T = TypeVar("T")

# Collection metadata key under which the spec is recorded (server and local mode both keep metadata).
SPEC_METADATA_KEY = "fashion_search_spec"
# 429 is a 4xx but means "slow down", which is what a retry with backoff does.
TRANSIENT_HTTP = {429, 500, 502, 503, 504}
TRANSIENT_GRPC = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}


class QdrantStore(VectorStore):
    """The store over a QdrantClient (server URL, path=... or ':memory:'); the spec lives in collection metadata."""

    def __init__(self, client: Any, *, batch_size: int = 256, retries: int = 4, read_retries: int = 1,
                 backoff_s: float = 0.5, ready_timeout_s: float = 600.0):
        self.client, self.batch_size, self.retries, self.backoff_s = client, batch_size, retries, backoff_s
        self.read_retries, self.ready_timeout_s = read_retries, ready_timeout_s
        self.local = _is_local(client)
        # Local mode is plain Python state plus SQLite: not safe for concurrent threads, so serialise it.
        self._lock = threading.RLock() if self.local else contextlib.nullcontext()
        self._params: dict[str, Any] = {}  # each collection's search params, from its spec, read once
        # Local mode's grouping query scores and copies every point (pure Python: a grouped recommendation took
        # 1.2 s against 0.1 s by the deeper list on the 9.6k-item Myntra dev catalog), so only a server groups by
        # default. The contract tests turn it on in local mode: the same call a server gets.
        self.group_in_engine = not self.local

    def create_collection(self, spec: CollectionSpec) -> None:
        found = self.collection_spec(spec.name)
        if found is not None:
            check_fits(found, REBUILD, **spec.wanted_by_writer())
            return
        from qdrant_client import models

        on_disk = spec.storage.vectors_on_disk if spec.storage else None
        vectors, sparse = vector_params(
            spec, lambda size, distance: models.VectorParams(size=size, distance=models.Distance(distance),
                                                             on_disk=on_disk),
            lambda idf: models.SparseVectorParams(modifier=models.Modifier.IDF if idf else None))
        metadata = {SPEC_METADATA_KEY: spec.model_dump(mode="json")}
        # Local mode takes the layout and storage arguments and ignores them (it has one copy and no index).
        self._call(lambda: self.client.create_collection(spec.name, vectors_config=vectors,
                                                         sparse_vectors_config=sparse or None, metadata=metadata,
                                                         **create_args(spec)))
        # Local mode keeps no payload indexes (it only warns), and filters work without them: skip it there.
        for field in () if self.local else keyword_fields(spec):
            self._call(lambda: self.client.create_payload_index(
                spec.name, field, field_schema=models.PayloadSchemaType.KEYWORD, wait=True))  # noqa: B023 - called at once

    def collection_spec(self, name: str) -> CollectionSpec | None:
        if not self._call(lambda: self.client.collection_exists(name)):
            return None
        info = self._call(lambda: self.client.get_collection(name))
        recorded = (info.config.metadata or {}).get(SPEC_METADATA_KEY)
        if recorded is None:
            raise CollectionMismatch(f"collection {name!r} exists but records no spec: "
                                     "it was not built by this project")
        return CollectionSpec.model_validate(recorded)

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        for start in range(0, len(points), self.batch_size):
            structs = [point_struct(p) for p in points[start:start + self.batch_size]]
            # Safe to repeat even if a timed-out attempt was applied: the point ids are deterministic. (B023: the
            # lambda runs within this iteration.)
            self._retrying(lambda: self.client.upsert(collection, points=structs, wait=True), collection)  # noqa: B023

    def query(self, collection: str, plan: Plan, limit: int, query_filter: Filter | None = None, *,
              with_vectors: bool = False, exclude: Sequence[str] = (), only: Sequence[str] | None = None) -> list[Hit]:
        return self._query(collection, plan, limit, to_qdrant_filter(query_filter, exclude, only), with_vectors)

    def _query(self, collection: str, plan: Plan, limit: int, qdrant_filter: Any, with_vectors: bool) -> list[Hit]:
        params = self._search_params(collection)
        response = self._call(lambda: self.client.query_points(
            collection, limit=limit, query_filter=qdrant_filter, with_payload=True, with_vectors=with_vectors,
            search_params=params, **query_args(plan, qdrant_filter, params)), collection)
        return [hit_from_record(p, p.score) for p in response.points]

    def query_groups(self, collection: str, plan: Plan, group_by: str, groups: int,
                     query_filter: Filter | None = None, *, with_vectors: bool = False,
                     exclude: Sequence[str] = ()) -> list[Hit]:
        """Qdrant's grouping query (one hit per group) for a one-stage plan, else the deeper list (engine_groups
        says why; local mode: group_in_engine). Qdrant leaves out the points without the field: a plain query over
        those alone adds them back, each a group of its own, as every backend has them."""
        if not (self.group_in_engine and engine_groups(plan)):
            return super().query_groups(collection, plan, group_by, groups, query_filter, with_vectors=with_vectors,
                                        exclude=exclude)
        qdrant_filter = to_qdrant_filter(query_filter, exclude)
        params = self._search_params(collection)
        response = self._call(lambda: self.client.query_points_groups(
            collection, group_by, limit=groups, group_size=1, query_filter=qdrant_filter, with_payload=True,
            with_vectors=with_vectors, search_params=params, **query_args(plan, qdrant_filter, params)), collection)
        led = [hit_from_record(g.hits[0], g.hits[0].score) for g in response.groups]
        alone = self._query(collection, plan, groups, without_field(qdrant_filter, group_by), with_vectors)
        # Sorted (stable) by score: the groups in the engine's order, each field-less item in its place among them;
        # one_per_group drops an item repeated as the best of several of its values (a list: see docs).
        return one_per_group(sorted([*led, *alone], key=lambda h: -h.score), group_by, groups)

    def retrieve(self, collection: str, item_ids: Sequence[str], with_vectors: bool = True) -> list[Hit]:
        wanted = list(dict.fromkeys(str(i) for i in item_ids))
        records = self._call(lambda: self.client.retrieve(
            collection, ids=[point_id(i) for i in wanted], with_payload=True, with_vectors=with_vectors), collection)
        by_item = {r.payload[ITEM_ID_FIELD]: r for r in records}
        # Qdrant returns records in storage order; keep the caller's order instead.
        return [hit_from_record(by_item[i], 0.0) for i in wanted if i in by_item]

    def scroll(self, collection: str, limit: int, offset: Any = None,
               with_vectors: bool = False) -> tuple[list[Hit], Any]:
        records, next_offset = self._call(lambda: self.client.scroll(
            collection, limit=limit, offset=offset, with_payload=True, with_vectors=with_vectors), collection)
        return [hit_from_record(r, 0.0) for r in records], next_offset

    def facet(self, collection: str, field: str, limit: int) -> dict[str, int]:
        response = self._call(lambda: self.client.facet(collection, field, limit=limit, exact=True), collection)
        return {str(hit.value): hit.count for hit in response.hits}

    def aliases(self) -> dict[str, str]:
        return {a.alias_name: a.collection_name for a in self._call(lambda: self.client.get_aliases()).aliases}

    def update_spec(self, spec: CollectionSpec) -> None:
        metadata = {SPEC_METADATA_KEY: spec.model_dump(mode="json")}
        self._call(lambda: self.client.update_collection(spec.name, metadata=metadata), spec.name)

    def count(self, collection: str) -> int:
        return self._call(lambda: self.client.count(collection, exact=True), collection).count

    def optimize(self, collection: str) -> None:
        """A server builds its index in the background: wait until the collection is green, so an alias switched
        next sends searches to an indexed generation. Local mode has no index: nothing to wait for."""
        if self.local:
            return
        deadline = time.monotonic() + self.ready_timeout_s
        while self._call(lambda: self.client.get_collection(collection), collection).status != "green":
            if time.monotonic() > deadline:
                log.warning("collection %s still not green after %.0f s; going on", collection, self.ready_timeout_s)
                return
            time.sleep(1.0)

    def delete_collection(self, name: str) -> None:
        self._params.clear()
        if name in self.list_collections():
            self._call(lambda: self.client.delete_collection(name))

    def list_collections(self) -> list[str]:
        return sorted(c.name for c in self._call(lambda: self.client.get_collections()).collections)

    def set_alias(self, alias: str, collection: str) -> None:
        from qdrant_client import models

        if collection not in self.list_collections():
            raise CollectionMissing(f"cannot point alias {alias!r} at {collection!r}: no such collection")
        operations: list[Any] = []
        if self.resolve_alias(alias) is not None:
            # Some server versions refuse to delete a missing alias, so only delete one that exists.
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        operations.append(models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name=collection, alias_name=alias)))
        # One request: the server applies both operations together, so no search sees the alias missing.
        self._call(lambda: self.client.update_collection_aliases(change_aliases_operations=operations))
        self._params.clear()

    def resolve_alias(self, alias: str) -> str | None:
        return self.aliases().get(alias)

    def _search_params(self, collection: str) -> Any:
        """The collection's search params, read from its spec once (the service searches concrete generations, whose
        storage never changes; a name read through an alias is forgotten when this store moves an alias). A name
        with no spec of ours gets none: the query itself then says what is wrong. Local mode searches exactly and
        warns on every query that has params: it gets none."""
        if self.local:
            return None
        if collection not in self._params:
            try:
                spec = self.collection_spec(self.resolve_alias(collection) or collection)
            except CollectionMismatch:
                spec = None
            if spec is None:
                return None
            self._params[collection] = search_params(spec.storage)
        return self._params[collection]

    def close(self) -> None:
        with self._lock:
            self.client.close()

    def _call(self, fn: Callable[[], T], collection: str | None = None) -> T:
        """Run one client call (a read, or an idempotent admin call): one quick retry of a transient failure."""
        return self._retrying(fn, collection, retries=self.read_retries)

    def _retrying(self, fn: Callable[[], T], collection: str | None, retries: int | None = None) -> T:
        """Retry transient failures with exponential backoff (a 4xx is the caller's bug: no retry); map errors."""
        retries = self.retries if retries is None else retries
        for attempt in range(retries + 1):
            try:
                with self._lock:
                    return fn()
            except Exception as exc:
                if attempt == retries or not is_transient(exc):
                    raise _store_error(exc, collection) from exc
                delay = self.backoff_s * 2 ** attempt
                log.warning("transient store error (attempt %d/%d), retrying in %.1fs: %s",
                            attempt + 1, retries + 1, delay, exc)
                time.sleep(delay)
        raise AssertionError("unreachable")


def is_transient(exc: BaseException) -> bool:
    """Connection errors, timeouts, 5xx (and 429) are worth retrying; anything else will fail the same way again."""
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(exc, UnexpectedResponse):
        return exc.status_code in TRANSIENT_HTTP
    if isinstance(exc, (ResponseHandlingException, ConnectionError, TimeoutError)):
        return True
    code = getattr(exc, "code", None)
    # grpc.RpcError carries its status as a method; checking by name keeps grpc out of the imports.
    return callable(code) and getattr(code(), "name", None) in TRANSIENT_GRPC


def _store_error(exc: Exception, collection: str | None) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    if collection is not None and _is_not_found(exc):
        return CollectionMissing(f"no collection {collection!r} in the store; index first")
    return StoreError(f"Qdrant store failed: {type(exc).__name__}: {exc}")


def _is_not_found(exc: Exception) -> bool:
    from qdrant_client.http.exceptions import UnexpectedResponse

    if isinstance(exc, UnexpectedResponse):
        return exc.status_code == 404
    code = getattr(exc, "code", None)
    if callable(code):
        return getattr(code(), "name", None) == "NOT_FOUND"
    # Local mode raises ValueError("Collection X not found").
    return isinstance(exc, ValueError) and "not found" in str(exc)


def _is_local(client: Any) -> bool:
    inner = getattr(client, "_client", None)
    return type(inner).__name__ == "QdrantLocal"
