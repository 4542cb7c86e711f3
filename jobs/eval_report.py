"""Evaluation report: results.json, the Markdown tables (results.md), the nDCG-against-weight plot, a summary line."""

from __future__ import annotations

import json
from pathlib import Path

from retrieval.metrics import DEPTH, METRICS


def fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown_table(rows: list[dict], extra: tuple[str, ...] = ()) -> list[str]:
    head = ["mode", "strategy", "k1", "text_weight", *METRICS, "queries", *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["mode"], r["strategy"], r["k1"], r["text_weight"], *(r[m] for m in METRICS), r["n_queries"]]
        lines.append("| " + " | ".join(fmt(c) for c in cells + [r.get(e) for e in extra]) + " |")
    return lines


def write_markdown(path: Path, report: dict) -> None:
    run = report["run"]
    lines = [f"# Retrieval evaluation ({run['catalog']})", "",
             f"Model `{run['model']}`, collection `{run['collection']}` ({run['points']} points); "
             "queries: " + ", ".join(f"{n} {m}" for m, n in run["queries"].items()) +
             f"; wall time {run['wall_s']:.0f} s. Metrics over the search's top {DEPTH}.",
             "", f"`{run['command']}`", "", "## Best per mode (by nDCG@10)", ""]
    lines += markdown_table(list(report["best"].values()))
    for mode, choice in report["choices"].items():
        lines += choice_section(mode, choice)
    lines += ["", "## Every configuration", ""] + markdown_table(report["rows"])
    path.write_text("\n".join(lines) + "\n")


def choice_section(mode: str, choice: dict) -> list[str]:
    """Each strategy of a mode at its best against the best of those using every signal, and the default."""
    lines = ["", f"## {mode}: each strategy at its settled configuration", "",
             "delta = paired mean nDCG@10 difference to the best configuration of the strategies using every signal "
             "(all signals = yes), with a 95 % bootstrap interval; ms = median search() latency, results explained "
             "as the service does, without the evaluation's kNN memo (k = 10).", ""]
    shown = [{**row, "delta": "{:+.3f} [{:+.3f}, {:+.3f}]".format(*row["delta_vs_best"]),
              "all signals": "yes" if row["all_signals"] else "no", "ms": choice["latency_ms"].get(row["label"])}
             for row in choice["comparison"]]
    lines += markdown_table(shown, ("all signals", "delta", "ms"))
    if choice["recommended"]:
        lines += ["", f"Default for {mode} (the fastest strategy using every signal that is not significantly worse "
                      f"than the best of them): **{choice['recommended']['label']}**"]
    return lines


def plot(path: Path, rows: list[dict]) -> None:
    """nDCG@10 against the fusion weight: a line per weighted image+text strategy (at its best k1), flat lines
    for the best of each single-modality mode and of each unweighted image+text strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    weighted = [r for r in rows if r["mode"] == "image+text" and r["text_weight"] is not None]
    for strategy in dict.fromkeys(r["strategy"] for r in weighted):
        mine = [r for r in weighted if r["strategy"] == strategy]
        k1 = max(mine, key=lambda r: r["ndcg@10"])["k1"]
        line = sorted((r["text_weight"], r["ndcg@10"]) for r in mine if r["k1"] == k1)
        ax.plot(*zip(*line), marker="o", label=f"image+text {strategy}" + (f" (k1={k1})" if k1 else ""))
    flat = [r for r in rows if r["text_weight"] is None]
    for key in dict.fromkeys((r["mode"], r["strategy"]) for r in flat):
        r = max((r for r in flat if (r["mode"], r["strategy"]) == key), key=lambda r: r["ndcg@10"])
        ax.axhline(r["ndcg@10"], linestyle="--", linewidth=1, color="grey" if r["mode"] != "text" else "black")
        ax.annotate(f"{r['label']} ({r['mode']})", (1.0, r["ndcg@10"]), fontsize=7, ha="right", va="bottom")
    ax.set(xlabel="text weight", ylabel="nDCG@10", title="nDCG@10 against fusion weight")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary_line(report: dict, total_s: float) -> str:
    parts = [f"{m}: {r['label']} nDCG@10 {r['ndcg@10']:.3f} R@10 {r['recall@10']:.3f} ({r['n_queries']} q)"
             for m, r in report["best"].items()]
    parts += [f"default {mode}: {c['recommended']['label']} nDCG@10 {c['recommended']['ndcg@10']:.3f}"
              for mode, c in report["choices"].items() if c["recommended"]]
    return "best | " + " | ".join(parts) + f" | {total_s:.0f} s in all"


def write_outputs(out_dir: Path, report: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(report, indent=2, default=str))
    write_markdown(out_dir / "results.md", report)
    plot(out_dir / "ndcg_vs_weight.png", report["rows"])
