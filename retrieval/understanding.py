"""The shopper's words read against the catalog: the field values they name, synonyms, and corrected typos.

A catalog's categorical fields (type, colour, gender, ...) and their values are recorded with its collection. A
query's words are matched against those values as whole values, longest first ("light pink shirt" names colour
Light Pink and type Shirt, not Pink; "shirt" does not name T-shirt), after normalising case, hyphens ("T-shirt",
"tshirt"), plurals and stems (the BM25 stemmer), and after the catalog's synonyms ("tee => tshirt"). A word of 4+
letters that neither the catalog's values nor its documents know is corrected to the closest value word (one edit,
two for 8+ letters), as shops' search boxes do, and the correction is reported ("did you mean").

What is understood is evidence for ranking, never a filter the shopper did not ask for: retrieval/hybrid.py counts,
for each item, the spans whose value it has.
"""

from __future__ import annotations

import re
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Mapping

from retrieval.lexical import query_vector

DEFAULT_SYNONYMS = Path(__file__).with_name("synonyms.txt")  # a fashion shop's usual ones, in English
WORD = re.compile(r"[\w][\w'&.-]*", re.UNICODE)
MAX_EDITS = ((8, 2), (4, 1))  # (minimum letters, edits allowed): longer words may have more typos
MOST_EDITS = MAX_EDITS[0][1]


def normalised(word: str) -> str:
    """Lower case without hyphens, apostrophes or dots inside ("T-Shirt" -> "tshirt", "men's" -> "mens")."""
    return re.sub(r"[-'.]", "", word.lower())


def words_of(text: str) -> list[str]:
    """The text's words, normalised, in order."""
    return [w for w in (normalised(m) for m in WORD.findall(text or "")) if w]


@lru_cache(maxsize=65536)
def stem(word: str) -> int | None:
    """The BM25 tokenizer's id of the word's stem (plurals and inflections alike), None for a stopword."""
    ids = query_vector(word).indices
    return ids[0] if len(ids) == 1 else None


def key_of(words: Iterable[str]) -> tuple:
    """What a sequence of words must equal to name a value: the stem of each word, a stopword as itself (so "Off
    White" is not "White", and "this shirt" is not "Shirts")."""
    return tuple(stem(w) or w for w in words)


@dataclass(frozen=True)
class Synonyms:
    """A catalog's synonyms in the common file format: `a, b, c` (each stands for all), `a, b => c` (a and b mean
    c). Applied to word sequences, so a synonym may have several words ("t shirt, tee, tshirt")."""

    rules: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()  # (normalised words, targets as written)

    @classmethod
    def parse(cls, text: str) -> "Synonyms":
        rules = []
        for line in (text or "").splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            left, arrow, right = line.partition("=>")
            sources = [tuple(words_of(p)) for p in left.split(",") if words_of(p)]
            # targets as written (lower case): the lexical legs search them as the documents spell them
            targets = [p.strip().lower() for p in (right if arrow else left).split(",") if words_of(p)]
            rules += [(source, tuple(targets)) for source in sources]
        return cls(tuple(rules))

    def expand(self, words: list[str]) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        """The words as positions: each position's alternatives and the typed words it stands for. A rule's targets
        replace the words it matches (longest rule first); a word no rule matched is a position of its own (and
        only such a word may be a typo)."""
        out, i = [], 0
        longest = sorted(self.rules, key=lambda rule: -len(rule[0]))
        while i < len(words):
            rule = next((r for r in longest if tuple(words[i:i + len(r[0])]) == r[0]), None)
            n = 1 if rule is None else len(rule[0])
            alternatives = (words[i],) if rule is None else rule[1]
            out.append((alternatives, tuple(words[i:i + n])))
            i += n
        return out


@dataclass(frozen=True)
class Span:
    """Words of the query that name a catalog value: the words (after synonyms and corrections), every (field,
    value) they name, the words as typed, and the condition an item must meet to have what they name: `field`
    with one of `names`."""

    words: str
    values: tuple[tuple[str, str], ...]
    typed: str
    field: str
    names: tuple[str, ...]


