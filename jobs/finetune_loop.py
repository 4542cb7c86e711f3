"""What each Ray Train worker runs: the data-parallel contrastive loop over its shard of the training pairs, the
held-out metrics on rank 0 each epoch, a checkpoint every epoch, and the resume from the last one.

A checkpoint (written by rank 0) holds `model.safetensors` (this epoch's weights), `optimizer.pt`, `state.json`
(epoch, step, the metrics of every epoch so far and the best one) and `best.safetensors` (the best epoch's weights;
absent while the base itself is best, epoch 0).
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from jobs.progress import eta_text, seconds_left
from retrieval import gauges
from retrieval.finetune import contrastive, heldout
from retrieval.finetune.pairs import text_for

log = logging.getLogger("jobs.finetune")
TRAINING = ("epoch", "train_loss", "train_s", "pairs_per_s")  # an epoch's own figures, beside the held-out ones


@dataclass
class TrainState:
    """Where the run stands: the last finished epoch, the optimizer steps taken, each epoch's metrics."""

    epoch: int = -1  # -1: not even the base evaluated
    step: int = 0
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0

    @property
    def best_score(self) -> float:
        return self.history[self.best_epoch][heldout.SCORE] if self.history else float("-inf")


def train_loop(config: dict) -> None:
    """Ray Train's train_loop_per_worker."""
    import ray.data
    import ray.train

    ray.data.DataContext.get_current().enable_progress_bars = False  # the loop prints its own progress lines
    context = ray.train.get_context()
    WorkerRun(config, context.get_world_rank(), context.get_world_size()).fit()


