"""Index job: catalog -> read -> decode/preprocess -> CLIP encode (actor pool) -> Qdrant, with a summary at the end.

Run locally:   python -m jobs.index --catalog ../shared/datasets/myntra-fashion-small
On a cluster:  ray job submit --working-dir . -- python -m jobs.index --catalog /abs/path ...
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs import cli
from jobs.indexer import run
from schemas.collection import QUANTIZATIONS
from schemas.jobs import CATALOG_FORMATS, SEGMENTERS, SERVER_LAYOUT, IndexConfig


def build_parser() -> argparse.ArgumentParser:
    """Every IndexConfig knob as a flag; defaults and help come from the config schema and the settings."""
    p = argparse.ArgumentParser(prog="python -m jobs.index", description=__doc__.splitlines()[0])
    cli.add_field(p, IndexConfig, "catalog")
    cli.add_field(p, IndexConfig, "catalog_format", choices=CATALOG_FORMATS)
    cli.add_field(p, IndexConfig, "text_fields", type=cli.comma_list, metavar="A,B,...")
    cli.add_field(p, IndexConfig, "filter_fields", type=cli.comma_list, metavar="A,B,...")
    cli.add_field(p, IndexConfig, "synonyms", metavar="FILE")
    cli.add_model_args(p)
    cli.add_store_args(p)
    for name in ("rebuild", "letterbox", "allow_random_weights"):
        cli.add_field(p, IndexConfig, name, action="store_true")
    p.add_argument("--no-resume", dest="resume", action="store_false", default=None,
                   help="start a new generation even if a crashed run left one unfinished (it is removed when this "
                        "one completes)")
    p.add_argument("--no-draft", dest="draft", action="store_false", default=None,
                   help="full-size JPEG decode before resizing")
    for name in ("limit", "batch_size", "encode_actors", "encode_cpus", "encode_gpus", "encode_threads",
                 "decode_cpus", "image_timeout_s", "image_retries", "image_read_threads"):
        cli.add_field(p, IndexConfig, name)
    cli.add_field(p, IndexConfig, "segment", choices=SEGMENTERS)
    for name in ("segment_actors", "segment_cpus", "segment_gpus", "segment_weights", "max_skip_fraction",
                 "optimize_above", "summary_json", "progress_every_s"):
        cli.add_field(p, IndexConfig, name)
    add_storage_args(p)
    return p


def add_storage_args(p: argparse.ArgumentParser) -> None:
    """The collection's storage (default: by the catalog's size) and a server's layout of it."""
    cli.add_field(p, IndexConfig, "quantization", choices=QUANTIZATIONS)
    for name in ("oversampling", "hnsw_m", "ef_construct", "hnsw_ef", *SERVER_LAYOUT):
        cli.add_field(p, IndexConfig, name)
    for name in ("vectors_on_disk", "graph_on_disk"):
        cli.add_field(p, IndexConfig, name, action="store_true")
    p.add_argument("--no-rescore", dest="rescore", action="store_false", default=None,
                   help="keep the quantized scores (faster, less exact)")


def parse_args(argv: list[str] | None = None) -> IndexConfig:
    """The flags given, over the settings, as a validated IndexConfig."""
    return IndexConfig.from_settings(**vars(build_parser().parse_args(argv)))


def print_summary(summary: dict) -> None:
    print(f"\nread {summary['read']}  indexed {summary['indexed']}  skipped {sum(summary['skipped'].values())}"
          f"  in {summary['wall_s']} s  ({summary['images_per_s']} images/s)")
    for reason, count in sorted(summary["skipped"].items(), key=lambda kv: -kv[1]):
        print(f"  skipped {count:>6}  {reason}  e.g. {', '.join(summary['skipped_examples'][reason])}")
    if summary["resumed"]:
        print(f"resumed an unfinished generation: {summary['already_in_collection']} items were already there")
    print(f"collection {summary['collection']} holds {summary['points_in_collection']} points; alias "
          f"{summary['alias']} {'switched to it' if summary['alias_switched'] else 'unchanged'}")
    for label, key in (("dropped old generations", "dropped_generations"),
                       ("removed unfinished generations of dead runs", "removed_partial_generations")):
        if summary[key]:
            print(f"{label}: {', '.join(summary[key])}")


@cli.entry
def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    summary = run(cfg)
    print_summary(summary)
    if cfg.summary_json:
        cfg.summary_json.write_text(json.dumps(summary, indent=2))
    if not summary["acceptable"]:
        print(f"error: more than {cfg.max_skip_fraction:.0%} of the items were skipped", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
