"""Serving benchmark: in-process search time against HTTP latency and throughput through Ray Serve, on one index
(searches of each kind, and recommendations from three liked items and one disliked), then shopper words at
--clients: a Zipf-headed load (a fixed pool, seeded) and one in which every query is new (bench/query_load.py).

python -m bench.serving --seconds 60       (indexes the offline catalog first if the store has no collection)
Headline: serving overhead = HTTP p50 - in-process p50, per query kind, at concurrency 1, with a 95% bootstrap
interval. The in-process search uses the service's torch thread count, the same query cache size and the same
queries (the new words and photos too), and takes turns with the HTTP one (on a copy of an embedded store), so
the difference is what serving adds (HTTP, proxy, hops, batching) and not how fast the machine was minutes apart.
"outside the replica's search": each request's latency less the replica's own time for its search (total_ms less
parse_ms): HTTP, the proxy and the ingress alone (with the encoder in the ingress; placed as its own deployment,
the hop to it counts as the search's); medians do not add, so it is not a share of the overhead. Besides it, the
same search runs slower in the replica, where a core idles between one client's requests (docs/performance.md).
"text kept": the text words answered from the result cache, no search: serving alone.
"cache hit %": the encoded-query cache's hits over its lookups during that load; "result cache hit %": the
ingress's whole-response cache's (the fixed kinds' rows and the soak send Cache-Control: no-cache, so each of their
searches runs; the kept row, the new queries' rows and the shopper-words loads do not).
Loopback only; every load is bounded by time and by count.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

from bench import http1
from bench.common import PHOTOS, WARM_UP, WORDS, percentiles, query_kinds, timed_search
from bench.query_load import distinct_share, unique_kinds, unique_words, zipf_words
from jobs import cli, indexer
from schemas.jobs import IndexConfig, StoreConfig
from schemas.settings import get_settings

def json_bodies(kind_queries: list[dict]) -> list[dict]:
    """SearchService.search keyword arguments as /search bodies."""
    return [{**({"text": q["text"]} if "text" in q else {}),
             **({"image_base64": base64.b64encode(q["image"]).decode()} if "image" in q else {}), "k": 10}
            for q in kind_queries]


ZIPF, UNIQUE = "text zipf", "text unique"  # shopper words: a Zipf-headed pool; every phrase new
WARM_UP_SECONDS = 2.0  # each fixed kind's queries before its rows are measured
BLOCKS = 8  # turns the in-process and the HTTP searches take at concurrency 1
RECOMMEND = "recommend 3+1"  # three liked catalog items and one disliked, by id (POST /recommend)
KEPT = "text kept"  # the text kind's words without no-cache: answers kept by the result cache


def recommend_bodies() -> list[dict]:
    """/recommend bodies cycling through real catalog items: three liked, the next one disliked."""
    n = len(PHOTOS)
    return [{"liked": [PHOTOS[(i + j) % n] for j in range(3)], "disliked": [PHOTOS[(i + 3) % n]], "k": 10}
            for i in range(n)]


def words_bodies(words: list[str]) -> list[dict]:
    return [{"text": w, "k": 10} for w in words]


@contextlib.contextmanager
def baseline_service(threads: int, cache_size: int) -> Iterator:
    """The in-process search (SearchService: encode + search, no HTTP) with the service's torch threads and query
    cache size, on a copy of an embedded store: a collection opens in one process at a time, and the service holds
    the settings' one (a server's is shared as it is). Make it before the service starts."""
    import torch

    from retrieval.service import SearchService

    s, default_threads, store = get_settings(), torch.get_num_threads(), StoreConfig.from_settings()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-serving-") as copy:
            if store.embedded:  # every generation in it (the offline catalog's store: ~100 MB)
                shutil.copytree(store.path, Path(copy) / "store", ignore=shutil.ignore_patterns("*.lock"))
                store = store.model_copy(update={"path": Path(copy) / "store"})
            with SearchService.open(s.model, store, s.collection, device=s.device, precision=s.precision,
                                    cache_size=cache_size) as service:
                yield service  # idle between its turns, it costs no CPU (0.001 s in 20 s, measured)
    finally:
        torch.set_num_threads(default_threads)


def searched_ms(service, kind_queries: list[dict]) -> list[float]:
    """Each search's ms in process, in order (SearchService.search keyword arguments)."""
    return [timed_search(service, query)[0] for query in kind_queries]


