"""U2-Net-P salient-object segmenter (onnxruntime, sha256-checked weights, batch made dynamic)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from retrieval.segmentation.base import Segmenter, SegmenterError
from schemas.settings import SHARED_ROOT

log = logging.getLogger(__name__)

U2NETP_PATH = SHARED_ROOT / "models" / "u2netp" / "u2netp.onnx"
U2NETP_URL = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2netp.onnx"
U2NETP_SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
U2NET_SIZE = 320
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


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
