"""Fine-tune job: the CLIP model on a catalog's own photos and words (Ray Train, data-parallel), written as a model
folder that the index job and the service load as `local-dir:OUT`.

Run locally:   python -m jobs.finetune --catalog ../shared/datasets/luma-sample --out var/models/luma-ft
From scratch:  python -m jobs.finetune --from-scratch --model fashion-clip-mini --lr 1e-3 --epochs 25 ...
On a cluster:  ray job submit --working-dir . -- python -m jobs.finetune --catalog /abs/path --workers 4 ...

A run keeps a checkpoint per epoch under --storage-path; rerun the same command after a crash or a kill and it
resumes from the last one (a changed recipe is a new run). Items held out (a split file, or the hash of the product
group that jobs.make_queries uses) are never trained on; the best epoch on them is the one written (epoch 0, the
base itself, when no epoch beat it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import sys
import time
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np

from jobs import cli
from retrieval import splits
from retrieval.catalogs import open_catalog
from retrieval.finetune import export
from retrieval.finetune.pairs import Pairs, split_pairs
from schemas.finetune import FinetuneConfig
from schemas.jobs import CATALOG_FORMATS

log = logging.getLogger("jobs.finetune")
ROW_COLUMNS = ["id", "document", "caption", "pixels"]
MIN_STEPS, MIN_BATCH = 8, 32


class FinetuneError(cli.UsageError):
    """A run that cannot start or finish as asked; the message says why."""


def build_parser() -> argparse.ArgumentParser:
    """Every FinetuneConfig knob as a flag; defaults and help from the config schema and the settings."""
    p = argparse.ArgumentParser(prog="python -m jobs.finetune", description=__doc__.splitlines()[0])
    cli.add_field(p, FinetuneConfig, "catalog")
    cli.add_field(p, FinetuneConfig, "catalog_format", choices=CATALOG_FORMATS)
    cli.add_field(p, FinetuneConfig, "text_fields", type=cli.comma_list, metavar="A,B,...")
    for name in FinetuneConfig.model_fields:
        if name not in ("catalog", "catalog_format", "text_fields"):
            cli.add_field(p, FinetuneConfig, name)
    return p


def parse_args(argv: list[str] | None = None) -> FinetuneConfig:
    return FinetuneConfig.from_settings(**vars(build_parser().parse_args(argv)))


def run_name(cfg: FinetuneConfig, batch: int) -> str:
    """The model folder's name and the recipe's hash (with the batch it gets): the same command finds its run again."""
    digest = hashlib.sha256(json.dumps({**cfg.recipe(), "batch": batch}, sort_keys=True).encode()).hexdigest()[:10]
    return f"{cfg.out.name}-{digest}"


def plan_pairs(cfg: FinetuneConfig) -> tuple[Pairs, str, str]:
    """The training and held-out pairs and the split in words; a clear error when either side is empty."""
    catalog = open_catalog(cfg.catalog, cfg.catalog_format, cfg.text_fields)
    items = list(islice(catalog.items(), cfg.limit))
    held = splits.read_split(cfg.split_file) if cfg.split_file else None
    pairs = split_pairs(catalog, items, held, cfg.held_out_fraction)
    split = f"split file {cfg.split_file}" if cfg.split_file else \
        f"{cfg.held_out_fraction:.0%} of the product groups held out by hash"
    if not pairs.held_out:
        raise FinetuneError(f"the split leaves no evaluation items in {cfg.catalog} ({split}): give a split file "
                            "whose test_ids are catalog ids, or a larger --held-out-fraction")
    if not pairs.train:
        raise FinetuneError(f"no training items in {cfg.catalog} ({split}, {dict(pairs.skipped)} skipped)")
    return pairs, split, catalog.format


def quiet_data_progress() -> None:
    """Ray Data's progress bars off: this job prints its own lines (a bar per epoch would flood `ray job logs`)."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False


def decoded(rows: list[dict], preprocess_cfg, max_pixels: int):
    """The rows with the model's uint8 pixels, decoded once (materialized) by Ray Data; and the skip reasons."""
    import ray.data

    from retrieval.indexing import DecodeImages, ReadImages

    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // 256))
    ds = ds.map_batches(ReadImages(), num_cpus=0.5).map_batches(DecodeImages(preprocess_cfg, max_pixels),
                                                                 num_cpus=0.5).materialize()
    errors = Counter(r["error"] for r in ds.select_columns(["error"]).take_all() if r["error"])
    size = preprocess_cfg.image_size
    ok = ds.filter(lambda r: not r["error"]).map_batches(lambda b: _arrays(b, size), num_cpus=0.25)
    return ok.materialize(), errors


