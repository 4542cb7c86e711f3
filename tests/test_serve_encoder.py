"""The query encoder without Serve: continuous batching, batch results equal single results, clear rejections, and
bounded decode memory (pixel limit, pixel budget)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from serve.batching import ContinuousBatcher


def test_requests_arriving_during_a_call_form_the_next_batch():
    def slow_double(batch):
        time.sleep(0.05)
        return [2 * x for x in batch]

    batcher = ContinuousBatcher(slow_double, max_batch_size=8)

    async def scenario():
        first = asyncio.create_task(batcher(1))
        await asyncio.sleep(0.01)  # the first call is running now
        later = [asyncio.create_task(batcher(x)) for x in (2, 3, 4)]
        return await asyncio.gather(first, *later)

    assert asyncio.run(scenario()) == [2, 4, 6, 8]
    assert batcher.batch_sizes == {1: 1, 3: 1}


def test_a_failed_call_fails_its_callers_and_the_batcher_goes_on():
    def picky(batch):
        if "bad" in batch:
            raise ValueError("cannot encode")
        return [x.upper() for x in batch]

    batcher = ContinuousBatcher(picky, max_batch_size=1)

    async def scenario():
        with pytest.raises(ValueError, match="cannot encode"):
            await batcher("bad")
        return await batcher("good")

    assert asyncio.run(scenario()) == "GOOD"


def test_a_lone_call_runs_on_the_callers_thread_and_others_wait_for_the_running_batch():
    """`inline()` true and no batch running: no queue, no worker thread; a batch running in the thread (or
    `inline()` false) sends the call to the queue, to be batched; an inline call's error reaches its caller."""
    alone, threads = [True], []

    def slow_record(batch):
        threads.append(threading.get_ident())
        time.sleep(0.05)
        if "bad" in batch:
            raise ValueError("cannot encode")
        return [x.upper() for x in batch]

    batcher = ContinuousBatcher(slow_record, max_batch_size=8, inline=lambda: alone[0])

    async def scenario():
        assert await batcher("lone") == "LONE"
        with pytest.raises(ValueError, match="cannot encode"):
            await batcher("bad")
        alone[0] = False
        first = asyncio.create_task(batcher("a"))
        await asyncio.sleep(0.01)  # "a" runs in the worker thread now
        alone[0] = True
        return await asyncio.gather(first, batcher("b"), batcher("c"))

    caller = threading.get_ident()
    assert asyncio.run(scenario()) == ["A", "B", "C"]
    assert threads[:2] == [caller, caller] and caller not in threads[2:]
    assert batcher.inline_calls == 2 and batcher.batch_sizes == {1: 3, 2: 1}


@pytest.fixture(scope="module")
def core(model_spec):
    from serve.app import ServeArgs
    from serve.encoder import QueryEncoderCore

    args = ServeArgs(model=model_spec, device="cpu", encoder_threads=1, query_segmenter="none")
    return QueryEncoderCore(args.encoder_config())


def test_concurrent_texts_are_batched_and_match_single_encodes(core):
    words = ["blue jeans", "red dress", "white sneakers", "black handbag", "pink top", "brown watch"]

    async def scenario():
        return await asyncio.gather(*(core.encode(None, w) for w in words))

    results = asyncio.run(scenario())
    assert all(rejected is None for _, rejected in results)
    for (query, _), word in zip(results, words):
        np.testing.assert_allclose(query.words_vector, core.encoder.encode_texts([word])[0], atol=1e-5)
    assert sum(core.texts.batch_sizes.values()) < len(words)  # fewer model calls than requests


def test_image_query_and_rejection(core, offline_catalog):
    photo = (offline_catalog / "images" / "10003.jpg").read_bytes()
    query, rejected = asyncio.run(core.encode(photo, "in red"))
    assert rejected is None and query.photo_vector.shape == query.words_vector.shape == (core.encoder.dim,)
    query, rejected = asyncio.run(core.encode(b"not an image", None))
    assert query is None and rejected[0] == "undecodable_image" and rejected[1].startswith("the image cannot be used")


def test_the_pixel_budget_bounds_decodes_in_flight():
    from serve.limits import PixelBudget

    budget, lock, active, peak = PixelBudget(100), threading.Lock(), [0], [0]

    def decode(pixels: int) -> int:
        with lock:
            active[0] += min(pixels, budget.total)  # a photo over the whole budget decodes alone
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= min(pixels, budget.total)
        return pixels

    async def scenario():
        return await asyncio.gather(*(budget.run(p, decode, p) for p in (40,) * 6 + (500, 1)))

    assert asyncio.run(scenario()) == [40] * 6 + [500, 1]
    assert peak[0] <= 100 and budget.waits > 0 and budget.free == 100


