"""Inspect a store: what the Qdrant dashboard shows for a server, for the embedded store too (and for a server).

python -m jobs.inspect                         # aliases, collections and generations, point counts, completeness
python -m jobs.inspect --collection fashion    # its spec and the value counts of its filter fields
python -m jobs.inspect --item 10003            # one point: payload, vectors (norms, BM25 terms)
python -m jobs.inspect --url http://127.0.0.1:8000   # the same from a running service: its alias's generations,
                                                     # the live one's spec and value counts (and with --item)
Add --json for the same as JSON. The store flags (--store-path, --qdrant-url, ...) pick the store.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import quote

from jobs import cli
from retrieval import inspection
from retrieval.store.base import VectorStore
from retrieval.store.factory import open_store
from schemas.jobs import StoreConfig

# Bounded waits on a service: connecting (a service that is down answers at once, a wrong host never) and reading
# (counting each filter field's values over the whole live generation).
CONNECT_TIMEOUT_S, READ_TIMEOUT_S = 5.0, 60.0


def collection_detail(store: VectorStore, name: str) -> dict[str, Any]:
    """A collection (or the one an alias points at): its spec and its filter fields' most common values."""
    concrete, spec = cli.existing_collection(store, name, "; python -m jobs.inspect lists them")
    return inspection.collection_detail(store, concrete, spec)


def point_detail(store: VectorStore, name: str, item_id: str) -> dict[str, Any]:
    """One catalog item's point in a collection (or the one an alias points at)."""
    concrete = store.resolve_alias(name) or name
    view = inspection.point_detail(store, concrete, item_id)
    if view is None:
        raise cli.UsageError(f"no item {item_id!r} in {concrete}")
    return view


def local_view(args: argparse.Namespace) -> tuple[dict, Any]:
    """What to print, read from the store the flags and settings name, and its printer (None: JSON only)."""
    s = cli.settings_of(args)
    with open_store(StoreConfig.from_settings(s)) as store:
        if args.item:
            return point_detail(store, s.collection, args.item), None
        if args.collection:
            return collection_detail(store, args.collection), print_detail
        return inspection.overview(store), print_overview


def served_view(args: argparse.Namespace) -> tuple[dict, Any]:
    """The same from a running service's inspection API (the store it serves from, which it holds): its alias's
    generations and the live one's detail, or one item's point."""
    if args.collection:
        raise cli.UsageError("--collection does not apply with --url: the service shows the alias it serves")
    if args.item:
        return fetch(args.url, f"/inspect/items/{quote(args.item, safe='')}"), None
    return fetch(args.url, "/inspect"), print_served


def fetch(url: str, path: str) -> dict:
    """GET a service's JSON, with bounded waits; an unreachable service or an error answer is one clear line."""
    import httpx

    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    try:
        response = httpx.get(url.rstrip("/") + path, timeout=timeout)
    except httpx.HTTPError as err:
        raise cli.UsageError(f"cannot reach the service at {url} ({type(err).__name__}: {err}); is it running "
                             "(make serve)?") from err
    if response.status_code != 200:
        raise cli.UsageError(f"{url}{path} answered {response.status_code}: {detail_of(response)}")
    return response.json()


def detail_of(response) -> str:
    """The API's error detail, or the start of whatever else answered."""
    try:
        return str(response.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


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


def print_served(view: dict) -> None:
    """A service's GET /inspect as the overview of its alias's generations, then the live one's detail."""
    print_overview({"aliases": view["aliases"], "collections": view["generations"]})
    print_detail(view)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.inspect", description=__doc__.splitlines()[0])
    p.add_argument("--item", help="show this catalog item's point (in --collection, default the settings' alias)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--url", help="a running service (e.g. http://127.0.0.1:8000): what it serves from, read "
                                 "through its API (the store flags do not apply)")
    cli.add_store_args(p)
    return p.parse_args(argv)


@cli.entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    view, show = served_view(args) if args.url else local_view(args)
    if args.json or show is None:
        print(json.dumps(view, indent=2, default=str))
    else:
        show(view)
    return 0


if __name__ == "__main__":
    sys.exit(main())
