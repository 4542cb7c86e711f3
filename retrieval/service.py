"""Search over an alias, one orchestration for every caller: the CLI and evaluation (SearchService, in this process)
and the HTTP ingress (serve/api.py, which encodes through its batching encoder between the two halves).

`Searcher.begin` resolves the alias once (the generation whose letterbox flag encodes the query is the one searched),
checks that it fits the model, fetches a catalog item's stored vectors for "more like this", reads the negative
words out of the text (retrieval/negation.py) and checks the query is not empty; `Searcher.finish` adds the words'
BM25 vector, runs the search (without the items that have a negative word) and adds the timings.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace

from retrieval import lexical, negation, recommend
from retrieval.images import ImageRejected
from retrieval.model import ClipEncoder, load_model
from retrieval.recommend import RecommendOutcome, RecommendParams
from retrieval.prepare import checked_query, encode_query, query_segmenter, with_words
from retrieval.query_cache import QueryCache
from retrieval.search import EncodedQuery, QueryError, SearchOutcome, SearchParams, search, validate_filters
from retrieval.store.base import CollectionMissing, Filter, Nearest, SparseVector, VectorStore, check_fits
from retrieval.understanding import CatalogWords
from retrieval.store.factory import open_store
from schemas.collection import BM25_VECTOR, DENSE_VECTORS, IMAGE_VECTOR, SPARSE_VECTORS, TEXT_VECTOR, CollectionSpec
from schemas.jobs import StoreConfig
from schemas.settings import get_settings

SERVE_REMEDY = ("Reindex it with this service's model (python -m jobs.index --rebuild), or serve the model it was "
                "built with.")
SEARCHED_VECTORS = (*DENSE_VECTORS, *SPARSE_VECTORS)  # every strategy's
NOT_WORDS_DEPTH = 5  # results ranked per result kept when the words have negations (the rest may have them)


class ItemNotFound(QueryError):
    """A search by a catalog item that the collection does not hold (HTTP 404)."""


@dataclass
class Pending:
    """A query between begin and finish: where it runs, what it holds (the bytes and words still to encode, a
    catalog item's stored vectors), and when it started."""

    collection: str
    spec: CollectionSpec
    image: bytes | None
    phrase: str | None  # the words as typed
    item: EncodedQuery | None = None
    exclude: tuple[str, ...] = ()
    not_text: str | None = None  # negative words typed with the words ("-floral", "not floral")
    started: float = field(default_factory=time.perf_counter)  # when the request began
    parsed: float = field(default_factory=time.perf_counter)  # when it was understood (collection, item, checks)


class Searcher:
    """Store-side half of search: follows the alias to the newest generation, so a reindex shows up without restart."""

    def __init__(self, store: VectorStore, alias: str, model_spec: str):
        self.store, self.alias, self.model_spec = store, alias, model_spec
        self._checked: dict[str, CollectionSpec] = {}
        self._words: dict[str, CatalogWords] = {}
        # Two locks: the ingress resolves the generation on its event loop (serve/api.py), which must never wait for
        # a generation's catalog words being built in a worker thread.
        self._lock, self._words_lock = threading.Lock(), threading.Lock()

    def current(self) -> tuple[str, CollectionSpec]:
        """The concrete collection behind the alias and its spec (checked against our model once per generation)."""
        name = self.store.resolve_alias(self.alias) or self.alias
        with self._lock:
            if name not in self._checked:
                self._checked[name] = self._check(name)
            return name, self._checked[name]

    def words(self, collection: str, spec: CollectionSpec) -> CatalogWords:
        """What queries' words are read against in this generation, built once per generation."""
        with self._words_lock:
            if collection not in self._words:
                self._words[collection] = catalog_words(self.store, collection, spec)
            return self._words[collection]

    def _check(self, name: str) -> CollectionSpec:
        spec = self.store.collection_spec(name)
        if spec is None:
            raise CollectionMissing(f"no collection {self.alias!r} in the store; run the index job first")
        check_fits(spec, SERVE_REMEDY, model=self.model_spec, vectors=SEARCHED_VECTORS)
        return spec

    def begin(self, image: bytes | None = None, text: str | None = None, item_id: str | None = None,
              started: float | None = None, filters: Filter | None = None) -> Pending:
        """Resolve the generation, fetch an item's vectors for "more like this", and refuse an empty query or an
        unknown filter field (before anything is encoded); `started`: when the request began (default: now)."""
        started = time.perf_counter() if started is None else started
        collection, spec = self.current()
        words, not_text = negation.split(text)
        if words is None and not image and not item_id:  # refusals alone are no query: the words as typed then
            words, not_text = text, None
        image, phrase = checked_query(image, words, item=bool(item_id))
        validate_filters(filters, spec.filter_fields)
        item = self.item_vectors(item_id, collection) if item_id else None
        return Pending(collection, spec, image, phrase, item, (item_id,) if item_id else (), not_text, started)

    def finish(self, pending: Pending, query: EncodedQuery, params: SearchParams) -> SearchOutcome:
        """Search the generation `begin` chose with what was encoded (a photo or words given with an item replace
        the item's own); timings: encode (since begin), the search's stages, total."""
        encoded = time.perf_counter()
        query = with_words(query, pending.phrase, pending.spec.bm25_language,
                           self.words(pending.collection, pending.spec))
        if pending.item is not None:
            query = merged(pending.item, query)
        if pending.exclude:
            params = params.excluding(pending.exclude)
        refused = negation.tokens(pending.not_text, pending.spec.bm25_language)
        outcome = self.search_refusing(pending, query, params, refused)
        outcome.timings_ms = {"encode_ms": (encoded - pending.parsed) * 1000, **outcome.timings_ms,
                              "total_ms": (time.perf_counter() - pending.started) * 1000}
        return outcome

    def search_refusing(self, pending: Pending, query: EncodedQuery, params: SearchParams,
                        refused: SparseVector | None) -> SearchOutcome:
        """The search without the items whose documents have a negative word: dropped after ranking from a list
        NOT_WORDS_DEPTH times deeper. Not left out in the store as a recommendation's are: a search's fusion reads
        each leg's candidates, so leaving items out moves the others (0.006 nDCG@10 lower on the Myntra dev set's
        words+not queries, docs/evaluation.md)."""
        if refused is None:
            return search(self.store, pending.collection, query, params)
        deeper = replace(params, k=min(recommend.MAX_DEPTH, params.k * NOT_WORDS_DEPTH))
        outcome = search(self.store, pending.collection, query, deeper)
        language = pending.spec.bm25_language
        kept = [r for r in outcome.results if not negation.has_any(r.payload.get("text", ""), refused, language)]
        outcome.results = kept[:params.k]
        return outcome

    def item_vectors(self, item_id: str, collection: str) -> EncodedQuery:
        """A catalog item as a query: its stored photo vector, and its document's CLIP and BM25 vectors as words
        (no photo decoded again: the vectors are the ones its index run made)."""
        hits = self.store.retrieve(collection, [item_id], with_vectors=True)
        if not hits:
            raise ItemNotFound(f"no catalog item {item_id!r} in collection {collection}")
        vectors = hits[0].vectors or {}
        words = vectors.get(BM25_VECTOR)
        return EncodedQuery(photo_vector=vectors.get(IMAGE_VECTOR), words_vector=vectors.get(TEXT_VECTOR),
                            words_bm25=words.as_query() if words else None)

    def item_image_path(self, item_id: str, collection: str, spec: CollectionSpec):
        """The item's image: a Path inside the catalog root, an object-store URI (str), or None (unknown item, or
        a path leaving the root)."""
        from retrieval.catalogs import safe_image_path

        hits = self.store.retrieve(collection, [item_id], with_vectors=False)
        return safe_image_path(spec.catalog_root, hits[0].payload.get("image")) if hits else None


def catalog_words(store: VectorStore, collection: str, spec: CollectionSpec) -> CatalogWords:
    """What queries' words are read against in this collection: its values, its synonyms, its documents' words."""
    def known(word: str) -> bool:
        words = lexical.query_vector(word, spec.bm25_language)
        return bool(words) and bool(store.query(collection, Nearest(BM25_VECTOR, words, 1), 1))

    return CatalogWords.of(spec.filter_values, spec.synonyms, known)


def merged(item: EncodedQuery, given: EncodedQuery) -> EncodedQuery:
    """An item's vectors with what the request gave on top: its own photo, or its own words (CLIP and BM25 as one)."""
    words = given.words_vector is not None or bool(given.words_bm25)
    return EncodedQuery(photo_vector=given.photo_vector if given.photo_vector is not None else item.photo_vector,
                        words_vector=given.words_vector if words else item.words_vector,
                        words_bm25=given.words_bm25 if words else item.words_bm25, phrase=given.phrase)


class SearchService:
    """Encoder plus Searcher in one process: what the query CLI and the demo use."""

    def __init__(self, encoder: ClipEncoder, searcher: Searcher, max_pixels: int = 16_000_000, segmenter=None,
                 cache: QueryCache | None = None):
        self.encoder, self.searcher, self.max_pixels, self.segmenter = encoder, searcher, max_pixels, segmenter
        self.cache = cache  # encoded queries (retrieval/query_cache.py); None: every query encoded

    @classmethod
    def open(cls, model: str, store: StoreConfig, alias: str, *, device: str = "auto", precision: str = "fp32",
             segment: str = "none", cache_size: int | None = None) -> "SearchService":
        """`segment` (e.g. u2netp) isolates the garment in query photos; plain catalog-style photos are left whole;
        `cache_size`: encoded queries kept (default: the query_cache_size setting)."""
        encoder = load_model(model, device=device, precision=precision)
        segmenter, settings = query_segmenter(segment), get_settings()
        cache = QueryCache(settings.query_cache_size if cache_size is None else cache_size)
        return cls(encoder, Searcher(open_store(store), alias, encoder.spec), settings.query_max_pixels,
                   segmenter, cache)

    def search(self, *, image: bytes | None = None, text: str | None = None, item_id: str | None = None,
               params: SearchParams = SearchParams()) -> SearchOutcome:
        pending = self.searcher.begin(image, text, item_id, filters=params.filters)
        query = encode_query(self.encoder, pending.image, pending.phrase, letterbox=pending.spec.letterbox,
                             max_pixels=self.max_pixels, segmenter=self.segmenter, cache=self.cache)
        return self.searcher.finish(pending, query, params)

    def recommend(self, params: RecommendParams) -> RecommendOutcome:
        """Items like the liked examples and unlike the disliked ones (retrieval/recommend.py): the items' vectors are
        read, the words and the shopper's photos encoded (an unusable photo is an ImageRejected naming it)."""
        pending = recommend.begin(self.searcher, params)
        words = encode_query(self.encoder, None, pending.phrase, cache=self.cache) if pending.phrase else None
        vectors = [self._photo_vector(name, data, pending.spec.letterbox) for name, data in recommend.photos_of(params)]
        return recommend.finish(self.searcher, pending, words, params, recommend.EncodedPhotos.of(params, vectors))

    def _photo_vector(self, name: str, data: bytes, letterbox: bool):
        try:
            return encode_query(self.encoder, data, letterbox=letterbox, max_pixels=self.max_pixels,
                                cache=self.cache).photo_vector
        except ImageRejected as err:
            raise ImageRejected(err.reason, f"{name}: {err}") from err

    def close(self) -> None:
        self.searcher.store.close()

    def __enter__(self) -> "SearchService":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

