"""The HTTP API in-process (serve/routes.py over serve/api.py's SearchAPI, no Ray): hostile and malformed input gets a
4xx that says what is wrong, never a 500; the OpenAPI document describes what the API does, checked by schemathesis
with every check against a real index."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re

import pytest
import schemathesis

from tests import schemathesis_hooks  # what a photo is, for schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import positive_data_acceptance
from starlette.testclient import TestClient

from retrieval import inspection
from retrieval.model import canonical_spec
from schemas.api import STRATEGIES
from schemas.settings import OFFLINE_CATALOG
from serve.api import SearchAPI, SearchAPIConfig
from serve.encoder import EncoderConfig
from serve.http import DRAIN_FACTOR, BodyTimeouts, Refused, parse_search
from serve.routes import create_app
from tests.conftest import SMALL_INDEX_ITEMS

MAX_UPLOAD = 2_000_000
TOO_BIG = 2**63  # one past the 64 bits the store matches (a 500 before filter integers had bounds)


@pytest.fixture(scope="module")
def handlers(small_index, model_spec):
    encoder = EncoderConfig(model=model_spec, device="cpu", precision="fp32", threads=None, segmenter="none",
                            max_pixels=80_000_000, decode_budget=48_000_000)
    api = SearchAPI(encoder, SearchAPIConfig(store=small_index.store, collection=small_index.collection,
                                             model=canonical_spec(model_spec), max_upload_bytes=MAX_UPLOAD))
    yield api
    api.searcher.store.close()


@pytest.fixture(scope="module")
def app(handlers):
    return create_app(handlers)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as test_client:
        yield test_client


@pytest.mark.parametrize("body, content_type, status, words", [
    (b'{"text": "red \xff\xfe dress"}', "application/json", 400, "UTF-8"),
    (b'{"filters": ' + b"[" * 5000 + b"]" * 5000 + b"}", "application/json", 400, "nests too deeply"),
    (b"[" * 100_000, "application/json", 400, "nests too deeply"),
    (b"{\"text\": ", "application/json", 400, "not valid JSON"),
    (b'{"text": "red", "filters": {"gender": []}}', "application/json", 422, "at least 1"),
    (b'{"text": "red", "filters": {"gender": {"deeper": "x"}}}', "application/json", 422, "filters.gender"),
    (b'{"text": "red", "filters": {"gender": ["x"]}}', "application/json", 200, ""),
    (b'{"text": "red", "k": "many"}', "application/json", 422, "k"),
    (b'{"text": "red", "k": "5"}', "application/json", 422, "k: Input should be a valid integer"),
    (b'{"text": "red", "k": 1.5}', "application/json", 422, "k: Input should be a valid integer"),
    (b'{"text": "red", "k": 5.0, "k1": 60.0}', "application/json", 200, '"id"'),  # JSON Schema: 5.0 is an integer
    (b"--x\r\nContent-Disposition: form-data; name=text\r\n\r\nred\r\n--x--", "multipart/form-data", 400, "form"),
    (b'{"text": "red", "filters": {"gender": %d}}' % TOO_BIG, "application/json", 422, "less than or equal"),
    (b'{"text": "red", "filters": {"gender": -%d}}' % (TOO_BIG + 1), "application/json", 422, "greater than"),
    (b'{"text": "red dress", "filter": {"gender": "Men"}}', "application/json", 422, "did you mean 'filters'"),
    (b'{"text": "red", "colour": "Red"}', "application/json", 422, "colour: unknown field"),
    (b'--x\r\nContent-Disposition: form-data; name="text"\r\n\r\nred \xff dress\r\n--x--\r\n',
     "multipart/form-data; boundary=x", 400, "not valid UTF-8"),
    (b"text=red%FF", "application/x-www-form-urlencoded", 400, "not valid UTF-8"),
    (b'--x\r\nContent-Disposition: form-data; name="text"\r\n\r\nred dr', "multipart/form-data; boundary=x", 400,
     "truncated"),
])
def test_malformed_bodies_get_a_clear_4xx(client, body, content_type, status, words):
    response = client.post("/search", content=body, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    assert words in response.text and "Traceback" not in response.text


def test_deeply_nested_multipart_filters_are_a_400(client):
    response = client.post("/search", data={"text": "red", "filters": "[" * 5000 + "]" * 5000})
    assert response.status_code == 400 and "nests too deeply" in response.json()["detail"]


@pytest.mark.parametrize("fields, status, words", [
    ({"text": "red", "filters": json.dumps({"gender": TOO_BIG})}, 422, "less than or equal"),
    ({"text": "red", "filter": json.dumps({"gender": "Men"})}, 422, "did you mean 'filters'"),
    ({"text": "red", "filters": ""}, 200, '"results"'),  # an empty field is a field not given
    ({"text": "red", "k": "", "strategy": "", "item_id": ""}, 200, '"results"'),
    ({"text": "red", "segment": "0"}, 422, "segment: Input should be true or false"),  # the schema's boolean
    ({"text": "red", "segment": "True"}, 400, "garment isolation"),  # read as true, which this service refuses
])
def test_form_fields_follow_the_json_rules(client, fields, status, words):
    response = client.post("/search", files={name: (None, value) for name, value in fields.items()})
    assert response.status_code == status, response.text
    assert words in response.text


def test_an_unknown_filter_field_is_refused_before_anything_is_encoded(client, handlers, monkeypatch):
    encoded = []
    original = handlers.encoder.encode
    monkeypatch.setattr(handlers.encoder, "encode", lambda *a, **k: encoded.append(a) or original(*a, **k))
    response = client.post("/search", json={"text": "red dress", "filters": {"colour": "Red"}})
    assert response.status_code == 422 and "colour" in response.json()["detail"] and encoded == []
    assert client.post("/search", json={"text": "red dress"}).status_code == 200 and len(encoded) == 1


def test_readyz_names_the_model_without_the_servers_paths(client, model_spec):
    body = client.get("/readyz")
    folder = model_spec.removeprefix("local-dir:")
    assert body.json()["model"] == "local-dir:fashion-clip-mini" and folder not in body.text


def test_inspect_shows_the_served_alias_generation_model_count_and_value_counts(client, handlers, model_spec):
    response = client.get("/inspect")
    body = response.json()
    assert (body["alias"], body["collection"], body["points"]) == ("fashion", "gen-1", SMALL_INDEX_ITEMS)
    assert body["aliases"] == {"fashion": "gen-1"}
    (generation,) = body["generations"]  # gen-1 is not named after the alias: listed because it is live
    assert generation["live"] and generation["complete"] and generation["points"] == SMALL_INDEX_ITEMS
    assert body["spec"]["model"] == generation["model"] == "local-dir:fashion-clip-mini"
    spec = handlers.searcher.store.collection_spec("gen-1")
    assert model_spec.removeprefix("local-dir:") not in response.text and spec.catalog_root not in response.text
    assert body["filter_values"] == inspection.value_counts(handlers.searcher.store, "gen-1", spec)
    assert set(body["filter_values"]) == set(spec.filter_fields) == set(body["spec"]["filter_fields"])
    assert sum(body["filter_values"]["gender"].values()) == SMALL_INDEX_ITEMS


@pytest.mark.parametrize("limit, status", [(1, 200), (100, 200), (0, 422), (101, 422), ("many", 422)])
def test_inspect_bounds_its_facet_limit(client, limit, status):
    response = client.get("/inspect", params={"facet_limit": limit})
    assert response.status_code == status, response.text
    if status == 200:
        body = response.json()
        assert body["facet_limit"] == limit and all(len(v) <= limit for v in body["filter_values"].values())


def test_inspect_item_shows_its_payload_and_vectors_and_404s_an_unknown_id(client, handlers):
    body = client.get("/inspect/items/10003").json()
    assert body == json.loads(json.dumps(inspection.point_detail(handlers.searcher.store, "gen-1", "10003")))
    assert body["payload"]["item_id"] == "10003" and set(body["vectors"]) == {"image", "text", "bm25", "terms"}
    image, bm25 = body["vectors"]["image"], body["vectors"]["bm25"]
    assert image["kind"] == "dense" and image["dim"] == handlers.searcher.current()[1].dim
    assert bm25["kind"] == "sparse" and bm25["terms"] > 3 and "dim" not in bm25  # what does not apply is left out
    missing = client.get("/inspect/items/no such/item")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no catalog item 'no such/item' in collection gen-1"


def receiving(*messages, then: str = "stall"):
    """An ASGI receive that hands over `messages` (body pieces), then ends the body, stalls or reports a
    disconnect."""
    queue = [{"type": "http.request", "body": m, "more_body": True} for m in messages]
    if then == "end":
        queue[-1]["more_body"] = False

    async def receive() -> dict:
        if queue:
            return queue.pop(0)
        if then == "disconnect":
            return {"type": "http.disconnect"}
        await asyncio.sleep(3600)

    return receive


def post(body_receive, length: int | None = 1000, headers: tuple = ()):
    """A POST /search of JSON that declares `length` bytes (None: no content-length, a chunked body)."""
    from starlette.requests import Request

    headers = [(b"content-type", b"application/json"), *headers]
    headers += [(b"content-length", str(length).encode())] if length is not None else []
    return Request({"type": "http", "method": "POST", "path": "/search", "headers": headers}, body_receive)


def counted(*pieces: bytes):
    """An ASGI receive of `pieces` then the body's end, and the list of pieces it has handed over."""
    handed, receive = [], receiving(*pieces, then="end")

    async def counting() -> dict:
        message = await receive()
        handed.append(message["body"])
        return message

    return counting, handed


