"""The encode path on a CUDA GPU (skipped without one): device placement, bf16, and the index stage, each checked
against the CPU's fp32 vectors of the same real photos and words."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retrieval.images import load_and_preprocess
from retrieval.model import load_model

pytestmark = pytest.mark.gpu
PHOTOS = ("10438", "10127", "10003", "10196")
WORDS = ["blue jeans", "red dress for women", "white sports shoes"]


@pytest.fixture(scope="module")
def pixels(encoder, offline_catalog):
    return np.stack([load_and_preprocess((offline_catalog / "images" / f"{i}.jpg").read_bytes(),
                                         encoder.preprocess_cfg, max_pixels=80_000_000) for i in PHOTOS])


@pytest.mark.parametrize("precision, min_cosine", [("fp32", 0.9999), ("bf16", 0.99), ("auto", 0.99)])
def test_cuda_vectors_match_the_cpu(encoder, model_spec, pixels, precision, min_cosine):
    gpu = load_model(model_spec, device="cuda", precision=precision)
    assert gpu.device == "cuda" and next(gpu.model.parameters()).is_cuda
    assert gpu.precision == ("bf16" if precision == "auto" else precision)
    for mine, reference in ((gpu.encode_images(pixels), encoder.encode_images(pixels)),
                            (gpu.encode_texts(WORDS), encoder.encode_texts(WORDS))):
        assert mine.dtype == np.float32 and np.allclose(np.linalg.norm(mine, axis=1), 1, atol=1e-3)
        assert float(np.min(np.sum(mine * reference, axis=1))) >= min_cosine


def test_index_stage_on_cuda_matches_cpu(model_spec, pixels):
    from retrieval.indexing import EncodeItems, column

    batch = {"id": column(list(PHOTOS)), "error": column([""] * len(PHOTOS)),
             "pixels": column([p.tobytes() for p in pixels]), "text": column(WORDS + [""])}
    on_gpu = EncodeItems(model_spec, device="cuda")(dict(batch))
    on_cpu = EncodeItems(model_spec, device="cpu", threads=1)(dict(batch))
    assert on_gpu["text_vector"][-1] == on_cpu["text_vector"][-1] == b""  # the item without words: no text vector
    pairs = [*zip(on_gpu["vector"], on_cpu["vector"]), *zip(on_gpu["text_vector"][:-1], on_cpu["text_vector"][:-1])]
    for a, b in pairs:
        assert float(np.frombuffer(a, np.float32) @ np.frombuffer(b, np.float32)) > 0.9999


def test_finetune_step_on_cuda_in_bf16_matches_the_cpu(model_spec, pixels):
    """The fine-tune step's device placement and bf16 autocast: the loss agrees with the CPU's fp32 one, and the
    gradients land on the GPU."""
    import torch

    from retrieval.finetune import contrastive
    from retrieval.model import load_trainable

    losses = {}
    for device in ("cpu", "cuda"):
        model, tokenizer = load_trainable(model_spec)
        model = model.to(device)
        cfg = model.visual.preprocess_cfg
        images = contrastive.model_input(pixels, cfg["mean"], cfg["std"], device)
        tokens = tokenizer(WORDS + ["black watch"]).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = contrastive.step_loss(model, images, tokens, contrastive.clip_loss())
        loss.backward()
        assert all(p.grad.is_cuda == (device == "cuda") for p in model.parameters() if p.grad is not None)
        losses[device] = float(loss)
    assert np.isfinite(losses["cuda"]) and abs(losses["cuda"] - losses["cpu"]) <= 0.05 * abs(losses["cpu"])


@pytest.mark.ray
def test_finetune_job_trains_on_every_gpu(ray_cluster, offline_catalog, model_spec, tmp_path, capsys):
    """The job on GPU workers (one per GPU the machine has): it finishes and writes a model folder."""
    import torch

    from jobs import finetune

    workers = torch.cuda.device_count()
    code = finetune.main(["--catalog", str(offline_catalog), "--model", model_spec, "--limit", "600", "--epochs", "1",
                          "--gpus", "1", "--workers", str(workers), "--cpus-per-worker", "0.5",
                          "--out", str(tmp_path / "model"), "--storage-path", str(tmp_path / "runs")])
    assert code == 0 and (tmp_path / "model" / "open_clip_model.safetensors").is_file()
    card = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert card["workers"] == workers and "CPU" not in card["hardware"]
