"""Demo: index the offline catalog (an upsert, so reruns are cheap and idempotent), then run three example queries."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs import cli, index, query
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


@cli.entry
def main(argv: list[str] | None = None) -> int:
    """Every index flag is accepted and passed on (the store and model flags also pick what the examples search)."""
    parser = argparse.ArgumentParser(prog="python -m jobs.demo", description=__doc__, add_help=False,
                                     parents=[index.build_parser()])
    args = parser.parse_args(argv)
    cfg = index.IndexConfig.from_settings(**vars(args))
    index.print_summary(summary := index.run(cfg))
    if not summary["acceptable"]:
        return 1
    with SearchService.open(cfg.model, cfg.store, cfg.collection, device=cfg.device) as service:
        run_examples(service, cfg.catalog)
    return 0


if __name__ == "__main__":
    sys.exit(main())
