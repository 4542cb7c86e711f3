"""Garment isolation before encoding: pluggable segmenters (none, u2netp, annotations, maskrcnn) and pipeline stages."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from retrieval.images import WHITE, ImageRejected, PreprocessConfig, decode_image, preprocess
from retrieval.settings import SHARED_ROOT
from retrieval.stages import Batch, column

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 (x2, y2 exclusive), pixels
SEGMENTER_NAMES = ("none", "u2netp", "annotations", "maskrcnn")

U2NETP_PATH = SHARED_ROOT / "models" / "u2netp" / "u2netp.onnx"
U2NETP_URL = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2netp.onnx"
U2NETP_SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
U2NET_SIZE = 320
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

# DeepFashion-MultiModal human parsing classes (its README); 0 is background.
PARSING_CLASSES = ("background", "top", "outer", "skirt", "dress", "pants", "leggings", "headwear", "eyeglass",
                   "neckwear", "belt", "footwear", "bag", "hair", "face", "skin", "ring", "wrist wearing", "socks",
                   "gloves", "necklace", "rompers", "earrings", "tie")
GARMENT_LABELS = (1, 2, 3, 4, 5, 6, 21)  # top, outer, skirt, dress, pants, leggings, rompers


class SegmenterError(ValueError):
    """A segmenter that cannot be built (unknown name or option, missing or wrong weights); says how to fix it."""


@dataclass(frozen=True)
class SegmentResult:
    """The garment crop, its box in the input image's pixels, and whether it fell back to the full image (why)."""

    image: Image.Image
    box: Box
    fallback: bool = False
    reason: str = ""


# ---------------------------------------------------------------------------------------------------- geometry


def _span(profile: np.ndarray, trim: float) -> tuple[int, int]:
    """Smallest [lo, hi) holding all but `trim` of the profile's mass at each end (stray specks fall outside)."""
    cumulative = np.cumsum(profile) / profile.sum()
    lo = int(np.searchsorted(cumulative, trim, side="right"))
    hi = int(np.searchsorted(cumulative, 1.0 - trim, side="left")) + 1
    return lo, max(hi, lo + 1)


def mask_box(binary: np.ndarray, trim: float = 0.002) -> Box | None:
    """Bounding box of a boolean (H, W) mask, robust to a few stray pixels; None for an empty mask."""
    if not binary.any():
        return None
    x1, x2 = _span(binary.sum(axis=0, dtype=np.float64), trim)
    y1, y2 = _span(binary.sum(axis=1, dtype=np.float64), trim)
    return x1, y1, x2, y2


def expand_box(box: Box, margin: float, size: tuple[int, int]) -> Box:
    """The box grown by `margin` x its longer side on every side, clipped to the image."""
    x1, y1, x2, y2 = box
    pad = round(margin * max(x2 - x1, y2 - y1))
    return max(0, x1 - pad), max(0, y1 - pad), min(size[0], x2 + pad), min(size[1], y2 + pad)


def pad_square(image: Image.Image, fill: tuple[int, int, int] = WHITE) -> Image.Image:
    """Centre the image on a square canvas of the fill colour, so a centre-crop preprocess loses nothing."""
    side = max(image.size)
    if image.width == image.height:
        return image
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def plain_background(image: Image.Image, fill: tuple[int, int, int] = WHITE, tolerance: int = 16,
                     share: float = 0.5) -> bool:
    """Whether at least `share` of the 2-pixel border is the fill colour: a studio shot with nothing to remove.

    The offline catalog's photos have 72-100 % of their border white (1st-50th percentile); product photos
    composited onto real photographs 0-5 %.
    """
    pixels = np.asarray(image.convert("RGB"), np.int16)
    border = np.concatenate([pixels[:2].reshape(-1, 3), pixels[-2:].reshape(-1, 3),
                             pixels[:, :2].reshape(-1, 3), pixels[:, -2:].reshape(-1, 3)])
    return float((np.abs(border - np.array(fill)).max(axis=1) <= tolerance).mean()) >= share


