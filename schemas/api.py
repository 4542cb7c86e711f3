"""HTTP API contracts: search request (JSON form) and response, with bounds the service enforces as 422s."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from retrieval import strategies
from retrieval.store.base import RECOMMEND_STRATEGIES  # Qdrant's recommend strategies, as the store contract has them

MAX_K = 100
MAX_K1 = 1000
MAX_FILTER_FIELDS = 32
MAX_FILTER_VALUES = 100  # values of one field (matched as any of them)
# A filter integer: JSON's interoperable range (RFC 7493, I-JSON: what a double holds exactly), inside the store's
# signed 64 bits. Bounds at 2**63 would let the float 9.2e18 pass a schema check and then overflow the store.
SAFE_INTEGERS = (-(2**53 - 1), 2**53 - 1)


def _whole(value: Any) -> Any:
    """JSON Schema's integer includes 1.0: a whole float is that integer (strict JSON still refuses true, "5", 1.5)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Bounds first, then the validator: so the bounds check the whole number, and the schema still shows them.
Integer = Annotated[int, Field(ge=SAFE_INTEGERS[0], le=SAFE_INTEGERS[1]), BeforeValidator(_whole)]
Results = Annotated[int, Field(ge=1, le=MAX_K), BeforeValidator(_whole)]
Candidates = Annotated[int, Field(ge=1, le=MAX_K1), BeforeValidator(_whole)]
FilterWord = Annotated[str, Field(min_length=1, max_length=200)]
FilterValue = Union[FilterWord, Annotated[list[FilterWord], Field(min_length=1, max_length=MAX_FILTER_VALUES)],
                    Integer]
STRATEGIES = strategies.names()  # retrieval/strategies.py's table, in its order


Filters = dict[str, FilterValue]
FILTERS = Field(None, max_length=MAX_FILTER_FIELDS,
                description='Payload filters on the collection\'s filter fields (GET /readyz lists them), e.g. '
                            '{"gender": "Women", "articleType": ["Dresses", "Tops"]}: each field must match, a list '
                            'matches any of its values')


# The request fields that give each signal a strategy may need (retrieval/strategies.py's `needs`): a catalog item
# stands for a photo and for words, its document's words for BM25 terms (words without a term find nothing).
SIGNAL_FIELDS = {"photo": ("image_base64", "item_id"), "words": ("text", "item_id"), "lexical": ("text", "item_id")}
IMAGE_FORMAT = "base64-image"  # a base64 photo (tests/schemathesis_hooks.py tells schema-driven tests what that is)
Base64Image = Annotated[str, Field(min_length=1, json_schema_extra={"format": IMAGE_FORMAT})]


def given(field: str, schema: dict | None = None) -> dict:
    return {"required": [field], "properties": {field: schema or {"type": "string"}}}


def strategy_needs(signal_fields: dict[str, tuple[str, ...]], field_schema=given, unset: object = None) -> list[dict]:
    """Per strategy and signal it needs: the request asks for another strategy (or none: `unset`), or a field giving
    that signal is there. (Written without if/then or not, which schema-driven generators handle worst.)"""
    return [{"anyOf": [{"properties": {"strategy": {"enum": [*(n for n in strategies.names() if n != s.name), unset]}}},
                       *(field_schema(f) for f in signal_fields[need])]}
            for s in strategies.REGISTRY.values() for need in s.needs]


# A search needs something to search by: words (not only blanks), a photo or a catalog item, and what its strategy
# reads. Written into the schema, so that clients and schema-driven tests know it; checked in code
# (retrieval.prepare.checked_query, retrieval.search's StrategyError).
NEEDS_A_QUERY = {"anyOf": [given(name) for name in ("text", "image_base64", "item_id")],
                 "allOf": strategy_needs(SIGNAL_FIELDS)}


