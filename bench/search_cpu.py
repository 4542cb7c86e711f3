"""Where the CPU of one search goes: its stages in process (the text tower, the cache, the store, the explanation),
the HTTP app in process (FastAPI, parsing, JSON), and, with --serve, each process's CPU per request under load
through Ray Serve (the replica, HAProxy, Ray's own, the client).

python -m bench.search_cpu                 (the settings' store and collection, as `make serve` uses)
python -m bench.search_cpu --serve         (adds the per-process split at 16 clients: needs Ray, ~1 minute)
One torch thread throughout, as the service's encoder; mean ms per search, so the stages add up.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

from bench.common import WORDS
from bench.query_load import unique_words
from jobs import cli
from schemas.jobs import StoreConfig
from schemas.settings import get_settings


def per_call_ms(fn, calls: int) -> float:
    """Mean wall ms of `fn(i)` over `calls` calls, after three warm-up calls."""
    for i in range(3):
        fn(i)
    started = time.perf_counter()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - started) / calls * 1000


def tower(encoder, calls: int) -> dict[str, float]:
    """The text tower over the whole context (open_clip's encode_text) and over the words' tokens only (what the
    encoder runs), for one phrase and for a batch of eight; and the tokenizer alone."""
    import torch

    from retrieval.model import encode_trimmed

    one, eight = encoder.tokenizer([WORDS[0]]), encoder.tokenizer(WORDS)
    with torch.inference_mode():
        timed = {"tokenize 1 phrase": per_call_ms(lambda i: encoder.tokenizer([WORDS[i % 8]]), calls),
                 "tower, whole context, 1 phrase": per_call_ms(lambda i: encoder.model.encode_text(one), calls),
                 "tower, words only, 1 phrase": per_call_ms(lambda i: encode_trimmed(encoder.model, one), calls),
                 "tower, whole context, 8 phrases": per_call_ms(lambda i: encoder.model.encode_text(eight), calls),
                 "tower, words only, 8 phrases": per_call_ms(lambda i: encode_trimmed(encoder.model, eight), calls)}
        if encoder.text_graph is not None:
            timed["tower as a graph, 8 phrases"] = per_call_ms(lambda i: encoder.text_graph(eight), calls)
            for name, run in (("eager", lambda: encode_trimmed(encoder.model, eight)),
                              ("as a graph", lambda: encoder.text_graph(eight))):
                label = f"tower {name}, 8 phrases, on a thread beside a busy one"
                timed[label] = beside_busy_thread(run, max(3, calls // 10))
    return timed


def beside_busy_thread(run, calls: int) -> float:
    """Mean wall ms of `run()` on a worker thread while this thread runs Python without pause, as the service's
    event loop does under load: an eager tower waits for the GIL after each op, a graph holds it once."""
    import threading

    import torch

    done, times = threading.Event(), []

    def work():
        with torch.inference_mode():
            run()
            for _ in range(calls):
                started = time.perf_counter()
                run()
                times.append(time.perf_counter() - started)
        done.set()

    threading.Thread(target=work, daemon=True).start()
    while not done.is_set():
        pass
    return sum(times) / len(times) * 1000


def stages(service, calls: int) -> dict[str, dict[str, float]]:
    """Mean stage times of text searches: every phrase new (a cache miss), then one phrase again (a hit)."""
    from retrieval.search import SearchParams

    fresh, out = unique_words(calls + 3, seed=7), {}
    for label, phrase in (("new words", lambda i: fresh[i]), ("cached words", lambda i: WORDS[i % 8])):
        sums: dict[str, float] = {}
        for i in range(calls + 3):
            timings = service.search(text=phrase(i), params=SearchParams(k=10)).timings_ms
            for name, ms in timings.items():
                sums[name] = sums.get(name, 0.0) + (ms if i >= 3 else 0.0)
        out[label] = {name: total / calls for name, total in sums.items()}
    return out


def http_app(calls: int) -> dict[str, float]:
    """The HTTP app in process (httpx's ASGI transport, no sockets, no Ray), cached words: wall and CPU ms per
    request, and the search's own total, so the difference is FastAPI, parsing, the response and the client."""
    import httpx

    from serve.api import SearchAPI
    from serve.app import ServeArgs
    from serve.routes import create_app

    args = ServeArgs(encoder_threads=1, query_segmenter="none", result_cache_size=0)  # each request searched
    api = SearchAPI(args.encoder_config(), args.search_api_config())

    async def run() -> dict[str, float]:
        transport = httpx.ASGITransport(app=create_app(api))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            for w in WORDS:
                await client.post("/search", json={"text": w})
            started, cpu, inner = time.perf_counter(), time.process_time(), 0.0
            for i in range(calls):
                answer = await client.post("/search", json={"text": WORDS[i % 8]})
                inner += answer.json()["timings_ms"]["total_ms"]
        return {"wall": (time.perf_counter() - started) / calls * 1000,
                "cpu": (time.process_time() - cpu) / calls * 1000, "search total": inner / calls}

    try:
        return asyncio.run(run())
    finally:
        api.searcher.store.close()


def process_split(url: str, seconds: float, clients: int, kind: str) -> tuple[dict, list[tuple[float, str]]]:
    """Through Ray Serve on loopback: each process's CPU ms per request during one load (psutil), busiest first."""
    import psutil

    from bench.query_load import zipf_words
    from bench.serving import load, words_bodies

    words = unique_words(int(400 * seconds), seed=8) if kind == "unique" else zipf_words(int(400 * seconds), seed=3)
    asyncio.run(load(url, words_bodies(WORDS), clients, 3, 10**6))  # warm-up (other words)
    procs = list(psutil.process_iter(["name", "cmdline"]))
    before = {p.pid: cpu_s(p) for p in procs}
    result = asyncio.run(load(url, words_bodies(words), clients, seconds, len(words)))
    split = [((cpu_s(p) - before[p.pid]) / result["requests"] * 1000, label(p)) for p in procs]
    return result, sorted((s for s in split if s[0] >= 0.05), reverse=True)


def cpu_s(process) -> float:
    try:
        times = process.cpu_times()
        return times.user + times.system
    except Exception:  # noqa: BLE001 - a process gone meanwhile counts nothing
        return 0.0


def label(process) -> str:
    return " ".join(process.info["cmdline"] or [process.info["name"] or "?"])[:70]


def report(towers: dict, timed: dict, app: dict) -> None:
    print("\n| text tower (1 torch thread) | ms |\n|---|---:|")
    for name, ms in towers.items():
        print(f"| {name} | {ms:.3f} |")
    print("\n| text search, mean ms | " + " | ".join(timed["new words"]) + " |")
    print("|---|" + "---:|" * len(timed["new words"]))
    for label_, ms in timed.items():
        print(f"| {label_} | " + " | ".join(f"{v:.2f}" for v in ms.values()) + " |")
    print(f"\nHTTP app in process, cached words: {app['wall']:.2f} ms wall, {app['cpu']:.2f} ms CPU per request "
          f"(client included); the search itself {app['search total']:.2f} ms: the app adds "
          f"{app['wall'] - app['search total']:.2f} ms")


@cli.entry
def main(argv: list[str] | None = None) -> None:
    import os

    import torch

    parser = argparse.ArgumentParser(prog="python -m bench.search_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--serve", action="store_true", help="also the per-process split through Ray Serve")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args(argv)
    from serve.runtime import use_fast_path

    use_fast_path()  # before anything imports ray.serve: Serve reads these at import
    logging.getLogger("httpx").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    print(f"load average before: {os.getloadavg()}")
    from retrieval.service import SearchService

    s = get_settings()
    with SearchService.open(s.model, StoreConfig.from_settings(), s.collection, device="cpu",
                            precision=s.precision) as service:
        towers, timed = tower(service.encoder, args.calls), stages(service, args.calls)
    report(towers, timed, http_app(args.calls))
    if args.serve:
        import ray

        from bench.serving import start_app

        ray.init(ignore_reinit_error=True, log_to_driver=False)
        url = start_app(8012, {})
        for kind in ("zipf", "unique"):
            result, split = process_split(url, args.seconds, args.clients, kind)
            print(f"\nThrough Serve, {kind} words, {args.clients} clients: {result['rps']:.1f} req/s, p50 "
                  f"{result['p50']:.1f} ms, {result['errors']} errors; CPU ms per request by process:")
            for ms, name in split[:10]:
                print(f"  {ms:6.2f}  {name}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    raise SystemExit(main())