PIECE = b" " * (MAX_UPLOAD // 2)


@pytest.mark.parametrize("pieces, declared, keeps_connection", [
    ([PIECE] * 3, 3 * len(PIECE), True),  # over the limit, within the drained bound: read to its end, then 413
    ([PIECE] * 3, None, True),  # the same without a content-length: read past the limit to its end
    ([PIECE] * 2 * DRAIN_FACTOR, 2 * DRAIN_FACTOR * len(PIECE), True),  # exactly at the bound: still drained
    ([PIECE] * 2 * (DRAIN_FACTOR + 2), None, False),  # past the bound: it stops reading and closes
])
def test_a_body_over_the_limit_is_drained_within_a_bound_then_refused(pieces, declared, keeps_connection):
    """Serve's HAProxy drops a `Connection: close` and may then close the client's connection silently: a body
    within DRAIN_FACTOR times the limit is read to its end first, so the client's next request on it is answered."""
    receive, handed = counted(*pieces)
    with pytest.raises(Refused) as refused:
        asyncio.run(parse_search(post(receive, declared), MAX_UPLOAD))
    assert refused.value.status_code == 413 and "2000000-byte limit" in refused.value.detail
    assert (len(handed) == len(pieces)) is keeps_connection  # drained to the end, or left unread
    assert refused.value.headers == (None if keeps_connection else {"Connection": "close"})


@pytest.mark.parametrize("declared, headers", [
    (DRAIN_FACTOR * MAX_UPLOAD + 1, ()),  # past the drained bound
    (MAX_UPLOAD + 1, ((b"expect", b"100-continue"),)),  # the client sends nothing until it is told to go on
])
def test_an_upload_past_the_bound_or_not_yet_sent_is_refused_unread(declared, headers):
    receive, handed = counted(PIECE)
    with pytest.raises(Refused) as refused:
        asyncio.run(parse_search(post(receive, declared, headers), MAX_UPLOAD))
    assert refused.value.status_code == 413 and refused.value.headers == {"Connection": "close"} and handed == []


@pytest.mark.parametrize("then, status, headers", [
    ("stall", 413, {"Connection": "close"}),  # the size is what is wrong, not the client's pace: still a 413
    ("disconnect", 499, None),  # the client is gone: its own outcome
])
def test_a_drain_that_stalls_or_loses_its_client_ends_within_the_body_limits(then, status, headers):
    timeouts = BodyTimeouts(idle_s=0.3, total_s=5)
    with pytest.raises(Refused) as refused:
        asyncio.run(parse_search(post(receiving(PIECE, PIECE, PIECE, then=then), None), MAX_UPLOAD, timeouts))
    assert (refused.value.status_code, refused.value.headers) == (status, headers)


@pytest.mark.parametrize("pieces, timeouts, took", [
    ([b'{"text"'], BodyTimeouts(idle_s=0.3, total_s=5), 0.3),  # stalls mid-body: the idle limit
    ([b'{"te', b'xt"'], BodyTimeouts(idle_s=0.3, total_s=5), 0.3),
    ([], BodyTimeouts(idle_s=5, total_s=0.4), 0.4),  # the total limit holds even when each piece is in time
])
def test_a_stalled_body_is_a_408_within_its_limit(pieces, timeouts, took):
    async def attempt():
        started = asyncio.get_running_loop().time()
        with pytest.raises(Refused) as refused:
            await parse_search(post(receiving(*pieces)), MAX_UPLOAD, timeouts)
        return refused.value, asyncio.get_running_loop().time() - started

    refusal, elapsed = asyncio.run(attempt())
    assert refusal.status_code == 408 and refusal.reason == "body_timeout" and took <= elapsed < took + 0.5
    assert refusal.headers == {"Connection": "close"}  # the body was left unread: no keep-alive after it


def test_a_client_that_hangs_up_is_a_499_logged_at_info(handlers, caplog):
    """Its own status and reason (nginx's 499), an INFO line without a traceback, not a 500."""
    with caplog.at_level("INFO"), pytest.raises(Refused) as refused:
        asyncio.run(handlers.search(post(receiving(b'{"text"', then="disconnect"))))
    assert (refused.value.status_code, refused.value.reason) == (499, "client_disconnected")
    lines = [r for r in caplog.records if r.name == "fashion.search"]
    assert [(r.levelno, json.loads(r.getMessage())["status"]) for r in lines] == [(logging.INFO, 499)]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_a_search_cancelled_with_its_client_is_a_499(handlers, caplog, monkeypatch):
    """Serve cancels the request of a client that hangs up after its body: counted as the client's, at INFO."""
    async def hang(*args, **kwargs):
        await asyncio.sleep(3600)

    async def cancelled():
        task = asyncio.create_task(handlers.search(post(receiving(b'{"text": "red"}', then="end"), 15)))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    monkeypatch.setattr(handlers.encoder, "encode", hang)
    with caplog.at_level("INFO"):
        asyncio.run(cancelled())
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "fashion.search"]
    assert [(line["status"], line["reason"]) for line in lines] == [(499, "client_disconnected")]


