"""The contrastive objective and its pieces: pixels to model input, flips, open_clip's ClipLoss with every worker's
features gathered (each worker sees all the others' negatives), AdamW groups, and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import numpy as np


def clip_loss(rank: int = 0, world: int = 1):
    """open_clip's symmetric InfoNCE; across workers each computes its own rows against every worker's columns, and
    the gather keeps gradients, so with DDP's averaging the step equals one worker's on the whole batch."""
    from open_clip.loss import ClipLoss

    return ClipLoss(local_loss=world > 1, gather_with_grad=world > 1, rank=rank, world_size=world)


def model_input(pixels: np.ndarray, mean, std, device: str = "cpu", flip_seed: int | None = None):
    """(N, H, W, 3) uint8 to normalised (N, 3, H, W) float32; with a seed, half the photos mirrored left-right."""
    import torch

    from retrieval.model import channel_stats, normalise_pixels

    # A copy: Ray Data hands out read-only arrays.
    batch = normalise_pixels(torch.from_numpy(np.array(pixels)).to(device), *channel_stats(mean, std, device))
    if flip_seed is not None:  # a mirror commutes with the per-channel normalisation
        flip = torch.rand(len(batch), generator=torch.Generator().manual_seed(flip_seed)) < 0.5
        batch[flip.to(device)] = batch[flip.to(device)].flip(-1)
    return batch


def step_loss(model, images, tokens, loss_fn):
    """One forward through the (possibly DDP-wrapped) model: its forward is what DDP synchronises."""
    image_features, text_features, logit_scale = model(images, tokens)[:3]
    return loss_fn(image_features, text_features, logit_scale)


def no_decay(name: str, param) -> bool:
    """open_clip's rule: gains, biases, norms and the temperature are not decayed."""
    return param.ndim < 2 or any(part in name for part in ("bn", "ln", "bias", "logit_scale"))


def optimizer_for(model, lr: float, weight_decay: float):
    import torch

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0},
              {"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": weight_decay}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then a cosine to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def lock_towers(model, lock_image: bool, lock_text: bool, image_groups: int = 0, text_layers: int = 0) -> None:
    """open_clip's tower locks (LiT): a locked tower trains only its last `image_groups` / `text_layers`."""
    if lock_image:
        model.lock_image_tower(unlocked_groups=image_groups)
    if lock_text:
        model.lock_text_tower(unlocked_layers=text_layers)


def clamp_temperature(model) -> None:
    """CLIP's cap on the learnt temperature (logit scale at most 100)."""
    import torch

    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
