"""Fine-tune throughput: the Ray Train job's pairs/s against the same training step in a plain loop (no Ray, no
data pipeline: the compute floor), measured in one run on the same photos, and what a whole fine-tune of the
offline catalog costs at that rate.

python -m bench.finetune --items 1024 --steps 6          (the job's epoch over the same items runs after the loop)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np

from jobs import cli
from retrieval.catalogs import open_catalog
from retrieval.finetune import contrastive
from retrieval.finetune.pairs import split_pairs, text_for
from retrieval.indexing import DecodeImages, ReadImages, Stage, run_stages
from retrieval.model import load_trainable, preprocess_config_of
from schemas.settings import OFFLINE_CATALOG, OFFLINE_MODEL

OFFLINE_TRAIN_ITEMS = 8634  # the offline model's split.json train_ids


def plain_loop(model_spec: str, items: int, steps: int, batch: int) -> float:
    """Pairs/s of the bare step (decode excluded) on real photos and words, after one warm-up step."""
    model, tokenizer = load_trainable(model_spec)
    catalog = open_catalog(OFFLINE_CATALOG)
    rows = split_pairs(catalog, islice(catalog.items(), items), held_out_ids=[]).train[:batch]
    cfg = preprocess_config_of(model)
    decoded = run_stages([Stage(ReadImages), Stage(DecodeImages, (cfg, 80_000_000))], rows)
    pixels = np.stack([np.frombuffer(r["pixels"], np.uint8).reshape(cfg.image_size, cfg.image_size, 3)
                       for r in decoded])
    tokens = tokenizer([text_for(r, 1) for r in rows])
    optimizer, loss_fn = contrastive.optimizer_for(model, 1e-4, 0.1), contrastive.clip_loss()
    times = []
    for step in range(steps + 1):
        started = time.perf_counter()
        loss = contrastive.step_loss(model, contrastive.model_input(pixels, cfg.mean, cfg.std, flip_seed=step),
                                     tokens, loss_fn)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return batch / float(np.median(times[1:]))


def job_epoch(model_spec: str, items: int, batch: int) -> dict:
    """One epoch of the real job (Ray Train, one worker) over `items` catalog items; its own figures."""
    from jobs import finetune

    with tempfile.TemporaryDirectory() as folder:
        cfg = finetune.FinetuneConfig.from_settings(
            catalog=OFFLINE_CATALOG, model=model_spec, limit=items, epochs=1, batch_size=batch,
            held_out_fraction=0.1, out=Path(folder) / "model", storage_path=Path(folder) / "runs")
        card = finetune.run(cfg)
    return {"pairs_per_s": card["history"][1]["pairs_per_s"], "wall_s": card["wall_s"],
            "train_s": card["history"][1]["train_s"], "train_items": card["train_items"]}


@cli.entry
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.finetune", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=OFFLINE_MODEL)
    p.add_argument("--items", type=int, default=1024, help="catalog items the job's epoch reads")
    p.add_argument("--steps", type=int, default=6, help="timed steps of the plain loop")
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args(argv)
    floor = plain_loop(args.model, args.items, args.steps, args.batch_size)
    job = job_epoch(args.model, args.items, args.batch_size)
    epoch_min = OFFLINE_TRAIN_ITEMS / job["pairs_per_s"] / 60
    print(json.dumps({"plain_loop_pairs_per_s": round(floor, 1), "job": job,
                      "job_vs_plain": round(job["pairs_per_s"] / floor, 2),
                      "offline_catalog_epoch_min": round(epoch_min, 1),
                      "offline_catalog_5_epochs_min": round(5 * epoch_min, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