def test_a_lone_search_encodes_on_the_event_loop_and_searches_together_are_batched(handlers):
    """A request alone on the replica takes no thread hop; requests in flight together keep the worker thread (the
    event loop serves the others meanwhile) and share model calls; the count of requests in flight comes back to
    zero whatever their outcome."""
    texts = handlers.encoder.target.texts

    def search(words: str):
        body = json.dumps({"text": words, "k": 3}).encode()
        return handlers.search(post(receiving(body, then="end"), len(body)))

    async def together():
        return await asyncio.gather(*(search(f"{colour} corduroy jacket") for colour in ("ochre", "mint", "teal")))

    inline, calls = texts.inline_calls, sum(texts.batch_sizes.values())
    assert asyncio.run(search("ochre pleated skirt")).results
    assert (texts.inline_calls - inline, sum(texts.batch_sizes.values()) - calls) == (1, 1)
    inline, calls = texts.inline_calls, sum(texts.batch_sizes.values())
    assert all(response.results for response in asyncio.run(together()))
    assert texts.inline_calls == inline and sum(texts.batch_sizes.values()) - calls < 3
    with pytest.raises(Refused):
        asyncio.run(search(""))
    assert handlers.in_flight == 0


def test_a_non_image_is_refused_without_internals(client):
    response = client.post("/search", files={"image": ("x.jpg", b"definitely not a photo", "image/jpeg")})
    assert response.status_code == 400 and "not an image" in response.json()["detail"]
    assert "<_io" not in response.text and "0x" not in response.text