def test_a_waiter_is_woken_when_the_holder_is_done_and_a_cancelled_request_still_frees_its_pixels():
    from serve.limits import PixelBudget

    budget = PixelBudget(10)

    async def scenario():
        holder = asyncio.create_task(budget.run(10, time.sleep, 0.05))
        await asyncio.sleep(0.01)
        waiter = asyncio.create_task(budget.run(5, lambda: "decoded"))
        cancelled = asyncio.create_task(budget.run(5, time.sleep, 0.05))
        await asyncio.sleep(0.01)
        cancelled.cancel()  # hung up while waiting: it gives nothing back and holds nothing
        await holder
        return await asyncio.wait_for(waiter, 5)

    assert asyncio.run(scenario()) == "decoded" and budget.free == 10


def test_an_inline_decode_runs_on_the_callers_thread_and_gives_its_pixels_back():
    from serve.limits import PixelBudget

    budget, caller = PixelBudget(10), threading.get_ident()

    def broken() -> None:
        raise ValueError("truncated photo")

    def held(seconds: float) -> int:
        time.sleep(seconds)
        return threading.get_ident()

    async def scenario():
        ran_on = [await budget.run(4, threading.get_ident, inline=True)]
        with pytest.raises(ValueError, match="truncated"):
            await budget.run(4, broken, inline=True)
        ran_on.append(await budget.run(4, threading.get_ident))
        holder = asyncio.create_task(budget.run(8, held, 0.05))
        await asyncio.sleep(0.01)
        ran_on.append(await budget.run(4, threading.get_ident, inline=True))  # waited for its pixels: a thread
        await holder
        return ran_on

    inline, threaded, waited = asyncio.run(scenario())
    assert inline == caller and caller not in (threaded, waited) and budget.free == 10


def test_a_lone_new_photo_is_decoded_on_the_event_loop_unless_words_are_read_meanwhile(model_spec, offline_catalog,
                                                                                         monkeypatch):
    """Alone, a new photo decodes on the caller's thread (as its model call runs); with words the model must read,
    with other photos of the same request (a recommendation), or with other requests in flight, on a worker
    thread; cached words do not need the overlap."""
    from serve import encoder as encoder_module
    from serve.app import ServeArgs

    decoded_on, prepare = [], encoder_module.prepare_pixels

    def recorded(*args, **kwargs):
        decoded_on.append(threading.get_ident())
        return prepare(*args, **kwargs)

    monkeypatch.setattr(encoder_module, "prepare_pixels", recorded)
    alone = [True]
    args = ServeArgs(model=model_spec, device="cpu", encoder_threads=1, query_segmenter="none")
    core = encoder_module.QueryEncoderCore(args.encoder_config(), alone=lambda: alone[0])
    photos = [(offline_catalog / "images" / f"{i}.jpg").read_bytes() for i in range(10003, 10009)]

    async def scenario():
        await core.encode(photos[0], None)
        await core.encode(photos[1], "in olive green")  # words new to the cache
        await core.encode(photos[2], "in olive green")  # the same words, now cached
        # A recommendation: one request encoding its photos and its words at once
        await asyncio.gather(core.encode(photos[3], None), core.encode(photos[4], None), core.encode(None, "teal"))
        alone[0] = False
        await core.encode(photos[5], None)

    asyncio.run(scenario())
    caller = threading.get_ident()
    assert [thread == caller for thread in decoded_on] == [True, False, True, False, False, False]


def test_a_huge_query_photo_is_refused_from_its_header(model_spec):
    import io

    from PIL import Image

    from serve.app import ServeArgs
    from serve.encoder import QueryEncoderCore

    buffer = io.BytesIO()
    Image.new("L", (8900, 8900)).save(buffer, "PNG")  # 79 Mpx in ~80 kB
    args = ServeArgs(model=model_spec, device="cpu", query_max_pixels=16_000_000, encoder_threads=1,
                     query_segmenter="none")
    core = QueryEncoderCore(args.encoder_config())
    query, rejected = asyncio.run(core.encode(buffer.getvalue(), None))
    reason, message = rejected
    assert query is None and reason == "image_too_large" and "decompression bomb" in message and "16000000" in message