class WorkerRun:
    """One worker's model, optimizer and data; rank 0 also evaluates, checkpoints and exports metrics."""

    def __init__(self, cfg: dict, rank: int, world: int):
        import ray.train.torch
        import torch

        from retrieval.model import load_trainable

        self.cfg, self.rank, self.world = cfg, rank, world
        torch.set_num_threads(cfg["threads"])
        torch.manual_seed(cfg["seed"])
        model, self.tokenizer = load_trainable(cfg["model"], from_scratch=cfg["from_scratch"])
        contrastive.lock_towers(model, cfg["lock_image"], cfg["lock_text"], cfg["unlocked_image_groups"],
                                cfg["unlocked_text_layers"])
        self.mean, self.std = model.visual.preprocess_cfg["mean"], model.visual.preprocess_cfg["std"]
        self.device = str(ray.train.torch.get_device())
        self.raw = model.to(self.device)  # before the optimizer: its restored state follows the parameters' device
        self.optimizer = contrastive.optimizer_for(model, cfg["lr"], cfg["weight_decay"])
        self.state, self.best_weights = self._restore(model, _checkpoint(cfg.get("resume_from")))
        self.model = ray.train.torch.prepare_model(model) if world > 1 else self.raw
        self.loss_fn = contrastive.clip_loss(rank, world)
        self.total_steps = cfg["steps_per_epoch"] * cfg["epochs"]
        self.metrics = FinetuneMetrics(cfg["run"]) if rank == 0 else None

    def _restore(self, model, checkpoint) -> tuple[TrainState, dict | None]:
        import torch
        from safetensors.torch import load_file

        if checkpoint is None:
            return TrainState(), None
        with checkpoint.as_directory() as folder:
            folder = Path(folder)
            model.load_state_dict(load_file(str(folder / "model.safetensors")))
            self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
            state = TrainState(**json.loads((folder / "state.json").read_text()))
            best = load_file(str(folder / "best.safetensors")) if (folder / "best.safetensors").exists() else None
        log.info("resuming after epoch %d (best so far: epoch %d)", state.epoch, state.best_epoch)
        return state, best

    def fit(self) -> None:
        if self.state.epoch < 0:
            self._finish_epoch(0, None)  # the base's held-out figures: the "before", and the bar to beat
        for epoch in range(self.state.epoch + 1, self.cfg["epochs"] + 1):
            self._finish_epoch(epoch, self._train_epoch(epoch))

    def _train_epoch(self, epoch: int) -> dict:
        """The epoch's mean loss, its seconds and its rate (pairs of every worker per second)."""
        import ray.train

        self.model.train()
        losses, started = [], time.monotonic()
        shard = ray.train.get_dataset_shard("train")
        for batch in shard.iter_batches(batch_size=self.cfg["batch_size"], drop_last=True, batch_format="numpy"):
            losses.append(self._step(batch, epoch))
            self._progress(epoch, len(losses), float(np.mean(losses[-20:])), started)
        seconds = time.monotonic() - started
        return {"train_loss": float(np.mean(losses)) if losses else float("nan"), "train_s": round(seconds, 1),
                "pairs_per_s": round(len(losses) * self.cfg["batch_size"] * self.world / seconds, 1)}

    def _step(self, batch: dict, epoch: int) -> float:
        import torch

        seed = hash((self.cfg["seed"], epoch, self.state.step, self.rank)) & 0x7FFFFFFF
        images = contrastive.model_input(batch["pixels"], self.mean, self.std, self.device, flip_seed=seed)
        rows = [{"id": i, "document": d, "caption": c}
                for i, d, c in zip(batch["id"], batch["document"], batch["caption"])]
        tokens = self.tokenizer([text_for(row, epoch) for row in rows]).to(self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg["lr"] * contrastive.lr_factor(self.state.step, self._warmup(), self.total_steps)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.startswith("cuda")):
            loss = contrastive.step_loss(self.model, images, tokens, self.loss_fn)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        contrastive.clamp_temperature(self.raw)
        self.state.step += 1
        return float(loss.detach())

    def _warmup(self) -> int:
        return max(1, int(self.cfg["warmup"] * self.total_steps))

    def _progress(self, epoch: int, step: int, loss: float, started: float) -> None:
        if self.rank != 0 or not self.metrics.due(self.cfg["progress_every_s"]):
            return
        steps = self.cfg["steps_per_epoch"]
        done = (epoch - 1) * steps + step
        elapsed = time.monotonic() - started
        pairs_per_s = step * self.cfg["batch_size"] * self.world / elapsed if elapsed else 0.0
        left = seconds_left(step, steps, elapsed)
        left = None if left is None else left + (self.cfg["epochs"] - epoch) * steps * elapsed / step
        print(f"epoch {epoch}/{self.cfg['epochs']}  step {step}/{steps}  loss {loss:.3f}  {pairs_per_s:.0f} pairs/s"
              f"  ETA {eta_text(left) if left is not None else '?'}", flush=True)
        self.metrics.training(loss, pairs_per_s, left, done / max(1, self.total_steps))

    def _finish_epoch(self, epoch: int, trained: dict | None) -> None:
        """Rank 0 scores the held-out items and checkpoints; every worker reports (report is a barrier)."""
        import ray.train

        if self.rank != 0:
            self.state.epoch = epoch
            ray.train.report({"epoch": epoch})
            return
        scores = {"epoch": epoch, **(trained or {"train_loss": None}), **self._held_out()}
        self.state.history.append(scores)
        self.state.epoch = epoch
        if scores[heldout.SCORE] > self.state.best_score or epoch == 0:
            self.state.best_epoch = epoch
            self.best_weights = None if epoch == 0 else _cpu_copy(self.raw.state_dict())
        print(_epoch_line(scores, self.state.best_epoch), flush=True)
        self.metrics.epoch(scores)
        with tempfile.TemporaryDirectory() as folder:
            self._write_checkpoint(Path(folder))
            ray.train.report({**scores, "best_epoch": self.state.best_epoch},
                             checkpoint=ray.train.Checkpoint.from_directory(folder))

    def _held_out(self) -> dict[str, float]:
        import ray.train
        import torch

        from retrieval.model import ClipEncoder

        self.raw.eval()
        encoder = ClipEncoder(self.raw, self.tokenizer, spec=self.cfg["model"], device=self.device, precision="fp32")
        rows, vectors = [], []
        for batch in ray.train.get_dataset_shard("held_out").iter_batches(batch_size=256, batch_format="numpy"):
            vectors.append(encoder.encode_images(batch["pixels"]))
            rows += [{"id": i, "document": d, "caption": c}
                     for i, d, c in zip(batch["id"], batch["document"], batch["caption"])]
        with torch.no_grad():
            return heldout.held_out_metrics(np.concatenate(vectors), encoder.encode_texts, rows)

    def _write_checkpoint(self, folder: Path) -> None:
        import torch
        from safetensors.torch import save_file

        save_file(_cpu_copy(self.raw.state_dict()), str(folder / "model.safetensors"))
        torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
        (folder / "state.json").write_text(json.dumps(asdict(self.state)))
        if self.best_weights is not None:
            save_file(self.best_weights, str(folder / "best.safetensors"))