def test_unknown_item_is_404_and_a_lying_length_is_400(client):
    assert client.post("/search", json={"item_id": "no-such-item"}).status_code == 404
    assert client.get("/items/no-such-item/image").status_code == 404
    assert client.post("/search", content=b"{}", headers={"content-type": "application/json",
                                                          "content-length": "abc"}).status_code == 400


def test_request_ids_and_one_log_line_per_search(client, caplog):
    with caplog.at_level("INFO", logger="fashion.search"):
        mine = client.post("/search", json={"text": "a very long query " * 20}, headers={"X-Request-ID": "t-1"})
        odd = client.post("/search", json={}, headers={"X-Request-ID": "not a token <script>"})
    assert mine.headers["x-request-id"] == "t-1" and len(odd.headers["x-request-id"]) == 32
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "fashion.search"]
    odd_id = odd.headers["x-request-id"]
    assert [(line["request_id"], line["status"]) for line in lines] == [("t-1", 200), (odd_id, 400)]
    first = lines[0]
    assert first["mode"] == "text" and first["strategy"] and first["results"] == 10 and first["k"] == 10
    assert len(first["text"]) == 40 and "total_ms" in first["timings_ms"]
    assert lines[1]["reason"] == "empty_query"


def test_an_answer_is_accounted_for_after_its_response_is_sent(app, caplog):
    """The metrics and the log line of an answered search are off the shopper's wait: the body has gone out before
    they run (the route's background task), and they still run once."""
    body, seen_at_send = json.dumps({"text": "mint corduroy jacket", "k": 3}).encode(), []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/search", "raw_path": b"/search", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}

    def logged() -> int:
        return len([r for r in caplog.records if r.name == "fashion.search"])

    async def send(message: dict) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            seen_at_send.append((json.loads(message["body"])["results"] != [], logged()))

    with caplog.at_level("INFO", logger="fashion.search"):
        asyncio.run(app(scope, receiving(body, then="end"), send))
    assert seen_at_send == [(True, 0)] and logged() == 1