def left_whole(image: Image.Image) -> SegmentResult:
    """A studio shot kept as it is on purpose (skip_plain): not a fallback."""
    return SegmentResult(image, (0, 0, image.width, image.height), fallback=False, reason="plain background")


def full_image(image: Image.Image, reason: str = "") -> SegmentResult:
    """The image untouched; a fallback when a reason is given."""
    return SegmentResult(image, (0, 0, image.width, image.height), fallback=bool(reason), reason=reason)


# ---------------------------------------------------------------------------------------------------- base class


class Segmenter:
    """Turns images into garment crops; subclasses only say where the soft mask (H, W floats in [0, 1]) comes from.

    threshold: mask value counted as garment; margin: fraction of the box's longer side kept around it;
    fill: colour replacing the background (white, as the letterbox fill and the catalog's studio backdrop);
    square: pad the crop to a square with the fill colour (the model's centre crop then cuts nothing);
    min_area: a mask below this fraction of the image, or under min_side pixels wide, falls back to the full image;
    skip_plain: leave photos whose border is already the fill colour (studio shots) whole, without running the model
    (reason "plain background", not a fallback): cropping them would only change their framing.
    """

    name = "base"

    def __init__(self, *, threshold: float = 0.5, margin: float = 0.05, fill: tuple[int, int, int] = WHITE,
                 square: bool = True, min_area: float = 0.002, min_side: int = 4, skip_plain: bool = False):
        self.threshold, self.margin, self.fill, self.square = threshold, margin, tuple(fill), square
        self.min_area, self.min_side, self.skip_plain = min_area, min_side, skip_plain

    def masks(self, images: list[Image.Image], payloads: list[dict], scales: list[float]) -> list[np.ndarray | None]:
        """One soft mask per image at the image's size, or None where there is none."""
        raise NotImplementedError

    def segment(self, images: list[Image.Image], payloads: list[dict] | None = None,
                scales: list[float] | None = None) -> list[SegmentResult]:
        """Garment crops for a batch of RGB images; payloads carry annotations, scales are decoded/original px."""
        payloads = payloads if payloads is not None else [{} for _ in images]
        scales = scales if scales is not None else [1.0] * len(images)
        todo = [i for i, image in enumerate(images) if not (self.skip_plain and plain_background(image, self.fill))]
        masks = self.masks([images[i] for i in todo], [payloads[i] for i in todo], [scales[i] for i in todo])
        by_index = dict(zip(todo, masks))
        return [self.cutout(image, by_index[i]) if i in by_index else left_whole(image)
                for i, image in enumerate(images)]

    def __call__(self, images: list[Image.Image], payloads: list[dict] | None = None,
                 scales: list[float] | None = None) -> list[SegmentResult]:
        return self.segment(images, payloads, scales)

    def cutout(self, image: Image.Image, alpha: np.ndarray | None) -> SegmentResult:
        """Background to the fill colour, crop to the mask's box plus margin; the full image if the mask is unusable."""
        box, reason = self._usable_box(alpha)
        if box is None:
            return full_image(image, reason)
        matte = Image.fromarray(np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        keyed = Image.composite(image, Image.new("RGB", image.size, self.fill), matte)
        crop_box = expand_box(box, self.margin, image.size)
        crop = keyed.crop(crop_box)
        return SegmentResult(pad_square(crop, self.fill) if self.square else crop, crop_box)

    def _usable_box(self, alpha: np.ndarray | None) -> tuple[Box | None, str]:
        if alpha is None:
            return None, "no mask"
        binary = alpha >= self.threshold
        if binary.mean() < self.min_area:
            return None, "empty mask"
        box = mask_box(binary)
        if box is None or min(box[2] - box[0], box[3] - box[1]) < self.min_side:
            return None, "degenerate mask"
        return box, ""


class NoSegmenter(Segmenter):
    """Identity: every image is its own crop (and never counts as a fallback)."""

    name = "none"

    def __init__(self, **_ignored: Any):
        super().__init__()

    def segment(self, images, payloads=None, scales=None) -> list[SegmentResult]:
        return [full_image(image) for image in images]


# ---------------------------------------------------------------------------------------------------- u2netp


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _u2netp_bytes(path: Path, sha256: str | None) -> bytes:
    """The model file's bytes, checked against the released checksum; a missing or altered file says what to do."""
    if not path.is_file():
        raise SegmenterError(f"u2netp model not found at {path}; download {U2NETP_URL} (sha256 {U2NETP_SHA256}) "
                             "and pass model_path=..., or put it at that path")
    actual = sha256_of(path)
    if sha256 and actual != sha256:
        raise SegmenterError(f"{path} has sha256 {actual}, expected {sha256}: not the released u2netp.onnx "
                             f"(re-download {U2NETP_URL}, or pass sha256=None for a model of your own)")
    return path.read_bytes()


class U2NetP(Segmenter):
    """U^2-Net small (salient object) with onnxruntime, preprocessed and post-processed exactly as rembg does.

    The offline kit ships the model at ../shared/models/u2netp/u2netp.onnx. With internet, fetch rembg's release:
        curl -L -o u2netp.onnx https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2netp.onnx
        sha256sum u2netp.onnx   # 309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8
    and pass model_path=...; the checksum is verified on load (sha256=None accepts another export of U^2-Net).
    Images run `batch_size` at a time (the released graph's fixed batch of 1 is relaxed in memory);
    `threads` is onnxruntime's intra-op thread count (match it to the CPUs the Ray actor asked for).
    """

    name = "u2netp"

    def __init__(self, model_path: str | Path | None = None, *, threads: int = 1, batch_size: int = 8,
                 sha256: str | None = U2NETP_SHA256, providers: Sequence[str] = ("CPUExecutionProvider",),
                 **common: Any):
        super().__init__(**common)
        model = _u2netp_bytes(Path(model_path) if model_path else U2NETP_PATH, sha256)
        self.batch_size = max(1, batch_size)
        self.session = self._session(model, threads, list(providers))
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name  # d1, the fused saliency map rembg uses

    def _session(self, model: bytes, threads: int, providers: list[str]):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = max(1, threads), 1
        try:
            return ort.InferenceSession(with_dynamic_batch(model), options, providers=providers)
        except Exception as err:  # noqa: BLE001 - an export whose batch cannot be relaxed still runs one by one
            log.warning("u2netp: batch dimension not relaxable (%s); running one image at a time", err)
            self.batch_size = 1
            return ort.InferenceSession(model, options, providers=providers)

    def masks(self, images, payloads, scales) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            batch = np.stack([u2net_input(im) for im in chunk])
            d1 = self.session.run([self.output_name], {self.input_name: batch})[0]
            out.extend(u2net_alpha(pred[0], im.size) for pred, im in zip(d1, chunk))
        return out


def u2net_input(image: Image.Image) -> np.ndarray:
    """rembg's normalisation: 320x320 Lanczos, divide by the image maximum, ImageNet mean/std, CHW float32."""
    pixels = np.asarray(image.convert("RGB").resize((U2NET_SIZE, U2NET_SIZE), Image.Resampling.LANCZOS),
                        dtype=np.float32)
    pixels = pixels / max(float(pixels.max()), 1e-6)
    return ((pixels - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).astype(np.float32)


def u2net_alpha(pred: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """d1 min-max normalised, to 8 bits and back up to the image size (Lanczos), as rembg; None if it is flat."""
    lo, hi = float(pred.min()), float(pred.max())
    if hi - lo < 1e-6:
        return None
    matte = Image.fromarray(((pred - lo) / (hi - lo) * 255).astype(np.uint8), "L")
    return np.asarray(matte.resize(size, Image.Resampling.LANCZOS), dtype=np.float32) / 255.0


# A minimal protobuf rewrite (onnx is not a dependency): ModelProto.graph(7) -> input(11)/output(12)
# -> ValueInfoProto.type(2) -> TypeProto.tensor_type(1) -> Tensor.shape(2) -> first dim becomes dim_param "batch".
_SHAPE_PATH = ((7,), (11, 12), (2,), (1,), (2,))


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def _fields(buf: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, field start, payload start, field end) for each field of a message."""
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _read_varint(buf, pos)
        wire, payload = key & 7, pos
        if wire == 0:
            _, pos = _read_varint(buf, pos)
        elif wire == 2:
            length, payload = _read_varint(buf, pos)
            pos = payload + length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield key >> 3, wire, start, payload, pos


def _rewrite(buf: bytes, path: tuple[tuple[int, ...], ...]) -> bytes:
    out = bytearray()
    for number, wire, start, payload, end in _fields(buf):
        if wire != 2 or number not in path[0]:
            out += buf[start:end]
            continue
        inner = buf[payload:end]
        inner = _rewrite(inner, path[1:]) if len(path) > 1 else _symbolic_first_dim(inner)
        out += _varint(number << 3 | 2) + _varint(len(inner)) + inner
    return bytes(out)


def _symbolic_first_dim(shape: bytes) -> bytes:
    """TensorShapeProto with its first dim replaced by Dimension{dim_param: "batch"}."""
    dim = b"\x12\x05batch"  # field 2 (dim_param), length 5
    for number, wire, start, _, end in _fields(shape):
        if number == 1 and wire == 2:
            return shape[:start] + b"\x0a" + _varint(len(dim)) + dim + shape[end:]
    return shape


def with_dynamic_batch(model: bytes) -> bytes:
    """The ONNX model with a symbolic batch dimension on its inputs and outputs (U^2-Net is fully convolutional)."""
    return _rewrite(model, _SHAPE_PATH)


# ---------------------------------------------------------------------------------------------------- annotations


class AnnotationSegmenter(Segmenter):
    """Masks and boxes shipped with the dataset, read from each item's payload.

    `segm`: a DeepFashion-MultiModal human-parsing PNG, relative to the catalog `root` (label 0 = background);
    `labels` keeps "person" (every non-zero label), "garments" (GARMENT_LABELS) or the given label ids.
    `bbox`: an In-shop box [x1, y1, x2, y2] in original pixels (scaled by the image's decode scale).
    Items with neither fall back to the full image.
    """

    name = "annotations"

    def __init__(self, root: str | Path | None = None, *, labels: str | Iterable[int] = "person", **common: Any):
        super().__init__(**common)
        self.root = Path(root) if root is not None else Path(".")
        self.labels = _label_set(labels)

    def masks(self, images, payloads, scales) -> list[np.ndarray | None]:
        return [self._mask(image, payload, scale) for image, payload, scale in zip(images, payloads, scales)]

    def _mask(self, image: Image.Image, payload: dict, scale: float) -> np.ndarray | None:
        if payload.get("segm"):
            return self._parsing_mask(self.root / payload["segm"], image.size)
        if payload.get("bbox"):
            return box_mask(payload["bbox"], image.size, scale)
        return None

    def _parsing_mask(self, path: Path, size: tuple[int, int]) -> np.ndarray | None:
        try:
            with Image.open(path) as segm:
                labels = segm if segm.mode in ("P", "L") else segm.convert("L")
                labels = labels.resize(size, Image.Resampling.NEAREST) if labels.size != size else labels
                labels = np.asarray(labels)
        except (OSError, ValueError) as err:
            log.warning("unreadable parsing mask %s: %s", path, err)
            return None
        keep = labels != 0 if self.labels is None else np.isin(labels, self.labels)
        return keep.astype(np.float32)


def _label_set(labels: str | Iterable[int]) -> tuple[int, ...] | None:
    if labels == "person":
        return None
    if labels == "garments":
        return GARMENT_LABELS
    if isinstance(labels, str):
        raise SegmenterError(f"labels must be 'person', 'garments' or label ids, not {labels!r}")
    return tuple(int(label) for label in labels)


def box_mask(bbox: Sequence[float], size: tuple[int, int], scale: float = 1.0) -> np.ndarray:
    """A (H, W) mask of ones inside [x1, y1, x2, y2] (given in original pixels, `scale` = decoded/original)."""
    x1, y1, x2, y2 = (int(round(v * scale)) for v in bbox)
    mask = np.zeros((size[1], size[0]), np.float32)
    mask[max(0, y1):max(0, y2), max(0, x1):max(0, x2)] = 1.0
    return mask


# ---------------------------------------------------------------------------------------------------- maskrcnn


class MaskRCNNSegmenter(Segmenter):
    """torchvision's Mask R-CNN (maskrcnn_resnet50_fpn): the union of its instance masks above `score`.

    weights: a path to a state_dict (torch.save(model.state_dict(), path)), or "DEFAULT" for torchvision's COCO
    weights (downloaded once to $TORCH_HOME, needs internet). Random weights only with allow_random=True (tests
    and cost measurements): without weights and without that flag this refuses to start.
    labels: COCO category ids to keep (None: any detection); min_size/max_size: the detector's input resize.
    """

    name = "maskrcnn"

    def __init__(self, weights: str | Path | None = None, *, allow_random: bool = False, device: str = "cpu",
                 score: float = 0.5, labels: Iterable[int] | None = None, min_size: int = 512, max_size: int = 853,
                 detections: int = 10, candidate_score: float = 0.05, batch_size: int = 4,
                 threads: int | None = None, **common: Any):
        super().__init__(**common)
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.device, self.score, self.batch_size = device, score, max(1, batch_size)
        self.labels = tuple(labels) if labels is not None else None
        detector = {"min_size": min_size, "max_size": max_size, "box_detections_per_img": detections,
                    "box_score_thresh": candidate_score}
        self.model = build_maskrcnn(weights, allow_random, detector).to(device).eval()

    def masks(self, images, payloads, scales) -> list[np.ndarray | None]:
        import torch
        from torchvision.transforms.functional import pil_to_tensor

        tensors = [pil_to_tensor(image).float().div_(255) for image in images]
        out: list[np.ndarray | None] = []
        with torch.inference_mode():
            for start in range(0, len(tensors), self.batch_size):
                chunk = [t.to(self.device) for t in tensors[start:start + self.batch_size]]
                out.extend(self._alpha(detection) for detection in self.model(chunk))
        return out

    def _alpha(self, detection: dict) -> np.ndarray | None:
        """Pixelwise max of the kept instances' soft masks, or None when nothing passes."""
        keep = detection["scores"] >= self.score
        if self.labels is not None:
            keep &= _isin(detection["labels"], self.labels)
        if not bool(keep.any()):
            return None
        return detection["masks"][keep, 0].amax(dim=0).float().cpu().numpy()


def _isin(values, allowed: tuple[int, ...]):
    import torch

    return torch.isin(values, torch.tensor(allowed, device=values.device))


def build_maskrcnn(weights: str | Path | None, allow_random: bool, detector: dict):
    """The detector with real weights, or random ones only when explicitly allowed."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights, maskrcnn_resnet50_fpn

    if weights is None:
        if not allow_random:
            raise SegmenterError("maskrcnn needs weights: weights=PATH (a saved state_dict) or weights='DEFAULT' "
                                 "(torchvision's COCO weights, downloaded with internet); random weights only "
                                 "with allow_random=True, for tests")
        log.warning("maskrcnn: RANDOM weights (allow_random=True): masks are meaningless, use for plumbing only")
        return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **detector)
    if str(weights).upper() in ("DEFAULT", "COCO_V1"):
        return _download_maskrcnn(MaskRCNN_ResNet50_FPN_Weights.COCO_V1, detector)
    return _maskrcnn_from_file(Path(weights), detector)


def _download_maskrcnn(weights, detector: dict):
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    try:
        return maskrcnn_resnet50_fpn(weights=weights, **detector)
    except Exception as err:  # noqa: BLE001 - no internet and no cache: say how to provide the file
        raise SegmenterError(f"could not get torchvision's Mask R-CNN weights ({err}); download {weights.url} "
                             "elsewhere and pass weights=PATH") from err


def _maskrcnn_from_file(path: Path, detector: dict):
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    if not path.is_file():
        raise SegmenterError(f"maskrcnn weights {path} not found")
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **detector)
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, ValueError) as err:
        raise SegmenterError(f"{path} is not a maskrcnn_resnet50_fpn state_dict: {err}") from err
    return model


# ---------------------------------------------------------------------------------------------------- factory

_CLASSES = {"none": NoSegmenter, "u2netp": U2NetP, "annotations": AnnotationSegmenter,
            "maskrcnn": MaskRCNNSegmenter}


def make_segmenter(name: str, **options: Any) -> Segmenter:
    """The segmenter called `name` (none, u2netp, annotations, maskrcnn) built with its options."""
    cls = _CLASSES.get(str(name).strip().lower())
    if cls is None:
        raise SegmenterError(f"unknown segmenter {name!r}; valid names: {', '.join(SEGMENTER_NAMES)}")
    try:
        return cls(**options)
    except TypeError as err:  # an unknown option: name the segmenter, not a constructor
        raise SegmenterError(f"segmenter {name!r}: {err}") from err


def segmenter_options(name: str, *, threads: int = 1, catalog_root: str | Path | None = None, device: str = "cpu",
                      weights: str | None = None) -> dict[str, Any]:
    """From a job's flags, the options the named segmenter takes (each takes only its own)."""
    name = str(name).strip().lower()
    if name == "u2netp":
        return {"threads": threads}
    if name == "annotations":
        return {"root": str(catalog_root)} if catalog_root is not None else {}
    if name == "maskrcnn":
        return {"threads": threads, "device": device, "weights": weights}
    return {}


# ---------------------------------------------------------------------------------------------------- stages



def rgb_to_bytes(image: Image.Image) -> tuple[bytes, tuple[int, int]]:
    return image.tobytes(), image.size


def rgb_from_bytes(data: bytes, size: Sequence[int]) -> Image.Image:
    return Image.frombytes("RGB", (int(size[0]), int(size[1])), data)


def png_bytes(image: Image.Image) -> bytes:
    """Lossless bytes of an image, for code that takes encoded image bytes (the query path)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode_for_segmentation(data: bytes, *, max_pixels: int, min_side: int = 512,
                            max_side: int = 1024) -> tuple[Image.Image, float]:
    """Bytes to an upright RGB image of moderate size and its scale (decoded px per original px)."""
    image = decode_image(data, max_pixels=max_pixels, draft_size=min_side)  # rejects bad bytes with a reason
    with Image.open(io.BytesIO(data)) as header:
        original_long = max(header.size)  # before the JPEG draft; the longer side does not care about EXIF turns
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image, max(image.size) / max(original_long, 1)


class DecodeRGB:
    """CPU-task stage: `data` -> `rgb` (raw RGB bytes), `rgb_size` ([w, h]) and `rgb_scale`; rejects go to `error`."""

    def __init__(self, max_pixels: int, min_side: int = 512, max_side: int = 1024):
        self.max_pixels, self.min_side, self.max_side = max_pixels, min_side, max_side

    def __call__(self, batch: Batch) -> Batch:
        decoded = [self._decode(data, error) for data, error in zip(batch["data"], batch["error"])]
        raw = [rgb_to_bytes(image) if image is not None else (b"", (0, 0)) for image, _, _ in decoded]
        out = {k: v for k, v in batch.items() if k != "data"}
        return {**out, "rgb": column([data for data, _ in raw]),
                "rgb_size": np.array([size for _, size in raw], np.int64).reshape(-1, 2),
                "rgb_scale": np.array([scale for _, scale, _ in decoded], np.float64),
                "error": column([error for _, _, error in decoded])}

    def _decode(self, data: bytes, error: str) -> tuple[Image.Image | None, float, str]:
        if error:
            return None, 0.0, error
        try:
            image, scale = decode_for_segmentation(data, max_pixels=self.max_pixels, min_side=self.min_side,
                                                   max_side=self.max_side)
            return image, scale, ""
        except ImageRejected as err:
            return None, 0.0, err.reason


class SegmentImages:
    """Actor-pool stage (model loaded once per actor): `rgb` -> the garment crop.

    `name` is a segmenter name and its options (what Ray ships to each actor), or a built Segmenter (in-process).
    Adds `crop_box` ([x1, y1, x2, y2] in original pixels) to each row's `payload` JSON and a `seg_fallback`
    column (the reason, "" when the mask was used). With `preprocess_cfg`, it also preprocesses: the crop leaves as
    `pixels` (the model's uint8 input, as DecodeImages makes it) and `rgb` is dropped.
    """

    def __init__(self, name: str | Segmenter, preprocess_cfg: PreprocessConfig | None = None, **options: Any):
        self.segmenter = name if isinstance(name, Segmenter) else make_segmenter(name, **options)
        self.preprocess_cfg = preprocess_cfg

    def __call__(self, batch: Batch) -> Batch:
        ok = [i for i, error in enumerate(batch["error"]) if not error]
        images = [rgb_from_bytes(batch["rgb"][i], batch["rgb_size"][i]) for i in ok]
        payloads = [json.loads(batch["payload"][i]) for i in ok]
        scales = [float(batch["rgb_scale"][i]) or 1.0 for i in ok]
        results = self.segmenter.segment(images, payloads, scales) if ok else []
        return self._columns(batch, ok, results, payloads, scales)

    def _columns(self, batch: Batch, ok: list[int], results: list[SegmentResult], payloads: list[dict],
                 scales: list[float]) -> Batch:
        n = len(batch["error"])
        payload, fallback = list(batch["payload"]), [""] * n
        rgb, sizes = list(batch["rgb"]), np.array(batch["rgb_size"], np.int64).reshape(-1, 2)
        for i, result, item, scale in zip(ok, results, payloads, scales):
            payload[i] = json.dumps({**item, "crop_box": [round(v / scale) for v in result.box]})
            fallback[i] = result.reason
            rgb[i], sizes[i] = rgb_to_bytes(result.image)
        out = {**batch, "payload": column(payload), "seg_fallback": column(fallback), "rgb": column(rgb),
               "rgb_size": sizes}
        return out if self.preprocess_cfg is None else PreprocessRGB(self.preprocess_cfg)(out)


class PreprocessRGB:
    """CPU-task stage: `rgb` -> `pixels`, the model's uint8 input as raw bytes (empty for rejected rows)."""

    def __init__(self, cfg: PreprocessConfig):
        self.cfg = cfg

    def __call__(self, batch: Batch) -> Batch:
        pixels = [preprocess(rgb_from_bytes(raw, size), self.cfg).tobytes() if raw else b""
                  for raw, size in zip(batch["rgb"], batch["rgb_size"])]
        rest = {k: v for k, v in batch.items() if k not in ("rgb", "rgb_size", "rgb_scale")}
        return {**rest, "pixels": column(pixels)}


def segment_query(data: bytes, segmenter: Segmenter, *, max_pixels: int = 80_000_000) -> tuple[bytes, SegmentResult]:
    """Query path: photo bytes -> the garment crop as PNG bytes (feed them to encode_query) and the result."""
    image, scale = decode_for_segmentation(data, max_pixels=max_pixels)
    result = segmenter.segment([image])[0]
    box = tuple(round(v / (scale or 1.0)) for v in result.box)  # in the photo's own pixels
    return png_bytes(result.image), replace(result, box=box)
