"""The recommendations' evaluation without Ray: the query file (jobs.make_queries --recommend), each query run
through the service's own code (retrieval/recommend.py's begin/finish, the Searcher's begin/finish for words),
nDCG@10 and the top ten's make-up, paired comparisons, and the rule for the diversity switch's "on" value.

Measures of a top ten, besides retrieval.metrics': `avoid_share`, the share in the disliked colour (a liked query
is measured against the colour its liked+disliked twin dislikes); `word_share`, the share whose documents have the
refused word; `groups`, the distinct product groups (a catalog with groups); `near_dups`, the pairs of results whose
photo vectors have a cosine over NEAR_DUP.

Negative words are run five ways (`NOT_WORDS`): left out (the service: the store leaves out the first items with
the word, the service drops the rest), pushed down (the items with the word moved below the others of a list
five times deeper), dropped (from that list, after ranking: nothing left out in the store), ignored (the words
without the negation) and as typed (the whole text as words, as the search read it before negations were parsed).

The rule for the "on" value (issue 22): the largest diversity among those measured (diversity is what the switch is
for) whose mean distinct groups in the top ten is at least MIN_GROUPS on a catalog with groups, at a paired nDCG@10
cost against off of at most MAX_COST (the mean difference) in every recommendation mode of every catalog measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrieval import lexical, negation, recommend, strategies
from retrieval.evaluation import paired_delta
from retrieval.metrics import CUTOFF, score_query
from retrieval.prepare import with_words
from retrieval.search import EncodedQuery, SearchParams, search

NEAR_DUP = 0.95  # photo cosine above which two results count as near-copies
MIN_GROUPS = 8.0  # mean distinct product groups in the top ten with diversity on
MAX_COST = 0.02  # nDCG@10 that diversity may cost against off
DIVERSITIES = (0.0, 0.1, 0.2, 0.3, 0.5)
LIKED_MODES = ("liked", "more-like-this", "liked+disliked")
MODES = (*LIKED_MODES, "words+not")
NOT_WORDS = ("exclude", "push_down", "drop", "ignore", "as_typed")
OTHER_STRATEGIES = ("sum_scores", "average_vector")  # the recommend strategies measured besides best_score
NO_SHARED = "no_shared_values"  # the variant without the liked items' shared values ranked first
RECOMMEND_ON = strategies.RECOMMEND_DIVERSITY


@dataclass
class RecQuery:
    """A recommendation dev query: its examples or words, what it should find, and what it should avoid."""

    qid: str
    mode: str
    relevant: dict[str, float]
    liked: tuple[str, ...] = ()
    disliked: tuple[str, ...] = ()
    text: str | None = None
    base: str | None = None  # the liked query this one is paired with
    avoid_colour: str | None = None
    not_word: str | None = None
    exclude: tuple[str, ...] = field(default_factory=tuple)


def load(path: Path) -> list[RecQuery]:
    """The recommendation modes' lines of a query file (other modes are skipped)."""
    lines = [json.loads(t) for t in path.read_text().splitlines() if t.strip()]
    return [RecQuery(q["qid"], q["mode"], dict(q["relevant"]), tuple(q.get("liked", ())),
                     tuple(q.get("disliked", ())), q.get("text"), q.get("base"), q.get("avoid_colour"),
                     q.get("not_word"), tuple(q.get("exclude", ()))) for q in lines if q.get("mode") in MODES]


@dataclass
class Catalog:
    """What the measures read of each item: its colour and group (make_queries.load_items), its photo vector and
    document, and the collection's BM25 language."""

    items: dict[str, dict]
    photos: dict[str, np.ndarray]
    documents: dict[str, str]
    language: str
    group_field: str | None = None  # the payload field of the product group (a catalog with groups)

    @property
    def has_groups(self) -> bool:
        return self.group_field is not None


def near_dup_pairs(ids: list[str], photos: dict[str, np.ndarray]) -> int:
    vectors = np.stack([photos[i] for i in ids if i in photos]) if ids else np.zeros((0, 1))
    sims = vectors @ vectors.T
    return int(np.triu(sims > NEAR_DUP, k=1).sum())


def measures(ids: list[str], query: RecQuery, catalog: Catalog, avoid: str | None) -> dict | None:
    """retrieval.metrics' scores of a ranking plus the top ten's make-up; None for a query with nothing relevant."""
    scores = score_query(ids, query.relevant)
    if scores is None:
        return None
    top = ids[:CUTOFF]
    colour = lambda i: catalog.items.get(i, {}).get("colour")  # noqa: E731
    scores["near_dups"] = float(near_dup_pairs(top, catalog.photos))
    if catalog.has_groups:
        scores["groups"] = float(len({catalog.items.get(i, {}).get("group", i) for i in top}))
    if avoid is not None:
        scores["avoid_share"] = sum(colour(i) == avoid for i in top) / CUTOFF
    if query.not_word is not None:
        words = lexical.query_vector(query.not_word, catalog.language)
        scores["word_share"] = sum(negation.has_any(catalog.documents.get(i, ""), words, catalog.language)
                                   for i in top) / CUTOFF
    return scores