def test_openapi_documents_statuses_content_types_and_bounds(client):
    doc = client.get("/openapi.json").json()
    search = doc["paths"]["/search"]["post"]
    assert {"200", "400", "404", "408", "413", "415", "422", "503"} <= set(search["responses"])
    assert search["requestBody"]["required"] is True
    form = search["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    given = {name: field["anyOf"][0] for name, field in form.items() if "anyOf" in field}  # or empty: not given
    assert (given["k"]["minimum"], given["k"]["maximum"]) == (1, 100) and given["strategy"]["enum"] == list(STRATEGIES)
    assert all(field["anyOf"][1]["enum"] == [""] for name, field in form.items() if name in given)
    inspect = doc["paths"]["/inspect"]["get"]
    limit = next(p for p in inspect["parameters"] if p["name"] == "facet_limit")["schema"]
    assert (limit["minimum"], limit["maximum"]) == (1, 100) and "503" in inspect["responses"]
    assert inspect["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("InspectResponse")
    assert "404" in doc["paths"]["/inspect/items/{item_id}"]["get"]["responses"]
    image = doc["paths"]["/items/{item_id}/image"]["get"]["responses"]
    assert "image/*" in image["200"]["content"] and "application/json" not in image["200"]["content"]


def served_body(client, path: str = "/search", media: str = "application/json") -> dict:
    return client.get("/openapi.json").json()["paths"][path]["post"]["requestBody"]["content"][media]["schema"]


def test_the_served_document_names_the_collections_fields_and_what_each_strategy_needs(client, handlers):
    """A request the served document accepts is one this service accepts: the filter and group_by fields of the live
    collection, a photo (or an item) for image_knn, BM25 terms for bm25, no segment=true without a segmenter."""
    import jsonschema_rs

    fields = list(handlers.searcher.current()[1].filter_fields)
    valid = jsonschema_rs.validator_for(served_body(client)).is_valid
    assert valid({"text": "red", "filters": {fields[0]: "x"}}) and not valid({"text": "red", "filters": {"hue": "x"}})
    assert not valid({"text": "red", "strategy": "image_knn"}) and valid({"item_id": "1", "strategy": "image_knn"})
    assert valid({"text": "red", "strategy": "bm25"}) and not valid({"image_base64": "AAAA", "strategy": "bm25"})
    assert valid({"text": "red", "segment": False}) and not valid({"text": "red", "segment": True})
    recommend = jsonschema_rs.validator_for(served_body(client, "/recommend")).is_valid
    assert recommend({"liked": ["1"], "group_by": fields[0]}) and not recommend({"liked": ["1"], "group_by": "hue"})
    assert recommend({"liked_photos": ["eA=="], "disliked": ["1"]}) and not recommend({"disliked_photos": ["eA=="]})
    assert not recommend({"liked": [], "liked_photos": []}) and not recommend({"liked_photos": ["eA=="] * 5})
    form = served_body(client, media="multipart/form-data")["properties"]["filters"]["anyOf"][0]["pattern"]
    assert re.search(form, json.dumps({fields[0]: ["a", "b"], fields[1]: 3}))
    assert not re.search(form, '{"hue": "red"}') and not re.search(form, "[1]")


def test_bm25_over_words_without_a_term_finds_nothing_and_is_no_error(client):
    """Which words have BM25 terms is the engine tokenizer's to say, which no schema can: stopwords and punctuation
    are words that match nothing."""
    response = client.post("/search", json={"text": "the !!", "strategy": "bm25"})
    assert response.status_code == 200 and response.json()["results"] == []
    photo_only = client.post("/search", json={"image_base64": schemathesis_hooks.PHOTO_BASE64[0], "strategy": "bm25"})
    assert photo_only.status_code == 422 and "needs the query's words" in photo_only.json()["detail"]


def test_segment_true_is_refused_without_a_segmenter_even_without_a_photo(client):
    response = client.post("/search", json={"text": "red dress", "segment": True})
    assert response.status_code == 400 and "garment isolation is not enabled" in response.json()["detail"]


EXAMPLES = 60  # per operation and generation mode


def operations(app) -> list:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_the_api_honours_its_openapi_document(app, mode):
    """Every operation, schema-valid and schema-invalid examples (derandomized: the same in CI every run), every
    check schemathesis has (server errors, status codes, content types, response schemas, headers, acceptance of
    valid and rejection of invalid data)."""
    from hypothesis import assume, given

    found = operations(app)
    assert {f"{op.method.upper()} {op.path}" for op in found} >= {"POST /search", "POST /recommend", "GET /readyz",
                                                                    "GET /healthz", "GET /items/{item_id}/image",
                                                                    "GET /inspect", "GET /inspect/items/{item_id}"}
    unsatisfiable, calls = set(), []
    for operation in found:
        # Invalid multipart data often cannot be sent at all (a non-string form value is dropped on the way), and
        # what arrives is then valid; negative bodies are JSON, where every invalid value reaches the service.
        media = "application/json" if mode == "negative" and operation.body else None
        @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode), media_type=media))
        @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def check(case):
            assume(mode == "positive" or case.media_type != "multipart/form-data")
            response = case.call()
            calls.append(response.status_code)
            case.validate_response(response, excluded_checks=[positive_data_acceptance])
            if mode == "positive":
                assert_accepted(case, response)

        try:
            check()
        except Unsatisfiable:  # e.g. no invalid value exists for an unconstrained path string
            unsatisfiable.add(f"{operation.method.upper()} {operation.path}")
    assert {"POST /search", "POST /recommend"}.isdisjoint(unsatisfiable) and len(calls) >= EXAMPLES, len(calls)
    print(f"\n{mode}: {len(calls)} requests, statuses {sorted(set(calls))}")


