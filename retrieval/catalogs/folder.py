"""A plain folder of images: the id is the path relative to the root, the words of that path its document."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from schemas.catalog import CatalogItem

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def read_image_folder(root: Path) -> Iterator[CatalogItem]:
    """Every image file under `root`, sorted, id = relative POSIX path."""
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            rel = path.relative_to(root).as_posix()
            yield CatalogItem(id=rel, image=rel, metadata={"folder": path.parent.relative_to(root).as_posix()},
                              text=path_words(rel))


def path_words(relative: str) -> str:
    """dresses/red_floral/img-001.jpg -> "dresses red floral img 001": a folder catalog's only words."""
    return " ".join(re.split(r"[/_\-.\s]+", str(Path(relative).with_suffix("")))).strip()
