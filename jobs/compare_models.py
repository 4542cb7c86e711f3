"""Compare two models on a catalog's dev queries: each model gets its own index (as jobs.evaluate builds it), every
mode runs its default strategy with its knobs, and the per-query nDCG@10 of the two are paired: the difference with
a seeded 95 % bootstrap interval, per mode.

python -m jobs.compare_models --catalog ../shared/datasets/luma-sample --queries var/eval/luma/queries-dev.jsonl \
    --base local-dir:../shared/models/fashion-clip-mini --tuned local-dir:var/models/luma-ft
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from jobs import cli, evaluate, indexer
from retrieval import strategies
from retrieval.catalogs import open_catalog
from retrieval.evaluation import Config, by_mode, load_queries, paired_delta, run_grid
from retrieval.metrics import aggregate
from retrieval.model import canonical_spec, load_model, public_name
from retrieval.store.factory import open_store
from retrieval.strategies import MODES
from schemas.jobs import IndexConfig

METRIC = "ndcg@10"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.compare_models", description=__doc__.splitlines()[0])
    evaluate.add_catalog_args(p)
    p.add_argument("--queries", type=Path, nargs="+", required=True, help="JSONL files (jobs.make_queries)")
    p.add_argument("--base", required=True, help="model spec of the reference (e.g. the model before fine-tuning)")
    p.add_argument("--tuned", required=True, help="model spec compared with it")
    p.add_argument("--out-dir", type=Path, default=Path("var/eval/compare"),
                   help="each model's index lives in OUT-DIR/<model>/qdrant; compare.json and compare.md go here")
    p.add_argument("--max-queries", type=int, help="a seeded sample of at most N queries per mode")
    cli.add_field(p, IndexConfig, "letterbox", action="store_true")
    return p.parse_args(argv)


def default_configs() -> dict[str, Config]:
    """Each mode's default strategy with the knobs it has there."""
    out = {}
    for mode in MODES:
        chosen = strategies.default(mode)
        knobs = chosen.knobs_in(mode)
        out[mode] = Config(chosen.name, knobs.k1 if "k1" in chosen.knobs else None,
                           knobs.text_weight if "text_weight" in chosen.knobs else None)
    return out


def model_folder(out_dir: Path, spec: str) -> Path:
    """A model's own index folder, named by its spec (readable) and a hash (two folders with one name differ)."""
    digest = hashlib.sha256(canonical_spec(spec).encode()).hexdigest()[:8]
    return out_dir / f"{public_name(spec).removeprefix('local-dir:').replace('/', '_')}-{digest}"


def scores_of(args: argparse.Namespace, spec: str, queries: list) -> dict[str, list]:
    """Per mode, each query's metrics with this model's index and the mode's default strategy."""
    ns = argparse.Namespace(catalog=args.catalog, catalog_format=args.catalog_format, letterbox=args.letterbox,
                            model=spec, out_dir=model_folder(args.out_dir, spec), store_path=None, collection=None,
                            limit=None, rebuild=None)
    cfg = evaluate.index_config(ns)
    catalog = open_catalog(cfg.catalog, cfg.catalog_format)  # a local one, checked before indexing
    indexer.ensure_index(cfg)
    encoder = load_model(cfg.model)
    configs = {m: [c] for m, c in default_configs().items() if by_mode(queries, m)}
    with open_store(cfg.store) as store:
        collection = store.resolve_alias(cfg.collection) or cfg.collection
        memo, encoded = evaluate.prepared(store, collection, store.collection_spec(collection), catalog, queries,
                                          encoder)
        scores = run_grid(memo, collection, queries, encoded, configs)
    return {mode: scores[(mode, config)] for mode, [config] in configs.items()}


def compare(base: dict[str, list], tuned: dict[str, list]) -> list[dict]:
    rows = []
    for mode in base:
        delta, low, high = paired_delta(tuned[mode], base[mode], METRIC)
        rows.append({"mode": mode, "strategy": default_configs()[mode].label(), "queries": len(base[mode]),
                     "base": aggregate(base[mode])[METRIC], "tuned": aggregate(tuned[mode])[METRIC],
                     "delta": delta, "low": low, "high": high})
    return rows


def markdown(rows: list[dict], base: str, tuned: str) -> str:
    lines = [f"base `{public_name(base)}`, tuned `{public_name(tuned)}`; nDCG@10, paired 95 % bootstrap interval",
             "", "| mode | default strategy | queries | base | tuned | difference [95 % CI] |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['strategy']} | {r['queries']} | {r['base']:.3f} | {r['tuned']:.3f} | "
              f"{r['delta']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] |" for r in rows]
    return "\n".join(lines) + "\n"


@cli.entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    queries = load_queries(args.queries, args.max_queries)
    base, tuned = (scores_of(args, spec, queries) for spec in (args.base, args.tuned))
    rows = compare(base, tuned)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "compare.json").write_text(json.dumps({"base": args.base, "tuned": args.tuned, "rows": rows},
                                                          indent=2))
    text = markdown(rows, args.base, args.tuned)
    (args.out_dir / "compare.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
