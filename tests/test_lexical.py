"""The lexical signal: token ids as fastembed's Qdrant/bm25 makes them, BM25 weights, the catalog's mean length,
and which query words a document matches."""

from __future__ import annotations

import pytest

from retrieval import lexical

# Words of shopper queries and product titles (no stopwords, nothing a tokenizer would split).
WORDS = ["red", "Shirts", "dresses", "running", "Tshirts", "jeans", "denim", "puffed", "sleeves", "Kurtas",
         "linen", "navy", "floral", "chiffon", "sneakers", "handbag"]


def test_token_ids_are_fastembeds_qdrant_bm25_ids():
    """An independent reproduction: abs(murmur3_32(Snowball-English stem of the lowercased word)), as fastembed's
    Bm25 computes its ids, so vectors made here match a collection indexed with fastembed and the other way round."""
    import mmh3
    import py_rust_stemmers

    stem = py_rust_stemmers.SnowballStemmer("english").stem_word
    for word in WORDS:
        assert lexical.query_vector(word).indices == (abs(mmh3.hash(stem(word.lower()))),), word


def test_stopwords_and_punctuation_carry_no_tokens():
    assert not lexical.query_vector("the of for in") and not lexical.query_vector("")
    assert lexical.query_vector("in red!").indices == lexical.query_vector("RED").indices


def test_document_weights_follow_bm25():
    # tf 2 in a 3-token document at the catalog's mean length 3: tf (k + 1) / (tf + k (1 - b + b len / avg)).
    vector = lexical.document_vector("red red shirt", avg_len=3.0)
    red = vector.values[vector.indices.index(lexical.query_vector("red").indices[0])]
    assert red == pytest.approx(2 * 2.2 / (2 + 1.2), rel=1e-5)
    longer = lexical.document_vector("red shirt cotton summer casual", avg_len=3.0)
    assert longer.values[0] < vector.values[1]  # the same tf weighs less in a longer document


def test_lengths_and_the_catalogs_mean():
    assert lexical.document_length("the red red shirts of the running men") == 5  # stopwords out, repeats in
    assert lexical.document_length("") == 0
    assert lexical.mean_length(["red shirt", "blue denim jeans slim"]) == 3.0
    assert lexical.mean_length([]) == 1.0


def test_matched_words_are_stemmed_and_in_query_order():
    document = "Women Apparel Dresses Red Summer Casual"
    assert lexical.matched_words("red dresses for women", document) == ["red", "dresses", "women"]
    assert lexical.matched_words("blue jeans", document) == []
    assert lexical.matched_words(None, document) == [] and lexical.matched_words("red", "") == []
    assert lexical.matched_words("'Red', casual!", document) == ["Red", "casual"]  # shown without punctuation
