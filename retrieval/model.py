"""One factory for the CLIP encoder, used by the index job and the service alike (mirrors open_clip's factory)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.images import PreprocessConfig

log = logging.getLogger(__name__)

_PREFIXES = ("hf-hub:", "local-dir:")
# The precisions the encoder runs in: torch's dtype for each, and open_clip's name for it when building the model
# (pure_*: the weights themselves in that dtype, not autocast). `auto` picks one by device (resolve_precision).
# int8: built in fp32, then its Linear layers quantized to int8 (dynamic: activations scaled per call), CPU only.
PRECISIONS = {"fp32": ("float32", "fp32"), "bf16": ("bfloat16", "pure_bf16"), "fp16": ("float16", "pure_fp16"),
              "int8": ("float32", "fp32")}
PRECISION_CHOICES = (*PRECISIONS, "auto")
# Built as their table says, then quantize_linears: fbgemm's int8 kernels, so a CPU only (no CUDA implementation).
QUANTIZED = {"int8"}


class ModelLoadError(RuntimeError):
    """The model spec cannot be turned into real weights; the message says how to supply them."""


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: `NAME/TAG` (built-in + pretrained tag), `hf-hub:ORG/REPO` or `local-dir:PATH`."""

    name: str
    pretrained: str | None = None

    @classmethod
    def parse(cls, spec: str) -> "ModelSpec":
        spec = spec.strip()
        if spec.startswith("local-dir:"):  # one folder, one spelling: collections record the resolved path
            return cls(name=f"local-dir:{Path(spec.removeprefix('local-dir:')).expanduser().resolve()}")
        if spec.startswith(_PREFIXES):
            return cls(name=spec)
        name, _, tag = spec.partition("/")
        return cls(name=name, pretrained=tag or None)

    def __str__(self) -> str:
        return f"{self.name}/{self.pretrained}" if self.pretrained else self.name

    @property
    def local_dir(self) -> Path | None:
        return Path(self.name.removeprefix("local-dir:")) if self.name.startswith("local-dir:") else None


def canonical_spec(spec: str) -> str:
    """The one spelling of a model spec that collections record (a local folder as its absolute path)."""
    return str(ModelSpec.parse(spec))


def public_name(spec: str) -> str:
    """A model spec as it may be shown to anyone: a local folder by its name, not by its path on the server."""
    local = ModelSpec.parse(spec).local_dir
    return f"local-dir:{local.name}" if local is not None else spec


def resolve_device(device: str = "auto") -> str:
    """auto picks the first CUDA GPU when there is one."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but torch sees no CUDA GPU; use --device cpu")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """auto: bf16 on a GPU (halves memory traffic, keeps fp32's range), fp32 on a CPU (int8 indexes a third faster
    there with the same nDCG@10, but through Serve it showed no gain: docs/performance.md)."""
    if precision not in PRECISION_CHOICES:
        raise ModelLoadError(f"unknown precision {precision!r}; valid: {', '.join(PRECISION_CHOICES)}")
    if precision == "auto":
        return "bf16" if device.startswith("cuda") else "fp32"
    if precision in QUANTIZED and device != "cpu":
        raise ModelLoadError(f"precision {precision} runs on a CPU only, not on {device}; there use bf16 or fp16")
    return precision


# Architectures this project ships as named open_clip configs (fashion-clip-mini: the offline model's), so a model
# can be trained from scratch by name (jobs.finetune --from-scratch).
MODEL_CONFIGS = Path(__file__).with_name("model_configs")


def register_configs() -> None:
    """Add the shipped architectures to open_clip's registry (once; open_clip rescans its paths on each add)."""
    import open_clip

    if not set(p.stem for p in MODEL_CONFIGS.glob("*.json")) <= set(open_clip.list_models()):
        open_clip.add_model_config(MODEL_CONFIGS)


def _check_spec(spec: ModelSpec, allow_random: bool) -> None:
    """Fail before any download with a message naming valid choices, never fall back to random weights."""
    import open_clip

    register_configs()

    local = spec.local_dir
    if local is not None:
        missing = [f for f in ("open_clip_config.json",) if not (local / f).is_file()]
        if not local.is_dir() or missing:
            raise ModelLoadError(
                f"model spec {spec}: {local} is not an open_clip folder (needs open_clip_config.json and "
                "open_clip_model.safetensors or open_clip_pytorch_model.bin)")
        return
    if spec.name.startswith("hf-hub:"):
        return
    if spec.name not in open_clip.list_models():
        raise ModelLoadError(f"unknown model {spec.name!r}; valid names: {', '.join(open_clip.list_models())}")
    if spec.pretrained is None and not allow_random:
        tags = open_clip.list_pretrained_tags_by_model(spec.name)
        raise ModelLoadError(
            f"model spec {spec} has no pretrained tag, which would mean random weights; "
            f"use {spec.name}/<tag> with one of: {', '.join(tags) or '(none known)'}, or local-dir:PATH")