def condition(values: tuple[tuple[str, str], ...], counts: Mapping[str, Mapping[str, int]]) -> tuple[str, tuple]:
    """The field named values are matched on, and the values there: of the fields they name, the one whose named
    values the most items have, the broadest reading of the words ("tees" names type Tees and a style Tee that
    only some tees have: type)."""
    fields: dict[str, list[str]] = {}
    for name, value in values:
        fields.setdefault(name, []).append(value)
    size = lambda name: sum(counts.get(name, {}).get(v, 0) for v in fields[name])  # noqa: E731
    name = min(fields, key=lambda f: (-size(f), f))
    return name, tuple(fields[name])


@dataclass(frozen=True)
class Understood:
    """What the query's words name in the catalog, the words to search (as typed, plus corrections and synonyms), the
    corrections made (typed word -> catalog word), and the typed words no span took (stopwords aside)."""

    spans: tuple[Span, ...] = ()
    searched: str = ""
    corrections: Mapping[str, str] = field(default_factory=dict)
    rest: tuple[str, ...] = ()
    text: str = ""  # the words as typed
    counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # the catalog's values' item counts

    def __bool__(self) -> bool:
        return bool(self.spans)

    def described(self) -> str:
        """What was understood, for people: "baseColour Red, articleType Tshirts"."""
        return ", ".join(f"{span.field} {' or '.join(span.names)}" for span in self.spans)

    def did_you_mean(self) -> str | None:
        """The words as typed with their corrections, if any were made."""
        if not self.corrections:
            return None
        return " ".join(self.corrections.get(normalised(word.strip(",.;:!?")), word) for word in self.text.split())


class Vocabulary:
    """The catalog's field values by their word keys, their item counts, and the values' words (what a typo is
    corrected to)."""

    def __init__(self, values: Mapping[str, Mapping[str, int] | Iterable[str]]):
        self.counts = {name: dict(names) if isinstance(names, Mapping) else {} for name, names in values.items()}
        self.values: dict[tuple, list[tuple[str, str]]] = {}
        self.words: dict[str, int | None] = {}
        for field_name, names in values.items():
            for name in names:
                words = words_of(str(name))
                for key in {key_of(words), key_of(["".join(words)])} - {()}:
                    self.values.setdefault(key, []).append((field_name, str(name)))
                self.words.update({w: stem(w) for w in words})
        self.longest = max((len(k) for k in self.values), default=0)
        self.stems = {s for s in self.words.values() if s is not None}
        # SymSpell's index: each word under every form it takes with up to MOST_EDITS letters deleted. Two words
        # within n edits share such a form, so a typo's candidates are a few lookups, not a scan of the vocabulary.
        self.deleted: dict[str, set[str]] = {}
        for word in self.words:
            for form in deletions(word, MOST_EDITS):
                self.deleted.setdefault(form, set()).add(word)

    def correction(self, word: str) -> str | None:
        """The value word one or two edits away (by the word's length), if exactly one is closest."""
        allowed = next((edits for letters, edits in MAX_EDITS if len(word) >= letters), 0)
        candidates = {w for form in deletions(word, allowed) for w in self.deleted.get(form, ())}
        found = sorted((d, w) for w in candidates if (d := edit_distance(word, w, allowed)) <= allowed)
        if not found or (len(found) > 1 and found[0][0] == found[1][0]):
            return None
        return found[0][1]

    def spans(self, positions: list[tuple[tuple[str, ...], tuple[str, ...]]]) -> tuple[tuple[Span, ...], list]:
        """Longest matches first, left to right, each position's alternatives tried (synonyms); and the positions
        no span took."""
        found, rest, i = [], [], 0
        while i < len(positions):
            match = self._match_at(positions, i)
            if match is None:
                rest.append(positions[i])
                i += 1
                continue
            length, words, key = match
            typed = " ".join(w for _, t in positions[i:i + length] for w in t)
            values = tuple(dict.fromkeys(self.values[key]))
            found.append(Span(" ".join(words), values, typed, *condition(values, self.counts)))
            i += length
        return tuple(found), tuple(rest)

    def _match_at(self, positions: list, i: int) -> tuple[int, list[str], tuple] | None:
        """The longest reading of the positions from i that names a value: its length, words and value key."""
        for length in range(min(self.longest, len(positions) - i), 0, -1):
            for words in _alternatives([alternatives for alternatives, _ in positions[i:i + length]]):
                key = next((k for k in (key_of(words), key_of(["".join(words)])) if k in self.values), None)
                if key is not None:
                    return length, words, key
        return None


