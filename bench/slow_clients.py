"""Slow-client benchmark: stalled uploads against the service while normal clients search, on 127.0.0.1 only.

python -m bench.slow_clients                          (starts the service on a free port, indexing first if needed)
python -m bench.slow_clients --url http://127.0.0.1:8000 --metrics-url http://127.0.0.1:8080/metrics   (make serve)
First the normal clients alone (their unloaded p95), then the same clients while --stalled connections each send
their headers and 7 of the 1,000 bytes they announce, then nothing; a connection the server closes is opened again
at once, so that --stalled stay open throughout. Headline: the normal clients' errors and p95 against their
unloaded p95, and how long the server let each stalled connection stay open (ServeArgs.body_idle_timeout_s).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import math
import time
from urllib.parse import urlsplit

import httpx
import numpy as np

from bench.common import WORDS, free_port, percentiles
from bench.serving import start_app
from jobs import cli

MAX_STALLED, MAX_SECONDS = 1000, 600  # bounds: a benchmark, not a load test of someone else's server
STALL = b'{"text"'  # 7 bytes of a body that announces 1,000


async def load(url: str, bodies: list[dict], clients: int, seconds: float) -> dict:
    """`clients` searching in a loop for `seconds`: latencies of the 200s; any other status, and a request that
    fails or takes over 30 s, is an error (a stalled service must show as errors, not stop the benchmark)."""
    latencies, errors, deadline = [], [], time.monotonic() + seconds

    async def client_loop(client: httpx.AsyncClient, i: int) -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                ok = (await client.post("/search", json=bodies[i % len(bodies)])).status_code == 200
            except httpx.HTTPError:
                ok = False
            (latencies if ok else errors).append((time.perf_counter() - started) * 1000)
            i += 1

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await asyncio.gather(*(client_loop(client, c) for c in range(clients)))
    return {**(percentiles(latencies) if latencies else dict.fromkeys(("p50", "p95", "p99"), float("nan"))),
            "errors": len(errors), "requests": len(latencies) + len(errors)}


def stalled_request(host: str) -> bytes:
    return (f"POST /search HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: 1000\r\n\r\n").encode() + STALL


async def stall(host: str, port: int, until: float, held: list[tuple[float, float, str]]) -> None:
    """Open, send the start of a body, wait for the server's answer and for it to close; again until `until`. Each
    connection goes to `held` as (seconds to the answer, seconds to the close, status line); one still open at
    `until` has nan for what did not happen."""
    while time.monotonic() < until:
        reader, writer = await asyncio.open_connection(host, port)
        opened, answered, status = time.monotonic(), float("nan"), "open"
        writer.write(stalled_request(f"{host}:{port}"))
        await writer.drain()
        try:
            status = (await asyncio.wait_for(reader.readline(), timeout=max(until - opened, 0.01))).decode().strip()
            answered = time.monotonic() - opened
            await asyncio.wait_for(reader.read(), timeout=max(until - time.monotonic(), 0.01))
            held.append((answered, time.monotonic() - opened, status or "(closed)"))
        except (TimeoutError, ConnectionError):
            held.append((answered, float("nan"), status))
        finally:
            writer.close()


async def loaded(url: str, bodies: list[dict], clients: int, stalled: int, seconds: float) -> tuple[dict, list]:
    """The normal clients' figures while `stalled` connections stall, and each stalled connection's fate."""
    parts = urlsplit(url)
    held: list[tuple[float, float, str]] = []
    until = time.monotonic() + seconds
    stallers = [asyncio.create_task(stall(parts.hostname, parts.port, until, held)) for _ in range(stalled)]
    await asyncio.sleep(2)  # every stalled connection in place before the searches start
    normal = await load(url, bodies, clients, seconds - 2)
    await asyncio.gather(*stallers)
    return normal, held


def server_errors(metrics_url: str | None) -> float | None:
    """The service's 500 count (fashion_search_requests_total{status="500"}), or None without a metrics URL."""
    if not metrics_url:
        return None
    lines = httpx.get(metrics_url, timeout=10).text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith("ray_fashion_search_requests_total{") and 'status="500"' in line)


def report(base: dict, normal: dict, held: list, stalled: int, errors_500: float | None) -> None:
    answered = [a for a, _, _ in held if not math.isnan(a)]
    closed = [c for _, c, _ in held if not math.isnan(c)]
    print("\n| normal clients | requests | errors | p50 ms | p95 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|")
    for name, r in (("alone", base), (f"with {stalled} stalled", normal)):
        print(f"| {name} | {r['requests']} | {r['errors']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} |")
    print(f"p95 with stalled / alone: {normal['p95'] / base['p95']:.2f}x")
    print(f"stalled connections: {len(held)} opened, {len(answered)} answered, {len(closed)} closed by the server, "
          f"{len(held) - len(closed)} still open at the end (opened less than the timeouts before it)")
    for what, seconds in (("answered", answered), ("closed", closed)):
        if seconds:
            print(f"  {what} after: min {min(seconds):.1f} s, p50 {np.percentile(seconds, 50):.1f} s, "
                  f"max {max(seconds):.1f} s")
    print(f"  answers: {dict(collections.Counter(status for _, _, status in held))}")
    if errors_500 is not None:
        print(f"server errors (fashion_search_requests_total status 500) during the run: {errors_500:g}")


@cli.entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.slow_clients", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service on 127.0.0.1 (default: start one on a free port)")
    parser.add_argument("--metrics-url", help="its metrics endpoint, to report the 500 count over the run")
    parser.add_argument("--stalled", type=int, default=200, help=f"stalled connections held open (<= {MAX_STALLED})")
    parser.add_argument("--clients", type=int, default=4, help="normal clients searching meanwhile")
    parser.add_argument("--seconds", type=float, default=60, help=f"the loaded phase (<= {MAX_SECONDS})")
    parser.add_argument("--baseline-seconds", type=float, default=20, help="the normal clients alone, first")
    args = parser.parse_args(argv)
    if not 0 <= args.stalled <= MAX_STALLED or not 0 < args.seconds <= MAX_SECONDS:
        raise cli.UsageError(f"--stalled must be 0..{MAX_STALLED} and --seconds 1..{MAX_SECONDS}")
    if args.url and urlsplit(args.url).hostname != "127.0.0.1":
        raise cli.UsageError("--url must be on 127.0.0.1: this opens hundreds of stalled connections")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    url = args.url or start_service()
    bodies = [{"text": words, "k": 10} for words in WORDS]
    before = server_errors(args.metrics_url)
    asyncio.run(load(url, bodies, args.clients, 5))  # warm-up
    base = asyncio.run(load(url, bodies, args.clients, args.baseline_seconds))
    normal, held = asyncio.run(loaded(url, bodies, args.clients, args.stalled, args.seconds))
    if before is not None:
        time.sleep(12)  # Ray exports metrics every 10 s
    after = server_errors(args.metrics_url)
    report(base, normal, held, args.stalled, None if before is None else after - before)


def start_service() -> str:
    """The service as `make serve` runs it (fast path, the settings' store, indexed first if empty), on a free
    port of 127.0.0.1."""
    from serve.runtime import use_fast_path

    use_fast_path()  # before anything imports ray.serve
    import ray

    from jobs import indexer
    from schemas.jobs import IndexConfig

    indexer.ensure_index(IndexConfig.from_settings())
    ray.init(ignore_reinit_error=True, log_to_driver=False)
    return start_app(free_port(), {})


if __name__ == "__main__":
    raise SystemExit(main())
