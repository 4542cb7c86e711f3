"""Demo: index the offline catalog (once: a rerun reuses the collection if it fits), then run four example queries."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs import cli, index, indexer, query
from retrieval.catalogs import open_catalog
from retrieval.search import SearchParams
from retrieval.service import SearchService

# (title, catalog item whose photo is the query photo, words, catalog item to find more like)
EXAMPLES = [
    ("words: 'black trousers'", None, "black trousers", None),
    ("a photo: a casual shoe", "10127", None, None),
    ("a photo and words: this t-shirt, but red", "10003", "this t-shirt, but red", None),
    ("more like this catalog item, in black", None, "in black", "10127"),
]


def run_examples(service: SearchService, catalog_root: Path) -> None:
    catalog = open_catalog(catalog_root)
    images = {item.id: catalog.image_path(item) for item in catalog.items()}
    for title, photo, text, like in EXAMPLES:
        if any(item is not None and item not in images for item in (photo, like)):
            continue  # another catalog than the offline one: skip the examples of its items
        print(f"\n=== {title}" + (f"  [{images[photo].name}]" if photo else ""))
        image = images[photo].read_bytes() if photo else None
        query.print_results(service.search(image=image, text=text, item_id=like,
                                           params=SearchParams(k=5, exclude=(photo,) if photo else ())))


@cli.entry
def main(argv: list[str] | None = None) -> int:
    """Every index flag is accepted and passed on (the store and model flags also pick what the examples search)."""
    parser = argparse.ArgumentParser(prog="python -m jobs.demo", description=__doc__, add_help=False,
                                     parents=[index.build_parser()])
    args = parser.parse_args(argv)
    cfg = index.IndexConfig.from_settings(**vars(args))
    open_catalog(cfg.catalog, cfg.catalog_format)  # a local one, checked before indexing: the examples read its photos
    summary = indexer.ensure_index(cfg)  # a collection that fits is reused; else a new generation is built
    if "reused" in summary:
        print(f"reusing the indexed collection {summary['reused']} (--rebuild to index again)")
    else:
        index.print_summary(summary)
    with SearchService.open(cfg.model, cfg.store, cfg.collection, device=cfg.device,
                            precision=cfg.precision) as service:
        run_examples(service, cfg.catalog)
    return 0


if __name__ == "__main__":
    sys.exit(main())