def _alternatives(positions: list[tuple[str, ...]]) -> Iterable[list[str]]:
    """Every way to read consecutive positions (each position: its alternatives, some of several words)."""
    if not positions:
        yield []
        return
    for first in positions[0]:
        for rest in _alternatives(positions[1:]):
            yield [*words_of(first), *rest]


def _unlike_values(word: str, vocabulary: Vocabulary) -> bool:
    """A word that may be a typo of a value's word: long enough, not a stopword, not (a form of) a value's word."""
    return len(word) >= MAX_EDITS[-1][0] and stem(word) not in (None, *vocabulary.stems)


def deletions(word: str, edits: int) -> set[str]:
    """The word and every form of it with up to `edits` letters deleted."""
    forms = {word}
    for _ in range(edits):
        forms |= {form[:i] + form[i + 1:] for form in forms for i in range(len(form))}
    return forms


def edit_distance(a: str, b: str, limit: int) -> int:
    """Damerau-Levenshtein (adjacent swaps count one), or limit + 1 once it must exceed limit."""
    previous, current = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        before, previous, current = previous, current, [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if before is not None and i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], before[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
    return current[-1]


def understand(text: str | None, vocabulary: Vocabulary, synonyms: Synonyms = Synonyms(),
               known: Callable[[str], bool] = lambda word: False) -> Understood:
    """Correct, expand and match the query's words against the catalog's values. `known(word)` says whether the
    catalog's documents have a word (such a word is never corrected)."""
    positions, corrections = [], {}
    for alternatives, typed in synonyms.expand(words_of(text or "")):
        word = alternatives[0]
        fixed = vocabulary.correction(word) if alternatives == typed and _unlike_values(word, vocabulary) else None
        if fixed and not known(word):  # a word the documents have is no typo (asked last: it may cost a lookup)
            corrections[word] = fixed
            alternatives = (fixed,)
        positions.append((alternatives, typed))
    spans, rest = vocabulary.spans(positions)
    # Searched lexically: the words as typed (as the documents spell them), the corrections, and the synonyms of
    # words that name no value (those that do are the tier's evidence: their synonyms would count them again).
    added = [*corrections.values(), *(w for alternatives, typed in rest if alternatives != typed for w in alternatives)]
    typed = set(words_of(text or ""))
    searched = " ".join([text.strip(), *(w for w in dict.fromkeys(added) if w not in typed)])
    rest_words = tuple(w for _, typed in rest for w in typed if stem(w) is not None)
    return Understood(spans, searched, corrections, rest_words, text or "", vocabulary.counts)


@dataclass(frozen=True)
class CatalogWords:
    """What a query's words are read against: the collection's values and synonyms, and whether its documents
    have a word (a store lookup where the collection is at hand; never, where it is not)."""

    vocabulary: Vocabulary
    synonyms: Synonyms
    known: Callable[[str], bool] = lambda word: False

    @classmethod
    def of(cls, filter_values: Mapping[str, Mapping[str, int]], synonyms: str | None = None,
           known: Callable[[str], bool] | None = None) -> "CatalogWords":
        """A collection's words (synonyms None: the default file); the vocabulary is built once per catalog."""
        text = DEFAULT_SYNONYMS.read_text() if synonyms is None else synonyms
        vocabulary, parsed = _reader(json.dumps(filter_values, sort_keys=True), text)
        return cls(vocabulary, parsed, known or (lambda word: False))

    def understand(self, text: str | None) -> Understood:
        return understand(text, self.vocabulary, self.synonyms, self.known)


@lru_cache(maxsize=16)
def _reader(values_json: str, synonyms: str) -> tuple[Vocabulary, Synonyms]:
    return Vocabulary(json.loads(values_json)), Synonyms.parse(synonyms)