def _arrays(batch: dict, size: int) -> dict:
    pixels = [np.frombuffer(p, np.uint8).reshape(size, size, 3) for p in batch["pixels"]]
    return {**{k: batch[k] for k in ROW_COLUMNS[:-1]}, "pixels": np.stack(pixels) if pixels else
            np.zeros((0, size, size, 3), np.uint8)}


def batch_size_for(asked: int, items: int, workers: int) -> int:
    """The asked batch, shrunk on a small catalog so that an epoch has MIN_STEPS steps (not below MIN_BATCH pairs):
    Luma's 239 training items in one step of 128 per epoch learnt far less than in seven of 32 (docs/finetune.md)."""
    return min(asked, max(MIN_BATCH, items // (workers * MIN_STEPS)), items // workers)


def worker_config(cfg: FinetuneConfig, train_items: int, use_gpu: bool) -> dict:
    """What every worker needs: the recipe, its run name, steps per epoch (every worker takes as many)."""
    batch = batch_size_for(cfg.batch_size, train_items, cfg.workers)
    if batch < 2:
        raise FinetuneError(f"{train_items} training items cannot fill a batch of 2 on each of {cfg.workers} workers")
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // (1 if use_gpu else cfg.workers))
    return {**cfg.recipe(), "model": cfg.model, "batch_size": batch, "threads": threads, "run": run_name(cfg, batch),
            "steps_per_epoch": train_items // (batch * cfg.workers), "progress_every_s": cfg.progress_every_s}


def trainer_for(cfg: FinetuneConfig, config: dict, datasets: dict, use_gpu: bool):
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from jobs.finetune_loop import train_loop

    run_folder = (cfg.storage_path / config["run"]).resolve()
    return TorchTrainer(
        train_loop, train_loop_config={**config, "resume_from": latest_checkpoint(run_folder)}, datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),  # every worker sees all held-out items (rank 0 scores)
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker, **({"GPU": 1} if use_gpu
                                                                                          else {})}),
        # Each attempt is its own Ray Train run in the run's folder: a rerun starts from the newest checkpoint of any
        # attempt (latest_checkpoint), never from Ray's record of a run whose processes may still be winding down.
        run_config=RunConfig(name=f"attempt-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(run_folder),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=0),
                             # print() once: Ray Train's print patch would log every progress line a second time
                             worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}}))


def latest_checkpoint(run_folder: Path) -> str | None:
    """The checkpoint of the furthest epoch any attempt of this run finished (None: start afresh)."""
    found = []
    for state in run_folder.glob("attempt-*/checkpoint_*/state.json"):
        try:
            saved = json.loads(state.read_text())
            if whole_checkpoint(state.parent, saved["best_epoch"]):
                found.append((saved["epoch"], state.stat().st_mtime, str(state.parent)))
        except (OSError, ValueError, KeyError):
            continue  # a checkpoint cut short by the crash: an older one will do
    if not found:
        return None
    epoch, _, path = max(found)
    log.info("resuming from %s (epoch %d done)", path, epoch)
    return path


def whole_checkpoint(folder: Path, best_epoch: int) -> bool:
    """Every file of the checkpoint complete: Ray copies a checkpoint into storage file by file, in parallel, so a
    crash can leave its small state.json whole beside a cut (or not yet started) model or optimizer."""
    import zipfile

    from safetensors import SafetensorError, safe_open

    try:
        for name in ("model.safetensors", *(("best.safetensors",) if best_epoch else ())):
            with safe_open(str(folder / name), "pt"):  # reads the header: it says how long the file must be
                pass
    except (OSError, SafetensorError):
        return False
    return zipfile.is_zipfile(folder / "optimizer.pt")  # torch's zip ends with its directory: a cut one has none


def wants_gpu(cfg: FinetuneConfig) -> bool:
    import ray

    if cfg.gpus not in ("auto", "0", "1"):
        raise FinetuneError(f"--gpus {cfg.gpus!r}: valid: auto, 0, 1")
    return cfg.gpus == "1" or (cfg.gpus == "auto" and ray.cluster_resources().get("GPU", 0) >= 1)


def base_model(cfg: FinetuneConfig):
    """The base (or the random architecture): its preprocessing, its folder config and, for epoch 0, its weights."""
    from retrieval.model import load_trainable, model_config, preprocess_config_of

    model, _ = load_trainable(cfg.model, from_scratch=cfg.from_scratch)
    return (preprocess_config_of(model).with_letterbox(cfg.letterbox), model_config(cfg.model),
            export.preprocess_dict(model), model.state_dict())