def recommended(searcher, query: RecQuery, diversity: float, group_by: str | None = None,
                strategy: str = "best_score", shared_values: bool = True) -> list[str]:
    """The ids /recommend returns for the query's examples (k = CUTOFF)."""
    params = recommend.RecommendParams(query.liked, query.disliked, k=CUTOFF, diversity=diversity, group_by=group_by,
                                       strategy=strategy, shared_values=shared_values)
    return [r.item_id for r in recommend.finish(searcher, recommend.begin(searcher, params), None, params).results]


def words_query(searcher, encode, text: str, collection: str, spec) -> EncodedQuery:
    """Words as the service encodes them: their CLIP vector, BM25 vector and what they name in the catalog."""
    return with_words(EncodedQuery(words_vector=encode(text)), text, spec.bm25_language,
                      searcher.words(collection, spec))


def searched(searcher, encode, query: RecQuery, how: str, depth: int = 5 * CUTOFF) -> list[str]:
    """The ids /search returns for the query's words, its negation handled `how` (NOT_WORDS)."""
    if how == "exclude":
        pending = searcher.begin(None, query.text)
        outcome = searcher.finish(pending, EncodedQuery(words_vector=encode(pending.phrase)), SearchParams(k=CUTOFF))
        return [r.item_id for r in outcome.results]
    collection, spec = searcher.current()
    text = query.text if how == "as_typed" else negation.split(query.text)[0]
    k = depth if how in ("push_down", "drop") else CUTOFF
    outcome = search(searcher.store, collection, words_query(searcher, encode, text, collection, spec),
                     SearchParams(k=k, explain=False))
    results = [(r.item_id, r.payload.get("text", "")) for r in outcome.results]
    if how in ("push_down", "drop"):
        refused = lexical.query_vector(query.not_word, spec.bm25_language)
        results.sort(key=lambda r: negation.has_any(r[1], refused, spec.bm25_language))  # stable: order kept
        results = [r for r in results if how == "push_down" or not negation.has_any(r[1], refused, spec.bm25_language)]
    return [item_id for item_id, _ in results[:CUTOFF]]


def variants(query: RecQuery, catalog: Catalog, diversities: tuple[float, ...]) -> list[tuple[str, float, dict]]:
    """(variant, diversity, keyword arguments of run_one) for each way a query of its mode is run."""
    if query.mode == "words+not":
        return [(how, 0.0, {"how": how}) for how in NOT_WORDS]
    out = [("recommend", d, {"diversity": d}) for d in diversities]
    out += [(strategy, 0.0, {"diversity": 0.0, "strategy": strategy}) for strategy in OTHER_STRATEGIES]
    out += [(f"{NO_SHARED} {d:g}", d, {"diversity": d, "shared_values": False}) for d in (0.0, RECOMMEND_ON)
            if d in diversities]
    grouped = [("group_by", 0.0, {"diversity": 0.0, "group_by": catalog.group_field})] if catalog.has_groups else []
    return out + grouped


def run_one(searcher, encode, query: RecQuery, **how) -> list[str]:
    if query.mode == "words+not":
        return searched(searcher, encode, query, how["how"])
    return recommended(searcher, query, how["diversity"], how.get("group_by"), how.get("strategy", "best_score"),
                       how.get("shared_values", True))


def run(searcher, encode, queries: list[RecQuery], catalog: Catalog, diversities: tuple[float, ...],
        progress=None) -> dict[tuple[str, str, float], dict[str, dict | None]]:
    """(mode, variant, diversity) -> qid -> measures; a liked query is measured against its liked+disliked twin's
    disliked colour."""
    avoid = {q.base: q.avoid_colour for q in queries if q.mode == "liked+disliked"}
    out: dict[tuple[str, str, float], dict[str, dict | None]] = {}
    for query in queries:
        colour = query.avoid_colour or avoid.get(query.qid)
        for variant, diversity, how in variants(query, catalog, diversities):
            ids = run_one(searcher, encode, query, **how)
            out.setdefault((query.mode, variant, diversity), {})[query.qid] = measures(ids, query, catalog, colour)
        if progress is not None:
            progress()
    return out


def mean_of(per_query: dict[str, dict | None], metric: str) -> float | None:
    values = [s[metric] for s in per_query.values() if s is not None and metric in s]
    return float(np.mean(values)) if values else None