class SearchRequest(BaseModel):
    """A JSON search: text and/or a base64 image (or a catalog item), with ranking knobs and payload filters. An
    unknown field is an error: a typo (`filter` for `filters`) must not silently search without it."""

    model_config = ConfigDict(json_schema_extra=NEEDS_A_QUERY, extra="forbid")

    text: str | None = Field(None, max_length=500, pattern=r"\S",
                             description="What the shopper typed; '-word' or 'not word' leaves out the items whose "
                                         "documents have the word (with nothing else to search by, the words are "
                                         "searched as typed)")
    item_id: str | None = Field(None, min_length=1, max_length=500,
                                description="More like this catalog item: its stored photo and document vectors "
                                            "stand for the photo and, without `text`, for the words (the item "
                                            "itself is left out)")
    image_base64: Base64Image | None = Field(None, description="A photo, base64-encoded (JPEG, PNG, WebP, ...)")
    k: Results = Field(10, description="Results to return")
    k1: Candidates | None = Field(None, description="Candidates per leg (hybrid strategies) or stage-1 depth; "
                                                   "default: the strategy's evaluated one")
    text_weight: float | None = Field(None, ge=0.0, le=1.0, description="Weight of the words against the photo "
                                      "(fusion strategies); default: the strategy's evaluated one")
    strategy: Literal[STRATEGIES] | None = Field(  # type: ignore[valid-type]
        None, description="How the signals combine; default: the one the evaluation chose for the query's mode "
                          "(docs/evaluation.md)")
    filters: Filters | None = FILTERS
    segment: bool = Field(False, description="Isolate the garment in the photo first (a street photo, not a packshot)")


class ResultItem(BaseModel):
    """One result: its rank score and what each signal of the query says of it (null where the query lacks it)."""

    id: str
    score: float = Field(description="The strategy's score (fused, rescored or a cosine): it ranks, it is not "
                                     "comparable across strategies (hybrid_rescore lists the items with all the "
                                     "words before those with some, each group by score)")
    image_score: float | None = Field(description="CLIP cosine of the query photo and the item's photo")
    text_score: float | None = Field(description="CLIP cosine of the query words and the item's photo")
    document_score: float | None = Field(description="CLIP cosine of the query words and the item's document")
    lexical_score: float | None = Field(description="BM25 of the query words in the item's document")
    matched_words: list[str] = Field(description="The query words found in the item's document (after stemming)")
    matched_values: list[str] = Field([], description="The catalog values the words named that the item has, as "
                                                      "'field: value'")
    payload: dict[str, Any]
    image_url: str


class Understood(BaseModel):
    """Words of the query that name a value of the catalog's own fields."""

    words: str = Field(description="The words as typed")
    field: str = Field(description="The catalog field they name a value of")
    values: list[str] = Field(description="The value(s) named; an item with one of them has what the words ask")


class SearchResponse(BaseModel):
    collection: str
    strategy: str = Field(description="The strategy that ranked the results")
    results: list[ResultItem]
    timings_ms: dict[str, float] = Field(description="Per stage (parse, encode, search, explain) and total_ms; an "
                                         "answer kept from an identical request has total_ms only")
    cached: bool = Field(False, description="Answered from the service's result cache (the same request on the same "
                                            "generation within its time to live); Cache-Control: no-cache searches")
    understood: list[Understood] = Field([], description="What the words were read as in the catalog (the items "
                                                         "with every named value rank first: a preference, not a "
                                                         "filter)")
    did_you_mean: str | None = Field(None, description="The words with the typos corrected, when a word was")


class ErrorResponse(BaseModel):
    detail: str


class ReadyResponse(BaseModel):
    """The service can answer: the generation behind the alias, the model, and what can be asked of it."""

    status: Literal["ready"]
    collection: str
    points: int
    model: str
    filter_fields: list[str] = Field(description="Payload fields `filters` may name")
    filter_values: dict[str, dict[str, int]] = Field(description="Each filter field's most common values, with "
                                                                  "their item counts")
    default_strategy: dict[str, str] = Field(description="The strategy used per query mode when none is asked")
    strategies: list[str]


MAX_FACET_VALUES = 100  # values per filter field an inspection may ask for


def _none(value: Any) -> bool:
    return value is None


def unless_none(description: str | None = None) -> Any:
    """A summary's field that may not apply: left out of the JSON when None, as jobs.inspect prints it."""
    return Field(None, exclude_if=_none, description=description)


