"""Queries for load tests, seeded: shopper words from a fixed pool drawn with Zipf weights (shop traffic repeats its
head queries), and words and photos that never come twice (every query a cache miss)."""

from __future__ import annotations

import itertools
import random

from bench.common import PHOTOS
from schemas.settings import OFFLINE_CATALOG

COLOURS = ["black", "white", "blue", "red", "green", "grey", "pink", "navy blue", "brown", "yellow", "purple",
           "beige", "maroon", "orange", "olive", "silver"]
GARMENTS = ["jeans", "tshirt", "shirt", "dress", "kurta", "top", "sports shoes", "casual shoes", "handbag", "watch",
            "track pants", "shorts", "heels", "flip flops", "sandals", "backpack", "belt", "cap", "jacket", "sweater",
            "saree", "leggings", "skirt", "socks", "sunglasses", "wallet", "trousers", "briefs", "formal shoes",
            "sweatshirt"]
FOR = ["", "for men", "for women", "for boys", "for girls"]
STYLE = ["", "casual", "formal", "sports", "party", "summer", "winter", "cotton", "leather", "printed", "striped",
         "slim fit", "checked", "denim", "floral", "solid"]
ZIPF_POOL = 1000  # distinct phrases in the head-heavy load
ZIPF_EXPONENT = 1.0  # weight of the phrase of rank r: 1 / r**s (s near 1: web and shop search logs)


def phrases() -> list[str]:
    """Every phrase the generators draw from (16 x 30 x 5 x 16 = 38,400), in a fixed order."""
    return [" ".join(w for w in (style, colour, garment, who) if w)
            for colour, garment, who, style in itertools.product(COLOURS, GARMENTS, FOR, STYLE)]


def zipf_words(n: int, seed: int = 0, pool: int = ZIPF_POOL, exponent: float = ZIPF_EXPONENT) -> list[str]:
    """`n` phrases from a pool of `pool`, the phrase of rank r drawn with weight 1 / r**exponent."""
    rng = random.Random(seed)
    ranked = rng.sample(phrases(), pool)
    return rng.choices(ranked, weights=[1 / r ** exponent for r in range(1, pool + 1)], k=n)


def unique_words(n: int, seed: int = 0, excluding: set[str] = frozenset()) -> list[str]:
    """`n` distinct phrases, none of `excluding` (another load's, so that neither warms the cache for the other)."""
    every = [p for p in phrases() if p not in excluding]
    if n > len(every):
        raise ValueError(f"at most {len(every)} distinct phrases, not {n}")
    return random.Random(seed).sample(every, n)


def distinct_share(words: list[str]) -> float:
    """The share of phrases seen for the first time: the misses of an unbounded cache that starts empty."""
    return len(set(words)) / len(words) if words else 0.0


def unique_photos(n: int, seed: int = 0) -> list[bytes]:
    """`n` distinct catalog photos, none of the bench's fixed ones (bench.common.PHOTOS)."""
    folder = OFFLINE_CATALOG / "images"
    names = sorted(p.name for p in folder.glob("*.jpg") if p.stem not in PHOTOS)
    return [(folder / name).read_bytes() for name in random.Random(seed).sample(names, n)]


def unique_kinds(n: int, seed: int = 0, excluding: set[str] = frozenset()) -> dict[str, list[dict]]:
    """`n` queries of each kind that no other query of the run repeats (SearchService.search keyword arguments):
    new words; new photos; new photos with the same words (those words a hit after the first)."""
    photos = unique_photos(2 * n, seed)
    return {"text unique": [{"text": w} for w in unique_words(n, seed, excluding)],
            "image unique": [{"image": p} for p in photos[:n]],
            "image+text unique": [{"image": p, "text": "in red"} for p in photos[n:]]}
