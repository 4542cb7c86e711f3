"""The strategy registry: its entries agree with each other, the docs show its table, and a strategy added as one
entry (plus its implementation) is selectable everywhere: the search, the evaluation's grid, the CLIs, the API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import evaluate, query
from retrieval import evaluation, fusion, strategies
from retrieval.search import EncodedQuery, SearchParams, StrategyError, search
from tests.toys import BOTH, TOY, unit

ROOT = Path(__file__).resolve().parents[1]


def words_on_photos(store, collection, query, search):
    """The throwaway's implementation: the items whose photos are nearest the words' CLIP vector."""
    return fusion.single_knn(store, collection, query, search, query.words_vector)


THROWAWAY = strategies.Strategy("words_on_photos", rank=words_on_photos, needs=("words",), uses=("words",),
                                modes=("text", "image+text"), grid_rank=10)


def test_every_entry_is_whole_and_every_mode_has_one_default():
    ranks = [s.grid_rank for s in strategies.REGISTRY.values()]
    assert len(set(ranks)) == len(ranks)
    for name, s in strategies.REGISTRY.items():
        assert s.name == name and (s.plans is None) != (s.rank is None), name
        assert set(s.needs) <= set(s.uses) <= set(strategies.SIGNALS) and set(s.modes) <= set(strategies.MODES)
        assert set(s.knobs) <= {"k1", "text_weight"} and set(s.default) <= set(s.modes), name
    for mode in strategies.MODES:
        defaults = [s.name for s in strategies.REGISTRY.values() if mode in s.default]
        assert defaults == [strategies.default(mode).name] and defaults[0] in strategies.all_signals(mode), mode


def test_the_evaluation_grid_comes_from_the_table():
    assert strategies.in_mode("image") == strategies.all_signals("image") == ("image_knn",)
    assert strategies.in_mode("text") == ("text_knn", "bm25", "hybrid_rrf", "hybrid_dbsf", "hybrid_rescore",
                                          "hybrid_understood")
    assert set(strategies.in_mode("image+text")) == set(strategies.names())
    assert strategies.all_signals("image+text") == ("hybrid_rrf", "hybrid_dbsf", "hybrid_rescore",
                                                    "hybrid_understood")
    labels = [c.label() for c in evaluation.grid("text", list(strategies.names()), [0.2, 0.5], [50])]
    assert labels == ["text_knn", "bm25", "hybrid_rrf k1=50", "hybrid_dbsf k1=50", "hybrid_rescore k1=50",
                      "hybrid_understood k1=50"]


def test_the_docs_show_the_table():
    assert strategies.markdown() in (ROOT / "docs" / "evaluation.md").read_text()


def test_a_strategy_added_as_one_entry_is_selectable_everywhere(monkeypatch, tmp_path):
    monkeypatch.setitem(strategies.REGISTRY, THROWAWAY.name, THROWAWAY)
    outcome = search(TOY, "c", BOTH, SearchParams(k=2, strategy="words_on_photos", explain=False))
    assert outcome.strategy == "words_on_photos" and [r.item_id for r in outcome.results] == ["txt", "near_txt"]
    with pytest.raises(StrategyError, match="needs the query's words"):
        search(TOY, "c", EncodedQuery(photo_vector=unit(1, 0)), SearchParams(strategy="words_on_photos"))
    grid = evaluation.grid("image+text", ["words_on_photos"], [0.5], [50])
    assert [c.label() for c in grid] == ["words_on_photos"] and "words_on_photos" in strategies.in_mode("text")
    assert "words_on_photos" not in strategies.all_signals("text")  # it ignores the words' lexical match
    assert "`words_on_photos` | client | words" in strategies.markdown()
    assert evaluate.parse_args(["--queries", "q.jsonl", "--strategies", "words_on_photos"]).strategies == [
        "words_on_photos"]
    assert query.parse_args(["--text", "red", "--strategy", "words_on_photos"]).strategy == "words_on_photos"


def test_a_strategy_added_as_one_entry_is_in_the_api():
    """The API's enum is fixed when schemas.api is imported: registered first, in a fresh interpreter."""
    code = ("from retrieval import strategies; from tests.test_strategies import THROWAWAY; "
            "strategies.REGISTRY[THROWAWAY.name] = THROWAWAY; import json; from schemas.api import SearchRequest; "
            "print(json.dumps(SearchRequest.model_json_schema()['properties']['strategy']['anyOf'][0]['enum']))")
    enum = json.loads(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                     check=True).stdout)
    assert enum == [*strategies.names(), "words_on_photos"]