def run(cfg: FinetuneConfig) -> dict:
    """The whole run; returns its summary (also the model folder's metrics.json)."""
    import ray

    started = time.perf_counter()
    pairs, split, fmt = plan_pairs(cfg)
    preprocess_cfg, model_cfg, preprocess, base_state = base_model(cfg)
    if not ray.is_initialized():  # the dashboard serves the state API that Ray Train's clean-up watcher polls
        ray.init(log_to_driver=True, include_dashboard=True)
    quiet_data_progress()
    use_gpu = wants_gpu(cfg)  # before the photos are decoded: a wrong --gpus should not cost the decode first
    log.info("fine-tuning %s on %d pairs of %s (%d held out; %s)", cfg.model, len(pairs.train), cfg.catalog,
             len(pairs.held_out), split)
    (train, bad_train), (held, bad_held) = (decoded(rows, preprocess_cfg, cfg.max_image_pixels)
                                           for rows in (pairs.train, pairs.held_out))
    skipped = pairs.skipped + bad_train + bad_held
    check_skips(cfg, skipped, len(pairs.train) + len(pairs.held_out) + sum(pairs.skipped.values()))
    trained = train.count()
    config = worker_config(cfg, trained, use_gpu)
    result = trainer_for(cfg, config, {"train": train.random_shuffle(), "held_out": held}, use_gpu).fit()
    card = card_of(cfg.model_copy(update={"catalog_format": fmt}), config, split, trained, held.count(),
                   skipped, time.perf_counter() - started, use_gpu)
    write_result(cfg, result.checkpoint, card, model_cfg, preprocess, base_state, pairs)
    return card


def check_skips(cfg: FinetuneConfig, skipped: Counter, total: int) -> None:
    if total and sum(skipped.values()) / total > cfg.max_skip_fraction:
        raise FinetuneError(f"{sum(skipped.values())} of {total} items unusable ({dict(skipped)}), more than "
                            f"--max-skip-fraction {cfg.max_skip_fraction:.0%}")


def card_of(cfg: FinetuneConfig, config: dict, split: str, train_items: int, held_items: int, skipped: Counter,
            wall_s: float, use_gpu: bool) -> dict:
    import torch

    hardware = torch.cuda.get_device_name(0) if use_gpu and torch.cuda.is_available() else \
        f"CPU, {os.cpu_count()} cores ({platform.processor() or platform.machine()})"
    locks = ", ".join(f"{t} tower locked" for t, on in (("image", cfg.lock_image), ("text", cfg.lock_text)) if on)
    return {"base": cfg.model, "from_scratch": cfg.from_scratch, "catalog": str(cfg.catalog),
            "catalog_format": cfg.catalog_format, "split": split, "train_items": train_items,
            "held_out_items": held_items, "skipped": dict(skipped), "epochs": cfg.epochs, "lr": cfg.lr,
            "batch_size": config["batch_size"], "workers": cfg.workers, "weight_decay": cfg.weight_decay,
            "warmup_share": cfg.warmup, "locks": locks or "none", "hardware": hardware, "wall_s": round(wall_s, 1),
            "run": config["run"], "recipe": cfg.recipe()}


def write_result(cfg: FinetuneConfig, checkpoint, card: dict, model_cfg: dict, preprocess: dict, base_state: dict,
                 pairs: Pairs) -> None:
    """The best epoch's weights (the base's when none beat it) as the model folder, with its card and split."""
    from safetensors.torch import load_file

    with checkpoint.as_directory() as folder:
        state = json.loads((Path(folder) / "state.json").read_text())
        best = state["best_epoch"]
        weights = load_file(str(Path(folder) / "best.safetensors")) if best else base_state
    card.update(epochs_run=state["epoch"], best_epoch=best, history=state["history"],
                held_out_before=_scores(state["history"][0]), held_out_after=_scores(state["history"][best]))
    export.write_model_folder(cfg.out, model_cfg, preprocess, weights, card)
    splits.write_split(cfg.out / "split.json", (r["id"] for r in pairs.train), (r["id"] for r in pairs.held_out))


def _scores(epoch: dict) -> dict:
    from jobs.finetune_loop import TRAINING

    return {k: v for k, v in epoch.items() if k not in TRAINING}


def print_summary(card: dict, out: Path) -> None:
    print(f"\nwrote local-dir:{out.resolve()}  (best epoch {card['best_epoch']} of {card['epochs_run']}, "
          f"{card['wall_s'] / 60:.1f} min)")
    for key, after in card["held_out_after"].items():
        print(f"  {key:<22} {card['held_out_before'][key]:.3f} -> {after:.3f}")
    if card["skipped"]:
        print(f"skipped: {card['skipped']}")


@cli.entry
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = parse_args(argv)
    card = run(cfg)
    print_summary(card, cfg.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
