"""The search strategies as one table: everything else about them (the API's enum, the defaults per query mode, the
check that a query has what a strategy needs, the evaluation's grid, the docs' table) is derived from it.

Adding a strategy is one entry here plus its implementation: query plans the store runs (retrieval/hybrid.py), or
a ranking function run here over kNN lists (retrieval/fusion.py). The knobs come from the evaluation
(docs/evaluation.md, `make eval`; retrieval/evaluation.py says how a configuration is settled).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from retrieval import evidence, fusion, hybrid

MODES = ("text", "image", "image+text")
# A query's signals, named as a refusal names them: the photo's CLIP vector, the words' CLIP vector, the words'
# BM25 vector (empty when every word is a stopword).
SIGNALS = {"photo": "photo", "words": "words", "lexical": "words (other than stopwords)"}
MODE_SIGNALS = {"text": ("words", "lexical"), "image": ("photo",), "image+text": ("photo", "words", "lexical")}
ALL = tuple(SIGNALS)
# /recommend's diversity when a request does not set it (the page's diversity switch "on"): the largest MMR diversity
# measured that costs at most 0.02 nDCG@10 against off in every recommendation mode of both dev catalogs, with at
# least 8 product groups in Luma's top ten (docs/evaluation.md, retrieval/recommend_evaluation.py).
RECOMMEND_DIVERSITY = 0.3


def recommend_strategy(disliked: bool) -> str:
    """The recommend strategy a request gets when it names none (docs/evaluation.md, Recommendations): with liked
    items only, the nearest to their average (average_vector, which then ranks as sum_scores does) beat the nearest
    to any one of them (best_score) by +0.061 [+0.027, +0.096] nDCG@10 on Myntra and +0.036 [-0.025, +0.094] on
    Luma; once a disliked item is given, best_score held its nDCG where sum_scores lost -0.038 [-0.076, -0.002] and
    average_vector -0.108 [-0.145, -0.071] on Myntra."""
    return "best_score" if disliked else "average_vector"


@dataclass(frozen=True)
class Knobs:
    """A strategy's depth (candidates per leg, or stage-1 depth) and text weight; the ones it does not read are
    kept at k1 100 and weight 0.5."""

    k1: int = 100
    text_weight: float = 0.5


@dataclass(frozen=True)
class Strategy:
    """One way to rank: exactly one of `plans` (store-side: (query, k1, text_weight) -> the query plans, run in
    order while fewer than k results came back) and `rank` (client-side: (store, collection, query, params) ->
    ranked hits)."""

    name: str
    plans: Callable | None = None
    rank: Callable | None = None
    needs: tuple[str, ...] = ()  # signals without which it is refused (the others it reads when the query has them)
    uses: tuple[str, ...] = ()  # signals it reads
    knobs: tuple[str, ...] = ()  # the knobs it reads (the only ones the evaluation varies)
    settled: Knobs = Knobs()  # its knobs when asked for by name outside the modes it is the default of
    default: dict[str, Knobs] = field(default_factory=dict)  # the query modes it is the default of, its knobs there
    modes: tuple[str, ...] = ()  # the modes the evaluation runs it in (elsewhere it is another strategy's twin)
    grid_rank: int = 0  # its place in the evaluation's grid: the earlier of two equal configurations wins
    prepare: Callable | None = None  # (store, collection, query, params) -> the query, read further, before plans

    def knobs_in(self, mode: str) -> Knobs:
        return self.default.get(mode, self.settled)


# In the API's order. Settled knobs: each strategy's on the image+text queries, where every knob matters.
REGISTRY: dict[str, Strategy] = {s.name: s for s in (
    Strategy("hybrid_dbsf", plans=functools.partial(hybrid.fused_plans, "dbsf"), uses=ALL, knobs=("k1",),
             settled=Knobs(1000, 0.5), modes=("text", "image+text"), grid_rank=4),
    Strategy("hybrid_rrf", plans=functools.partial(hybrid.fused_plans, "rrf"), uses=ALL, knobs=("k1",),
             settled=Knobs(1000, 0.5), modes=("text", "image+text"), grid_rank=3),
    Strategy("hybrid_rescore", plans=hybrid.rescore_plans, uses=ALL, knobs=("k1", "text_weight"),
             settled=Knobs(1000, 0.2), modes=("text", "image+text"), grid_rank=5),
    Strategy("hybrid_understood", plans=evidence.plans, prepare=evidence.with_photo_values, uses=ALL, knobs=("k1",),
             settled=Knobs(1000, 0.5),
             default={"text": Knobs(50, 0.5), "image+text": Knobs(1000, 0.5)}, modes=("text", "image+text"),
             grid_rank=10),
    Strategy("bm25", plans=hybrid.bm25_plans, needs=("lexical",), uses=("lexical",), settled=Knobs(100, 0.5),
             modes=("text", "image+text"), grid_rank=2),
    Strategy("vector_fusion", rank=fusion.vector_fusion, uses=("photo", "words"), knobs=("text_weight",),
             settled=Knobs(1000, 0.55), modes=("image+text",), grid_rank=6),
    Strategy("two_stage", rank=fusion.two_stage, uses=("photo", "words"), knobs=("k1", "text_weight"),
             settled=Knobs(500, 0.55), modes=("image+text",), grid_rank=9),
    Strategy("two_stage_image", rank=fusion.two_stage_image, uses=("photo", "words"), knobs=("k1", "text_weight"),
             settled=Knobs(1000, 0.7), modes=("image+text",), grid_rank=8),
    Strategy("rrf", rank=fusion.rrf, uses=("photo", "words"), knobs=("k1", "text_weight"), settled=Knobs(200, 0.55),
             modes=("image+text",), grid_rank=7),
    Strategy("image_knn", rank=fusion.image_knn, needs=("photo",), uses=("photo",), settled=Knobs(100, 0.5),
             default={"image": Knobs(100, 0.5)}, modes=("image", "image+text"), grid_rank=0),
    Strategy("text_knn", rank=fusion.text_knn, needs=("words",), uses=("words",), settled=Knobs(100, 0.5),
             modes=("text", "image+text"), grid_rank=1),
)}


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def default(mode: str) -> Strategy:
    """The strategy a query of this mode gets when it asks for none (the first that says it is the default)."""
    return next(s for s in REGISTRY.values() if mode in s.default)


def defaults() -> dict[str, str]:
    return {mode: default(mode).name for mode in MODES}


def in_mode(mode: str) -> tuple[str, ...]:
    """The strategies the evaluation runs for a mode, in its grid's order."""
    return tuple(s.name for s in sorted(REGISTRY.values(), key=lambda s: s.grid_rank) if mode in s.modes)


def all_signals(mode: str) -> tuple[str, ...]:
    """The strategies of a mode that read every signal its queries have (the only ones that may be its default)."""
    return tuple(name for name in in_mode(mode) if set(MODE_SIGNALS[mode]) <= set(REGISTRY[name].uses))


def markdown() -> str:
    """The table docs/evaluation.md shows (`python -m retrieval.strategies` prints it)."""
    rows = ["| strategy | runs | needs | reads | knobs | settled k1 / w | default for |", "|---" * 7 + "|"]
    for s in REGISTRY.values():
        default_for = ", ".join(f"{mode} ({k.k1} / {k.text_weight:g})" for mode, k in s.default.items())
        rows.append(f"| `{s.name}` | {'store' if s.plans else 'client'} | {', '.join(s.needs) or '-'} | "
                    f"{', '.join(s.uses)} | {', '.join(s.knobs) or '-'} | {s.settled.k1} / {s.settled.text_weight:g} "
                    f"| {default_for or '-'} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())
