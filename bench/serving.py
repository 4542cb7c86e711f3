"""Serving benchmark: in-process search time, then HTTP latency and throughput through Ray Serve, on one index
(searches of each kind, and recommendations from three liked items and one disliked), then shopper words at
--clients: a Zipf-headed load (a fixed pool, seeded) and one in which every query is new (bench/query_load.py).

python -m bench.serving --seconds 60       (indexes the offline catalog first if the store has no collection)
Headline: serving overhead = HTTP p50 - in-process p50, per query kind, at concurrency 1. The in-process search
uses the service's torch thread count and the same query cache size, so the difference is what serving adds
(HTTP, proxy, hops, batching). "cache hit %": the encoded-query cache's hits over its lookups during that load;
"result cache hit %": the ingress's whole-response cache's (the per-kind rows and the soak send Cache-Control:
no-cache, so each of their searches runs; the shopper-words loads do not).
Loopback only; every load is bounded by time and by count.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import logging
import time

import httpx

from bench.common import PHOTOS, WARM_UP, in_process_latency, percentiles, query_kinds
from bench.query_load import distinct_share, unique_kinds, unique_words, zipf_words
from jobs import cli, indexer
from schemas.jobs import IndexConfig, StoreConfig
from schemas.settings import get_settings

def queries(kind: str) -> list[dict]:
    """JSON bodies of one kind: the shared query kinds with their photos base64-encoded."""
    return json_bodies(query_kinds()[kind])


def json_bodies(kind_queries: list[dict]) -> list[dict]:
    """SearchService.search keyword arguments as /search bodies."""
    return [{**({"text": q["text"]} if "text" in q else {}),
             **({"image_base64": base64.b64encode(q["image"]).decode()} if "image" in q else {}), "k": 10}
            for q in kind_queries]


ZIPF, UNIQUE = "text zipf", "text unique"  # shopper words: a Zipf-headed pool; every phrase new
RECOMMEND = "recommend 3+1"  # three liked catalog items and one disliked, by id (POST /recommend)


def recommend_bodies() -> list[dict]:
    """/recommend bodies cycling through real catalog items: three liked, the next one disliked."""
    n = len(PHOTOS)
    return [{"liked": [PHOTOS[(i + j) % n] for j in range(3)], "disliked": [PHOTOS[(i + 3) % n]], "k": 10}
            for i in range(n)]


def words_bodies(words: list[str]) -> list[dict]:
    return [{"text": w, "k": 10} for w in words]


def in_process(repeats: int, threads: int, cache_size: int) -> dict[str, dict]:
    """The same queries through SearchService in this process (encode + search), no HTTP: latency percentiles;
    "... unique": words and photos never searched before (each a cache miss)."""
    import torch

    from retrieval.service import SearchService

    s, default_threads = get_settings(), torch.get_num_threads()
    torch.set_num_threads(threads)
    kinds = {**query_kinds(), **unique_kinds(repeats + WARM_UP, seed=1)}
    try:
        with SearchService.open(s.model, StoreConfig.from_settings(), s.collection, device=s.device,
                                cache_size=cache_size) as service:
            timed = in_process_latency(service, kinds, repeats)
    finally:
        torch.set_num_threads(default_threads)
    return {kind: percentiles(ms["total"]) for kind, ms in timed.items()}


async def load(url: str, bodies: list[dict], concurrency: int, seconds: float, max_requests: int,
               path: str = "/search", fresh: bool = False) -> dict:
    """`concurrency` clients posting in a loop, bounded by time and by count, taking the bodies in turn (each once
    before any comes again); latencies, errors, throughput, and this client's CPU per request. aiohttp with the
    bodies serialised once: the client shares the machine, and httpx spent about 1 ms of CPU per request. `fresh`:
    Cache-Control: no-cache, so the service searches each one (its result cache would answer the repeats)."""
    import aiohttp

    latencies, errors, deadline = [], [], time.monotonic() + seconds
    payloads, turn = [json.dumps(b).encode() for b in bodies], itertools.count()
    headers = {"content-type": "application/json", **({"cache-control": "no-cache"} if fresh else {})}

    async def client_loop(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline and len(latencies) + len(errors) < max_requests:
            started = time.perf_counter()
            async with session.post(url + path, data=payloads[next(turn) % len(payloads)], headers=headers) as r:
                await r.read()
            (latencies if r.status == 200 else errors).append((time.perf_counter() - started) * 1000)

    started, cpu = time.perf_counter(), time.process_time()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(client_loop(session) for _ in range(concurrency)))
    elapsed, done = time.perf_counter() - started, max(1, len(latencies) + len(errors))
    return {**percentiles(latencies or [0.0]), "errors": len(errors), "requests": len(latencies) + len(errors),
            "rps": len(latencies) / elapsed, "client_cpu_ms": (time.process_time() - cpu) / done * 1000}


def metrics_cost_us(calls: int = 20_000) -> float:
    """What recording one search costs (its counter and five stage timings, plus one encoder batch), in
    microseconds, measured in a Ray worker as a replica records them: too small to see in the HTTP figures."""
    import ray

    @ray.remote(num_cpus=0.1)
    def measure() -> float:
        from serve.metrics import ServiceMetrics

        metrics, timings = ServiceMetrics(), {"parse_ms": 0.2, "encode_ms": 6.0, "search_ms": 2.5, "explain_ms": 2.0,
                                              "total_ms": 11.0}
        started = time.perf_counter()
        for _ in range(calls):
            metrics.searched("text", "hybrid_rescore", 200, timings)
            metrics.batched("text", 1, 0)
        return (time.perf_counter() - started) / calls * 1e6

    return ray.get(measure.remote())


def start_app(port: int, args: dict) -> str:
    from ray import serve

    from serve.app import build_app

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args), blocking=False)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the app did not become ready")


async def cache_counts(app_name: str = "default") -> dict[str, int]:
    """The ingress's cache counts (the encoded-query cache's hits and misses, the result cache's result_hits and
    result_misses), asked through a Serve handle (in this event loop: RAY_SERVE_THROUGHPUT_OPTIMIZED runs a
    handle's router in its caller's loop)."""
    from ray import serve

    return await serve.get_app_handle(app_name).query_cache.remote()


def hit_rate(before: dict, after: dict, prefix: str = "") -> float | None:
    hits, misses = (after[prefix + n] - before[prefix + n] for n in ("hits", "misses"))
    return hits / (hits + misses) if hits + misses else None


async def measured(url: str, bodies: list[dict], concurrency: int, seconds: float, max_requests: int,
                   path: str = "/search", fresh: bool = False) -> dict:
    """One load, with each cache's hit rate over its lookups during it."""
    before = await cache_counts()
    result = await load(url, bodies, concurrency, seconds, max_requests, path, fresh)
    after = await cache_counts()
    return {**result, "hit_rate": hit_rate(before, after), "result_hit_rate": hit_rate(before, after, "result_")}


