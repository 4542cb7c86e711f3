"""DeepFashion-MultiModal and In-shop readers: one catalog item per image, labels decoded to readable payload."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

from retrieval.catalogs.base import CatalogError
from retrieval.catalogs.folder import IMAGE_SUFFIXES
from schemas.catalog import CatalogItem

# Class tables from the DeepFashion-MultiModal README. An integer missing from a table (NA, or a value the README
# does not define) is left out of the payload: "not visible" is not a value anyone filters on.
YES_NO = {0: False, 1: True}
SHAPE_ATTRIBUTES: tuple[tuple[str, dict[int, object]], ...] = (
    ("sleeve_length", {0: "sleeveless", 1: "short-sleeve", 2: "medium-sleeve", 3: "long-sleeve", 4: "not long-sleeve"}),
    ("lower_length", {0: "three-point", 1: "medium short", 2: "three-quarter", 3: "long"}),
    ("socks", {0: "no", 1: "socks", 2: "leggings"}),
    ("hat", YES_NO),
    ("glasses", {0: "no", 1: "eyeglasses", 2: "sunglasses", 3: "in hand or clothes"}),
    ("neckwear", YES_NO),
    ("wrist_wearing", YES_NO),
    ("ring", YES_NO),
    ("waist_accessories", {0: "no", 1: "belt", 2: "clothing", 3: "hidden"}),
    # The README numbers necklines 0, 1, 2, 4, 5, 6 (7 = NA); 3 is undefined there, so it is dropped like NA.
    ("neckline", {0: "V-shape", 1: "square", 2: "round", 4: "standing", 5: "lapel", 6: "suspenders"}),
    ("outer_cardigan", {0: True, 1: False}),  # the README codes this one 0 = yes, 1 = no
    ("covers_navel", YES_NO),
)
FABRICS = {0: "denim", 1: "cotton", 2: "leather", 3: "furry", 4: "knitted", 5: "chiffon", 6: "other"}
PATTERNS = {0: "floral", 1: "graphic", 2: "striped", 3: "pure color", 4: "lattice", 5: "other", 6: "color block"}
GARMENT_PARTS = ("upper", "lower", "outer")

# MEN-Denim-id_00000080-01_7_additional: gender, category, In-shop item id, then <pose index>_<view>.
MM_NAME = re.compile(r"^(?P<gender>[A-Z]+)-(?P<category>.+)-(?P<item>id_\d+)-(?P<pose>.+)$")


def _words(text: str) -> str:
    """Blouses_Shirts -> Blouses Shirts: folder and file names join words with underscores."""
    return text.replace("_", " ")


def _view(pose: str) -> str:
    """02_1_front -> front: the view name is the last underscore token."""
    return pose.rsplit("_", 1)[-1]


def _find(root: Path, name: str, folders: tuple[str, ...]) -> Path | None:
    """The first `folder/name` that exists: releases unpack the same file at the root or under Anno/, Eval/."""
    for folder in folders:
        path = root / folder / name
        if path.is_file():
            return path
    return None


def _int_table(path: Path, width: int) -> dict[str, tuple[int, ...]]:
    """`<image name> <width integers>` lines keyed by image name; a missing file is an empty table."""
    if not path.is_file():
        return {}
    table = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != width + 1 or not all(re.fullmatch(r"-?\d+", f) for f in fields[1:]):
            raise CatalogError(f"{path}:{number}: expected an image name and {width} integers, got {line!r}")
        table[fields[0]] = tuple(int(f) for f in fields[1:])
    return table


def _captions(root: Path) -> dict[str, str]:
    path = root / "captions.json"
    if not path.is_file():
        return {}  # captions are an optional extra; images and labels still make a catalog
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{path}: not valid JSON ({exc})") from exc


def _shape_fields(values: tuple[int, ...]) -> dict[str, object]:
    return {key: classes[v] for (key, classes), v in zip(SHAPE_ATTRIBUTES, values) if v in classes}


def _texture_fields(values: tuple[int, ...], classes: dict[int, str], kind: str) -> dict[str, str]:
    return {f"{part}_{kind}": classes[v] for part, v in zip(GARMENT_PARTS, values) if v in classes}


def _name_fields(stem: str) -> dict[str, str]:
    """Gender, category, item id and view read from a MultiModal image name; nothing when it does not fit."""
    match = MM_NAME.match(stem)
    if not match:
        return {}
    return {"gender": match["gender"].capitalize(), "category": _words(match["category"]),
            "inshop_item_id": match["item"], "view": _view(match["pose"])}


def read_deepfashion_multimodal(root: Path) -> Iterator[CatalogItem]:
    """One item per file in `root/images`, id = file stem, payload from its name, caption and label files."""
    images = root / "images"
    if not images.is_dir():
        raise CatalogError(f"{images} not found: a DeepFashion-MultiModal root holds an images/ folder")
    labels = root / "labels"
    shapes = _int_table(labels / "shape" / "shape_anno_all.txt", len(SHAPE_ATTRIBUTES))
    fabrics = _int_table(labels / "texture" / "fabric_ann.txt", len(GARMENT_PARTS))
    patterns = _int_table(labels / "texture" / "pattern_ann.txt", len(GARMENT_PARTS))
    captions = _captions(root)
    for path in sorted(images.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        name = path.name
        metadata: dict[str, object] = _name_fields(path.stem)
        if name in captions:
            metadata["caption"] = captions[name]
        metadata.update(_shape_fields(shapes.get(name, ())))
        metadata.update(_texture_fields(fabrics.get(name, ()), FABRICS, "fabric"))
        metadata.update(_texture_fields(patterns.get(name, ()), PATTERNS, "pattern"))
        segm = root / "segm" / f"{path.stem}_segm.png"
        if segm.is_file():
            metadata["segm"] = segm.relative_to(root).as_posix()
        yield CatalogItem(id=path.stem, image=f"images/{name}", metadata=metadata, text=mm_document(metadata))


def mm_document(metadata: dict[str, object]) -> str:
    """The caption, then the labels as words: "long-sleeve", "denim", "floral", and "hat" for a hat that is there."""
    words = [metadata.get("caption", ""), metadata.get("gender", ""), metadata.get("category", "")]
    labels = [k for k, _ in SHAPE_ATTRIBUTES] + [f"{p}_{kind}" for kind in ("fabric", "pattern") for p in GARMENT_PARTS]
    for key in labels:
        value = metadata.get(key)
        if value is True:
            words.append(_words(key))
        elif isinstance(value, str) and value not in ("no", "other"):
            words.append(value)
    return " ".join(w for w in words if w)


def _list_lines(path: Path) -> list[str]:
    """Data lines of a DeepFashion list file: line 1 is the row count and line 2 the header, both skipped."""
    lines = path.read_text(encoding="utf-8").splitlines()[2:]
    return [line.strip() for line in lines if line.strip()]


def _bboxes(root: Path) -> dict[str, list[int]]:
    """image name -> [x1, y1, x2, y2] from list_bbox_inshop.txt (columns: name, clothes type, pose type, box)."""
    path = _find(root, "list_bbox_inshop.txt", ("", "Anno"))
    if path is None:
        return {}
    return {fields[0]: [int(v) for v in fields[3:7]] for fields in map(str.split, _list_lines(path))}


def _attribute_names(path: Path) -> list[str]:
    """Names from list_attr_cloth.txt; a name may hold spaces, so only the last token (the type) is split off."""
    return [line.rsplit(maxsplit=1)[0] for line in _list_lines(path)]


def _attributes(root: Path) -> dict[str, list[str]]:
    """item id -> names of the attributes marked 1 (-1 is absent and 0 unknown, both left out)."""
    folders = ("", "Anno", "Anno/attributes")
    values_path = _find(root, "list_attr_items.txt", folders)
    if values_path is None:
        return {}
    names_path = _find(root, "list_attr_cloth.txt", folders)
    if names_path is None:
        raise CatalogError(f"{values_path} needs list_attr_cloth.txt beside it to name its attributes")
    names = _attribute_names(names_path)
    table = {}
    for fields in map(str.split, _list_lines(values_path)):
        if len(fields) - 1 != len(names):
            count = len(fields) - 1
            raise CatalogError(f"{values_path}: item {fields[0]} has {count} values for {len(names)} attributes")
        table[fields[0]] = [name for name, value in zip(names, fields[1:]) if value == "1"]
    return table


def _path_fields(image: str) -> dict[str, str]:
    """Gender, category and view from img/<GENDER>/<Category>/<item id>/<nn_n_view>.jpg."""
    parts = Path(image).parts
    if len(parts) < 4:
        return {}
    return {"gender": parts[-4].capitalize(), "category": _words(parts[-3]), "view": _view(Path(image).stem)}


def read_inshop(root: Path) -> Iterator[CatalogItem]:
    """One item per row of list_eval_partition.txt, id = image path without extension."""
    partition = _find(root, "list_eval_partition.txt", ("", "Eval"))
    if partition is None:
        raise CatalogError(f"{root}: no list_eval_partition.txt at the root or under Eval/")
    bboxes, attributes = _bboxes(root), _attributes(root)
    for line in _list_lines(partition):
        fields = line.split()
        if len(fields) != 3:
            raise CatalogError(f"{partition}: expected image_name item_id evaluation_status, got {line!r}")
        image, item_id, split = fields
        metadata: dict[str, object] = {"inshop_item_id": item_id, "split": split, **_path_fields(image)}
        if image in bboxes:
            metadata["bbox"] = bboxes[image]
        if item_id in attributes:
            metadata["attributes"] = attributes[item_id]
        words = [metadata.get("gender", ""), metadata.get("category", ""), *metadata.get("attributes", [])]
        yield CatalogItem(id=Path(image).with_suffix("").as_posix(), image=image, metadata=metadata,
                          text=" ".join(w for w in words if w))
