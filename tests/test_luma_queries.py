"""jobs.make_queries on a catalog with product groups: the split by group and the four kinds of query."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from jobs import make_queries
from schemas.settings import SHARED_ROOT

LUMA = SHARED_ROOT / "datasets" / "luma-sample"


def _item(group: str, colour: str, kind: str = "Tees", gender: str = "Men") -> dict:
    return {"image": f"images/{group}-{colour}.jpg", "type": kind, "colour": colour, "gender": gender,
            "group": group, "description": f"The {group} paragraph."}


TOY = {"A-Red": _item("A", "Red"), "A-Blue": _item("A", "Blue"), "B-Blue": _item("B", "Blue"),
       "C-Blue": _item("C", "Blue", gender="Women"), "D-Red": _item("D", "Red", kind="Pants")}


def test_split_by_group_is_a_hash_and_never_straddles():
    items = {f"{g}-{c}": _item(f"P{g}", c) for g in range(200) for c in ("Red", "Blue", "Gray")}
    held = make_queries.held_out_by_group(items, 0.5)
    assert held == make_queries.held_out_by_group(dict(reversed(items.items())), 0.5)[::-1]  # order-free
    groups = Counter(items[i]["group"] for i in held)
    assert set(groups.values()) == {3}  # all three colours of a held-out product, never some
    assert 70 < len(groups) < 130
    assert not make_queries.held_out_by_group(items, 0.0) and len(make_queries.held_out_by_group(items, 1.0)) == 600


def test_photo_and_colour_asks_for_its_product_in_that_colour():
    queries = {q["qid"]: q for q in make_queries.make_queries(TOY, ["A-Red", "D-Red"], seed=0)}
    asked = queries["image+text:A-Red:Blue"]
    assert (asked["text"], asked["exclude"]) == ("in blue", ["A-Red"])
    assert asked["relevant"] == {"A-Blue": 3.0, "B-Blue": 2.0, "C-Blue": 1.0}
    assert not any(q.startswith("image+text:D-Red") for q in queries)  # one colour, and no other Pants colour
    assert queries["description:A"] == make_queries.query("description:A", "text", "The A paragraph.", None,
                                                          {"A-Red": 1.0, "A-Blue": 1.0})


def test_catalog_without_groups_keeps_three_kinds():
    plain = {i: {k: v for k, v in item.items() if k not in ("group", "description")} for i, item in TOY.items()}
    queries = make_queries.make_queries(plain, list(plain), seed=0)
    assert {q["qid"].split(":")[0] for q in queries} == {"text", "image", "image+text"}


@pytest.mark.skipif(not (LUMA / "products.csv").is_file(), reason="the luma-sample export is not in ../shared")
def test_luma_queries(tmp_path):
    out = tmp_path / "queries.jsonl"
    assert make_queries.main(["--catalog", str(LUMA), "--out", str(out)]) == 0
    queries = [json.loads(line) for line in out.read_text().splitlines()]
    items = make_queries.load_items(LUMA)
    held = set(make_queries.held_out_by_group(items, 0.5))
    kinds = Counter(q["qid"].split(":")[0] for q in queries)
    assert len(items) == 417 and set(kinds) == {"text", "image", "image+text", "description"}
    assert all(n >= 60 for n in kinds.values()), kinds
    for q in queries:
        assert q["relevant"] and all(g > 0 for g in q["relevant"].values())
        if q["image"]:
            assert q["exclude"][0] in held and q["exclude"][0] not in q["relevant"]
    for q in (q for q in queries if q["qid"].startswith("description:")):
        group = q["qid"].split(":")[1]
        assert set(q["relevant"]) == {i for i, item in items.items() if item["group"] == group}
        assert "<" not in q["text"] and len(q["text"].split()) > 20
    products = [q for q in queries if q["mode"] == "image+text" and 3.0 in q["relevant"].values()]
    assert len(products) > 0.9 * kinds["image+text"]
    for q in products:
        (wanted,) = [i for i, g in q["relevant"].items() if g == 3.0]
        assert items[wanted]["group"] == items[q["exclude"][0]]["group"]
        assert q["text"] == f"in {items[wanted]['colour'].lower()}"
