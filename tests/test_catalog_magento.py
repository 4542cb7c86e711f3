"""The Magento export reader on a small export written in Magento's shape, and on the real luma-sample export."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from retrieval.catalogs import CatalogError, open_catalog
from retrieval.catalogs.magento import parse_pairs, read_magento, strip_html
from schemas.settings import SHARED_ROOT

LUMA = SHARED_ROOT / "datasets" / "luma-sample"
HEADER = ["sku", "store_view_code", "product_type", "categories", "name", "description", "price", "base_image",
          "additional_attributes", "configurable_variations"]
HOODIE = "<p>Warm &amp; <b>soft</b> hoodie.</p>\n<p>&bull; Ribbed cuffs.<br />&bull; Machine wash.</p>"
CATEGORIES = ("Default Category/Men/Tops/Hoodies & Sweatshirts,Default Category/Collections/Eco Friendly,"
              "Default Category")


def _variant(sku: str, size: str, colour: str, image: str) -> list[str]:
    return [sku, "", "simple", CATEGORIES, f"Chaz Hoodie-{size}-{colour}", HOODIE, "52", image,
            f"has_options=0,required_options=0,size={size},color={colour}", ""]


ROWS = [
    _variant("MH01-S-Black", "S", "Black", "/m/h/mh01-black_main.jpg"),
    _variant("MH01-S-Gray", "S", "Gray", "/m/h/mh01-gray_main.jpg"),
    _variant("MH01-M-Black", "M", "Black", "/m/h/mh01-black_main.jpg"),
    _variant("MH01-M-Gray", "M", "Gray", "/m/h/mh01-gray_main.jpg"),
    ["MH01", "", "configurable", CATEGORIES, "Chaz Hoodie", HOODIE, "52", "/m/h/mh01-gray_main.jpg",
     "has_options=1,material=Wool|Fleece|CoolTech&trade;,pattern=Solid,climate=Cool,eco_collection=Yes",
     "|".join(f"sku=MH01-{s}-{c},size={s},color={c}" for s in "SM" for c in ("Black", "Gray"))],
    ["24-MB01", "", "simple", "Default Category/Gear/Bags", "Joust Duffle Bag", "<p>A bag.</p>", "34",
     "/m/b/mb01-blue-0.jpg", "has_options=0,activity=Gym|Travel", ""],
    ["MH01", "fr", "configurable", "", "Sweat Chaz", "<p>Chaud.</p>", "", "", "", ""],  # a store view's words
    ["NOPHOTO", "", "simple", "", "No photo", "", "1", "", "", ""],
]


def _export(folder: Path, rows=ROWS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "products.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([HEADER, *rows])
    return folder


def _by_id(items) -> dict:
    items = list(items)
    assert len({i.id for i in items}) == len(items)
    return {i.id: i for i in items}


def test_variants_sharing_a_photo_make_one_item(tmp_path):
    items = _by_id(read_magento(_export(tmp_path)))
    assert sorted(items) == ["24-MB01", "MH01-Black", "MH01-Gray"]  # no parent item, no photo-less row
    black = items["MH01-Black"]
    assert black.image == "images/m/h/mh01-black_main.jpg"
    meta = black.metadata
    assert (meta["name"], meta["price"], meta["color"], meta["size"]) == ("Chaz Hoodie", 52, "Black", ["S", "M"])
    assert (meta["product_group"], meta["variant_skus"]) == ("MH01", ["MH01-S-Black", "MH01-M-Black"])
    assert items["MH01-Gray"].metadata["product_group"] == "MH01"


def test_key_value_lists_and_category_levels(tmp_path):
    meta = _by_id(read_magento(_export(tmp_path)))["MH01-Gray"].metadata
    assert meta["material"] == ["Wool", "Fleece", "CoolTech\u2122"]  # | splits, entities decoded
    assert (meta["pattern"], meta["climate"], meta["eco_collection"]) == ("Solid", "Cool", "Yes")
    assert "has_options" not in meta and "required_options" not in meta
    assert (meta["gender"], meta["department"], meta["type"]) == ("Men", "Tops", "Hoodies & Sweatshirts")
    assert meta["collections"] == "Eco Friendly"  # a shallower path's leaf; the bare root adds nothing


def test_html_stripped_and_attributes_before_free_text(tmp_path):
    items = _by_id(read_magento(_export(tmp_path)))
    gray = items["MH01-Gray"]
    assert gray.metadata["description"] == "Warm & soft hoodie. \u2022 Ribbed cuffs. \u2022 Machine wash."
    assert gray.text.startswith("Hoodies & Sweatshirts Gray Men Tops Wool Fleece")
    assert gray.text.endswith("Chaz Hoodie Warm & soft hoodie. \u2022 Ribbed cuffs. \u2022 Machine wash.")
    assert "<" not in gray.text and "Chaud" not in gray.text  # the store view row changes nothing
    bag = items["24-MB01"]  # a product without variants is its own item, its path shallower than the levels
    assert (bag.metadata["activity"], bag.metadata["collections"], bag.metadata["product_group"]) == \
        (["Gym", "Travel"], "Bags", "24-MB01")


def test_parse_pairs_and_strip_html():
    pairs = parse_pairs("material=Cotton, organic|Lycra&reg;,size=XS")
    assert pairs == {"material": ["Cotton, organic", "Lycra\u00ae"], "size": "XS"}
    assert parse_pairs("") == {} and parse_pairs("flag,empty=") == {}
    assert strip_html("<p>a<br/>b</p><p>c&nbsp;<i>d</i>e</p>") == "a b c de"  # inline tags join, nbsp splits


def test_detected_and_mapping_file(tmp_path):
    root = _export(tmp_path / "shop")
    assert open_catalog(root).format == "magento"
    assert open_catalog(root / "products.csv").format == "magento"
    (root / "catalog-mapping.yaml").write_text("category_levels: [gender, department, kind]\nimage_root: ''\n")
    item = _by_id(open_catalog(root).items())["MH01-Black"]
    assert (item.metadata["kind"], item.image) == ("Hoodies & Sweatshirts", "m/h/mh01-black_main.jpg")
    (root / "catalog-mapping.yaml").write_text("no_such_key: 1\n")
    with pytest.raises(CatalogError, match="not a catalog mapping"):
        list(open_catalog(root).items())


def test_missing_columns(tmp_path):
    (tmp_path / "products.csv").write_text("sku,product_type,additional_attributes\nA,simple,\n")
    with pytest.raises(CatalogError, match="no column base_image"):
        list(read_magento(tmp_path))


@pytest.mark.skipif(not (LUMA / "products.csv").is_file(), reason="the luma-sample export is not in ../shared")
def test_luma_sample_one_item_per_product_colour_photo():
    catalog = open_catalog(LUMA)
    items = _by_id(catalog.items())
    assert catalog.format == "magento"
    assert len(items) == 417 and all(catalog.image_path(i).is_file() for i in items.values())
    assert len({i.metadata["product_group"] for i in items.values()}) == 147
    assert sum(len(i.metadata["variant_skus"]) for i in items.values()) == 1847
    assert len({i.image for i in items.values()}) == 417
    assert Counter(i.metadata["gender"] for i in items.values()).keys() == {"Men", "Women"}
    assert all(isinstance(i.metadata["color"], str) and i.metadata["type"] for i in items.values())
    assert not any("<" in i.text or "&bull;" in i.text for i in items.values())


@pytest.mark.ray
@pytest.mark.skipif(not (LUMA / "products.csv").is_file(), reason="the luma-sample export is not in ../shared")
def test_luma_indexed_as_it_is_and_filtered_by_list_fields(ray_cluster, model_spec, tmp_path):
    from jobs import indexer
    from retrieval.store.factory import open_store
    from tests.conftest import index_config

    # MH01 and MH02, three colours each (too few items for colour and size to count as categorical: named here)
    cfg = index_config(LUMA, model_spec, tmp_path / "store", limit=6, filter_fields=("color", "size", "type"))
    summary = indexer.run(cfg)
    assert (summary["indexed"], summary["skipped"]) == (6, {})
    with open_store(cfg.store) as store:
        spec = store.collection_spec(store.resolve_alias(cfg.collection))
        assert spec.filter_fields == ("color", "size", "type")
        (black,) = store.retrieve(cfg.collection, ["MH01-Black"])
        assert (black.payload["size"], black.payload["product_group"]) == (["XS", "S", "M", "L", "XL"], "MH01")
        found = store.search(cfg.collection, "image", black.vectors["image"], 10, {"color": "Black", "size": "XS"})
        assert sorted(h.item_id for h in found) == ["MH01-Black", "MH02-Black"]
        assert not store.search(cfg.collection, "image", black.vectors["image"], 10, {"size": "XXL"})