async def alternating(url: str, service, kind_queries: list[dict], n: int, path: str = "/search",
                      fresh: bool = False) -> tuple[dict, dict]:
    """`n` searches in process and the same `n` over HTTP at concurrency 1, taking turns in BLOCKS slices, so that
    both are measured in the same minutes of a machine whose speed drifts; the queries cycle through
    `kind_queries`. Percentiles of each side, HTTP's with each cache's hit rate."""
    bodies, before, ms, loads, pool = json_bodies(kind_queries), await cache_counts(), [], [], connections(url, 1)
    try:
        for block in range(BLOCKS):
            turn = [i % len(kind_queries) for i in range(block * n // BLOCKS, (block + 1) * n // BLOCKS)]
            ms += searched_ms(service, [kind_queries[i] for i in turn])
            loads.append(await load(url, [bodies[i] for i in turn], 1, 300, len(turn), path, fresh, pool, True))
    finally:
        pool[0].close()
    after = await cache_counts()
    rates = {"hit_rate": hit_rate(before, after), "result_hit_rate": hit_rate(before, after, "result_")}
    return {**percentiles(ms or [0.0]), "ms": ms}, {**joined(loads), **rates}


def joined(loads: list[dict]) -> dict:
    """Loads run one after another, as one."""
    ms, requests, seconds = [x for one in loads for x in one["ms"]], sum(one["requests"] for one in loads), \
        sum(one["seconds"] for one in loads)
    return {**percentiles(ms or [0.0]), "ms": ms, "around_ms": [x for one in loads for x in one["around_ms"]],
            "errors": sum(one["errors"] for one in loads), "requests": requests,
            "seconds": seconds, "rps": len(ms) / seconds,
            "client_cpu_ms": sum(one["client_cpu_ms"] * one["requests"] for one in loads) / max(1, requests)}


def median_gap(slower: list[float], faster: list[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A 95% bootstrap interval of median(slower) - median(faster): each side resampled with replacement."""
    rng = np.random.default_rng(seed)
    gaps = (np.median(rng.choice(slower, (rounds, len(slower))), axis=1)
            - np.median(rng.choice(faster, (rounds, len(faster))), axis=1))
    low, high = np.percentile(gaps, [2.5, 97.5])
    return float(low), float(high)


def replica_search_ms(timings: dict[str, float]) -> float:
    """The search as the replica timed it: its total less the parsing of the request (serving's part). An answer
    from the result cache has no stages: all of it is serving's."""
    return timings["total_ms"] - timings["parse_ms"] if "parse_ms" in timings else 0.0


def connections(url: str, concurrency: int) -> list[http1.Connection]:
    """One keep-alive connection per client (opened at its first request)."""
    return [http1.Connection(url) for _ in range(concurrency)]


async def load(url: str, bodies: list[dict], concurrency: int, seconds: float, max_requests: int,
               path: str = "/search", fresh: bool = False, pool: list | None = None, around: bool = False) -> dict:
    """`concurrency` clients posting in a loop, bounded by time and by count, taking the bodies in turn (each once
    before any comes again); latencies, errors (a status other than 200, a dropped connection, a request past 30 s),
    throughput, and this client's CPU per request. Each request's bytes are built once and sent on a lean client
    (bench/http1.py): the client shares the machine. `fresh`: Cache-Control: no-cache, so the service searches each
    one (its result cache would answer the repeats); `pool`: connections to reuse (open), else its own; `around`:
    each search's ms outside the replica's own account of it (around_ms), read from its body after it is timed."""
    own = pool is None
    pool = connections(url, concurrency) if own else pool
    headers = {"Cache-Control": "no-cache"} if fresh else {}
    requests = [http1.request_bytes(pool[0].netloc, path, json.dumps(b).encode(), headers) for b in bodies]
    outside: list[float] = []
    latencies, errors, deadline, turn = [], [], time.monotonic() + seconds, itertools.count()

    async def client_loop(connection: http1.Connection) -> None:
        while time.monotonic() < deadline and len(latencies) + len(errors) < max_requests:
            started = time.perf_counter()
            try:
                status, body = await connection.send(requests[next(turn) % len(requests)])
            except OSError:  # refused, closed or cut short (http1's errors), or past its timeout
                status, body = 0, b""
            (latencies if status == 200 else errors).append(ms := (time.perf_counter() - started) * 1000)
            if around and status == 200:
                outside.append(ms - replica_search_ms(json.loads(body)["timings_ms"]))

    started, cpu = time.perf_counter(), time.process_time()
    try:
        await asyncio.gather(*(client_loop(connection) for connection in pool[:concurrency]))
    finally:
        if own:
            for connection in pool:
                connection.close()
    elapsed, done = time.perf_counter() - started, max(1, len(latencies) + len(errors))
    return {**percentiles(latencies or [0.0]), "ms": latencies, "around_ms": outside, "errors": len(errors),
            "requests": len(latencies) + len(errors), "seconds": elapsed,
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
                   path: str = "/search", fresh: bool = False, around: bool = False) -> dict:
    """One load, with each cache's hit rate over its lookups during it."""
    before = await cache_counts()
    result = await load(url, bodies, concurrency, seconds, max_requests, path, fresh, around=around)
    after = await cache_counts()
    return {**result, "hit_rate": hit_rate(before, after), "result_hit_rate": hit_rate(before, after, "result_")}


async def every_load(url: str, service, unique: dict[str, list[dict]], shoppers: tuple[list[str], list[str]],
                     args: argparse.Namespace) -> tuple[dict, dict]:
    """Each kind at concurrency 1 (against the same searches in process, but recommendations) and 8, the mixed
    soak, then the shopper-words loads: in one event loop (the Serve handle that reads the cache's counts lives
    in it). The in-process and the HTTP percentiles."""
    inproc, http, fixed = {}, {}, query_kinds()
    bodies = {**{kind: json_bodies(queries) for kind, queries in fixed.items()}, RECOMMEND: recommend_bodies()}
    for kind, kind_bodies in bodies.items():
        path = "/recommend" if kind == RECOMMEND else "/search"
        # fresh: each search runs (its 8 queries repeat; the result cache is for the shopper-words loads below)
        if kind in fixed:
            await warm_up(url, service, fixed[kind], fresh=True, seconds=WARM_UP_SECONDS)
            inproc[kind], http[(kind, 1)] = await alternating(url, service, fixed[kind], args.requests, path, True)
        else:
            await load(url, kind_bodies, 1, WARM_UP_SECONDS, 100_000, path, fresh=True)
            http[(kind, 1)] = await measured(url, kind_bodies, 1, 120, args.requests, path, fresh=True)
        http[(kind, 8)] = await measured(url, kind_bodies, 8, 15, 100_000, path, fresh=True)
    # The same words answered from the result cache: no search, so all of it is serving's (its floor).
    http[(KEPT, 1)] = await measured(url, bodies["text"], 1, 120, args.requests, around=True)
    mixed = [b for kind, kind_bodies in bodies.items() if kind != RECOMMEND for b in kind_bodies]
    http[("mixed soak", 8)] = await measured(url, mixed, 8, args.seconds, 1_000_000, fresh=True)
    alone, words = await new_alone(url, service, unique, args.requests)
    return {**inproc, **alone}, {**http, **words, **await words_loads(url, shoppers, args.clients, args.words_seconds)}


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
        if not (http[(kind, 1)]["ms"] and inproc[kind]["ms"] and http[(kind, 1)]["around_ms"]):
            print(f"serving overhead ({kind}): no search answered on one side")
            continue
        overhead = http[(kind, 1)]["p50"] - inproc[kind]["p50"]
        low, high = median_gap(http[(kind, 1)]["ms"], inproc[kind]["ms"])
        around = float(np.median(http[(kind, 1)]["around_ms"]))
        print(f"serving overhead ({kind}): HTTP p50 {http[(kind, 1)]['p50']:.1f} ms - in-process p50 "
              f"{inproc[kind]['p50']:.1f} ms = {overhead:.1f} ms (95% interval {low:.1f} to {high:.1f}); "
              f"outside the replica's search: p50 {around:.1f} ms")
    kept, share = http[(KEPT, 1)], 100 * (http[(KEPT, 1)]["result_hit_rate"] or 0)
    if not kept["around_ms"]:
        return
    print(f"serving alone (the text words, {share:.0f}% answered from the result cache): p50 {kept['p50']:.1f} ms, "
          f"outside the replica's search {np.median(kept['around_ms']):.1f} ms")


@cli.entry
def main(argv: list[str] | None = None) -> None:
    import ray

    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per kind at concurrency 1")
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
    indexer.ensure_index(IndexConfig.from_settings())  # the settings' own store and collection, as `make serve` uses
    print(f"load average at the start: {os.getloadavg()[0]:.1f} (this machine's speed drifts: quote it)")
    print(f"encoder: {args.placement}, {threads} torch thread(s), query cache {args.query_cache_size}; "
          f"Ray Serve env: {serve_env}")
    shoppers = shopper_phrases(args.words_seconds)  # a bad --words-seconds fails here, not minutes in
    unique = new_queries(args.requests, shoppers)
    with baseline_service(threads, args.query_cache_size) as service:
        ray.init(ignore_reinit_error=True, log_to_driver=False)
        url = start_app(args.port, app_args)
        report(*asyncio.run(every_load(url, service, unique, shoppers, args)))
    print(f"metrics: {metrics_cost_us():.1f} us per search recorded (serve/metrics.py, in a Ray worker)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


def new_queries(requests: int, shoppers: tuple[list[str], list[str]]) -> dict[str, list[dict]]:
    """Seeded, so the in-process run and the HTTP one search the same: new words, new photos and new photos with
    the same words, WARM_UP more of each (a warm-up on both sides); no phrase of the other loads."""
    return unique_kinds(requests + WARM_UP, seed=2, excluding={*WORDS, *itertools.chain(*shoppers)})


def shopper_phrases(seconds: float) -> tuple[list[str], list[str]]:
    """The Zipf-headed words and the new words of the loads at many clients, neither warming the cache for the
    other."""
    most = int(400 * seconds)  # more than two cores answer in `seconds`
    zipf = zipf_words(most, seed=3)
    return zipf, unique_words(most, seed=4, excluding=set(zipf))


async def warm_up(url: str, service, kind_queries: list[dict], fresh: bool = False, seconds: float = 0.0) -> None:
    """Each query searched once on both sides before any is measured: in process, and over HTTP (for `seconds`
    if longer: a replica's first requests are slower)."""
    searched_ms(service, kind_queries)
    await load(url, json_bodies(kind_queries), 1, max(seconds, 60.0), 100_000 if seconds else len(kind_queries),
               fresh=fresh)


async def new_alone(url: str, service, alone: dict[str, list[dict]], n: int) -> tuple[dict, dict]:
    """Every query new at concurrency 1 (words, photos, photos with words), in process and over HTTP in turns; the
    first WARM_UP of each unmeasured on both sides."""
    inproc, http = {}, {}
    for kind, kind_queries in alone.items():
        await warm_up(url, service, kind_queries[:WARM_UP])
        inproc[kind], http[(kind, 1)] = await alternating(url, service, kind_queries[WARM_UP:], n)
    return inproc, http


async def words_loads(url: str, shoppers: tuple[list[str], list[str]], clients: int, seconds: float) -> dict:
    """New words at `clients`, then the Zipf-headed pool at `clients` (shopper_phrases); bounded by time and by
    count."""
    zipf, many = shoppers
    print(f"{ZIPF}: {len(set(zipf))} distinct phrases in {len(zipf)} drawn ({100 * distinct_share(zipf):.0f}%)")
    return {(UNIQUE, clients): await measured(url, words_bodies(many), clients, seconds, len(many)),
            (ZIPF, clients): await measured(url, words_bodies(zipf), clients, seconds, len(zipf))}


if __name__ == "__main__":
    raise SystemExit(main())
