"""The fine-tuned model as a `local-dir:` folder that open_clip, the index job and the service load by its spec:
open_clip_config.json, open_clip_model.safetensors, metrics.json and a MODEL_CARD.md."""

from __future__ import annotations

import json
from pathlib import Path

WEIGHTS = "open_clip_model.safetensors"


def preprocess_dict(model) -> dict:
    """The preprocessing a model folder records (open_clip keeps it on the visual tower)."""
    cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()
            if k in ("mean", "std", "interpolation", "resize_mode")}


def write_model_folder(out: Path, model_cfg: dict, preprocess: dict, state_dict: dict, card: dict) -> Path:
    """Writes the folder (config, fp32 weights, metrics.json, MODEL_CARD.md); returns it."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess},
                                                          indent=2))
    save_file({k: v.detach().float().contiguous().cpu() for k, v in state_dict.items()}, str(out / WEIGHTS))
    (out / "metrics.json").write_text(json.dumps(card, indent=2, default=str))
    (out / "MODEL_CARD.md").write_text(model_card(out.name, card))
    return out


def model_card(name: str, card: dict) -> str:
    """The card in words: what it is, how to load it, what it was trained on and how, and what it gained."""
    before, after = card["held_out_before"], card["held_out_after"]
    rows = "\n".join(f"| {key} | {before.get(key, 0):.3f} | {after.get(key, 0):.3f} |" for key in after)
    return f"""# {name}

Fine-tuned by `python -m jobs.finetune` from `{card['base']}`{' (from scratch: random weights)' if card['from_scratch']
                                                                 else ''}.

- Load: `local-dir:<path to this folder>` in `jobs.index --model`, `FASHION_MODEL` (the service, every job)
  or open_clip.
- Data: {card['catalog']} ({card['catalog_format']}): {card['train_items']} training items,
  {card['held_out_items']} held out ({card['split']}); skipped: {card['skipped'] or 'none'}.
- Pairs: each photo with its document or its "<colour> <type>" caption (alternating by a hash of id and epoch).
- Training: {card['epochs_run']} epochs, best epoch {card['best_epoch']} (0 = the base, kept when no epoch beat it
  on the held-out items); batch {card['batch_size']} per worker x {card['workers']} workers, AdamW lr {card['lr']}
  (warm-up {card['warmup_share']:.0%} then cosine), weight decay {card['weight_decay']}; locks: {card['locks']}.
- Hardware: {card['hardware']}; wall time {card['wall_s'] / 60:.1f} min.

## Held-out retrieval (the split's evaluation items)

| metric | before | after |
|---|---|---|
{rows}
"""
