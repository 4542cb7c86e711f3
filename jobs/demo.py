"""Demo: index the offline catalog (an upsert, so reruns are cheap and idempotent), then run three example queries."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs import index, query
from retrieval.catalogs import open_catalog
from retrieval.search import SearchParams
from retrieval.service import SearchService

# (title, catalog item used as the query photo or None, words or None)
EXAMPLES = [
    ("text only: 'blue jeans'", None, "blue jeans"),
    ("image only: a casual shoe photo", "10127", None),
    ("image + text: this t-shirt, but red", "10003", "red tshirt"),
]


def run_examples(service: SearchService, catalog_root: Path) -> None:
    catalog = open_catalog(catalog_root)
    images = {item.id: catalog.image_path(item) for item in catalog.items()}
    for title, item_id, text in EXAMPLES:
        if item_id is not None and item_id not in images:
            continue  # another catalog than the offline one: skip the photo examples
        print(f"\n=== {title}" + (f"  [{images[item_id].name}]" if item_id else ""))
        image = images[item_id].read_bytes() if item_id else None
        query.print_results(service.search(image=image, text=text,
                                           params=SearchParams(k=5, exclude=(item_id,) if item_id else ())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.demo", description=__doc__)
    parser.add_argument("--catalog", type=Path, required=True)
    parser.add_argument("--model", required=True)
    args, rest = parser.parse_known_args(argv)
    code = index.main(["--catalog", str(args.catalog), "--model", args.model, *rest])
    if code != 0:
        return code
    qargs = query.parse_args(["--model", args.model, *rest])
    with SearchService.open(args.model, index.store_config(qargs), qargs.collection, device=qargs.device) as service:
        run_examples(service, args.catalog)
    return 0


if __name__ == "__main__":
    sys.exit(main())
