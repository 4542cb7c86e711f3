"""Decoding and preprocessing: every awkward file indexes correctly or is rejected with its reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.images import ImageRejected, PreprocessConfig, decode_image, load_and_preprocess, preprocess
from tests.salted import EXPECTED, GOOD_IDS, bad_files, source_image

MAX_PIXELS = 80_000_000


@pytest.fixture(scope="module")
def files(offline_catalog):
    return bad_files(offline_catalog)


@pytest.mark.parametrize("name", [n for n, reason in EXPECTED.items() if reason and n != "missing"])
def test_bad_files_are_rejected_with_their_reason(files, name):
    with pytest.raises(ImageRejected) as err:
        decode_image(files[name], max_pixels=MAX_PIXELS)
    assert err.value.reason == EXPECTED[name]


@pytest.mark.parametrize("name", [n for n, reason in EXPECTED.items() if reason is None])
def test_awkward_files_decode_to_8bit_rgb(files, name):
    image = decode_image(files[name], max_pixels=MAX_PIXELS)
    assert image.mode == "RGB" and min(image.size) > 0
    assert np.asarray(image).std() > 5, "decoded to a flat image: content was lost"


def test_exif_rotation_is_applied(files, offline_catalog):
    upright = np.asarray(source_image(offline_catalog, GOOD_IDS[2]), dtype=np.float32)
    decoded = np.asarray(decode_image(files["exif-rotated"], max_pixels=MAX_PIXELS), dtype=np.float32)
    assert decoded.shape == upright.shape
    assert np.abs(decoded - upright).mean() < 6  # only JPEG re-encoding noise remains


def test_16bit_png_keeps_its_contrast(files, offline_catalog):
    grey = np.asarray(source_image(offline_catalog, GOOD_IDS[0]).convert("L"), dtype=np.float32)
    decoded = np.asarray(decode_image(files["png16"], max_pixels=MAX_PIXELS).convert("L"), dtype=np.float32)
    assert np.abs(decoded - grey).max() <= 1


def test_transparent_palette_pixels_become_white(files):
    decoded = np.asarray(decode_image(files["palette-alpha"], max_pixels=MAX_PIXELS))
    palette = Image.open(io.BytesIO(files["palette-alpha"]))
    transparent = np.asarray(palette) == palette.info["transparency"]
    assert transparent.any() and (decoded[transparent] == 255).all()


def test_pixel_limit_is_configurable(offline_catalog):
    data = (offline_catalog / "images" / f"{GOOD_IDS[0]}.jpg").read_bytes()
    with pytest.raises(ImageRejected, match="decompression bomb"):
        decode_image(data, max_pixels=1000)


def _open_clip_tensor(image: Image.Image, size: int) -> torch.Tensor:
    import open_clip

    transform = open_clip.image_transform(size, is_train=False)
    return transform(image)


@pytest.mark.parametrize("item", GOOD_IDS[:3])
def test_uint8_path_matches_open_clip_transform(offline_catalog, item):
    """Our uint8 preprocessing plus in-batch normalisation equals open_clip's eval transform."""
    data = (offline_catalog / "images" / f"{item}.jpg").read_bytes()
    cfg = PreprocessConfig(image_size=96, draft=False)
    ours = torch.from_numpy(load_and_preprocess(data, cfg, max_pixels=MAX_PIXELS).copy()).permute(2, 0, 1).float() / 255
    ours = (ours - torch.tensor(cfg.mean).view(3, 1, 1)) / torch.tensor(cfg.std).view(3, 1, 1)
    theirs = _open_clip_tensor(Image.open(io.BytesIO(data)).convert("RGB"), 96)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_letterbox_keeps_the_whole_garment():
    tall = Image.new("RGB", (100, 300), (200, 0, 0))
    out = preprocess(tall, PreprocessConfig(image_size=96, resize_mode="longest"))
    assert out.shape == (96, 96, 3)
    assert (out[:, 0] == 255).all() and (out[48, 48] == (200, 0, 0)).all()  # white side bars, red centre
    cropped = preprocess(tall, PreprocessConfig(image_size=96))
    assert (cropped == (200, 0, 0)).all()  # the centre crop saw only the garment's middle


def test_draft_decode_changes_embeddings_little(encoder, offline_catalog, tmp_path):
    """JPEG draft mode on a large photo: near-identical embedding for a fraction of the decode work."""
    big = source_image(offline_catalog, GOOD_IDS[5]).resize((750, 1101), Image.Resampling.BICUBIC)
    data = io.BytesIO()
    big.save(data, "JPEG", quality=92)
    exact = load_and_preprocess(data.getvalue(), encoder.preprocess_cfg.__class__(image_size=96, draft=False),
                                max_pixels=MAX_PIXELS)
    drafted = load_and_preprocess(data.getvalue(), PreprocessConfig(image_size=96, draft=True), max_pixels=MAX_PIXELS)
    a, b = encoder.encode_images(np.stack([exact, drafted]))
    assert float(a @ b) > 0.98
