"""Dev-set queries from catalog attributes: text, image and image+text, each judged by attribute matches.

python -m jobs.make_queries --catalog ../shared/datasets/myntra-fashion-small \
    --split-file ../shared/models/fashion-clip-mini/split.json --out var/eval/queries-dev.jsonl
python -m jobs.make_queries --catalog ../shared/datasets/luma-sample --out var/eval/queries-luma.jsonl

Query items (and the colour/type combinations of text queries) come from the model's held-out `test_ids`, so
no query photo was trained on; relevant items may be anywhere in the catalog. Without a split file, the held-out
items are those whose product group hashes into --held-out-fraction: colour variants of one product never straddle
the split, so a model tuned on the rest never saw the product. One JSON object per line:
{"qid", "mode": "text"|"image"|"image+text", "text": str|null, "image": "images/1.jpg"|null,
 "relevant": {"<item id>": gain}, "exclude": ["<item id>", ...]}. Seeded: the same inputs give the same file.

- text "<colour> <article type>": relevant = that type in that colour, gain 1; with "for <gender>": gain 2 for
  the same gender, 1 for Unisex items, other genders not relevant.
- image (an item's photo): relevant = the same type and colour, gain 2 for the same gender else 1; the item excluded.
- image+text (a photo plus "in <another colour>"): relevant = the same type in that colour, gain 2 for the same
  gender else 1; the colour is drawn among those the type exists in; the item excluded.

A catalog with product groups (a shop export: one item per product colour, ROLES) asks two things differently:
- image+text: the colour is drawn among the product's own other colours (the shop sells the photo's product in
  it), and the product in that colour is what the shopper asked for: gain 3; the same type in that colour stays
  relevant, 2 for the same gender else 1. A product with one colour falls back to the rule above.
- text, also a product's description paragraph (as indexed, HTML stripped): relevant = the product's items, gain 1.

With --recommend, the recommendation modes instead (jobs.evaluate_recommend judges them; seeded apart from the
modes above, so those stay as they are). Per (type, colour) with 2 or more held-out items, relevant gain 1:
- liked: 2-3 of those items liked; relevant = the other items of that type and colour; liked items excluded.
- more-like-this: the first of the same liked items alone (the baseline the liked query must beat; `base`: its qid).
- liked+disliked: the same liked items, and a held-out item of the type in another colour disliked (`avoid_colour`).
- words+not: "<type>, not <colour>" for a one-word colour of a held-out item, the type existing in others too;
  relevant = the type in the colours whose names lack the word (`not_word`: "not blue" is not navy blue either).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

from jobs import cli
from retrieval import splits
from retrieval.catalogs import open_catalog
from schemas.catalog import catalog_ref
from schemas.jobs import CATALOG_FORMATS

SKIP_COLOURS = {"NA", "Multi"}  # not a colour anyone types
GENDER_WORDS = {"Men": "for men", "Women": "for women", "Boys": "for boys", "Girls": "for girls"}


def load_items(catalog: Path, fmt: str = "auto") -> dict[str, dict]:
    """id -> {image, type, colour, gender[, group, description]} for items that have every one of them."""
    cat = open_catalog(catalog, fmt)
    roles = splits.roles_of(cat.format)
    items = {}
    for item in cat.items():
        meta = {role: str(item.metadata.get(field, "")).strip() for role, field in roles.items()}
        if all(meta.values()) and meta["colour"] not in SKIP_COLOURS:
            items[item.id] = {"image": item.image, **meta}
    return items


def held_out_by_group(items: dict[str, dict], fraction: float) -> list[str]:
    """The items whose product group (or id) hashes below `fraction` (retrieval.splits: the fine-tune job's rule)."""
    return splits.held_out_by_group({i: item.get("group") for i, item in items.items()}, fraction)


def index_by(items: dict[str, dict], *fields: str) -> dict[tuple, list[str]]:
    groups: dict[tuple, list[str]] = defaultdict(list)
    for item_id, item in items.items():
        groups[tuple(item[f] for f in fields)].append(item_id)
    return groups


def gender_gains(ids: list[str], items: dict[str, dict], gender: str, others: float) -> dict[str, float]:
    """Gain 2 for `gender`, `others` for the rest (0 drops them)."""
    gains = {i: 2.0 if items[i]["gender"] == gender else others for i in ids}
    return {i: g for i, g in gains.items() if g > 0}


def query(qid: str, mode: str, text: str | None, image: str | None, relevant: dict, exclude=()) -> dict:
    return {"qid": qid, "mode": mode, "text": text, "image": image, "relevant": relevant, "exclude": list(exclude)}


def text_queries(items: dict[str, dict], test_ids: list[str]) -> list[dict]:
    """'<colour> <type>' for every combination among the test items, plus a variant per gender present."""
    by_type_colour = index_by(items, "type", "colour")
    combos = sorted({(items[i]["type"], items[i]["colour"], items[i]["gender"]) for i in test_ids})
    out, seen = [], set()
    for article, colour, gender in combos:
        ids, words = by_type_colour[(article, colour)], f"{colour} {article}".lower()
        if words not in seen:
            seen.add(words)
            out.append(query(f"text:{words}", "text", words, None, {i: 1.0 for i in ids}))
        if gender in GENDER_WORDS:
            phrase = f"{words} {GENDER_WORDS[gender]}"
            gains = {i: 1.0 for i in ids if items[i]["gender"] == "Unisex"} | gender_gains(ids, items, gender, 0)
            out.append(query(f"text:{phrase}", "text", phrase, None, gains))
    return out


def image_queries(items: dict[str, dict], test_ids: list[str]) -> list[dict]:
    """Each test item's photo; relevant: the other items of its type and colour."""
    by_type_colour = index_by(items, "type", "colour")
    out = []
    for item_id in test_ids:
        item = items[item_id]
        ids = [i for i in by_type_colour[(item["type"], item["colour"])] if i != item_id]
        if ids:
            gains = gender_gains(ids, items, item["gender"], 1.0)
            out.append(query(f"image:{item_id}", "image", None, item["image"], gains, [item_id]))
    return out


def image_text_queries(items: dict[str, dict], test_ids: list[str], rng: random.Random) -> list[dict]:
    """Each test item's photo plus 'in <colour>', a colour its article type exists in other than its own."""
    by_type_colour = index_by(items, "type", "colour")
    colours_of: dict[str, list[str]] = defaultdict(list)
    for article, colour in sorted(by_type_colour):
        colours_of[article].append(colour)
    out = []
    for item_id in test_ids:
        item = items[item_id]
        choices = [c for c in colours_of[item["type"]] if c != item["colour"]]
        if choices:
            colour = rng.choice(choices)
            ids = [i for i in by_type_colour[(item["type"], colour)] if i != item_id]
            gains = gender_gains(ids, items, item["gender"], 1.0)
            out.append(query(f"image+text:{item_id}:{colour}", "image+text", f"in {colour.lower()}",
                             item["image"], gains, [item_id]))
    return out


def product_colour_queries(items: dict[str, dict], test_ids: list[str], rng: random.Random) -> list[dict]:
    """Each test item's photo plus 'in <colour>', another colour of its own product: that product's item in it
    gain 3, the same type in it 2 for the same gender else 1. Items of one-colour products: image_text_queries."""
    by_group, by_type_colour = index_by(items, "group"), index_by(items, "type", "colour")
    out, single = [], []
    for item_id in test_ids:
        item = items[item_id]
        siblings = [i for i in by_group[(item["group"],)] if items[i]["colour"] != item["colour"]]
        if not siblings:
            single.append(item_id)
            continue
        colour = rng.choice(sorted({items[i]["colour"] for i in siblings}))
        ids = [i for i in by_type_colour[(item["type"], colour)] if i != item_id]
        asked = {i: 3.0 for i in siblings if items[i]["colour"] == colour}
        gains = gender_gains(ids, items, item["gender"], 1.0) | asked
        out.append(query(f"image+text:{item_id}:{colour}", "image+text", f"in {colour.lower()}",
                         item["image"], gains, [item_id]))
    return out + image_text_queries(items, single, rng)


def description_queries(items: dict[str, dict], test_ids: list[str]) -> list[dict]:
    """Each held-out product's description paragraph (text mode); relevant: the product's items."""
    by_group = index_by(items, "group")
    out = {}
    for item_id in test_ids:
        group = items[item_id]["group"]
        if group not in out:
            relevant = {i: 1.0 for i in by_group[(group,)]}
            out[group] = query(f"description:{group}", "text", items[item_id]["description"], None, relevant)
    return list(out.values())


def liked_groups(items: dict[str, dict], test_ids: list[str], rng: random.Random) -> list[tuple[tuple, list[str]]]:
    """((type, colour), 2-3 liked held-out items) for each combination with 2 or more held-out items and another
    catalog item of it to find; sorted, the liked ones a seeded sample in id order."""
    by_type_colour = index_by(items, "type", "colour")
    held = index_by({i: items[i] for i in test_ids}, "type", "colour")
    out = []
    for key in sorted(held):
        if len(held[key]) >= 2 and len(by_type_colour[key]) > 2:
            liked = rng.sample(held[key], min(3, len(held[key]), len(by_type_colour[key]) - 1))
            out.append((key, sorted(liked, key=test_ids.index)))
    return out


def liked_queries(items: dict[str, dict], test_ids: list[str], rng: random.Random) -> list[dict]:
    """For each liked group: the liked query, its more-like-this baseline (the first liked item alone) and, where
    the type has held-out items in another colour, the same liked items with one of those disliked."""
    by_type_colour, held_types = index_by(items, "type", "colour"), index_by({i: items[i] for i in test_ids}, "type")
    out: dict[str, list[dict]] = {"liked": [], "more-like-this": [], "liked+disliked": []}
    for (article, colour), liked in liked_groups(items, test_ids, rng):
        qid = f"liked:{article}:{colour}"
        relevant = {i: 1.0 for i in by_type_colour[(article, colour)] if i not in liked}
        out["liked"].append({**query(qid, "liked", None, None, relevant, liked), "liked": liked})
        out["more-like-this"].append({**query(f"more-like-this:{article}:{colour}", "more-like-this", None, None,
                                              relevant, liked), "liked": liked[:1], "base": qid})
        others = sorted((i for i in held_types[(article,)] if items[i]["colour"] != colour), key=test_ids.index)
        if others:
            disliked = rng.choice(others)
            avoid = items[disliked]["colour"]
            out["liked+disliked"].append({**query(f"liked+disliked:{article}:{colour}:{avoid}", "liked+disliked",
                                                  None, None, relevant, [*liked, disliked]),
                                          "liked": liked, "disliked": [disliked], "avoid_colour": avoid, "base": qid})
    return [q for kind in out.values() for q in kind]


def words_not_queries(items: dict[str, dict], test_ids: list[str]) -> list[dict]:
    """'<type>, not <colour>' for each one-word colour of a held-out item's type that the type has others than."""
    colours_of: dict[str, set[str]] = defaultdict(set)
    for item in items.values():
        colours_of[item["type"]].add(item["colour"])
    out = []
    for article, colour in sorted({(items[i]["type"], items[i]["colour"]) for i in test_ids}):
        word = colour.lower()
        kept = {c for c in colours_of[article] if word not in c.lower().split()}
        if " " not in word and kept:
            relevant = {i: 1.0 for i, item in items.items() if item["type"] == article and item["colour"] in kept}
            text = f"{article.lower()}, not {word}"
            out.append({**query(f"words+not:{article}:{colour}", "words+not", text, None, relevant), "not_word": word})
    return out


def recommend_queries(items: dict[str, dict], test_ids: list[str], seed: int = 0,
                      max_per_mode: int | None = None) -> list[dict]:
    """The recommendation modes (liked, more-like-this, liked+disliked, words+not); with max_per_mode, a seeded
    sample of liked groups (their three modes stay paired) and of words+not queries."""
    rng = random.Random(f"recommend:{seed}")  # apart from make_queries' generator: its modes stay as they are
    test_ids = sorted((i for i in set(test_ids) if i in items), key=lambda i: (len(i), i))
    liked, words = liked_queries(items, test_ids, rng), words_not_queries(items, test_ids)
    if max_per_mode is not None:
        groups = {q["qid"] for q in liked if q["mode"] == "liked"}
        kept = set(rng.sample(sorted(groups), min(max_per_mode, len(groups))))
        liked = [q for q in liked if q.get("base", q["qid"]) in kept]
        words = rng.sample(words, min(max_per_mode, len(words)))
    return liked + words


def make_queries(items: dict[str, dict], test_ids: list[str], seed: int = 0,
                 max_per_mode: int | None = None) -> list[dict]:
    """All three kinds (four for a catalog with product groups); with max_per_mode, a seeded sample of each."""
    rng = random.Random(seed)
    test_ids = sorted((i for i in set(test_ids) if i in items), key=lambda i: (len(i), i))
    if items and all("group" in item for item in items.values()):
        kinds = [text_queries(items, test_ids), image_queries(items, test_ids),
                 product_colour_queries(items, test_ids, rng), description_queries(items, test_ids)]
    else:
        kinds = [text_queries(items, test_ids), image_queries(items, test_ids),
                 image_text_queries(items, test_ids, rng)]
    if max_per_mode is not None:
        kinds = [rng.sample(k, min(max_per_mode, len(k))) for k in kinds]
    return [q for kind in kinds for q in kind]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.make_queries", description=__doc__.splitlines()[0])
    p.add_argument("--catalog", type=catalog_ref, required=True, help="catalog root or CSV file")
    p.add_argument("--catalog-format", default="auto", choices=CATALOG_FORMATS)
    p.add_argument("--split-file", type=Path, help="JSON with the model's held-out test_ids (default: a split by "
                                                   "a hash of each item's product group)")
    p.add_argument("--held-out-fraction", type=float, default=splits.HELD_OUT_FRACTION,
                   help="without --split-file, the share of product groups held out (a small catalog needs many "
                        "queries more than it needs training items)")
    p.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-per-mode", type=int, help="a seeded sample of at most N queries per mode")
    p.add_argument("--recommend", action="store_true", help="write the recommendation modes (liked, more-like-this, "
                                                            "liked+disliked, words+not) instead")
    return p.parse_args(argv)


@cli.entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    items = load_items(args.catalog, args.catalog_format)
    test_ids = (splits.read_split(args.split_file) if args.split_file
                else held_out_by_group(items, args.held_out_fraction))
    make = recommend_queries if args.recommend else make_queries
    queries = make(items, test_ids, args.seed, args.max_per_mode)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(q) + "\n" for q in queries))
    counts = {m: sum(q["mode"] == m for q in queries) for m in dict.fromkeys(q["mode"] for q in queries)}
    print(f"wrote {len(queries)} queries to {args.out}: " + ", ".join(f"{m} {n}" for m, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