class GenerationInfo(BaseModel):
    """One generation (concrete collection) of the alias; `problem` instead of the rest when it cannot be read."""

    name: str
    aliases: list[str] = Field(description="The aliases pointing at it")
    live: bool = Field(description="Whether the service's alias points at it (searches read it)")
    complete: bool | None = unless_none("False while its index run has not finished")
    model: str | None = unless_none("The model its vectors were made with (by its public name)")
    dim: int | None = unless_none()
    vectors: list[str] | None = unless_none("Its named vectors")
    letterbox: bool | None = unless_none()
    segmentation: str | None = unless_none()
    points: int | None = unless_none()
    problem: str | None = unless_none()


class InspectedSpec(BaseModel):
    """A collection's spec as the service shows it: the model by its public name, no path on the server."""

    name: str
    model: str
    dim: int
    vectors: list[str]
    distance: str
    letterbox: bool
    segmentation: str
    filter_fields: list[str]
    bm25_avg_len: float
    bm25_language: str
    complete: bool


class InspectResponse(BaseModel):
    """What the service serves from (GET /inspect): the alias, its generations, and the live one's spec, point count
    and filter value counts, read through the service's own open store."""

    alias: str = Field(description="The alias the service searches")
    collection: str = Field(description="The live generation: the collection the alias points at")
    points: int
    spec: InspectedSpec
    filter_values: dict[str, dict[str, int]] = Field(
        description="Each filter field's most common values (at most facet_limit) with their point counts, counted "
                    "by the store now")
    facet_limit: int
    aliases: dict[str, str] = Field(description="Aliases pointing at these generations: alias -> generation")
    generations: list[GenerationInfo] = Field(description="The alias's generations, oldest first")


class VectorInfo(BaseModel):
    """One named vector of a point: a dense one's dimension, norm and first values, a sparse one's term count."""

    kind: Literal["dense", "sparse"]
    dim: int | None = unless_none("Dense: its dimension")
    norm: float | None = unless_none()
    head: list[float] | None = unless_none("Dense: its first values")
    terms: int | None = unless_none("Sparse: its non-zero terms")
    max_weight: float | None = unless_none()


class ItemInspection(BaseModel):
    """One catalog item's point in the live generation (GET /inspect/items/{id}): its payload and named vectors."""

    collection: str
    item_id: str
    payload: dict[str, Any]
    vectors: dict[str, VectorInfo] = Field(description="The named vectors it holds (an item without words has no "
                                                       "text or bm25 vector)")


# ----------------------------------------------------------------------------------------------- recommendations
MAX_LIKED = 16  # examples per request: enough for a session's likes, few enough to keep a query in milliseconds
MAX_DISLIKED = 16
# The shopper's own photos, per side. Unlike an item's stored vector, each is decoded and run through the model on
# the request's path: 4 + 4 photos are half of one encoder batch (serve/encoder.py batches 16 images), so one
# request cannot crowd out the other shoppers' searches, and a few snapshots say what a shopper likes. (Measured
# in-process on CPU with fashion-clip-mini, a busy 2-core machine: 2 ms by ids alone, 16 ms with 1 photo, 52 ms with
# 4 + 4.)
MAX_LIKED_PHOTOS = 4
MAX_DISLIKED_PHOTOS = 4
ItemId = Annotated[str, Field(min_length=1, max_length=500)]


def given_some(field: str) -> dict:
    return {"required": [field], "properties": {field: {"type": "array", "minItems": 1}}}


# A recommendation needs something liked: a catalog item or a photo. Written into the schema, as NEEDS_A_QUERY is;
# checked in code (retrieval.recommend.check_request's NoLikedExample).
NEEDS_A_LIKED_EXAMPLE = {"anyOf": [given_some("liked"), given_some("liked_photos")]}


