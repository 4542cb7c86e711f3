"""The machine's floor under the serving overhead: the time a request spends outside a handler that only waits X ms,
served by plain uvicorn (no Ray) and by Ray Serve's fast path (HAProxy, the replica's uvicorn), at one client.

python -m bench.idle_floor          (about a minute; loopback only, bounded by count)
A handler that waits 0 ms gives each stack's fixed cost. When it waits longer, the processes on the path (the
client, HAProxy, the server) sit idle meanwhile and wake more slowly, and the time outside the handler grows
with X in every stack, Serve or not. bench.serving's overhead at one client includes the same growth around a
real search's length; this bench shows how much of it any server would pay on the machine (docs/performance.md).
The turns alternate between the stacks and the waits, so both are measured in the same minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time

import numpy as np

from bench import http1
from bench.common import WARM_UP, free_port
from jobs import cli

WAITS_MS = (0.0, 3.0, 10.0)  # no wait; a cached search's length; a new query's
MAX_REQUESTS = 2000


def waiting_app():
    """POST /wait/{ms}: waits `ms` on the event loop (the machine idles) and says how long it took."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/wait/{ms}")
    async def wait(ms: float) -> dict[str, float]:
        started = time.perf_counter()
        await asyncio.sleep(ms / 1000)
        return {"took_ms": (time.perf_counter() - started) * 1000}

    return app


def run_uvicorn(port: int) -> None:
    """The app on plain uvicorn with the loop and parser Serve's replicas use (uvloop, httptools)."""
    import uvicorn

    uvicorn.run(waiting_app(), host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False)


def start_uvicorn() -> tuple[str, multiprocessing.Process]:
    """A spawned child (a fork would copy a caller's Ray driver threads)."""
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=run_uvicorn, args=(port,), daemon=True)
    server.start()
    return f"http://127.0.0.1:{port}", server


def stop(server: multiprocessing.Process) -> None:
    server.terminate()
    server.join(5)
    if server.is_alive():
        server.kill()
        server.join(5)


def start_serve() -> tuple[str, str]:
    """The app as one Serve ingress on the fast path (as `make serve` runs the service), on a Ray of its own (never
    a running cluster's Serve, which it shuts down after); its URL and its stack's name."""
    from serve.runtime import use_fast_path

    env = use_fast_path()  # before anything imports ray.serve
    import ray
    from ray import serve

    ray.init(address="local", log_to_driver=False)
    @serve.deployment(ray_actor_options={"num_cpus": 0.5})
    @serve.ingress(waiting_app())
    class Waiting:
        """The app as it is: its one route does the work."""

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Waiting.bind(), blocking=False)
    proxy = "HAProxy" if env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" else "its Python proxy"
    return f"http://127.0.0.1:{port}", f"Ray Serve ({proxy})"


async def ready(url: str, seconds: float = 120) -> None:
    """Until the app answers: each try within what is left of `seconds`."""
    connection, deadline = http1.Connection(url), time.monotonic() + seconds
    request = http1.request_bytes(connection.netloc, "/wait/0", b"{}", {})
    while (left := deadline - time.monotonic()) > 0:
        try:
            if (await asyncio.wait_for(connection.send(request), left))[0] == 200:
                return connection.close()
        except (OSError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {seconds:g} s")


async def outside_ms(connection: http1.Connection, wait_ms: float, requests: int) -> list[float]:
    """Each request's latency less the handler's own time, warm-up requests dropped."""
    request, out = http1.request_bytes(connection.netloc, f"/wait/{wait_ms:g}", b"{}", {}), []
    for i in range(requests + WARM_UP):
        started = time.perf_counter()
        status, body = await connection.send(request)
        latency = (time.perf_counter() - started) * 1000
        if status != 200:
            raise RuntimeError(f"{connection.netloc} answered {status}")
        if i >= WARM_UP:
            out.append(latency - json.loads(body)["took_ms"])
    return out


async def measure(urls: dict[str, str], requests: int, rounds: int) -> dict[tuple[str, float], list[float]]:
    """Per stack and wait, every round's p50 outside time; stacks and waits take turns within each round."""
    connections = {name: http1.Connection(url) for name, url in urls.items()}
    p50s: dict[tuple[str, float], list[float]] = {}
    try:
        for _ in range(rounds):
            for wait_ms in WAITS_MS:
                for name, connection in connections.items():
                    ms = await outside_ms(connection, wait_ms, requests)
                    p50s.setdefault((name, wait_ms), []).append(float(np.median(ms)))
    finally:
        for connection in connections.values():
            connection.close()
    return p50s


def report(p50s: dict[tuple[str, float], list[float]], stacks: list[str]) -> None:
    print("\n| stack | " + " | ".join(f"waits {w:g} ms" for w in WAITS_MS) + " | growth at the longest wait |")
    print("|---|" + "---:|" * (len(WAITS_MS) + 1))
    for name in stacks:
        medians = [float(np.median(p50s[(name, w)])) for w in WAITS_MS]
        rounds = " | ".join(f"{m:.2f} ({', '.join(f'{x:.2f}' for x in p50s[(name, w)])})"
                            for m, w in zip(medians, WAITS_MS))
        print(f"| {name} | {rounds} | {medians[-1] - medians[0]:+.2f} |")
    print("\nms outside the handler, p50: the median of the rounds (each round's in brackets)")


@cli.entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.idle_floor", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=150, help="requests per turn")
    parser.add_argument("--rounds", type=int, default=3, help="turns of every stack and wait")
    args = parser.parse_args(argv)
    if min(args.requests, args.rounds) < 1 or args.requests * args.rounds > MAX_REQUESTS:
        raise cli.UsageError(f"--requests and --rounds must be at least 1, their product at most {MAX_REQUESTS}")
    plain, server = start_uvicorn()
    try:
        served, stack = start_serve()
        urls = {"plain uvicorn": plain, stack: served}
        for url in urls.values():
            asyncio.run(ready(url))
        report(asyncio.run(measure(urls, args.requests, args.rounds)), list(urls))
    finally:
        stop(server)
        shutdown_serve()


def shutdown_serve() -> None:
    import ray
    from ray import serve

    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
