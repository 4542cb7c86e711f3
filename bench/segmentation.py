"""Segmentation benchmark: throughput per method, and retrieval of products photographed on real backgrounds.

Run:  python -m bench.segmentation --n 300 --out var/seg
(a) images/s of each segmenter on the offline catalog (maskrcnn with random weights: cost only);
(b) held-out catalog products composited onto real photographs (scikit-image's sample images), searched by
    image with and without query segmentation: Recall@1/@10 of the product's own id, P@10 of its article type.
Needs scikit-image (`pip install scikit-image`) for the background photographs.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from retrieval.segmentation import (
    Box,
    Segmenter,
    U2NetP,
    box_iou,
    make_segmenter,
    mask_box,
    plain_background,
    png_bytes,
    segment_query,
)
from jobs import cli, indexer
from schemas.jobs import IndexConfig
from schemas.settings import OFFLINE_CATALOG, OFFLINE_MODEL, PROJECT_ROOT, SHARED_ROOT

log = logging.getLogger("bench.segmentation")
SPLIT = SHARED_ROOT / "models" / "fashion-clip-mini" / "split.json"
# Real photographs bundled with scikit-image (no download): people, animals, objects, outdoor and textures.
COLOUR_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
GREY_PHOTOS = ("camera", "grass", "gravel", "brick")
CANVASES = ((300, 400), (360, 360), (400, 300))  # portrait, square, landscape phone-like shots


# ---------------------------------------------------------------------------------------------------- composites


def photo_backgrounds() -> dict[str, np.ndarray]:
    """scikit-image's sample photographs as RGB uint8 arrays (grey ones stacked to three channels)."""
    from skimage import data

    photos = {name: getattr(data, name)() for name in COLOUR_PHOTOS}
    left, right, _ = data.stereo_motorcycle()
    photos.update({"motorcycle_left": left, "motorcycle_right": right})
    photos.update({name: np.stack([getattr(data, name)()] * 3, axis=-1) for name in GREY_PHOTOS})
    return photos


def _random_crop(photo: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A random window of the photo with the canvas's aspect, 50-100 % of the largest that fits, resized."""
    height, width = photo.shape[:2]
    fit = min(width / size[0], height / size[1]) * rng.uniform(0.5, 1.0)
    w, h = max(1, int(size[0] * fit)), max(1, int(size[1] * fit))
    x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    return Image.fromarray(photo[y:y + h, x:x + w]).resize(size, Image.Resampling.BILINEAR)


def composite(product: Image.Image, alpha: np.ndarray, photo: np.ndarray, rng: np.random.Generator,
              size: tuple[int, int] = (300, 400), scale: tuple[float, float] = (0.5, 0.85),
              ) -> tuple[Image.Image, Box, np.ndarray]:
    """The product (cut out by its matte) pasted at a random place and scale on a random crop of the photo.

    Returns the composite, the product's true box in it and its true matte (H, W floats in [0, 1]).
    """
    box = mask_box(alpha >= 0.5) or (0, 0, product.width, product.height)
    cut = product.crop(box)
    matte = Image.fromarray(np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8), "L").crop(box)
    factor = rng.uniform(*scale) * min(size) / max(cut.size)
    new = (max(1, round(cut.width * factor)), max(1, round(cut.height * factor)))
    cut, matte = cut.resize(new, Image.Resampling.LANCZOS), matte.resize(new, Image.Resampling.LANCZOS)
    x, y = int(rng.integers(0, size[0] - new[0] + 1)), int(rng.integers(0, size[1] - new[1] + 1))
    canvas = _random_crop(photo, size, rng)
    canvas.paste(cut, (x, y), matte)
    truth = np.zeros((size[1], size[0]), np.float32)
    truth[y:y + new[1], x:x + new[0]] = np.asarray(matte, np.float32) / 255.0
    return canvas, (x, y, x + new[0], y + new[1]), truth


