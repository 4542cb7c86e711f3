"""What a catalog's own payload offers for filtering: its categorical fields and their most common values.

A field is categorical when its values are words that repeat: a string (or a list of strings) with at most
MAX_VALUES distinct values, each used by two items on average, and short (at most MAX_VALUE_WORDS words on
average: a name, not a sentence). Titles, captions and ids are unique, and descriptions long (a product's
description repeats on each of its colours), and so left out; gender, type, colour, brand or department are kept,
whatever the catalog calls them.

The statistics are a FieldStats: counted over items one at a time (`add`) or per block of a streamed catalog and
merged in catalog order (`merge`), so that ties between values keep their first-seen order and a streamed catalog
gets exactly the fields and values its in-memory reading would. A field past MAX_VALUES distinct values stops being
counted (it is an identifier), unless it was asked for by name: the driver never holds a catalog's ids.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from retrieval import lexical
from retrieval.catalogs.base import CatalogError
from schemas.catalog import CatalogItem

MAX_VALUES = 10_000  # beyond this a field is an identifier, not a facet (and a keyword index gets costly)
MAX_VALUE_WORDS = 8  # longer values on average are free text (a description), not a facet
SHOWN_VALUES = 200  # values recorded per field for the page's choices and `jobs.inspect`


@dataclass
class FieldStats:
    """A catalog's (or a block's) item count, document tokens, and per string field the items holding it and the item
    count of each value (None: past MAX_VALUES, no longer counted); fields and values in first-seen order."""

    keep: tuple[str, ...] = ()  # fields counted in full whatever their number of values (--filter-fields)
    items: int = 0
    tokens: int = 0
    present: Counter = field(default_factory=Counter)
    counts: dict[str, Counter | None] = field(default_factory=dict)

    def add(self, metadata: dict[str, Any], text: str) -> None:
        """One item: its document's BM25 length and its string fields (each element of a list once, in order)."""
        self.items += 1
        self.tokens += lexical.document_length(text) if text else 0
        for name, value in metadata.items():
            words = value if isinstance(value, list) else [value]
            if words and all(isinstance(w, str) for w in words):
                self.present[name] += 1
                self._count(name, Counter(dict.fromkeys(words, 1)))

    def merge(self, other: FieldStats) -> FieldStats:
        """Add a later block's statistics to these (blocks merged in catalog order keep the first-seen order)."""
        self.items, self.tokens = self.items + other.items, self.tokens + other.tokens
        self.present.update(other.present)
        for name, counts in other.counts.items():
            self._count(name, counts)
        return self

    def _count(self, name: str, counts: Counter | None) -> None:
        held = self.counts.setdefault(name, Counter())
        if held is None or counts is None:
            self.counts[name] = None
            return
        held.update(counts)
        if len(held) > MAX_VALUES and name not in self.keep:
            self.counts[name] = None

    def mean_length(self) -> float:
        """The mean document length in BM25 tokens (at least 1; lexical.mean_length over the same documents)."""
        return max(1.0, self.tokens / self.items) if self.items else 1.0


def item_stats(items: Iterable[CatalogItem], keep: Sequence[str] = ()) -> FieldStats:
    """The statistics of items in memory (a small catalog, or one block of a streamed one)."""
    stats = FieldStats(keep=tuple(keep))
    for item in items:
        stats.add(item.metadata, item.text)
    return stats


def filter_fields(stats: FieldStats, asked: Sequence[str] | None = None) -> tuple[str, ...]:
    """The catalog's categorical fields in first-seen order, or the fields asked for (each must hold words)."""
    if asked is not None:
        unknown = [f for f in asked if f not in stats.present]
        if unknown:
            raise CatalogError(f"--filter-fields: no string field {', '.join(unknown)} in the catalog; "
                               f"its string fields: {', '.join(stats.present) or '(none)'}")
        return tuple(asked)
    return tuple(f for f, c in stats.counts.items() if c is not None and len(c) <= MAX_VALUES
                 and 2 * len(c) <= stats.present[f] and _mean_words(c) <= MAX_VALUE_WORDS)


def _mean_words(values: Counter) -> float:
    return sum(len(v.split()) for v in values) / max(1, len(values))


def top_values(stats: FieldStats, fields: Sequence[str]) -> dict[str, dict[str, int]]:
    """The most common values of each field with their item counts, most common first (ties: first seen first)."""
    return {f: dict((stats.counts.get(f) or Counter()).most_common(SHOWN_VALUES)) for f in fields}
