"""Recommendation evaluation job: liked, more-like-this, liked+disliked and words+not dev queries through the service.

python -m jobs.make_queries --catalog ../shared/datasets/myntra-fashion-small --recommend \
    --split-file ../shared/models/fashion-clip-mini/split.json --out var/eval/queries-recommend.jsonl
python -m jobs.evaluate_recommend --catalog ../shared/datasets/myntra-fashion-small \
    --queries var/eval/queries-recommend.jsonl --out-dir var/eval

Indexes the catalog as jobs.evaluate does (the same store and alias under --out-dir, reused when it fits), runs each
query through retrieval/recommend.py and the Searcher (retrieval/recommend_evaluation.py: its measures, the ways of
negative words, the diversity rule) at each --diversity, and writes recommend.json and recommend.md to --out-dir.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from jobs import cli, indexer, make_queries
from jobs.evaluate import (add_catalog_args, add_index_args, encode_texts, index_config, load_vectors,
                           restrict_to_collection)
from jobs.progress import Progress
from retrieval import recommend_evaluation as rec
from retrieval import splits
from retrieval.catalogs import open_catalog
from retrieval.model import load_model
from retrieval.service import Searcher
from retrieval.store.factory import open_store
from schemas.collection import IMAGE_VECTOR


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.evaluate_recommend", description=__doc__.splitlines()[0])
    add_catalog_args(p)
    p.add_argument("--queries", type=Path, required=True, help="JSONL (jobs.make_queries --recommend)")
    add_index_args(p)
    p.add_argument("--diversity", type=float, nargs="+", default=list(rec.DIVERSITIES),
                   help="MMR diversities to run every recommendation at (0: off, always run)")
    cli.add_model_args(p)
    return p.parse_args(argv)


def catalog_view(store, collection: str, spec, items: dict[str, dict], fmt: str) -> rec.Catalog:
    """What the measures read: attributes, photo vectors and documents of the collection's items."""
    hits = {h.item_id: h for h in store.retrieve(collection, list(items), with_vectors=False)}
    photos = {i: v[IMAGE_VECTOR] for i, v in load_vectors(store, collection, list(hits)).items() if IMAGE_VECTOR in v}
    return rec.Catalog(items, photos, {i: h.payload.get("text", "") for i, h in hits.items()}, spec.bm25_language,
                       splits.roles_of(fmt).get("group"))


def evaluate(args: argparse.Namespace, command: str) -> dict:
    started = time.perf_counter()
    cfg = index_config(args)
    catalog = open_catalog(cfg.catalog, cfg.catalog_format)
    index_summary = indexer.ensure_index(cfg)
    queries = rec.load(args.queries)
    encoder = load_model(cfg.model, device=cfg.device, precision=cfg.precision)
    texts = encode_texts(encoder, sorted({p for q in queries for p in (q.text, *_phrases(q.text)) if p}))
    diversities = tuple(sorted({0.0, *args.diversity}))
    with open_store(cfg.store) as store:
        searcher = Searcher(store, cfg.collection, encoder.spec)
        collection, spec = searcher.current()
        restrict_to_collection(queries, store, collection)
        view = catalog_view(store, collection, spec, make_queries.load_items(cfg.catalog, cfg.catalog_format),
                            catalog.format)
        with Progress("recommend queries", len(queries), unit="queries") as progress:
            scores = rec.run(searcher, texts.__getitem__, queries, view, diversities, progress.advance)
        points = store.count(collection)
    return report(queries, scores, view, diversities, {
        "catalog": str(catalog.root), "model": encoder.spec, "collection": collection, "points": points,
        "index": index_summary, "command": command, "wall_s": round(time.perf_counter() - started, 1)})


def _phrases(text: str | None) -> tuple[str | None, ...]:
    """The words a words+not query searches, as each way of negative words reads them."""
    from retrieval import negation

    return (negation.split(text)[0],) if text else ()


def report(queries, scores, view, diversities, run: dict) -> dict:
    costs = rec.diversity_costs(scores, diversities)
    run["queries"] = {m: sum(q.mode == m for q in queries) for m in rec.MODES}
    return {"run": run, "rows": rec.rows_of(scores), "comparisons": rec.comparisons(queries, scores),
            "diversity": {"costs": {m: {str(d): c for d, c in per.items()} for m, per in costs.items()},
                          "has_groups": view.has_groups,
                          "meets_rule": [d for d in diversities
                                         if d > 0 and rec.meets_rule(costs, d, view.has_groups)]}}


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (tuple, list)) and len(value) == 3:
        return "{:+.3f} [{:+.3f}, {:+.3f}]".format(*value)
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(report: dict) -> str:
    run, cols = report["run"], ("mode", "variant", "diversity", "n_queries", "ndcg@10", "recall@10", *rec.EXTRAS)
    lines = [f"# Recommendation evaluation ({run['catalog']})", "", f"`{run['command']}`", "",
             f"Model `{run['model']}`, collection `{run['collection']}` ({run['points']} points); "
             f"wall {run['wall_s']} s.",
             "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(row[c]) for c in cols) + " |" for row in report["rows"]]
    lines += ["", "## Paired differences (mean [95 % bootstrap interval])", ""]
    lines += [f"- {name}: {fmt(delta)}" for name, delta in report["comparisons"].items()]
    lines += ["", "## Diversity against off (nDCG@10 delta, mean distinct groups, near-duplicate pairs)", ""]
    lines += [f"- {mode} at {d}: {fmt(c['delta'])}, groups {fmt(c['groups'])}, near-dups {fmt(c['near_dups'])}"
              for mode, per in report["diversity"]["costs"].items() for d, c in per.items()]
    lines += ["", f"Diversities meeting the rule on this catalog: {report['diversity']['meets_rule']}"]
    return "\n".join(lines) + "\n"


def summary(report: dict) -> str:
    c = report["comparisons"]
    return (f"liked - more-like-this {fmt(c['liked - more-like-this'])}; liked+disliked - liked: ndcg "
            f"{fmt(c['liked+disliked - liked'])}, disliked colour share {fmt(c['liked+disliked - liked: avoid_share'])}"
            f"; diversity meeting the rule here: {report['diversity']['meets_rule']}")


@cli.entry
def main(argv: list[str] | None = None) -> int:
    from threadpoolctl import threadpool_limits

    args = parse_args(argv)
    command = "python -m jobs.evaluate_recommend " + " ".join(sys.argv[1:] if argv is None else argv)
    with threadpool_limits(1, user_api="blas"):  # as jobs.evaluate: one BLAS thread on a busy machine
        out = evaluate(args, command)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "recommend.json").write_text(json.dumps(out, indent=1, default=str))
    (args.out_dir / "recommend.md").write_text(markdown(out))
    print(summary(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