@dataclass
class Query:
    item_id: str
    article_type: str
    background: str
    path: Path
    box: Box


def _catalog_rows(catalog: Path) -> dict[str, dict]:
    with (catalog / "catalog.csv").open(newline="", encoding="utf-8") as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


def held_out_ids(rows: dict[str, dict], n: int, seed: int) -> list[str]:
    """n product ids the small CLIP never trained on (split.json test_ids), sampled reproducibly."""
    test_ids = [i for i in json.loads(SPLIT.read_text())["test_ids"] if i in rows]
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(test_ids, size=min(n, len(test_ids)), replace=False).tolist(), key=int)


def make_composites(catalog: Path, ids: list[str], out: Path, u2netp: U2NetP, seed: int) -> list[Query]:
    """Write one composite JPEG per product (and truth mattes) under out/, with a manifest; reused if complete."""
    manifest = out / "manifest.json"
    if manifest.is_file():
        queries = _read_manifest(manifest)
        if [q.item_id for q in queries] == ids:
            return queries
    rows, photos, rng = _catalog_rows(catalog), photo_backgrounds(), np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    products = [Image.open(catalog / rows[i]["image"]).convert("RGB") for i in ids]
    alphas = u2netp.masks(products, [{}] * len(ids), [1.0] * len(ids))
    queries = [_one_composite(rows[i], p, a, photos, rng, out) for i, p, a in zip(ids, products, alphas)]
    manifest.write_text(json.dumps([{**q.__dict__, "path": q.path.name} for q in queries], indent=1))
    return queries


def _one_composite(row: dict, product: Image.Image, alpha: np.ndarray, photos: dict, rng, out: Path) -> Query:
    name = sorted(photos)[int(rng.integers(len(photos)))]
    size = CANVASES[int(rng.integers(len(CANVASES)))]
    image, box, truth = composite(product, alpha, photos[name], rng, size)
    path = out / f"{row['id']}.jpg"
    image.save(path, quality=92)
    Image.fromarray((truth * 255 + 0.5).astype(np.uint8), "L").save(out / f"{row['id']}.matte.png")
    return Query(row["id"], row["articleType"], name, path, box)


def _read_manifest(manifest: Path) -> list[Query]:
    entries = json.loads(manifest.read_text())
    return [Query(**{**e, "path": manifest.parent / e["path"], "box": tuple(e["box"])}) for e in entries]


# ---------------------------------------------------------------------------------------------------- throughput


def load_catalog_images(catalog: Path, n: int) -> list[Image.Image]:
    rows = list(_catalog_rows(catalog).values())[:n]
    return [Image.open(catalog / row["image"]).convert("RGB") for row in rows]


def throughput(name: str, segmenter: Segmenter, images: list[Image.Image], batch: int) -> dict:
    """images/s of segment() alone (images already decoded), with the fallback count."""
    started, fallbacks = time.perf_counter(), 0
    for start in range(0, len(images), batch):
        fallbacks += sum(r.fallback for r in segmenter.segment(images[start:start + batch]))
    wall = time.perf_counter() - started
    return {"method": name, "images": len(images), "wall_s": wall, "images_per_s": len(images) / wall,
            "fallbacks": fallbacks}


def measure_throughput(args: argparse.Namespace, u2netp: U2NetP) -> list[dict]:
    images = load_catalog_images(args.catalog, args.n)
    mask_images = images[:args.maskrcnn_n]
    maskrcnn = make_segmenter("maskrcnn", allow_random=True, threads=args.threads, score=0.0, candidate_score=0.0)
    return [throughput("none", make_segmenter("none"), images, args.batch_size),
            throughput(f"u2netp ({args.threads} threads)", u2netp, images, args.batch_size),
            throughput(f"maskrcnn, random weights ({args.threads} threads, cost only)", maskrcnn, mask_images,
                       4)]


# ---------------------------------------------------------------------------------------------------- retrieval


