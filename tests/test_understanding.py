"""The shopper's words read against a catalog's values: whole values, longest first, synonyms, typos."""

from __future__ import annotations

import pytest

from retrieval.understanding import Synonyms, Vocabulary, edit_distance, understand, words_of

VALUES = {"type": {"Shirt": 40, "T-shirt": 90, "Dresses": 30, "Sports Shoes": 12, "Jeans": 20},
          "colour": {"Blue": 50, "Dark Blue": 10, "Light Pink": 5, "Off White": 7, "White": 60, "Black": 80},
          "category": {"Dress": 31, "Shoes": 40}}
FASHION = Synonyms.parse("tee, tees, t shirt, tshirt => t-shirt\nsneakers, trainers => sports shoes\n"
                         "# a comment\ngray, grey\n")


@pytest.fixture(scope="module")
def vocabulary() -> Vocabulary:
    return Vocabulary(VALUES)


def named(text: str, vocabulary: Vocabulary, **kwargs) -> list[tuple[str, tuple]]:
    return [(span.typed, span.values) for span in understand(text, vocabulary, FASHION, **kwargs).spans]


def test_a_whole_value_is_named_and_a_partial_one_is_not(vocabulary):
    assert named("light pink shirt", vocabulary) == [("light pink", (("colour", "Light Pink"),)),
                                                     ("shirt", (("type", "Shirt"),))]
    assert named("t-shirt", vocabulary) == [("tshirt", (("type", "T-shirt"),))]


def test_the_longest_value_wins(vocabulary):
    assert named("dark blue jeans", vocabulary) == [("dark blue", (("colour", "Dark Blue"),)),
                                                    ("jeans", (("type", "Jeans"),))]
    assert named("blue jeans", vocabulary)[0] == ("blue", (("colour", "Blue"),))
    # "Off" is a stopword, yet "off white" names Off White and "white" alone names White
    assert named("off white", vocabulary) == [("off white", (("colour", "Off White"),))]
    assert named("white", vocabulary) == [("white", (("colour", "White"),))]


def test_plurals_case_and_fields_that_share_a_word(vocabulary):
    assert named("DRESS", vocabulary) == [("dress", (("type", "Dresses"), ("category", "Dress")))]
    assert named("Shirts", vocabulary) == [("shirts", (("type", "Shirt"),))]


def test_stopwords_never_make_a_span_longer(vocabulary):
    spans = understand("this shirt, but blue", vocabulary, FASHION).spans
    assert [s.typed for s in spans] == ["shirt", "blue"]


def test_synonyms_one_way_and_equivalent(vocabulary):
    assert named("tee", vocabulary) == [("tee", (("type", "T-shirt"),))]
    assert named("white sneakers", vocabulary) == [("white", (("colour", "White"),)),
                                                   ("sneakers", (("type", "Sports Shoes"),))]
    # a word naming no value is searched with its synonyms; one naming a value is the tier's (searched as typed)
    understood = understand("gray tee", vocabulary, FASHION)
    assert understood.searched.split() == ["gray", "tee", "grey"]


def test_typos_are_corrected_to_catalog_words_and_reported(vocabulary):
    understood = understand("blak jeens", vocabulary, FASHION)
    assert understood.corrections == {"blak": "black", "jeens": "jeans"}
    assert [s.values for s in understood.spans] == [(("colour", "Black"),), (("type", "Jeans"),)]
    assert understood.searched == "blak jeens black jeans"
    assert understood.did_you_mean() == "black jeans" and understood.described() == "colour Black, type Jeans"


def test_short_known_or_ambiguous_words_are_not_corrected(vocabulary):
    assert understand("blu", vocabulary).corrections == {}  # 3 letters: too short to correct
    assert understand("blak", vocabulary, known=lambda word: word == "blak").corrections == {}
    assert understand("xxxxxxx", vocabulary).corrections == {}  # nothing within two edits


def test_words_no_span_took_are_the_rest(vocabulary):
    understood = understand("summer dress with pockets", vocabulary, FASHION)
    assert understood.rest == ("summer", "pockets")
    assert understand("in blue", vocabulary, FASHION).rest == ()


def test_synonym_file_format():
    rules = Synonyms.parse("a, b => c\nx, y\n\n# only a comment\n").rules
    assert (("a",), ("c",)) in rules and (("b",), ("c",)) in rules
    assert (("x",), ("x", "y")) in rules


@pytest.mark.parametrize("a, b, limit, expected", [
    ("black", "blak", 1, 1), ("jeans", "jaens", 1, 1), ("sweater", "sweaters", 2, 1), ("shirt", "short", 1, 1),
    ("sneakers", "sweaters", 1, 2), ("abc", "abc", 0, 0)])
def test_edit_distance_with_swaps_and_a_limit(a, b, limit, expected):
    assert edit_distance(a, b, limit) == expected


def test_words_are_normalised():
    assert words_of("T-Shirt, men's & Kids!") == ["tshirt", "mens", "kids"]


def test_a_catalogs_synonyms_file_is_checked_and_recorded(tmp_path):
    from jobs.indexer import synonyms_of
    from retrieval.entry import UsageError
    from retrieval.understanding import CatalogWords
    from schemas.jobs import IndexConfig

    def config(path):
        return IndexConfig.from_settings(synonyms=path)

    assert synonyms_of(IndexConfig.from_settings()) is None  # the default file applies
    (tmp_path / "shop.txt").write_text("# ours\nkurta, kurti => kurtas\n")
    text = synonyms_of(config(tmp_path / "shop.txt"))
    words = CatalogWords.of({"type": {"Kurtas": 3}}, text)
    assert [s.names for s in words.understand("blue kurti").spans] == [("Kurtas",)]
    assert CatalogWords.of({"type": {"Kurtas": 3}}).understand("kurti").spans == ()  # not in the default file
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(UsageError, match="no rule"):
        synonyms_of(config(tmp_path / "empty.txt"))
    with pytest.raises(UsageError, match="cannot read"):
        synonyms_of(config(tmp_path / "missing.txt"))