def _create(spec: ModelSpec, device: str, precision: str):
    import open_clip

    try:
        model = open_clip.create_model(spec.name, pretrained=spec.pretrained, device=device, precision=precision)
    except Exception as err:  # hub errors come as many types; all mean "no weights here"
        raise ModelLoadError(
            f"could not load weights for model spec {spec!s}: {type(err).__name__}: {err}. Without internet, "
            "download the weights elsewhere and pass local-dir:PATH (a folder with open_clip_config.json and "
            "open_clip_model.safetensors), or set HF_HUB_OFFLINE=0 / HF_HOME to a cache that holds them") from err
    model.eval()
    return model, open_clip.get_tokenizer(spec.name)


def model_config(spec: str) -> dict:
    """The open_clip architecture of a spec (`model_cfg`), as a model folder's open_clip_config.json records it."""
    import open_clip

    register_configs()
    parsed = ModelSpec.parse(spec)
    cfg = open_clip.get_model_config(parsed.name)
    if cfg is None:
        raise ModelLoadError(f"no open_clip config for model spec {spec}")
    return dict(cfg)


def load_trainable(spec: str, *, from_scratch: bool = False):
    """(model in fp32 and train mode, tokenizer) for fine-tuning a spec, or its architecture from random weights."""
    parsed = ModelSpec.parse(spec)
    if from_scratch and (parsed.local_dir is not None or parsed.name.startswith("hf-hub:")):
        raise ModelLoadError(f"--from-scratch takes an architecture name, not {spec}; valid: {', '.join(_names())}")
    _check_spec(ModelSpec(parsed.name, None if from_scratch else parsed.pretrained), allow_random=from_scratch)
    model, tokenizer = _create(ModelSpec(parsed.name, None if from_scratch else parsed.pretrained), "cpu", "fp32")
    return model.train(), tokenizer


def _names() -> list[str]:
    import open_clip

    register_configs()
    return open_clip.list_models()


def load_model(spec: str, device: str = "auto", precision: str = "fp32", *,
               allow_random: bool = False, graphs: bool | None = None) -> "ClipEncoder":
    """Build the encoder for a model spec; raises ModelLoadError with guidance when weights can't be had. `graphs`:
    run the towers as TorchScript graphs where they compile (default: the `graphs` setting, on)."""
    parsed = ModelSpec.parse(spec)
    _check_spec(parsed, allow_random)
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    model, tokenizer = _create(parsed, device, PRECISIONS[precision][1])
    if precision in QUANTIZED:
        model = quantize_linears(model)
    if graphs is None:
        from schemas.settings import get_settings

        graphs = get_settings().graphs
    encoder = ClipEncoder(model, tokenizer, spec=str(parsed), device=device, precision=precision, graphs=graphs)
    log.info("loaded %s on %s in %s (towers as graphs: text %s, image %s)", parsed, device, precision,
             encoder.text_graph is not None, encoder.image_graph is not None)
    return encoder


def quantize_linears(model):
    """The model's Linear layers as int8 weights with dynamically quantized inputs (fbgemm's int8 GEMM): the text
    tower of the offline model takes 2.2 ms instead of 3.7 for a shopper's words (docs/performance.md)."""
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch 2.14 marks its quantized tensors deprecated (torchao's API replaces them)
        warnings.simplefilter("ignore", UserWarning)
        model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    for module in model.modules():
        if hasattr(module, "get_cast_dtype"):  # open_clip reads it off a Linear's weight, which is now packed
            module.get_cast_dtype = lambda: torch.float32
    return model


def preprocess_config_of(model) -> PreprocessConfig:
    """The model's own preprocess config (open_clip keeps it on the visual tower)."""
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, (tuple, list)) else size
    return PreprocessConfig(
        image_size=int(size),
        interpolation=cfg.get("interpolation", "bicubic"),
        resize_mode=cfg.get("resize_mode", "shortest"),
        mean=tuple(cfg.get("mean", PreprocessConfig.mean)),
        std=tuple(cfg.get("std", PreprocessConfig.std)),
    )


