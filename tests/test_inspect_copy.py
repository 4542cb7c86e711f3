"""Operating an index: inspecting any store (what the Qdrant dashboard shows a server's users), and copying an index
between stores without re-encoding, after which searches answer alike."""

from __future__ import annotations

import json
import shutil

import pytest

from jobs import copy, inspect
from retrieval import inspection
from retrieval.prepare import with_words
from retrieval.search import EncodedQuery, SearchParams, search
from retrieval.service import Searcher
from retrieval.store.factory import open_store
from schemas.jobs import StoreConfig
from tests.conftest import free_port

STORE_FLAGS = lambda cfg: ["--store-path", str(cfg.store.path)]  # noqa: E731


def test_the_overview_lists_aliases_generations_and_counts(small_index, capsys):
    assert inspect.main([*STORE_FLAGS(small_index), "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    (row,) = [r for r in view["collections"] if r["name"] == "gen-1"]
    assert view["aliases"]["fashion"] == "gen-1" and row["aliases"] == ["fashion"]
    assert row["points"] == 80 and row["complete"] and row["vectors"] == ["image", "text", "bm25", "terms"]
    assert inspect.main(STORE_FLAGS(small_index)) == 0
    assert "gen-1" in capsys.readouterr().out


def test_a_collection_shows_its_spec_and_filter_value_counts(small_index, capsys):
    assert inspect.main([*STORE_FLAGS(small_index), "--collection", "fashion", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["collection"] == "gen-1" and view["spec"]["bm25_avg_len"] > 1
    genders = view["filter_values"]["gender"]
    assert sum(genders.values()) == 80 and set(genders) <= {"Men", "Women", "Boys", "Girls", "Unisex"}


def test_a_point_shows_its_payload_and_vectors(small_index, capsys):
    assert inspect.main([*STORE_FLAGS(small_index), "--item", "10003"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["payload"]["item_id"] == "10003" and "Tshirts" in view["payload"]["text"]
    assert view["vectors"]["image"]["norm"] == pytest.approx(1.0, abs=1e-3) and view["vectors"]["bm25"]["terms"] > 3
    assert inspect.main([*STORE_FLAGS(small_index), "--item", "nope"]) == 2


PARTIAL = "fashion-20260101-000000-000001"  # a generation of the alias whose run has not finished


def test_the_served_view_lists_the_aliases_generations_and_marks_the_live_one(small_index, tmp_path):
    """What GET /inspect shows: the alias's generations (a partial one too), the live one's count and value counts,
    models by their public names and no catalog root."""
    shutil.copytree(small_index.store.path, tmp_path / "store")
    with open_store(StoreConfig(backend="edge", path=tmp_path / "store")) as store:
        spec = store.collection_spec("gen-1")
        store.create_collection(spec.model_copy(update={"name": PARTIAL, "complete": False}))
        view = inspection.served(store, "fashion", "gen-1", spec, limit=2)
    rows = {row["name"]: row for row in view["generations"]}
    assert list(rows) == [PARTIAL, "gen-1"] and view["aliases"] == {"fashion": "gen-1"}
    assert rows["gen-1"]["live"] and rows["gen-1"]["points"] == 80 and rows["gen-1"]["complete"]
    assert not rows[PARTIAL]["live"] and rows[PARTIAL]["complete"] is False and rows[PARTIAL]["points"] == 0
    assert {row["model"] for row in rows.values()} == {view["spec"]["model"]} == {"local-dir:fashion-clip-mini"}
    assert "catalog_root" not in view["spec"] and all(len(v) <= 2 for v in view["filter_values"].values())


@pytest.mark.parametrize("argv, words", [
    (["--url", "http://127.0.0.1:{port}"], "cannot reach the service at http://127.0.0.1:{port}"),
    (["--url", "http://127.0.0.1:{port}", "--collection", "fashion"], "--collection does not apply with --url"),
])
def test_inspect_url_errors_are_one_line(argv, words, capsys):
    port = free_port()  # nothing listens there
    assert inspect.main([a.format(port=port) for a in argv]) == 2
    err = capsys.readouterr().err
    assert words.format(port=port) in err and "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("backend", ["edge", "local"])
def test_a_copy_answers_searches_like_the_original(small_index, encoder, tmp_path, backend, capsys):
    target = ["--to-store-path", str(tmp_path / "copy"), "--to-store-backend", backend]
    assert copy.main([*STORE_FLAGS(small_index), *target]) == 0
    assert "counts agree" in capsys.readouterr().out
    with open_store(StoreConfig(backend=backend, path=tmp_path / "copy")) as copied, \
            open_store(small_index.store) as original:
        assert copied.count("fashion") == original.count("fashion") == 80
        assert copied.collection_spec(copied.resolve_alias("fashion")).complete
        like_this = Searcher(original, "fashion", "m").item_vectors("10003", original.resolve_alias("fashion"))
        words = with_words(EncodedQuery(words_vector=encoder.encode_texts(["red tshirt"])[0]), "red tshirt", "english")
        for query, strategy in ((like_this, "hybrid_rescore"), (like_this, "hybrid_dbsf"), (words, "hybrid_dbsf")):
            answers = [[(r.item_id, round(r.score, 4)) for r in
                        search(s, "fashion", query, SearchParams(k=10, strategy=strategy)).results]
                       for s in (original, copied)]
            assert len(answers[0]) == 10 and [s for _, s in answers[0]] == [s for _, s in answers[1]], strategy
            assert sorted(answers[0]) == sorted(answers[1])  # equal scores may come in either order