def _checkpoint(resume_from: str | None):
    """Ray Train's own (a worker restarted within this attempt), else the driver's pick from an earlier attempt."""
    import ray.train

    found = ray.train.get_checkpoint()
    return found or (ray.train.Checkpoint(resume_from) if resume_from else None)


def _cpu_copy(state_dict: dict) -> dict:
    return {k: v.detach().float().cpu().clone().contiguous() for k, v in state_dict.items()}


def _epoch_line(scores: dict, best: int) -> str:
    loss = "" if scores["train_loss"] is None else f"  train loss {scores['train_loss']:.3f}"
    shown = "  ".join(f"{k} {v:.3f}" for k, v in scores.items() if k not in TRAINING)
    rate = f" ({scores['train_s']:.0f} s, {scores['pairs_per_s']:.0f} pairs/s)" if "train_s" in scores else ""
    return f"epoch {scores['epoch']} done{loss}{rate}  held-out: {shown}  (best: epoch {best})"


class FinetuneMetrics:
    """Rank 0's Prometheus gauges through Ray (prefixed `ray_`), like the index job's: fashion_finetune_*."""

    def __init__(self, run: str):
        from ray.util import metrics

        self.tags, self._last = {"run": run}, 0.0
        names = {"epoch": "Epochs finished", "train_loss": "Mean contrastive loss of the epoch so far",
                 "held_out_r10": "Held-out mean Recall@10 of the last epoch", "pairs_per_second": "Training rate",
                 "eta_seconds": "Seconds left, at the rate so far", "progress": "Share of the steps done"}
        self.gauges = {n: metrics.Gauge(f"fashion_finetune_{n}", description=d, tag_keys=("run",))
                       for n, d in names.items()}
        self.values: dict[str, float] = {}

    def due(self, every_s: float) -> bool:
        if time.monotonic() - self._last < every_s:
            return False
        self._last = time.monotonic()
        return True

    def training(self, loss: float, pairs_per_s: float, left: float | None, share: float) -> None:
        for name, value in (("train_loss", loss), ("pairs_per_second", pairs_per_s), ("progress", share),
                            ("eta_seconds", left if left is not None else -1)):
            self._set(name, value)

    def epoch(self, scores: dict) -> None:
        self._set("epoch", scores["epoch"])
        self._set("held_out_r10", scores[heldout.SCORE])

    def _set(self, name: str, value: float) -> None:
        """The first value of a gauge starts its refresh (an epoch's score would age out of Ray between epochs)."""
        first = name not in self.values
        self.values[name] = value
        if first:  # the reader holds the values, not this object: the series stops with it
            gauges.watch(self.gauges[name], self.tags, functools.partial(self.values.__getitem__, name), owner=self)
        else:
            self.gauges[name].set(value, tags=self.tags)
