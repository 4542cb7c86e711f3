"""Does reduced precision keep the results? Cosine between fp32 and bf16/fp16/int8 embeddings, and top-10 overlap.

python -m bench.precision --n 2000 --precisions bf16 int8     (fp16 needs a GPU, int8 a CPU; --device cuda there)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from retrieval.images import load_and_preprocess
from retrieval.model import PRECISIONS, load_model
from jobs import cli
from schemas.settings import OFFLINE_CATALOG, OFFLINE_MODEL

QUERIES = ["blue jeans", "red dress", "white sports shoes", "black handbag", "pink top for women", "brown watch",
           "green kurta", "grey track pants", "yellow tshirt", "formal shirt for men", "sandals", "sunglasses"]


def embed(model: str, device: str, precision: str, pixels: np.ndarray,
          batch: int) -> tuple[np.ndarray, np.ndarray, float]:
    encoder = load_model(model, device=device, precision=precision)
    started = time.perf_counter()
    images = np.concatenate([encoder.encode_images(pixels[i:i + batch]) for i in range(0, len(pixels), batch)])
    rate = len(pixels) / (time.perf_counter() - started)
    return images, encoder.encode_texts(QUERIES), rate


def top10_overlap(reference: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray]) -> float:
    """Mean share of each text query's top 10 (over the images) that the reduced precision keeps."""
    top = lambda images, texts: np.argsort(-(texts @ images.T), axis=1)[:, :10]  # noqa: E731
    a, b = top(*reference), top(*other)
    return float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b)]))


@cli.entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.precision", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=OFFLINE_MODEL)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precisions", nargs="+", default=["bf16", "int8"],
                        choices=[name for name in PRECISIONS if name != "fp32"])
    args = parser.parse_args(argv)
    probe = load_model(args.model, device="cpu")
    files = sorted((OFFLINE_CATALOG / "images").glob("*.jpg"))[: args.n]
    pixels = np.stack([load_and_preprocess(f.read_bytes(), probe.preprocess_cfg, max_pixels=10**9) for f in files])
    reference = embed(args.model, args.device, "fp32", pixels, args.batch_size)
    print("| precision | images/s | min cos (images) | mean cos (images) | min cos (texts) | top-10 overlap |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| fp32 | {reference[2]:.1f} | 1 | 1 | 1 | 1 |")
    for precision in args.precisions:
        images, texts, rate = embed(args.model, args.device, precision, pixels, args.batch_size)
        cos_images, cos_texts = (images * reference[0]).sum(1), (texts * reference[1]).sum(1)
        print(f"| {precision} | {rate:.1f} | {cos_images.min():.4f} | {cos_images.mean():.4f} | "
              f"{cos_texts.min():.4f} | {top10_overlap(reference[:2], (images, texts)):.2f} |")


if __name__ == "__main__":
    raise SystemExit(main())
