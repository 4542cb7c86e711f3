"""Query memory: peak RSS of SearchAPI (what a Serve replica runs) while 16 maximum-size photos arrive.

python -m bench.query_memory [--concurrency 16]

Two configurations, each in a fresh process (freed memory is not always returned to the OS, so they must not share
one): "unbounded", the service before query limits (the catalog's 80 Mpx limit, no decode budget), and "bounded",
the defaults (FASHION_QUERY_MAX_PIXELS, FASHION_QUERY_DECODE_BUDGET). Each sends the largest photo it accepts, a
PNG (PNG has no reduced-size decoding, unlike JPEG), `concurrency` times at once through the in-process ASGI app,
and samples RSS every 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import subprocess
import sys
import time

import psutil

from bench.indexing import PeakMemory
from jobs import cli
from schemas.jobs import IndexConfig
from schemas.settings import PROJECT_ROOT

CONFIGS = {"unbounded": {"query_max_pixels": 80_000_000, "query_decode_budget": 10**12},
           "bounded": {}}  # the service's defaults


def largest_png(pixels: int) -> bytes:
    """A square PNG just under `pixels`, drawn (so it compresses to well under the upload limit, as an attack would)."""
    from PIL import Image, ImageDraw

    side = int(math.isqrt(pixels))
    image = Image.new("RGB", (side, side), (240, 240, 235))
    draw = ImageDraw.Draw(image)
    for i in range(0, side // 2, max(1, side // 80)):
        draw.rectangle((i, i, side - i, side - i), outline=(i % 256, 80, 160), width=3)
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=9)
    return out.getvalue()


async def measure(name: str, concurrency: int, store_path: str) -> dict:
    import httpx

    from serve.api import SearchAPI
    from serve.app import ServeArgs
    from serve.routes import create_app

    served = ServeArgs(device="cpu", precision="fp32", encoder_threads=1, query_segmenter="none",
                       store_path=store_path, **CONFIGS[name])
    max_pixels, budget = served.settings.query_max_pixels, served.settings.query_decode_budget
    api = SearchAPI(served.encoder_config(), served.search_api_config())
    photo = largest_png(max_pixels - 1)
    transport = httpx.ASGITransport(app=create_app(api))
    async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client:
        warm = await client.post("/search", files={"image": ("w.png", largest_png(40_000), "image/png")})
        assert warm.status_code == 200, warm.text
        baseline = psutil.Process().memory_info().rss
        started = time.perf_counter()
        with PeakMemory(interval_s=0.002, ray_workers=False) as rss:
            responses = await asyncio.gather(*(client.post("/search", files={"image": ("q.png", photo, "image/png")})
                                               for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    statuses = sorted({r.status_code for r in responses})
    return {"config": name, "max_pixels": max_pixels, "budget": budget, "png_kb": len(photo) // 1024,
            "statuses": statuses, "baseline_mb": baseline / 2**20, "peak_mb": rss.peak / 2**20,
            "delta_mb": (rss.peak - baseline) / 2**20, "seconds": seconds,
            "budget_waits": api.encoder.target.budget.waits}


def ensure_small_index(store_path) -> None:
    from jobs import indexer

    indexer.ensure_index(IndexConfig.from_settings(store_path=store_path, limit=256, encode_cpus=1))


def measure_in_child(name: str, concurrency: int) -> dict:
    """One configuration in a fresh process; its error output is shown when it fails."""
    done = subprocess.run([sys.executable, "-m", "bench.query_memory", "--config", name, "--concurrency",
                           str(concurrency)], capture_output=True, text=True, cwd=PROJECT_ROOT)
    if done.returncode:
        raise SystemExit(f"the {name} measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@cli.entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.query_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--config", choices=list(CONFIGS), help="(internal) measure one configuration here")
    args = parser.parse_args(argv)
    store_path = str(PROJECT_ROOT / "var" / "bench" / "query-memory")
    if args.config:
        print(json.dumps(asyncio.run(measure(args.config, args.concurrency, store_path))))
        return
    ensure_small_index(store_path)
    rows = [measure_in_child(name, args.concurrency) for name in CONFIGS]
    print(f"\n{args.concurrency} concurrent uploads of the largest PNG each configuration accepts")
    print("| config | query max pixels | decode budget | PNG kB | statuses | baseline MB | peak MB | +MB | s |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['config']} | {r['max_pixels']:,} | {r['budget']:,} | {r['png_kb']} | {r['statuses']} | "
              f"{r['baseline_mb']:.0f} | {r['peak_mb']:.0f} | {r['delta_mb']:.0f} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    raise SystemExit(main())