async def every_load(url: str, bodies: dict[str, list[dict]], args: argparse.Namespace) -> dict:
    """Each kind at concurrency 1 and 8, the mixed soak, then the shopper-words loads: in one event loop (the
    Serve handle that reads the cache's counts lives in it)."""
    http = {}
    for kind, kind_bodies in bodies.items():
        path = "/recommend" if kind == RECOMMEND else "/search"
        await load(url, kind_bodies, 1, 5, 10, path)  # warm-up
        # fresh: each search runs (its 8 queries repeat; the result cache is for the shopper-words loads below)
        http[(kind, 1)] = await measured(url, kind_bodies, 1, 120, args.requests, path, fresh=True)
        http[(kind, 8)] = await measured(url, kind_bodies, 8, 15, 100_000, path, fresh=True)
    mixed = [b for kind, kind_bodies in bodies.items() if kind != RECOMMEND for b in kind_bodies]
    http[("mixed soak", 8)] = await measured(url, mixed, 8, args.seconds, 1_000_000, fresh=True)
    return {**http, **await words_loads(url, args.requests, args.clients, args.words_seconds)}


def report(inproc: dict, http: dict) -> None:
    print("\n| query | concurrency | p50 ms | p95 ms | p99 ms | req/s | errors | in-process p50 ms | cache hit % "
          "| result cache hit % | client CPU ms/req |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (kind, conc), r in http.items():
        base = f"{inproc[kind]['p50']:.1f}" if kind in inproc else ""
        hits, results = (f"{100 * r[n]:.0f}" if r.get(n) is not None else "" for n in ("hit_rate", "result_hit_rate"))
        print(f"| {kind} | {conc} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {r['rps']:.1f} | "
              f"{r['errors']} | {base} | {hits} | {results} | {r['client_cpu_ms']:.2f} |")
    for kind in inproc:
        overhead = http[(kind, 1)]["p50"] - inproc[kind]["p50"]
        print(f"serving overhead ({kind}): HTTP p50 {http[(kind, 1)]['p50']:.1f} ms - in-process p50 "
              f"{inproc[kind]['p50']:.1f} ms = {overhead:.1f} ms")


@cli.entry
def main(argv: list[str] | None = None) -> None:
    import ray

    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="requests per kind at concurrency 1")
    parser.add_argument("--seconds", type=float, default=60, help="the mixed soak at concurrency 8")
    parser.add_argument("--clients", type=int, default=16, help="concurrency of the shopper-words loads")
    parser.add_argument("--words-seconds", type=float, default=30, help="each shopper-words load (Zipf, unique)")
    parser.add_argument("--result-cache-size", type=int, default=get_settings().result_cache_size,
                        help="whole responses the ingress keeps (0: none, to measure what the cache gives)")
    parser.add_argument("--query-cache-size", type=int, default=get_settings().query_cache_size,
                        help="encoded queries kept by the service (and the in-process search); 0: none")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--placement", choices=["ingress", "deployment"], default="ingress",
                        help="where the encoder runs (ServeArgs.encoder_placement)")
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    from serve.runtime import use_fast_path

    serve_env = use_fast_path()  # before anything imports ray.serve: Serve reads these at import
    from serve.app import ServeArgs

    app_args = {"encoder_placement": args.placement, "query_cache_size": args.query_cache_size,
                "result_cache_size": args.result_cache_size}
    threads = ServeArgs(**app_args).encoder_config().threads
    bodies = {**{kind: queries(kind) for kind in ("text", "image", "image+text")}, RECOMMEND: recommend_bodies()}
    indexer.ensure_index(IndexConfig.from_settings())  # the settings' own store and collection, as `make serve` uses
    inproc = in_process(args.requests, threads, args.query_cache_size)
    print(f"encoder: {args.placement}, {threads} torch thread(s), query cache {args.query_cache_size}; "
          f"Ray Serve env: {serve_env}")
    ray.init(ignore_reinit_error=True, log_to_driver=False)
    url = start_app(args.port, app_args)
    report(inproc, asyncio.run(every_load(url, bodies, args)))
    print(f"metrics: {metrics_cost_us():.1f} us per search recorded (serve/metrics.py, in a Ray worker)")


async def words_loads(url: str, requests: int, clients: int, seconds: float) -> dict:
    """Every query new at concurrency 1 (words, photos, photos with words), new words at `clients`, then the
    Zipf-headed pool at `clients` (none of its phrases in the loads before, so the cache starts without them);
    bounded by time and by count."""
    most = int(400 * seconds)  # more than two cores answer in `seconds`
    zipf = zipf_words(most, seed=3)
    unique = words_bodies(unique_words(requests + most, seed=2, excluding=set(zipf)))
    print(f"{ZIPF}: {len(set(zipf))} distinct phrases in {len(zipf)} drawn ({100 * distinct_share(zipf):.0f}%)")
    http, fresh = {(UNIQUE, 1): await measured(url, unique[:requests], 1, 120, requests)}, unique_kinds(requests, 2)
    for kind in ("image unique", "image+text unique"):
        http[(kind, 1)] = await measured(url, json_bodies(fresh[kind]), 1, 120, requests)
    return {**http, (UNIQUE, clients): await measured(url, unique[requests:], clients, seconds, most),
            (ZIPF, clients): await measured(url, words_bodies(zipf), clients, seconds, most)}


if __name__ == "__main__":
    raise SystemExit(main())