def index_config(catalog: Path, model: str, store: Path) -> IndexConfig:
    """The full catalog in an embedded store of its own under `store` (indexed once, then reused)."""
    return IndexConfig.from_settings(catalog=catalog, model=model, store_path=store, encode_cpus=1)


@dataclass
class Scores:
    """Per-condition tallies: own-item recall at 1 and 10, same-article-type precision at 10, crop quality."""

    hits1: list[bool] = field(default_factory=list)
    hits10: list[bool] = field(default_factory=list)
    p10: list[float] = field(default_factory=list)
    ious: list[float] = field(default_factory=list)
    fallbacks: int = 0
    segment_ms: list[float] = field(default_factory=list)

    def add(self, query: Query, results, rows: dict) -> None:
        ids = [r.item_id for r in results]
        self.hits1.append(ids[:1] == [query.item_id])
        self.hits10.append(query.item_id in ids[:10])
        types = [rows.get(i, {}).get("articleType") for i in ids[:10]]
        self.p10.append(sum(t == query.article_type for t in types) / 10)


def query_conditions(query: Query, catalog: Path, rows: dict, u2netp: U2NetP, oracle: Segmenter, scores: dict):
    """Query image bytes for each condition (filling the crop statistics on the way)."""
    photo = query.path.read_bytes()
    started = time.perf_counter()
    segmented, result = segment_query(photo, u2netp)
    scores["composite, u2netp"].segment_ms.append((time.perf_counter() - started) * 1000)
    scores["composite, u2netp"].ious.append(box_iou(result.box, query.box))
    scores["composite, u2netp"].fallbacks += result.fallback
    truth = np.asarray(Image.open(query.path.with_suffix(".matte.png")), np.float32) / 255.0
    cut = oracle.cutout(Image.open(query.path).convert("RGB"), truth)
    original = (catalog / rows[query.item_id]["image"]).read_bytes()
    segmented_original = segment_query(original, u2netp)[0]
    return {"catalog photo (reference)": original, "catalog photo, u2netp": segmented_original,
            "catalog photo, u2netp skip_plain": _unless_plain(original, segmented_original),
            "composite, no segmentation": photo, "composite, u2netp": segmented,
            "composite, u2netp skip_plain": _unless_plain(photo, segmented),
            "composite, true matte (upper bound)": png_bytes(cut.image)}


def _unless_plain(photo: bytes, segmented: bytes) -> bytes:
    """What U2NetP(skip_plain=True) sends: the photo itself when its border is already white."""
    return photo if plain_background(Image.open(io.BytesIO(photo))) else segmented


def evaluate(queries: list[Query], catalog: Path, model: str, cfg: IndexConfig, u2netp: U2NetP,
             k: int) -> dict[str, Scores]:
    from retrieval.search import SearchParams
    from retrieval.service import SearchService

    rows, oracle = _catalog_rows(catalog), Segmenter()
    names = ("catalog photo (reference)", "catalog photo, u2netp", "catalog photo, u2netp skip_plain",
             "composite, no segmentation", "composite, u2netp", "composite, u2netp skip_plain",
             "composite, true matte (upper bound)")
    scores = {name: Scores() for name in names}
    per_background: dict[tuple[str, str], Scores] = {}
    with SearchService.open(model, cfg.store, cfg.collection, device="cpu") as service:
        for number, query in enumerate(queries, 1):
            if number % 50 == 0:
                log.info("searched %d of %d composite queries", number, len(queries))
            for name, image in query_conditions(query, catalog, rows, u2netp, oracle, scores).items():
                results = service.search(image=image, params=SearchParams(k=k)).results
                scores[name].add(query, results, rows)
                per_background.setdefault((query.background, name), Scores()).add(query, results, rows)
    return {**scores, **{f"{bg}|{name}": s for (bg, name), s in per_background.items()}}


# ---------------------------------------------------------------------------------------------------- report


