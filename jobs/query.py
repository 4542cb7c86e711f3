"""Query CLI: search by image, text, a catalog item or a mix, through the same code the service uses.

python -m jobs.query --image PATH --text "red floral dress" -k 10 --filter gender=Women
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs import cli
from retrieval import strategies
from retrieval.search import SearchParams
from retrieval.service import SearchService
from schemas.jobs import QUERY_SEGMENTERS, StoreConfig


def parse_filters(pairs: list[str]) -> dict:
    """`field=value` pairs; a field given twice (or a|b) matches any of its values."""
    filters: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise cli.UsageError(f"filter {pair!r} is not field=value")
        filters.setdefault(name, []).extend(value.split("|"))
    return {k: v[0] if len(v) == 1 else v for k, v in filters.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.query", description=__doc__.splitlines()[0])
    p.add_argument("--image", type=Path, help="query photo")
    p.add_argument("--text", help="query words")
    p.add_argument("--item-id", help="search by a catalog item (left out of the results)")
    p.add_argument("-k", type=int, default=SearchParams.k, help="results to return")
    p.add_argument("--k1", type=int, help="candidates per leg (default: the strategy's evaluated one)")
    p.add_argument("--text-weight", type=float, help="weight of the words against the photo (default: evaluated)")
    p.add_argument("--strategy", choices=strategies.names(), help="default: the evaluated one for the query's mode "
                                                          "(docs/evaluation.md)")
    p.add_argument("--filter", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--exclude", action="append", default=[], metavar="ITEM_ID")
    p.add_argument("--segment", default="none", choices=QUERY_SEGMENTERS, help="isolate the garment in the photo")
    cli.add_model_args(p)
    cli.add_store_args(p)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def search_params(args: argparse.Namespace) -> SearchParams:
    return SearchParams(k=args.k, k1=args.k1, text_weight=args.text_weight, strategy=args.strategy,
                        filters=parse_filters(args.filter) or None, exclude=tuple(args.exclude))


def open_service(args: argparse.Namespace, segment: str = "none") -> SearchService:
    """The in-process service for these flags (the settings filling in what they leave out)."""
    s = cli.settings_of(args)
    return SearchService.open(s.model, StoreConfig.from_settings(s), s.collection, device=s.device,
                              precision=s.precision, segment=segment)


SIGNALS = (("photo_score", "photo"), ("words_photo_score", "words~photo"), ("words_document_score", "words~doc"),
           ("lexical_score", "bm25"))


def print_results(outcome) -> None:
    print(f"   strategy: {outcome.strategy}")
    if outcome.understood and outcome.understood.did_you_mean():
        print(f"   did you mean: {outcome.understood.did_you_mean()}")
    if outcome.understood:
        print(f"   understood: {outcome.understood.described()}")
    for rank, r in enumerate(outcome.results, 1):
        name = r.payload.get("productDisplayName") or r.payload.get("caption") or r.payload.get("image", "")
        signals = "  ".join(f"{label} {getattr(r, attr):.3f}" for attr, label in SIGNALS
                            if getattr(r, attr) is not None)
        matched = f"  matched: {' '.join(r.matched_words)}" if r.matched_words else ""
        matched += f"  has: {', '.join(r.matched_values)}" if r.matched_values else ""
        print(f"{rank:>3}. {r.score:7.3f}  {r.item_id:>12}  {name}\n        {signals}{matched}")
    print("   timings: " + ", ".join(f"{k} {v:.1f}" for k, v in outcome.timings_ms.items()))


@cli.entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = search_params(args)
    image = args.image.read_bytes() if args.image else None
    with open_service(args, args.segment) as service:
        print_results(service.search(image=image, text=args.text, item_id=args.item_id, params=params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
