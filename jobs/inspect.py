"""Inspect a store: what the Qdrant dashboard shows for a server, for the embedded store too (and for a server).

python -m jobs.inspect                         # aliases, collections and generations, point counts, completeness
python -m jobs.inspect --collection fashion    # its spec and the value counts of its filter fields
python -m jobs.inspect --item 10003            # one point: payload, vectors (norms, BM25 terms)
Add --json for the same as JSON. The store flags (--store-path, --qdrant-url, ...) pick the store.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from jobs import cli
from retrieval.store.base import SparseVector, StoreError, VectorStore
from retrieval.store.factory import open_store
from schemas.jobs import StoreConfig

FACET_VALUES = 20


def overview(store: VectorStore) -> dict[str, Any]:
    """Every collection with its size, model and completeness, and which aliases point at it."""
    aliases = store.aliases()
    rows = []
    for name in store.list_collections():
        row = {"name": name, "aliases": sorted(a for a, c in aliases.items() if c == name)}
        try:
            spec = store.collection_spec(name)
            row.update(complete=spec.complete, model=spec.model, dim=spec.dim, vectors=list(spec.vectors),
                       letterbox=spec.letterbox, segmentation=spec.segmentation)
            row["points"] = store.count(name)
        except StoreError as err:  # open in another process (the service, a run), or not made by this project
            row["problem"] = str(err)
        rows.append(row)
    return {"aliases": aliases, "collections": rows}


def collection_detail(store: VectorStore, name: str) -> dict[str, Any]:
    """A collection's spec and, for each filter field, its most common values with point counts."""
    concrete, spec = cli.existing_collection(store, name, "; python -m jobs.inspect lists them")
    facets = {field: store.facet(concrete, field, FACET_VALUES) for field in spec.filter_fields}
    return {"collection": concrete, "points": store.count(concrete), "spec": spec.model_dump(mode="json",
            exclude={"filter_values"}), "filter_values": facets}


def point_detail(store: VectorStore, name: str, item_id: str) -> dict[str, Any]:
    """One catalog item's point: its payload, and a summary of each named vector."""
    concrete = store.resolve_alias(name) or name
    hits = store.retrieve(concrete, [item_id], with_vectors=True)
    if not hits:
        raise cli.UsageError(f"no item {item_id!r} in {concrete}")
    return {"collection": concrete, "item_id": item_id, "payload": hits[0].payload,
            "vectors": {n: describe(v) for n, v in sorted((hits[0].vectors or {}).items())}}


def describe(vector) -> dict[str, Any]:
    if isinstance(vector, SparseVector):
        return {"kind": "sparse", "terms": len(vector.indices), "max_weight": round(max(vector.values, default=0), 4)}
    array = np.asarray(vector)
    return {"kind": "dense", "dim": int(array.shape[0]), "norm": round(float(np.linalg.norm(array)), 4),
            "head": [round(float(x), 4) for x in array[:4]]}


def print_overview(view: dict) -> None:
    print(f"aliases: {', '.join(f'{a} -> {c}' for a, c in sorted(view['aliases'].items())) or '(none)'}")
    print(f"{'collection':<40} {'points':>8}  {'state':<9} {'model':<40} aliases")
    for row in view["collections"]:
        state = "" if "complete" not in row else "complete" if row["complete"] else "partial"
        points, model = row.get("points", "?"), row.get("model", "")[-40:]
        print(f"{row['name']:<40} {points:>8}  {state:<9} {model:<40} {', '.join(row['aliases'])}")
        if "problem" in row:
            print(f"    ({row['problem']})")


def print_detail(view: dict) -> None:
    print(f"{view['collection']}: {view['points']} points")
    for key, value in view["spec"].items():
        print(f"  {key}: {value}")
    for field, counts in view["filter_values"].items():
        print(f"  {field}: " + ", ".join(f"{value} ({count})" for value, count in counts.items()))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.inspect", description=__doc__.splitlines()[0])
    p.add_argument("--item", help="show this catalog item's point (in --collection, default the settings' alias)")
    p.add_argument("--json", action="store_true", help="print JSON")
    cli.add_store_args(p)
    return p.parse_args(argv)


@cli.entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    s = cli.settings_of(args)
    with open_store(StoreConfig.from_settings(s)) as store:
        if args.item:
            view, show = point_detail(store, s.collection, args.item), None
        elif args.collection:
            view, show = collection_detail(store, args.collection), print_detail
        else:
            view, show = overview(store), print_overview
    if args.json or show is None:
        print(json.dumps(view, indent=2, default=str))
    else:
        show(view)
    return 0


if __name__ == "__main__":
    sys.exit(main())
