"""Copy an index between stores without re-encoding: vectors, payloads and spec, then the target's alias switches.

python -m jobs.copy --to-qdrant-url http://qdrant:6333              # the embedded index to a Qdrant server
python -m jobs.copy --qdrant-url http://qdrant:6333 --to-store-path var/qdrant   # and back
The source is the usual store flags (default: the settings' store) and --collection (an alias or a collection);
the target a new generation of the same alias in the --to-* store, published as the index job publishes one
(marked complete, alias switched, old generations retired), after counts and a sample of vectors agree.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

from jobs import cli
from jobs.progress import Progress
from retrieval.generations import finish_generation, new_generation_name
from retrieval.store.base import ITEM_ID_FIELD, Hit, Point, SparseVector, VectorStore
from retrieval.store.factory import open_store
from schemas.jobs import STORE_BACKENDS, IndexConfig, StoreConfig

PAGE = 256
SAMPLE = 50  # points compared vector by vector after the copy


def as_point(hit: Hit) -> Point:
    payload = {k: v for k, v in hit.payload.items() if k != ITEM_ID_FIELD}
    return Point(item_id=hit.item_id, vectors=hit.vectors or {}, payload=payload)


def copy_points(source: VectorStore, name: str, target: VectorStore, into: str) -> list[str]:
    """Every point of `name` into `into`, page by page (the target's client retries transient failures); the item
    ids copied."""
    copied, offset = [], None
    with Progress(f"copy {name}", source.count(name), unit="points") as progress:
        while True:
            hits, offset = source.scroll(name, PAGE, offset, with_vectors=True)
            target.upsert(into, [as_point(h) for h in hits])
            copied += [h.item_id for h in hits]
            progress.advance(len(hits))
            if offset is None:
                return copied


def same_vectors(a: Hit, b: Hit) -> bool:
    if set(a.vectors or {}) != set(b.vectors or {}) or a.payload != b.payload:
        return False
    for name, vector in (a.vectors or {}).items():
        other = b.vectors[name]
        if isinstance(vector, SparseVector):
            if vector.indices != other.indices or not np.allclose(vector.values, other.values, atol=1e-6):
                return False
        elif not np.allclose(vector, other, atol=1e-6):
            return False
    return True


def verify(source: VectorStore, name: str, target: VectorStore, into: str, copied: list[str], seed: int = 0) -> dict:
    """Counts equal, and a seeded sample of the copied points equal in payload and every vector."""
    counts = (source.count(name), target.count(into))
    ids = sorted(copied)
    sample = random.Random(seed).sample(ids, min(SAMPLE, len(ids)))
    theirs = {h.item_id: h for h in target.retrieve(into, sample, with_vectors=True)}
    mismatched = [h.item_id for h in source.retrieve(name, sample, with_vectors=True)
                  if h.item_id not in theirs or not same_vectors(h, theirs[h.item_id])]
    if counts[0] != counts[1] or mismatched:
        raise cli.UsageError(f"the copy differs: {counts[0]} points against {counts[1]}, "
                             f"{len(mismatched)} of {len(sample)} sampled points differ (e.g. {mismatched[:3]})")
    return {"points": counts[1], "sampled": len(sample)}


def copy_collection(source: VectorStore, alias: str, to: StoreConfig, keep: int, optimize_above: int) -> dict:
    """Copy the collection behind `alias` (or the collection of that name) into a new generation of the target
    store, verify, and publish it under the same name as the index job publishes one."""
    name, spec = cli.existing_collection(source, alias, " in the source store")
    if not spec.complete:
        raise cli.UsageError(f"{name} is a partial generation (its index run did not finish): rerun that run, or "
                             "copy a complete one")
    into = new_generation_name(alias)
    with open_store(to) as target:
        target.create_collection(spec.model_copy(update={"name": into, "complete": False}))
        copied = copy_points(source, name, target, into)
        checked = verify(source, name, target, into, copied)
    _, published = finish_generation(to, alias, into, switch=True, keep=keep, optimize_above=optimize_above)
    return {"source": name, "target": into, "alias": alias, "copied": len(copied), **checked,
            "dropped_generations": published.dropped}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.copy", description=__doc__.splitlines()[0])
    cli.add_store_args(p)
    p.add_argument("--to-qdrant-url", help="target Qdrant server")
    p.add_argument("--to-qdrant-api-key")
    p.add_argument("--to-store-backend", choices=STORE_BACKENDS, default="edge", help="target embedded backend")
    p.add_argument("--to-store-path", type=Path, help="target embedded store folder")
    args = p.parse_args(argv)
    if not (args.to_qdrant_url or args.to_store_path):
        p.error("give a target: --to-qdrant-url or --to-store-path")
    return args


@cli.entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The target is only what the --to-* flags say: never the source's server, key or settings.
    to = StoreConfig(url=args.to_qdrant_url, api_key=args.to_qdrant_api_key, backend=args.to_store_backend,
                     path=args.to_store_path.expanduser().resolve() if args.to_store_path else None)
    defaults = IndexConfig.model_fields  # retention and indexing as an index run with its defaults
    s = cli.settings_of(args)
    with open_store(StoreConfig.from_settings(s)) as source:
        summary = copy_collection(source, s.collection, to, defaults["keep_generations"].default,
                                  defaults["optimize_above"].default)
    print(f"copied {summary['copied']} points of {summary['source']} into {summary['target']}; counts agree and "
          f"{summary['sampled']} sampled points match; alias {summary['alias']} switched to it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