class RecommendRequest(BaseModel):
    """More like the liked items and photos, less like the disliked ones: the items' stored photo vectors and the
    photos' encoded ones are the examples. At least one item or photo must be liked. An unknown field is an error,
    as in a search."""

    model_config = ConfigDict(json_schema_extra=NEEDS_A_LIKED_EXAMPLE, extra="forbid")

    liked: list[ItemId] = Field([], max_length=MAX_LIKED, description="Catalog item ids the shopper liked (left out "
                                                                       "of the results)")
    disliked: list[ItemId] = Field([], max_length=MAX_DISLIKED, description="Catalog item ids the shopper disliked "
                                                                             "(left out of the results)")
    liked_photos: list[Base64Image] = Field(
        [], max_length=MAX_LIKED_PHOTOS, description="Photos the shopper liked, base64-encoded (as /search's "
        "image_base64, under its limits): examples like the liked items, not catalog items, so nothing is left out "
        "for them. Results name the first 'liked photo 1', the second 'liked photo 2', ...; an unusable one is a 400 "
        "naming it (liked_photos[0] is 'liked photo 1')")
    disliked_photos: list[Base64Image] = Field(
        [], max_length=MAX_DISLIKED_PHOTOS, description="Photos the shopper disliked, base64-encoded: results name "
        "them 'disliked photo 1', 'disliked photo 2', ...")
    text: str | None = Field(None, max_length=500, pattern=r"\S",
                             description="Words the results should match; '-word' or 'not word' in them is a "
                                         "negative word, as in not_text")
    not_text: str | None = Field(None, max_length=500, pattern=r"\S",
                                 description="Words the results must not have in their documents, e.g. 'floral'")
    filters: Filters | None = FILTERS
    k: Results = Field(10, description="Results to return")
    diversity: float = Field(strategies.RECOMMEND_DIVERSITY, ge=0.0, le=1.0,
                             description="0: none; up to 1: results ever less alike (maximal marginal relevance over "
                                         "deeper candidates); the default is the evaluated 'on' value")
    group_by: str | None = Field(None, min_length=1, max_length=200,
                                 description="A keyword payload field (one of /readyz's filter_fields, e.g. "
                                             "product_group): one result per value of it")
    shared_values: bool = Field(True, description="Rank first the items with every value that all the liked "
                                "catalog items share (two or more of them; e.g. two liked blue shirts: blue shirts "
                                "first), and last among the others those that differ from it as every disliked item "
                                "does; false: the examples alone rank")
    strategy: Literal[RECOMMEND_STRATEGIES] | None = Field(  # type: ignore[valid-type]
        None, description="How the examples score an item (Qdrant's recommend strategies): best_score, its "
                          "similarity to the nearest liked item unless a disliked one is nearer; sum_scores, liked "
                          "similarities minus disliked ones; average_vector, the nearest to the liked items' average "
                          "moved away from the disliked ones'. Default: average_vector with liked items only, "
                          "best_score once a disliked item or photo is given (the evaluated best of each)")


class RecommendedItem(BaseModel):
    """One recommendation, with the examples that explain it."""

    id: str
    score: float = Field(description="The ranking score (with diversity: the similarity to the examples' average, "
                                     "in the order MMR picked)")
    closest_liked: str = Field(description="The liked example whose photo this item's is most like (CLIP cosine): "
                                           "a liked item's id, or 'liked photo N' for the Nth of liked_photos")
    closest_liked_score: float
    avoided_disliked: str | None = Field(description="The disliked example whose photo this item's is most like: "
                                                     "the one it was kept apart from; a disliked item's id, or "
                                                     "'disliked photo N' for the Nth of disliked_photos (null "
                                                     "without disliked examples)")
    avoided_disliked_score: float | None
    group: str | None = Field(description="Its value of group_by (null without group_by)")
    payload: dict[str, Any]
    image_url: str


class RecommendResponse(BaseModel):
    collection: str
    strategy: str = Field(description="The recommend strategy that scored the examples")
    shared_values: dict[str, str] | None = Field(None, description="What every liked catalog item has (field -> "
                                                 "value), ranked first; null with fewer than two liked items, when "
                                                 "they share nothing telling, or when shared_values is false")
    results: list[RecommendedItem]
    timings_ms: dict[str, float]
