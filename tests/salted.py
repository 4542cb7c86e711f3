"""Builds a catalog of real product photos salted with bad and awkward files, each labelled with what must happen,
and turns rows into the column batches the pipeline stages take."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

GOOD_IDS = ["10438", "10127", "10003", "10196", "10098", "10016", "11534", "10035"]

# id -> expected skip reason (None: must be indexed)
EXPECTED = {
    "zero-byte": "empty file",
    "truncated": "corrupt or truncated",
    "text-as-jpg": "not an image",
    "bomb": "decompression bomb",
    "missing": "missing file",
    "cmyk": None,
    "png16": None,
    "palette-alpha": None,
    "exif-rotated": None,
}


def source_image(catalog: Path, item_id: str) -> Image.Image:
    return Image.open(catalog / "images" / f"{item_id}.jpg").convert("RGB")


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92, **kwargs)
    return out.getvalue()


def _png(image: Image.Image, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", **kwargs)
    return out.getvalue()


def exif_rotated(image: Image.Image) -> bytes:
    """Pixels stored turned a quarter (as a phone does), with Orientation=6 saying how to turn them back."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    return _jpeg(image.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())


def bad_files(catalog: Path) -> dict[str, bytes]:
    """The salted files' contents by item id (the missing one has none)."""
    base = source_image(catalog, GOOD_IDS[0])
    grey16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return {
        "zero-byte": b"",
        "truncated": _jpeg(base)[:1500],
        "text-as-jpg": b"this is a product description, not a photo\n" * 20,
        "bomb": _png(Image.new("1", (12000, 12000))),  # 144 Mpx that compresses to a few kB
        "cmyk": _jpeg(source_image(catalog, GOOD_IDS[1]).convert("CMYK")),
        "png16": _png(Image.fromarray(grey16)),
        "palette-alpha": _png(palette, transparency=0),
        "exif-rotated": exif_rotated(source_image(catalog, GOOD_IDS[2])),
    }


def write_salted_catalog(root: Path, catalog: Path) -> Path:
    """Copy the good photos, write the bad files, and a catalog.csv listing all of them."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for item_id in GOOD_IDS:
        (root / "images" / f"{item_id}.jpg").write_bytes((catalog / "images" / f"{item_id}.jpg").read_bytes())
        rows.append({"id": item_id, "image": f"images/{item_id}.jpg", "articleType": "good"})
    for item_id, data in bad_files(catalog).items():
        suffix = ".png" if item_id in ("png16", "palette-alpha", "bomb") else ".jpg"
        (root / "images" / f"{item_id}{suffix}").write_bytes(data)
        rows.append({"id": item_id, "image": f"images/{item_id}{suffix}", "articleType": "salted"})
    rows.append({"id": "missing", "image": "images/not-there.jpg", "articleType": "salted"})
    with (root / "catalog.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "image", "articleType"])
        writer.writeheader()
        writer.writerows(rows)
    return root
