"""Segmentation on real catalog photos: u2netp, dataset annotations, Mask R-CNN plumbing, fallbacks, pipeline stages."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from retrieval.images import PreprocessConfig
from retrieval.rows import as_batch
from retrieval.segmentation import (
    QUERY_SEGMENTER_NAMES,
    SEGMENTERS,
    U2NETP_PATH,
    U2NETP_URL,
    AnnotationSegmenter,
    DecodeRGB,
    MaskRCNNSegmenter,
    PreprocessRGB,
    Segmenter,
    SegmenterError,
    SegmentImages,
    box_iou,
    expand_box,
    make_segmenter,
    mask_box,
    pad_square,
    query_options,
    segment_query,
    segmenter_options,
    with_dynamic_batch,
)

COLOURS = ("Black", "Blue", "Navy Blue", "Red", "Green", "Maroon", "Purple")  # products that stand out from white
MAX_PIXELS = 80_000_000


def _pick(offline_catalog, count: int) -> list[dict]:
    """The first `count` apparel items in strong colours: their non-white pixels are the product."""
    with (offline_catalog / "catalog.csv").open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["masterCategory"] == "Apparel" and r["baseColour"] in COLOURS]
    return rows[:count]


@pytest.fixture(scope="module")
def products(offline_catalog) -> list[Image.Image]:
    return [Image.open(offline_catalog / row["image"]).convert("RGB") for row in _pick(offline_catalog, 4)]


@pytest.fixture(scope="module")
def u2netp():
    return make_segmenter("u2netp", threads=1, batch_size=4)


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------- factory


def test_factory_error_lists_valid_names():
    with pytest.raises(SegmenterError) as err:
        make_segmenter("grabcut")
    for name in ("none", "u2netp", "annotations", "maskrcnn"):
        assert name in str(err.value)


def test_factory_names_the_segmenter_for_an_unknown_option():
    with pytest.raises(SegmenterError, match="'annotations'.*colour"):
        make_segmenter("annotations", colour="red")


def test_segmenter_options_give_each_segmenter_only_its_own(tmp_path):
    for name in ("none", "annotations", "u2netp"):
        options = segmenter_options(name, threads=1, catalog_root=tmp_path, weights="x.pth")
        assert make_segmenter(name, **options).name == name
    assert segmenter_options("maskrcnn", weights="x.pth")["weights"] == "x.pth"


def test_only_the_query_segmenters_run_on_a_shoppers_photo():
    assert QUERY_SEGMENTER_NAMES == ("none", "u2netp") and set(QUERY_SEGMENTER_NAMES) < set(SEGMENTERS)
    assert query_options("u2netp", 2) == {"threads": 2, "skip_plain": True} and query_options("none", 2) == {}
    with pytest.raises(SegmenterError, match="does not run on a shopper's photo; valid: none, u2netp"):
        query_options("annotations", 1)


def test_none_is_the_identity(products):
    results = make_segmenter("NONE").segment(products)
    for image, result in zip(products, results):
        assert result.image is image and result.box == (0, 0, *image.size) and not result.fallback


# ---------------------------------------------------------------------------------------------- geometry, fallbacks


def test_mask_box_ignores_stray_specks_and_expand_box_clips():
    mask = np.zeros((200, 100), bool)
    mask[50:150, 20:80] = True
    mask[0, 0] = mask[199, 99] = True  # two specks far away
    assert mask_box(mask) == (20, 50, 80, 150)
    assert mask_box(np.zeros((5, 5), bool)) is None
    assert expand_box((20, 50, 80, 150), 0.1, (100, 200)) == (10, 40, 90, 160)
    assert expand_box((0, 0, 100, 200), 0.1, (100, 200)) == (0, 0, 100, 200)


def test_pad_square_keeps_aspect_on_the_fill_colour():
    tall = Image.new("RGB", (40, 100), (10, 20, 30))
    square = pad_square(tall)
    assert square.size == (100, 100)
    assert square.getpixel((0, 0)) == (255, 255, 255) and square.getpixel((50, 50)) == (10, 20, 30)


@pytest.mark.parametrize("mask, reason", [
    (None, "no mask"),
    (np.zeros((224, 224), np.float32), "empty mask"),
    (np.pad(np.ones((3, 3), np.float32), ((100, 121), (100, 121))), "empty mask"),  # a speck under min_area
    (np.pad(np.ones((224, 2), np.float32), ((0, 0), (100, 122))), "degenerate mask"),  # a line: no garment
])
def test_unusable_mask_falls_back_to_the_full_image(products, mask, reason):
    result = Segmenter().cutout(products[0], mask)
    assert result.fallback and result.reason == reason
    assert result.image is products[0] and result.box == (0, 0, 224, 224)


def test_cutout_whitens_background_and_crops_to_the_mask(products):
    mask = np.zeros((224, 224), np.float32)
    mask[40:200, 60:140] = 1.0
    result = Segmenter(margin=0.0, square=False).cutout(products[0], mask)
    assert not result.fallback and result.box == (60, 40, 140, 200) and result.image.size == (80, 160)
    assert np.array_equal(np.asarray(result.image), np.asarray(products[0].crop((60, 40, 140, 200))))
    padded = Segmenter(margin=0.1).cutout(products[0], mask)
    assert padded.box == (44, 24, 156, 216) and padded.image.size == (192, 192)  # square, nothing stretched
    assert np.asarray(padded.image)[100, 5].tolist() == [255, 255, 255]  # margin outside the mask is white


# ---------------------------------------------------------------------------------------------------- u2netp


def test_u2netp_finds_the_product_on_white(u2netp, products):
    masks = u2netp.masks(products, [{}] * len(products), [1.0] * len(products))
    for image, alpha, result in zip(products, masks, u2netp.segment(products)):
        product = np.asarray(image).min(axis=-1) < 230  # the studio backdrop is white
        garment = alpha >= 0.5
        assert (garment & product).sum() / product.sum() > 0.9  # the mask covers the product
        assert (garment & product).sum() / garment.sum() > 0.9  # and little else
        x1, y1, x2, y2 = result.box
        assert not result.fallback and 0 <= x1 < x2 <= image.width and 0 <= y1 < y2 <= image.height
        inside = np.zeros_like(product)
        inside[y1:y2, x1:x2] = True
        assert (product & inside).sum() / product.sum() > 0.97
        assert result.image.width == result.image.height  # padded to square for the model's centre crop


def test_skip_plain_leaves_studio_shots_whole_and_still_segments_photos(u2netp, products):
    pytest.importorskip("skimage", reason="scikit-image provides the background photographs")
    from bench.segmentation import composite, photo_backgrounds

    matte = u2netp.masks(products[:1], [{}], [1.0])[0]
    scene, truth, _ = composite(products[0], matte, photo_backgrounds()["grass"], np.random.default_rng(1))
    skipping = make_segmenter("u2netp", skip_plain=True)
    studio, photo = skipping.segment([products[0], scene])
    assert studio.image is products[0] and studio.reason == "plain background" and not studio.fallback
    assert not photo.fallback and box_iou(photo.box, truth) > 0.5


def test_u2netp_batches_like_one_at_a_time(u2netp, products):
    batched = u2netp.masks(products[:3], [{}] * 3, [1.0] * 3)
    single = make_segmenter("u2netp", batch_size=1)
    for image, alpha in zip(products[:3], batched):
        assert np.abs(single.masks([image], [{}], [1.0])[0] - alpha).max() < 1e-2


def test_dynamic_batch_rewrite_relaxes_only_the_batch_dimension():
    import onnxruntime as ort

    session = ort.InferenceSession(with_dynamic_batch(U2NETP_PATH.read_bytes()), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, 320, 320]
    assert session.get_outputs()[0].shape == ["batch", 1, 320, 320]
    assert all(o.shape[0] == "batch" for o in session.get_outputs())


def test_u2netp_checks_the_model_file(tmp_path):
    with pytest.raises(SegmenterError, match=U2NETP_URL):
        make_segmenter("u2netp", model_path=tmp_path / "missing.onnx")
    altered = tmp_path / "u2netp.onnx"
    shutil.copyfile(U2NETP_PATH, altered)
    with altered.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(SegmenterError, match="sha256"):
        make_segmenter("u2netp", model_path=altered)


def test_u2netp_crops_a_product_back_out_of_a_real_photograph(u2netp, products):
    pytest.importorskip("skimage", reason="scikit-image provides the background photographs")
    from bench.segmentation import composite, photo_backgrounds

    photos, rng = photo_backgrounds(), np.random.default_rng(7)
    mattes = u2netp.masks(products, [{}] * len(products), [1.0] * len(products))
    # Cluttered real backdrops; photos holding a competing salient object (a person, a cup, a rocket) are where
    # salient-object segmentation can pick the wrong thing: bench.segmentation measures those.
    for name in ("chelsea", "grass", "brick", "gravel"):
        for product, matte in zip(products[::2], mattes[::2]):
            image, truth, _ = composite(product, matte, photos[name], rng, (300, 400))
            result = u2netp.segment([image])[0]
            assert not result.fallback
            assert box_iou(result.box, truth) > 0.5, (name, result.box, truth)
            assert box_iou(result.box, truth) > box_iou((0, 0, 300, 400), truth) + 0.2  # better than no crop


# ---------------------------------------------------------------------------------------------------- annotations


@pytest.fixture
def multimodal_item(tmp_path, products):
    """A DeepFashion-MM-like item: a real photo at 150x220 and a parsing PNG (top 1, skin 15, pants 5)."""
    image = products[0].resize((150, 220))
    labels = np.zeros((220, 150), np.uint8)
    labels[20:100, 30:120] = 1
    labels[100:110, 30:120] = 15
    labels[110:200, 40:110] = 5
    (tmp_path / "segm").mkdir()
    Image.fromarray(labels, "L").save(tmp_path / "segm" / "WOMEN-Tees-id_00000001-01_1_front_segm.png")
    return tmp_path, image, {"segm": "segm/WOMEN-Tees-id_00000001-01_1_front_segm.png"}


def test_annotations_parsing_mask_person_and_garments(multimodal_item):
    root, image, payload = multimodal_item
    person = make_segmenter("annotations", root=root, margin=0.0, square=False).segment([image], [payload])[0]
    assert person.box == (30, 20, 120, 200) and not person.fallback
    assert np.asarray(person.image)[130, 2].tolist() == [255, 255, 255]  # background (label 0) beside the pants
    garments = AnnotationSegmenter(root, labels="garments", margin=0.0, square=False)
    garment_pixels = np.asarray(garments.masks([image], [payload], [1.0])[0])
    assert garment_pixels[105, 60] == 0 and garment_pixels[50, 60] == 1  # skin dropped, the top kept
    tops = AnnotationSegmenter(root, labels=[1], margin=0.0, square=False).segment([image], [payload])[0]
    assert tops.box == (30, 20, 120, 100)


def test_annotations_mask_follows_a_smaller_decoded_image(multimodal_item):
    root, image, payload = multimodal_item
    half = image.resize((75, 110))
    result = AnnotationSegmenter(root, margin=0.0, square=False).segment([half], [payload], [0.5])[0]
    assert result.box == (15, 10, 60, 100)


def test_annotations_inshop_bbox_scaled_to_the_decoded_image(products):
    image = products[1].resize((256, 256))
    segmenter = AnnotationSegmenter(margin=0.0, square=False)
    full, half = segmenter.segment([image, image.resize((128, 128))], [{"bbox": [50, 49, 208, 235]}] * 2, [1.0, 0.5])
    assert full.box == (50, 49, 208, 235) and not full.fallback
    assert half.box == (25, 24, 104, 118)


def test_annotations_missing_falls_back(tmp_path, products):
    segmenter = AnnotationSegmenter(tmp_path)
    plain, broken = segmenter.segment(products[:2], [{"gender": "Men"}, {"segm": "segm/absent.png"}])
    assert plain.fallback and plain.reason == "no mask" and plain.image is products[0]
    assert broken.fallback and broken.reason == "no mask"


# ---------------------------------------------------------------------------------------------------- maskrcnn


def test_maskrcnn_refuses_random_weights_unless_allowed(tmp_path):
    with pytest.raises(SegmenterError, match="allow_random"):
        make_segmenter("maskrcnn")
    with pytest.raises(SegmenterError, match="not found"):
        make_segmenter("maskrcnn", weights=tmp_path / "nope.pth")


def test_maskrcnn_random_weights_run_end_to_end(products, tmp_path):
    import torch

    # score 0 keeps every instance, so the mask path runs even with meaningless random weights.
    segmenter = make_segmenter("maskrcnn", allow_random=True, threads=1, min_size=128, max_size=128, detections=3,
                               score=0.0, candidate_score=0.0)
    results = segmenter.segment(products[:2])
    assert len(results) == 2
    for image, result in zip(products, results):
        x1, y1, x2, y2 = result.box
        assert 0 <= x1 < x2 <= image.width and 0 <= y1 < y2 <= image.height
        assert result.image.mode == "RGB"
    path = tmp_path / "maskrcnn.pth"
    torch.save(segmenter.model.state_dict(), path)  # a weights file round-trips through weights=PATH
    assert make_segmenter("maskrcnn", weights=path, min_size=128, max_size=128).model is not None


def test_maskrcnn_keeps_only_confident_instances_of_chosen_labels():
    import torch

    segmenter = MaskRCNNSegmenter.__new__(MaskRCNNSegmenter)  # the selection rule alone, no model
    segmenter.score, segmenter.labels = 0.5, (1,)
    masks = torch.zeros(3, 1, 4, 4)
    masks[0, 0, 0, 0], masks[1, 0, 1, 1], masks[2, 0, 2, 2] = 0.9, 0.8, 0.7
    detection = {"scores": torch.tensor([0.9, 0.3, 0.8]), "labels": torch.tensor([1, 1, 31]), "masks": masks}
    alpha = segmenter._alpha(detection)
    assert alpha[0, 0] == pytest.approx(0.9) and alpha[1, 1] == 0 and alpha[2, 2] == 0
    assert segmenter._alpha({**detection, "scores": torch.tensor([0.1, 0.1, 0.1])}) is None


# ---------------------------------------------------------------------------------------------------- stages


def test_pipeline_stages_decode_segment_preprocess(offline_catalog, tmp_path):
    row = _pick(offline_catalog, 1)[0]
    photo = Image.open(offline_catalog / row["image"]).convert("RGB").resize((512, 512))
    (tmp_path / "big.jpg").write_bytes(_jpeg(photo))
    rows = [{"id": "big", "data": (tmp_path / "big.jpg").read_bytes(), "error": "",
             "payload": json.dumps({"bbox": [100, 60, 400, 480]})},
            {"id": "broken", "data": b"", "error": "missing file", "payload": json.dumps({})}]
    batch = DecodeRGB(MAX_PIXELS, min_side=256, max_side=256)(as_batch(rows))
    assert batch["rgb_size"][0].tolist() == [256, 256] and batch["rgb_scale"][0] == 0.5
    cfg = PreprocessConfig(image_size=96)
    segmented = SegmentImages("annotations", margin=0.0)(batch)
    assert json.loads(segmented["payload"][0])["crop_box"] == [100, 60, 400, 480]  # original pixels
    assert segmented["seg_fallback"].tolist() == ["", ""] and segmented["error"].tolist() == ["", "missing file"]
    pixels = PreprocessRGB(cfg)(segmented)["pixels"]
    assert len(pixels[0]) == 96 * 96 * 3 and pixels[1] == b""
    fused = SegmentImages("annotations", preprocess_cfg=cfg, margin=0.0)(batch)
    assert fused["pixels"][0] == pixels[0] and "rgb" not in fused


def test_decode_rgb_rejects_what_decode_images_rejects(salted_catalog):
    from retrieval.catalogs import open_catalog
    from retrieval.indexing import DecodeImages, ReadImages, catalog_rows

    catalog = open_catalog(salted_catalog)
    batch = ReadImages()(as_batch(catalog_rows(catalog, catalog.items())))
    expected = DecodeImages(PreprocessConfig(image_size=96), MAX_PIXELS)(batch)["error"].tolist()
    decoded = DecodeRGB(MAX_PIXELS)(batch)
    assert decoded["error"].tolist() == expected
    for raw, (width, height), error in zip(decoded["rgb"], decoded["rgb_size"], decoded["error"]):
        assert len(raw) == (0 if error else width * height * 3)


def test_u2netp_stage_counts_fallbacks_and_records_the_box(offline_catalog, u2netp):
    rows = [{"id": r["id"], "data": (offline_catalog / r["image"]).read_bytes(), "error": "",
             "payload": json.dumps({"articleType": r["articleType"]})} for r in _pick(offline_catalog, 2)]
    stage = SegmentImages(u2netp, preprocess_cfg=PreprocessConfig(image_size=96))  # an instance: no second load
    out = stage(DecodeRGB(MAX_PIXELS)(as_batch(rows)))
    for payload, fallback in zip(out["payload"], out["seg_fallback"]):
        x1, y1, x2, y2 = json.loads(payload)["crop_box"]
        assert fallback == "" and 0 <= x1 < x2 <= 224 and 0 <= y1 < y2 <= 224


def test_segment_query_returns_png_and_the_box_in_photo_pixels(u2netp, products):
    big = products[0].resize((1600, 1600))  # decoded at reduced size, the box comes back in the photo's pixels
    data, result = segment_query(_jpeg(big), u2netp)
    crop = Image.open(io.BytesIO(data))
    assert crop.format == "PNG" and crop.width == crop.height
    small = u2netp.segment([products[0]])[0]
    assert box_iou(result.box, [v * 1600 / 224 for v in small.box]) > 0.9


@pytest.mark.ray
def test_stages_run_as_a_ray_data_pipeline(ray_cluster, offline_catalog):
    """Read -> DecodeRGB (tasks) -> SegmentImages (an actor loading u2netp once) -> pixels the encoder takes."""
    import ray

    from retrieval.catalogs import open_catalog
    from retrieval.indexing import ReadImages, catalog_rows

    catalog = open_catalog(offline_catalog)
    items = [item for item, _ in zip(catalog.items(), range(4))]
    ds = (ray.data.from_items(catalog_rows(catalog, items))
          .map_batches(ReadImages(), batch_format="numpy", num_cpus=0.5)
          .map_batches(DecodeRGB(MAX_PIXELS), batch_format="numpy", num_cpus=0.5)
          .map_batches(SegmentImages, fn_constructor_args=("u2netp",),
                       fn_constructor_kwargs={"preprocess_cfg": PreprocessConfig(image_size=96), "threads": 1},
                       batch_size=4, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1))
    rows = ds.take_all()
    assert sorted(r["id"] for r in rows) == sorted(item.id for item in items)
    for row in rows:
        assert row["error"] == "" and row["seg_fallback"] == "" and len(row["pixels"]) == 96 * 96 * 3
        assert len(json.loads(row["payload"])["crop_box"]) == 4
