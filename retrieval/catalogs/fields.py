"""What a catalog's own payload offers for filtering: its categorical fields and their most common values.

A field is categorical when its values are words that repeat: a string (or a list of strings) with at most
MAX_VALUES distinct values, each used by two items on average, and short (at most MAX_VALUE_WORDS words on
average: a name, not a sentence). Titles, captions and ids are unique, and descriptions long (a product's
description repeats on each of its colours), and so left out; gender, type, colour, brand or department are kept,
whatever the catalog calls them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Sequence

from retrieval.catalogs.base import CatalogError
from schemas.catalog import CatalogItem

MAX_VALUES = 10_000  # beyond this a field is an identifier, not a facet (and a keyword index gets costly)
MAX_VALUE_WORDS = 8  # longer values on average are free text (a description), not a facet
SHOWN_VALUES = 200  # values recorded per field for the page's choices and `jobs.inspect`


def value_counts(items: Iterable[CatalogItem]) -> tuple[dict[str, Counter], Counter]:
    """Per metadata field, the item count of each string value (each element of a list); and the items per field."""
    counts: dict[str, Counter] = defaultdict(Counter)
    present: Counter = Counter()
    for item in items:
        for field, value in item.metadata.items():
            words = value if isinstance(value, list) else [value]
            if words and all(isinstance(w, str) for w in words):
                present[field] += 1
                counts[field].update(set(words))
    return dict(counts), present


def filter_fields(items: Sequence[CatalogItem], asked: Sequence[str] | None = None) -> tuple[str, ...]:
    """The catalog's categorical fields in first-seen order, or the fields asked for (each must hold words)."""
    counts, present = value_counts(items)
    if asked is not None:
        unknown = [f for f in asked if f not in counts]
        if unknown:
            raise CatalogError(f"--filter-fields: no string field {', '.join(unknown)} in the catalog; "
                               f"its string fields: {', '.join(counts) or '(none)'}")
        return tuple(asked)
    return tuple(f for f, c in counts.items() if len(c) <= MAX_VALUES and 2 * len(c) <= present[f]
                 and _mean_words(c) <= MAX_VALUE_WORDS)


def _mean_words(values: Counter) -> float:
    return sum(len(v.split()) for v in values) / max(1, len(values))


def top_values(items: Sequence[CatalogItem], fields: Sequence[str]) -> dict[str, dict[str, int]]:
    """The most common values of each field with their item counts, most common first."""
    counts, _ = value_counts(items)
    return {f: dict(counts.get(f, Counter()).most_common(SHOWN_VALUES)) for f in fields}
