"""Defensive image decoding and model-exact preprocessing to uint8 arrays (normalisation happens in the model batch)."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}
WHITE = (255, 255, 255)


class ImageRejected(ValueError):
    """An input that cannot be indexed; `reason` is a short machine-countable label."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class PreprocessConfig:
    """How a model wants its pixels: square size, resize mode and interpolation, plus our own options."""

    image_size: int
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"  # open_clip's: shortest (resize + centre crop), longest (letterbox), squash
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    fill: tuple[int, int, int] = WHITE
    draft: bool = True  # JPEG DCT-domain downscale before decoding: far cheaper on large photos

    def with_letterbox(self, letterbox: bool) -> "PreprocessConfig":
        """With letterbox, the same config padding to square instead of centre-cropping (a collection records which
        one its items got, and queries must get the same: the one place this choice is made)."""
        return replace(self, resize_mode="longest") if letterbox else self


def decode_image(data: bytes, *, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Bytes to an upright 8-bit RGB image, or ImageRejected with the reason."""
    if not data:
        raise ImageRejected("empty file")
    _allow_in_pil(max_pixels)
    try:
        image = Image.open(io.BytesIO(data))
        _check_size(image, max_pixels)
        if draft_size and image.format == "JPEG":
            _draft(image, draft_size)
        image.load()
    except ImageRejected:
        raise
    except UnidentifiedImageError as err:  # PIL's message names an internal buffer object: say it in our words
        raise ImageRejected("not an image", "the bytes are in no image format this service reads") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageRejected("decompression bomb", str(err)) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageRejected("corrupt or truncated", str(err)) from err
    return to_rgb(ImageOps.exif_transpose(image))


def _allow_in_pil(max_pixels: int) -> None:
    """PIL refuses an image over twice its own limit (89 Mpx) before we can look at it: where a caller allows more,
    raise PIL's limit to ours (never lower it), so that our own check below decides, with our reason."""
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _check_size(image: Image.Image, max_pixels: int) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageRejected("empty image", f"{width}x{height}")
    if width * height > max_pixels:
        raise ImageRejected("decompression bomb", f"{width}x{height} is over {max_pixels} pixels")


def _draft(image: Image.Image, size: int) -> None:
    """Ask the JPEG decoder for the smallest scale whose shorter side still covers `size`."""
    width, height = image.size
    scale = size / min(width, height)
    image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: 16-bit and float rescaled, alpha composited on white, CMYK converted."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = _high_depth_to_l(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGB", image.size, WHITE)
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit or float grey to 8 bits by its real range (PIL's own convert clips everything to white)."""
    pixels = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I") and pixels.max(initial=0) > 255 else max(pixels.max(initial=0), 1.0)
    return Image.fromarray(np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8))


def preprocess(image: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """An RGB image to a (size, size, 3) uint8 array, resized exactly as open_clip's eval transform does."""
    size, resample = cfg.image_size, _RESAMPLE[cfg.interpolation]
    if cfg.resize_mode == "squash":
        return np.asarray(image.resize((size, size), resample))
    if cfg.resize_mode == "longest":
        return np.asarray(_letterbox(image, size, resample, cfg.fill))
    return np.asarray(_centre_crop(_resize_shortest(image, size, resample), size))


def _resize_shortest(image: Image.Image, size: int, resample: int) -> Image.Image:
    # Same arithmetic as torchvision's Resize(int): the short side becomes `size`, the long side is truncated.
    width, height = image.size
    if width <= height:
        new = (size, int(size * height / width))
    else:
        new = (int(size * width / height), size)
    return image if new == image.size else image.resize(new, resample)


def _centre_crop(image: Image.Image, size: int) -> Image.Image:
    # torchvision's CenterCrop rounding, so the uint8 path matches open_clip's transform pixel for pixel.
    width, height = image.size
    left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def _letterbox(image: Image.Image, size: int, resample: int, fill: tuple[int, int, int]) -> Image.Image:
    width, height = image.size
    scale = size / max(width, height)
    resized = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), resample)
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(resized, ((size - resized.width) // 2, (size - resized.height) // 2))
    return canvas


def load_and_preprocess(data: bytes, cfg: PreprocessConfig, *, max_pixels: int) -> np.ndarray:
    """Bytes straight to the model's uint8 input, or ImageRejected."""
    image = decode_image(data, max_pixels=max_pixels, draft_size=cfg.image_size if cfg.draft else None)
    return preprocess(image, cfg)