EXTRAS = ("avoid_share", "word_share", "groups", "near_dups")


def rows_of(scores: dict) -> list[dict]:
    """One row per (mode, variant, diversity): the queries scored and the means of every measure they have."""
    return [{"mode": mode, "variant": variant, "diversity": d,
             "n_queries": sum(s is not None for s in per.values()),
             **{m: mean_of(per, m) for m in ("ndcg@10", "recall@10", "p@10", *EXTRAS)}}
            for (mode, variant, d), per in scores.items()]


def paired(a: dict[str, dict | None], b: dict[str, dict | None], metric: str = "ndcg@10",
           pairs: dict[str, str] | None = None) -> tuple[float, float, float]:
    """paired_delta of a - b over the queries both have; `pairs` maps a's qids to b's (else the same qid)."""
    keys = [q for q in a if (pairs or {}).get(q, q) in b]
    return paired_delta([a[q] for q in keys], [b[(pairs or {}).get(q, q)] for q in keys], metric)


def comparisons(queries: list[RecQuery], scores: dict) -> dict[str, tuple[float, float, float]]:
    """The acceptance's paired differences at each diversity: liked against more-like-this, liked+disliked against
    liked alone (nDCG@10 and the disliked colour's share); each way of negative words against leaving out; each
    recommend strategy and one per group against best_score."""
    base = {q.qid: q.base for q in queries if q.base}
    first = {b: q for q, b in base.items() if q.startswith("more-like-this")}
    disliked = {q: b for q, b in base.items() if q.startswith("liked+disliked")}
    get = lambda mode, variant="recommend", d=0.0: scores.get((mode, variant, d), {})  # noqa: E731
    out = {}
    for d in sorted({d for mode, variant, d in scores if variant == "recommend"}):
        at = f" (diversity {d:g})" if d else ""
        out[f"liked - more-like-this{at}"] = paired(get("liked", d=d), get("more-like-this", d=d), pairs=first)
        out[f"liked+disliked - liked{at}"] = paired(get("liked+disliked", d=d), get("liked", d=d), pairs=disliked)
        out[f"liked+disliked - liked: avoid_share{at}"] = paired(get("liked+disliked", d=d), get("liked", d=d),
                                                                 "avoid_share", disliked)
        plain = get("liked", f"{NO_SHARED} {d:g}", d)
        if plain:
            out[f"liked - liked without shared values{at}"] = paired(get("liked", d=d), plain)
            out[f"liked - more-like-this, without shared values{at}"] = paired(plain, get("more-like-this", d=d),
                                                                              pairs=first)
            out[f"liked+disliked - liked+disliked without shared values{at}"] = paired(
                get("liked+disliked", d=d), get("liked+disliked", f"{NO_SHARED} {d:g}", d))
    for how in NOT_WORDS[1:]:
        out[f"words+not {how} - exclude"] = paired(get("words+not", how), get("words+not", "exclude"))
    for mode, variant in ((m, v) for m in LIKED_MODES for v in ("group_by", *OTHER_STRATEGIES)):
        if (mode, variant, 0.0) in scores:
            out[f"{mode} {variant} - best_score"] = paired(get(mode, variant), get(mode))
    return out


def diversity_costs(scores: dict, diversities: tuple[float, ...]) -> dict[str, dict[float, dict]]:
    """Per recommendation mode and diversity: nDCG@10 against off (paired) and the mean distinct groups."""
    out: dict[str, dict[float, dict]] = {}
    for mode in LIKED_MODES:
        off = scores.get((mode, "recommend", 0.0), {})
        for d in (d for d in diversities if d > 0 and (mode, "recommend", d) in scores):
            on = scores[(mode, "recommend", d)]
            out.setdefault(mode, {})[d] = {"delta": paired(on, off), "groups": mean_of(on, "groups"),
                                           "near_dups": mean_of(on, "near_dups")}
    return out


def meets_rule(costs: dict[str, dict[float, dict]], diversity: float, has_groups: bool) -> bool:
    """The rule (module docstring) on one catalog: no mode loses more than MAX_COST, and enough groups."""
    per_mode = [c[diversity] for c in costs.values() if diversity in c]
    cheap = all(c["delta"][0] >= -MAX_COST for c in per_mode)
    return bool(per_mode) and cheap and (not has_groups or all(c["groups"] >= MIN_GROUPS for c in per_mode))


def diversity_on(per_catalog: list[tuple[dict, bool]], diversities: tuple[float, ...]) -> float | None:
    """The largest diversity meeting the rule on every catalog given ((costs, has_groups) each), or None."""
    return next((d for d in sorted(diversities, reverse=True) if d > 0 and
                 all(meets_rule(costs, d, groups) for costs, groups in per_catalog)), None)
