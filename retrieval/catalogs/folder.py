"""A plain folder of images: the id is the path relative to the root, no other metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from schemas.catalog import CatalogItem

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def read_image_folder(root: Path) -> Iterator[CatalogItem]:
    """Every image file under `root`, sorted, id = relative POSIX path."""
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            rel = path.relative_to(root).as_posix()
            yield CatalogItem(id=rel, image=rel, metadata={"folder": path.parent.relative_to(root).as_posix()})