# What only the collection can refuse in a schema-valid request: an item it does not hold. (The served document
# names the collection's filter and group_by fields, serve/openapi.py.) Any other 404 or a 422 would be the schema
# promising too much.
COLLECTION_REFUSALS = {404: ("no catalog item", "no image for catalog item")}


def assert_accepted(case, response) -> None:
    """schemathesis's acceptance check, but for what no schema can say: bytes given as a photo must be a decodable
    image (and a form's `filters` text must be JSON), and the collection's own refusals above."""
    if response.status_code in COLLECTION_REFUSALS:
        detail = response.json()["detail"]
        refused = f"schema-valid request refused: {case.body!r} -> {detail}"
        assert detail.startswith(COLLECTION_REFUSALS[response.status_code]), refused
        return
    if response.status_code != 400:
        assert response.status_code not in (415, 422) and response.status_code < 500, response.text
        return
    detail = response.json()["detail"]
    body = case.body if isinstance(case.body, dict) else {}
    assert not PHOTO_FIELDS.isdisjoint(body) and ("image" in detail) or \
        ("filters" in body and "filters" in detail), f"schema-valid request refused: {body!r} -> {detail}"


PHOTO_FIELDS = {"image", "image_base64", "liked_photos", "disliked_photos"}  # the requests' photos


# ---------------------------------------------------------------------------------------------- POST /recommend
# The small index's first items: 10000-10002 skirts, 10003 and 10005-10010 t-shirts, 10004 shorts.
LIKED, DISLIKED = ["10003", "10005", "10007"], ["10004"]


def catalog_photo(item_id: str) -> str:
    """The catalog item's own photo file, base64: what a shopper would send as a liked or disliked photo."""
    return base64.b64encode((OFFLINE_CATALOG / "images" / f"{item_id}.jpg").read_bytes()).decode("ascii")


def photo_vectors(handlers, ids) -> dict:
    from schemas.collection import IMAGE_VECTOR

    collection, _ = handlers.searcher.current()
    return {h.item_id: h.vectors[IMAGE_VECTOR] for h in handlers.searcher.store.retrieve(collection, ids)}