def _pct(values: list) -> str:
    return f"{100 * float(np.mean(values)):.1f}" if values else "-"


def retrieval_table(scores: dict[str, Scores]) -> str:
    lines = ["| query | n | Recall@1 % | Recall@10 % | P@10 same articleType % | crop IoU vs truth | fallbacks |"
             " segment ms/query |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in scores.items():
        if "|" in name:
            continue
        iou = f"{np.mean(s.ious):.2f}" if s.ious else "-"
        ms = f"{np.median(s.segment_ms):.0f}" if s.segment_ms else "-"
        lines.append(f"| {name} | {len(s.hits1)} | {_pct(s.hits1)} | {_pct(s.hits10)} | {_pct(s.p10)} | {iou} |"
                     f" {s.fallbacks if s.ious else '-'} | {ms} |")
    return "\n".join(lines)


def background_table(scores: dict[str, Scores]) -> str:
    backgrounds = sorted({name.split("|")[0] for name in scores if "|" in name})
    lines = ["| background | n | R@10 none % | R@10 u2netp % | P@10 none % | P@10 u2netp % |",
             "|---|---:|---:|---:|---:|---:|"]
    for bg in backgrounds:
        none, seg = scores[f"{bg}|composite, no segmentation"], scores[f"{bg}|composite, u2netp"]
        lines.append(f"| {bg} | {len(none.hits1)} | {_pct(none.hits10)} | {_pct(seg.hits10)} | {_pct(none.p10)} |"
                     f" {_pct(seg.p10)} |")
    return "\n".join(lines)


def _rate(row: dict) -> str:
    return "no work (identity)" if row["wall_s"] < 0.05 else f"{row['images_per_s']:.2f}"


def throughput_table(rows: list[dict]) -> str:
    lines = ["| method | images | wall s | images/s | fallbacks |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['images']} | {r['wall_s']:.1f} | {_rate(r)} | {r['fallbacks']} |" for r in rows]
    return "\n".join(lines)


def report(args: argparse.Namespace, speed: list[dict], scores: dict[str, Scores]) -> str:
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    parts = [f"# Segmentation benchmark\n\nCatalog {args.catalog} ({args.n} images for throughput), model {args.model};"
             f" {os.cpu_count()} CPUs, load average {load} at the end.\n"]
    if speed:
        parts.append("## Throughput (segmentation only, images already decoded; batch "
                     f"{args.batch_size})\n\n{throughput_table(speed)}\n")
    parts.append(f"## Retrieval of composited held-out products (k={args.k}, nothing excluded)\n\n"
                 f"{retrieval_table(scores)}\n\n### By background\n\n{background_table(scores)}\n")
    return "\n".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.segmentation", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300, help="composite queries, and catalog images for throughput")
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "var" / "seg")
    p.add_argument("--catalog", type=Path, default=OFFLINE_CATALOG)
    p.add_argument("--model", default=OFFLINE_MODEL)
    p.add_argument("--threads", type=int, default=2, help="onnxruntime / torch threads")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--maskrcnn-n", type=int, default=8, help="images for the (slow) Mask R-CNN cost measurement")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-throughput", action="store_true")
    return p.parse_args(argv)


@cli.entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    u2netp = U2NetP(threads=args.threads, batch_size=args.batch_size)
    speed = [] if args.skip_throughput else measure_throughput(args, u2netp)
    if speed:
        print(throughput_table(speed), flush=True)
    rows = _catalog_rows(args.catalog)
    queries = make_composites(args.catalog, held_out_ids(rows, args.n, args.seed), args.out / "composites", u2netp,
                              args.seed)
    cfg = index_config(args.catalog, args.model, args.out / "store")
    indexer.ensure_index(cfg)
    scores = evaluate(queries, args.catalog, args.model, cfg, u2netp, args.k)
    text = report(args, speed, scores)
    (args.out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
