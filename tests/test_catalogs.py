"""Catalog readers on small fixtures written in each dataset's real layout, plus the real offline CSV catalog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrieval.catalogs import CatalogError, open_catalog
from retrieval.catalogs.tabular import read_csv_catalog
from retrieval.catalogs.deepfashion import read_deepfashion_multimodal, read_inshop
from retrieval.catalogs.folder import read_image_folder
from schemas.settings import OFFLINE_CATALOG


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _by_id(items) -> dict:
    items = list(items)
    ids = [item.id for item in items]
    assert len(ids) == len(set(ids)), "catalog ids must be unique"
    return {item.id: item for item in items}


# ---------------------------------------------------------------- CSV

CSV_TEXT = """id,image,gender,year,baseColour,productDisplayName
10000,images/10000.jpg,Women,2011,White,Palm Tree Girls White Skirts
10001,images/10001.jpg,Men,2012,,Blue Jeans
,images/orphan.jpg,Men,2012,Red,No id
10002,,Men,2012,Red,No image
"""


def test_csv_reader_types_and_skips(tmp_path):
    _write(tmp_path / "catalog.csv", CSV_TEXT)
    items = _by_id(read_csv_catalog(tmp_path))
    assert sorted(items) == ["10000", "10001"]  # rows without id or image are skipped
    first = items["10000"]
    assert first.image == "images/10000.jpg"
    assert first.metadata == {"gender": "Women", "year": 2011, "baseColour": "White",
                              "productDisplayName": "Palm Tree Girls White Skirts"}
    assert "baseColour" not in items["10001"].metadata  # empty cell dropped


def test_csv_reader_alternative_columns_and_direct_file(tmp_path):
    path = _write(tmp_path / "shop.csv", "sku,filename,colour\nA1,a1.png,red\n")
    (item,) = read_csv_catalog(path)
    assert (item.id, item.image, item.metadata) == ("A1", "a1.png", {"colour": "red"})


def test_csv_reader_errors(tmp_path):
    with pytest.raises(CatalogError, match="not found"):
        list(read_csv_catalog(tmp_path))
    _write(tmp_path / "catalog.csv", "name,image\nx,x.jpg\n")
    with pytest.raises(CatalogError, match="no id column"):
        list(read_csv_catalog(tmp_path))


@pytest.mark.skipif(not (OFFLINE_CATALOG / "catalog.csv").is_file(), reason="offline catalog not present")
def test_csv_reader_on_offline_catalog():
    catalog = open_catalog(OFFLINE_CATALOG)
    assert catalog.format == "csv"
    items = _by_id(catalog.items())
    assert len(items) == 9583
    first = items["10000"]
    assert first.image == "images/10000.jpg"
    assert first.metadata["gender"] == "Women" and first.metadata["year"] == 2011
    assert catalog.image_path(first) == OFFLINE_CATALOG.resolve() / "images" / "10000.jpg"


# ---------------------------------------------------------------- folder

def test_folder_reader(tmp_path):
    for name in ("b/2.JPG", "a/1.png", "top.webp", "a/notes.txt", "a/deeper/3.jpeg"):
        _write(tmp_path / name, b"x")
    items = list(read_image_folder(tmp_path))
    assert [item.id for item in items] == ["a/1.png", "a/deeper/3.jpeg", "b/2.JPG", "top.webp"]
    assert all(item.image == item.id for item in items)
    assert [item.metadata["folder"] for item in items] == ["a", "a/deeper", "b", "."]


# ---------------------------------------------------------------- format detection

def test_open_catalog_detects_each_format(tmp_path):
    _write(tmp_path / "csv" / "catalog.csv", CSV_TEXT)
    _write(tmp_path / "plain" / "x.jpg", b"x")
    _write(tmp_path / "mm" / "images" / "x.jpg", b"x")
    _write(tmp_path / "mm" / "captions.json", "{}")
    _write(tmp_path / "mm-labels-only" / "labels" / "shape" / "shape_anno_all.txt", "")
    _write(tmp_path / "inshop" / "list_eval_partition.txt", "0\nimage_name item_id evaluation_status\n")
    _write(tmp_path / "inshop-eval" / "Eval" / "list_eval_partition.txt", "0\nimage_name item_id evaluation_status\n")
    expected = {"csv": "csv", "plain": "folder", "mm": "deepfashion-mm", "mm-labels-only": "deepfashion-mm",
                "inshop": "inshop", "inshop-eval": "inshop"}
    for folder, fmt in expected.items():
        assert open_catalog(tmp_path / folder).format == fmt, folder


def test_open_catalog_csv_file_and_override(tmp_path):
    path = _write(tmp_path / "shop" / "mine.csv", "id,image\nA,a.jpg\n")
    catalog = open_catalog(path)
    assert (catalog.format, catalog.root) == ("csv", path.parent.resolve())
    assert [item.id for item in catalog.items()] == ["A"]
    # forcing "folder" on a CSV catalog reads its images instead of its index
    _write(tmp_path / "shop" / "a.jpg", b"x")
    assert [item.id for item in open_catalog(tmp_path / "shop", "folder").items()] == ["a.jpg"]


def test_open_catalog_errors(tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        open_catalog(tmp_path / "missing")
    with pytest.raises(CatalogError, match="unknown catalog format 'xlsx'; valid: auto, csv, parquet, jsonl, "
                                           "folder, deepfashion-mm, inshop"):
        open_catalog(tmp_path, "xlsx")
    with pytest.raises(CatalogError, match="a folder catalog builds its documents itself"):
        open_catalog(tmp_path, "folder", text_fields=["title"])


# ---------------------------------------------------------------- DeepFashion-MultiModal

MM_MEN = "MEN-Denim-id_00000080-01_7_additional.jpg"
MM_BLOUSE = "WOMEN-Blouses_Shirts-id_00000001-02_1_front.jpg"
MM_UNLABELLED = "WOMEN-Dresses-id_00000002-01_2_side.jpg"
MM_NO_IMAGE = "MEN-Tees_Tanks-id_00000099-01_1_front.jpg"  # labelled, but its image is not in images/


def _multimodal(root: Path, captions: bool = True) -> Path:
    for name in (MM_MEN, MM_BLOUSE, MM_UNLABELLED):
        _write(root / "images" / name, b"jpg")
    _write(root / "images" / "README.txt", "not an image")
    if captions:
        _write(root / "captions.json", json.dumps({
            MM_MEN: "The man wears a long-sleeve denim shirt.",
            MM_BLOUSE: "She wears a floral chiffon blouse.",
            MM_NO_IMAGE: "Nobody.",
        }))
    _write(root / "labels" / "shape" / "shape_anno_all.txt",
           f"{MM_MEN} 3 3 0 1 2 0 1 0 1 2 1 0\n"
           f"{MM_BLOUSE} 5 4 3 2 4 2 2 2 4 7 2 2\n"  # every shape NA
           f"{MM_NO_IMAGE} 1 1 1 1 1 1 1 1 1 1 1 1\n")
    _write(root / "labels" / "texture" / "fabric_ann.txt", f"{MM_MEN} 0 7 7\n{MM_BLOUSE} 5 1 7\n")
    _write(root / "labels" / "texture" / "pattern_ann.txt", f"{MM_MEN} 3 7 7\n{MM_BLOUSE} 0 2 6\n")
    _write(root / "segm" / "MEN-Denim-id_00000080-01_7_additional_segm.png", b"png")
    _write(root / "keypoints" / "keypoints_loc.txt", f"{MM_MEN} " + " ".join(["-1"] * 42) + "\n")
    return root


def test_multimodal_full_payload(tmp_path):
    items = _by_id(read_deepfashion_multimodal(_multimodal(tmp_path)))
    men = items["MEN-Denim-id_00000080-01_7_additional"]
    assert men.image == f"images/{MM_MEN}"
    assert men.metadata == {
        "gender": "Men", "category": "Denim", "inshop_item_id": "id_00000080", "view": "additional",
        "caption": "The man wears a long-sleeve denim shirt.",
        "sleeve_length": "long-sleeve", "lower_length": "long", "socks": "no", "hat": True,
        "glasses": "sunglasses", "neckwear": False, "wrist_wearing": True, "ring": False,
        "waist_accessories": "belt", "neckline": "round", "outer_cardigan": False, "covers_navel": False,
        "upper_fabric": "denim", "upper_pattern": "pure color",
        "segm": "segm/MEN-Denim-id_00000080-01_7_additional_segm.png",
    }


def test_multimodal_na_labels_omitted(tmp_path):
    blouse = _by_id(read_deepfashion_multimodal(_multimodal(tmp_path)))["WOMEN-Blouses_Shirts-id_00000001-02_1_front"]
    assert blouse.metadata == {
        "gender": "Women", "category": "Blouses Shirts", "inshop_item_id": "id_00000001", "view": "front",
        "caption": "She wears a floral chiffon blouse.",
        "upper_fabric": "chiffon", "lower_fabric": "cotton",  # outer fabric 7 = NA is left out
        "upper_pattern": "floral", "lower_pattern": "striped", "outer_pattern": "color block",
    }  # all twelve shape values are NA, and there is no segm mask


def test_multimodal_items_follow_images_folder(tmp_path):
    items = _by_id(read_deepfashion_multimodal(_multimodal(tmp_path)))
    assert len(items) == 3  # README.txt skipped; the labelled image without a file is not an item
    assert "MEN-Tees_Tanks-id_00000099-01_1_front" not in items
    unlabelled = items["WOMEN-Dresses-id_00000002-01_2_side"]
    assert unlabelled.metadata == {"gender": "Women", "category": "Dresses",
                                   "inshop_item_id": "id_00000002", "view": "side"}


def test_multimodal_without_captions(tmp_path):
    items = _by_id(read_deepfashion_multimodal(_multimodal(tmp_path, captions=False)))
    assert len(items) == 3
    assert not any("caption" in item.metadata for item in items.values())
    assert items["MEN-Denim-id_00000080-01_7_additional"].metadata["upper_fabric"] == "denim"


def test_multimodal_errors(tmp_path):
    _write(tmp_path / "captions.json", "{}")
    with pytest.raises(CatalogError, match="images"):
        list(read_deepfashion_multimodal(tmp_path))
    _write(tmp_path / "images" / MM_MEN, b"jpg")
    _write(tmp_path / "labels" / "texture" / "fabric_ann.txt", f"{MM_MEN} 0 7\n")
    with pytest.raises(CatalogError, match="fabric_ann.txt:1"):
        list(read_deepfashion_multimodal(tmp_path))


def test_multimodal_through_open_catalog(tmp_path):
    catalog = open_catalog(_multimodal(tmp_path))
    assert catalog.format == "deepfashion-mm"
    item = next(i for i in catalog.items() if i.id.startswith("MEN-"))
    assert catalog.image_path(item) == tmp_path.resolve() / "images" / MM_MEN


# ---------------------------------------------------------------- DeepFashion In-shop

INSHOP_IMAGES = [
    ("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "id_00000002", "train"),
    ("img/WOMEN/Dresses/id_00000002/02_2_side.jpg", "id_00000002", "train"),
    ("img/MEN/Denim/id_00000080/01_1_front.jpg", "id_00000080", "query"),
    ("img/MEN/Denim/id_00000080/01_7_additional.jpg", "id_00000080", "gallery"),
    ("img/WOMEN/Blouses_Shirts/id_00000001/02_3_back.jpg", "id_00000001", "gallery"),
]
# Real list_attr_cloth.txt pads names to align the type column; names may hold spaces.
ATTR_CLOTH = """4
attribute_name  attribute_type
sleeveless                   1
long sleeve                  1
a-line                       3
floral print                 2
"""
ATTR_ITEMS = """3
item_id  attribute_labels
id_00000002  1 -1  0  1
id_00000080 -1  1  1  0
id_00000001 -1 -1 -1 -1
"""


def _inshop(root: Path, eval_folder: str = "Eval", attributes: bool = True) -> Path:
    rows = "".join(f"{image}  {item}  {split}\n" for image, item, split in INSHOP_IMAGES)
    _write(root / eval_folder / "list_eval_partition.txt",
           f"{len(INSHOP_IMAGES)}\nimage_name item_id evaluation_status\n{rows}")
    _write(root / "Anno" / "list_bbox_inshop.txt",
           "2\nimage_name  clothes_type  pose_type  x_1  y_1  x_2  y_2\n"
           f"{INSHOP_IMAGES[0][0]}  3  1  050  049  208  235\n"
           f"{INSHOP_IMAGES[2][0]}  1  1  10  20  200  180\n")
    _write(root / "Anno" / "list_item_inshop.txt", "3\nid_00000001\nid_00000002\nid_00000080\n")
    if attributes:
        _write(root / "Anno" / "list_attr_cloth.txt", ATTR_CLOTH)
        _write(root / "Anno" / "list_attr_items.txt", ATTR_ITEMS)
    return root


def test_inshop_full_payload(tmp_path):
    items = _by_id(read_inshop(_inshop(tmp_path)))
    dress = items["img/WOMEN/Dresses/id_00000002/02_1_front"]
    assert dress.image == "img/WOMEN/Dresses/id_00000002/02_1_front.jpg"
    assert dress.metadata == {
        "inshop_item_id": "id_00000002", "split": "train", "gender": "Women", "category": "Dresses",
        "view": "front", "bbox": [50, 49, 208, 235], "attributes": ["sleeveless", "floral print"],
    }


def test_inshop_counts_and_headers_skipped(tmp_path):
    items = _by_id(read_inshop(_inshop(tmp_path)))
    assert len(items) == len(INSHOP_IMAGES)
    assert {item.metadata["split"] for item in items.values()} == {"train", "query", "gallery"}
    assert not any(i in items for i in ("5", "image_name"))


def test_inshop_attributes_with_spaces_and_negatives(tmp_path):
    items = _by_id(read_inshop(_inshop(tmp_path)))
    denim = items["img/MEN/Denim/id_00000080/01_7_additional"].metadata
    assert denim["attributes"] == ["long sleeve", "a-line"]  # -1 (sleeveless) and 0 (floral print) absent
    assert (denim["gender"], denim["category"], denim["view"]) == ("Men", "Denim", "additional")
    assert "bbox" not in denim  # not in list_bbox_inshop.txt
    blouse = items["img/WOMEN/Blouses_Shirts/id_00000001/02_3_back"].metadata
    assert blouse["attributes"] == [] and blouse["category"] == "Blouses Shirts"
    # every image of an item shares the item's attributes
    assert items["img/WOMEN/Dresses/id_00000002/02_2_side"].metadata["attributes"] == ["sleeveless", "floral print"]


def test_inshop_partition_at_root_without_attributes(tmp_path):
    items = _by_id(read_inshop(_inshop(tmp_path, eval_folder="", attributes=False)))
    assert len(items) == len(INSHOP_IMAGES)
    assert not any("attributes" in item.metadata for item in items.values())
    assert items["img/MEN/Denim/id_00000080/01_1_front"].metadata["bbox"] == [10, 20, 200, 180]


def test_inshop_errors(tmp_path):
    with pytest.raises(CatalogError, match="list_eval_partition"):
        list(read_inshop(tmp_path))
    _inshop(tmp_path)
    (tmp_path / "Anno" / "list_attr_cloth.txt").unlink()
    with pytest.raises(CatalogError, match="list_attr_cloth"):
        list(read_inshop(tmp_path))
    _write(tmp_path / "Anno" / "list_attr_cloth.txt", "1\nattribute_name attribute_type\nlong sleeve 1\n")
    with pytest.raises(CatalogError, match="4 values for 1 attributes"):
        list(read_inshop(tmp_path))


def test_inshop_through_open_catalog(tmp_path):
    catalog = open_catalog(_inshop(tmp_path))
    assert catalog.format == "inshop"
    item = next(iter(catalog.items()))
    assert catalog.image_path(item) == tmp_path.resolve() / item.image