def test_recommend_names_the_liked_item_each_result_is_closest_to_and_the_disliked_one_it_avoided(client, handlers):
    import numpy as np

    response = client.post("/recommend", json={"liked": LIKED, "disliked": DISLIKED, "k": 8})
    assert response.status_code == 200, response.text
    body = response.json()
    results = body["results"]
    assert len(results) == 8 and body["strategy"] == "best_score" and "total_ms" in body["timings_ms"]
    # the three liked T-shirts (two women's, one men's) share their type: T-shirts first, gender left open
    assert body["shared_values"]["articleType"] == "Tshirts" and "gender" not in body["shared_values"]
    assert {r["payload"]["articleType"] for r in results} == {"Tshirts"}
    assert not {r["id"] for r in results} & {*LIKED, *DISLIKED}  # the examples themselves are left out
    examples = photo_vectors(handlers, [*LIKED, *DISLIKED, *(r["id"] for r in results)])
    for result in results:
        cosines = {i: float(examples[i] @ examples[result["id"]]) for i in LIKED}
        assert result["closest_liked"] == max(cosines, key=cosines.get)
        assert result["closest_liked_score"] == pytest.approx(cosines[result["closest_liked"]], abs=1e-4)
        assert result["avoided_disliked"] == "10004" and result["group"] is None
        assert result["image_url"] == f"/items/{result['id']}/image"
        # best_score: an item nearer a disliked photo than to every liked one comes after all the others
        assert result["closest_liked_score"] > result["avoided_disliked_score"]
    assert np.isfinite([r["score"] for r in results]).all()


def test_recommend_one_per_group_with_words_filters_and_diversity(client):
    grouped = client.post("/recommend", json={"liked": LIKED, "k": 5, "group_by": "articleType"}).json()["results"]
    assert len({r["payload"]["articleType"] for r in grouped}) == len(grouped) >= 3
    assert [r["group"] for r in grouped] == [r["payload"]["articleType"] for r in grouped]
    steered = client.post("/recommend", json={"liked": LIKED, "text": "shorts", "not_text": "white", "k": 10,
                                              "diversity": 0.5, "filters": {"gender": ["Men", "Women", "Boys"]}})
    assert steered.status_code == 200, steered.text
    results = steered.json()["results"]
    assert results and all("white" not in r["payload"]["text"].lower() for r in results)
    assert all(r["payload"]["gender"] in ("Men", "Women", "Boys") for r in results)


@pytest.mark.parametrize("body, status, words", [
    ({"liked": ["10003", "no-such-1"], "disliked": ["no-such-2"]}, 404, "'no-such-1', 'no-such-2'"),
    ({"liked": LIKED, "group_by": "brand"}, 422, "unknown group_by field 'brand'; keyword fields: gender"),
    ({"liked": LIKED, "filters": {"colour": "Red"}}, 422, "unknown filter field"),
    ({"liked": [str(10000 + i) for i in range(17)]}, 422, "liked: List should have at most 16 items"),
    ({"liked": LIKED, "disliked": [str(10020 + i) for i in range(17)]}, 422, "disliked: List should have at most 16"),
    ({"liked": []}, 422, "needs at least one liked item (liked) or liked photo (liked_photos)"),
    ({"disliked": ["10004"], "disliked_photos": [catalog_photo("10004")]}, 422, "needs at least one liked item"),
    ({"liked_photos": [catalog_photo("10003")] * 5}, 422, "liked_photos: List should have at most 4 items"),
    ({"liked": LIKED, "disliked_photos": [catalog_photo("10004")] * 5}, 422,
     "disliked_photos: List should have at most 4 items"),
    ({"liked": LIKED, "liked_photos": [""]}, 422, "liked_photos.0: String should have at least 1 character"),
    ({"liked_photos": [catalog_photo("10003"), "not base64!"]}, 400, "liked_photos[1] (liked photo 2) is not valid"),
    ({"liked": LIKED, "disliked_photos": [base64.b64encode(b"GIF89a, or not").decode()]}, 400,
     "disliked_photos[0] (disliked photo 1): the image cannot be used: not an image"),
    ({"liked": LIKED, "diversity": 1.5}, 422, "diversity"),
    ({"likes": LIKED}, 422, "did you mean 'liked'"),
    ({"liked": LIKED, "strategy": "median"}, 422, "strategy"),
])
def test_recommend_refuses_unknown_ids_and_fields_and_too_many_examples(client, body, status, words):
    response = client.post("/recommend", json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_a_liked_photo_of_an_item_recommends_it_and_what_its_stored_photo_recommends(client):
    """The photo is encoded as the index encoded the item (same model, preprocessing, letterbox): the item itself
    comes first (a photo is not a catalog id to leave out), then the item's own recommendations in their order."""
    plain = {"k": 8, "diversity": 0}
    by_item = client.post("/recommend", json={"liked": ["10000"], **plain}).json()["results"]
    response = client.post("/recommend", json={"liked_photos": [catalog_photo("10000")], **plain})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["id"] for r in results] == ["10000", *(r["id"] for r in by_item[:7])]
    assert {r["closest_liked"] for r in results} == {"liked photo 1"}
    assert results[0]["closest_liked_score"] == pytest.approx(1.0, abs=1e-3)
    assert [r["closest_liked_score"] for r in results[1:]] == pytest.approx([r["closest_liked_score"]
                                                                             for r in by_item[:7]], abs=1e-3)