def channel_stats(mean, std, device: str):
    """The preprocessing's per-channel mean and std as tensors that broadcast over (N, 3, H, W)."""
    import torch

    shape = (1, 3, 1, 1)
    return torch.tensor(mean, device=device).view(shape), torch.tensor(std, device=device).view(shape)


def normalise_pixels(batch, mean, std):
    """(N, H, W, 3) uint8 tensor to the model's normalised (N, 3, H, W) float32 input (on the tensor's device)."""
    return (batch.permute(0, 3, 1, 2).float().div_(255.0) - mean) / std


class ClipEncoder:
    """Image and text encoders returning L2-normalised float32 numpy arrays; pixels are normalised on the device."""

    def __init__(self, model, tokenizer, *, spec: str, device: str, precision: str, graphs: bool = False):
        """`graphs`: the towers as TorchScript graphs (retrieval/graphs.py: the same vectors, computed without
        holding the GIL); a tower TorchScript cannot compile runs eagerly."""
        import torch

        self.model, self.tokenizer = model, tokenizer
        self.spec, self.device, self.precision = spec, device, precision
        self.preprocess_cfg = preprocess_config_of(model)
        self._dtype = getattr(torch, PRECISIONS[precision][0])
        self._mean, self._std = channel_stats(self.preprocess_cfg.mean, self.preprocess_cfg.std, device)
        self._trims = trims_padding(model)
        self.text_graph, self.image_graph = self._graphs(model) if graphs else (None, None)
        projection = getattr(model, "text_projection", None)  # a matrix, or a module (a Linear, int8's packed one)
        self.dim = int(projection.shape[1]) if isinstance(projection, torch.Tensor) else self._probe_dim()

    def _graphs(self, model) -> tuple:
        import torch

        from retrieval import graphs

        text = graphs.scripted_text_tower(model, model.transformer.get_cast_dtype()) if self._trims else None
        size = self.preprocess_cfg.image_size
        return (graphs.warmed(text, self.tokenizer(["warm", "the graph up"]).to(self.device), "text tower"),
                graphs.warmed(graphs.scripted_image_tower(model),
                              torch.zeros(1, 3, size, size, dtype=self._dtype, device=self.device), "visual tower"))

    def _probe_dim(self) -> int:
        return int(self.encode_texts(["probe"]).shape[1])

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 to (N, dim) unit vectors."""
        import torch

        with torch.inference_mode():
            batch = torch.from_numpy(np.require(pixels, requirements=["C", "W"])).to(self.device, non_blocking=True)
            batch = normalise_pixels(batch, self._mean, self._std)
            tower = self.image_graph if self.image_graph is not None else self.model.encode_image
            return self._finish(tower(batch.to(self._dtype)))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """A list of strings to (N, dim) unit vectors."""
        import torch

        with torch.inference_mode():
            tokens = self.tokenizer(list(texts)).to(self.device)
            return self._finish(self._text_tower(tokens))

    def _text_tower(self, tokens):
        if self.text_graph is not None:
            return self.text_graph(tokens)
        return encode_trimmed(self.model, tokens) if self._trims else self.model.encode_text(tokens)

    @staticmethod
    def _finish(features) -> np.ndarray:
        import torch.nn.functional as F

        return F.normalize(features.float(), dim=-1).cpu().numpy().astype(np.float32, copy=False)


def trims_padding(model) -> bool:
    """Whether the text tower may run on the words' tokens alone, without the padding after the end token: a
    causal mask (no token sees the ones after it) and pooling at the end token (the highest id) make the padding
    unread. open_clip's own CLIP text tower only; others (HF text towers) run as they are."""
    mask = getattr(model, "attn_mask", None)
    return (getattr(model, "text_pool_type", None) == "argmax" and mask is not None
            and hasattr(model, "positional_embedding") and hasattr(model, "token_embedding"))


def encode_trimmed(model, tokens):
    """CLIP.encode_text over the first tokens up to the batch's last end token: a shopper's 3-6 words are a
    fraction of the context (32 or 77 positions), so the tower does a fraction of the work (docs/performance.md),
    with the same vectors (to float rounding: the padding never reaches the end token)."""
    import torch
    from open_clip.transformer import text_global_pool

    n = int(tokens.argmax(dim=-1).max()) + 1
    tokens, cast = tokens[:, :n], model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:n, :n]))
    x = text_global_pool(x, tokens, model.text_pool_type)
    projection = model.text_projection
    if projection is None:
        return x
    return x @ projection if isinstance(projection, torch.Tensor) else projection(x)