def test_photos_and_items_are_examples_together_and_a_disliked_photo_is_named_as_avoided(client, handlers):
    shorts = catalog_photo("10004")
    response = client.post("/recommend", json={"liked": LIKED[:2], "liked_photos": [catalog_photo(LIKED[2])],
                                               "disliked_photos": [shorts], "k": 8, "diversity": 0})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["strategy"] == "best_score"  # a disliked photo counts as a disliked item
    results = body["results"]
    assert len(results) == 8 and not {r["id"] for r in results} & set(LIKED[:2])
    assert {r["avoided_disliked"] for r in results} == {"disliked photo 1"}
    # The liked photo of LIKED[2] stands for it: each result names the example its stored photo is nearest to.
    vectors = photo_vectors(handlers, [*LIKED, *(r["id"] for r in results)])
    labels = {LIKED[0]: LIKED[0], LIKED[1]: LIKED[1], LIKED[2]: "liked photo 1"}
    for result in results:
        cosines = {label: float(vectors[i] @ vectors[result["id"]]) for i, label in labels.items()}
        assert result["closest_liked"] == max(cosines, key=cosines.get)
        assert result["closest_liked_score"] == pytest.approx(cosines[result["closest_liked"]], abs=1e-3)


def test_a_disliked_photo_pushes_its_item_last_without_leaving_it_out(client):
    """best_score: the shorts in the disliked photo are nearer it than any liked example, so they rank last of all
    the items (a photo is not a catalog id to leave out)."""
    body = {"liked": LIKED, "disliked_photos": [catalog_photo("10004")], "k": 100, "diversity": 0}
    results = client.post("/recommend", json=body).json()["results"]
    assert len(results) == SMALL_INDEX_ITEMS - len(LIKED) and results[-1]["id"] == "10004"
    assert results[-1]["avoided_disliked"] == "disliked photo 1"
    assert results[-1]["avoided_disliked_score"] == pytest.approx(1.0, abs=1e-3)


def test_recommend_takes_json_only_and_is_logged_with_its_mode(client, caplog):
    with caplog.at_level("INFO", logger="fashion.search"):
        assert client.post("/recommend", json={"liked": LIKED, "k": 3}).status_code == 200
        assert client.post("/recommend", content=b"liked=10003",
                           headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 415
        assert client.post("/recommend", json={"liked": ["no-such"]}).status_code == 404
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "fashion.search"]
    assert [(line["mode"], line["status"]) for line in lines] == [("recommend", 200), ("recommend", 415),
                                                                   ("recommend", 404)]
    assert lines[0]["liked"] == 3 and lines[0]["results"] == 3 and lines[2]["reason"] == "unknown_item"


def test_openapi_documents_recommend(client):
    recommend = client.get("/openapi.json").json()["paths"]["/recommend"]["post"]
    assert {"200", "404", "415", "422", "503"} <= set(recommend["responses"])
    body = recommend["requestBody"]
    assert body["required"] is True and list(body["content"]) == ["application/json"]
    schema = body["content"]["application/json"]["schema"]
    fields = schema["properties"]
    assert (fields["liked"]["maxItems"], fields["disliked"]["maxItems"]) == (16, 16)
    assert (fields["liked_photos"]["maxItems"], fields["disliked_photos"]["maxItems"]) == (4, 4)
    assert fields["liked_photos"]["items"]["format"] == fields["disliked_photos"]["items"]["format"] == "base64-image"
    assert "liked photo 1" in fields["liked_photos"]["description"]
    assert [branch["required"] for branch in schema["anyOf"]] == [["liked"], ["liked_photos"]]
    assert (fields["diversity"]["minimum"], fields["diversity"]["maximum"]) == (0, 1)
