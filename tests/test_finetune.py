"""The fine-tune job: the gathered loss against one worker's, its pieces (pairs, split, schedule, held-out metrics,
model folder), bad inputs, and a 2-worker Ray Train run on a tiny catalog killed with -9 and resumed.

The model is a tiny random-weight open_clip architecture registered at test time (open_clip's add_model_config), so
the loss and the Ray run stay fast and offline; the Ray run gets it as a `local-dir:` base written by the job's own
exporter, which its workers load like any base model.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from jobs import finetune
from retrieval import splits
from retrieval.catalogs import open_catalog
from retrieval.finetune import contrastive, export, heldout
from retrieval.finetune.pairs import caption_of, split_pairs, text_for
from retrieval.model import ModelLoadError, load_model, model_config
from schemas.settings import PROJECT_ROOT, SHARED_ROOT

TINY = "fashion-tiny-test"
TINY_CFG = {"embed_dim": 16,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
LUMA = SHARED_ROOT / "datasets" / "luma-sample"
CATALOG_ROWS = 48  # real offline rows in the tiny catalog (about half of them held out by the id hash)


def register_tiny(folder: Path) -> str:
    """The tiny architecture in open_clip's registry (a JSON in `folder`, as open_clip's own tests add theirs)."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    if TINY not in open_clip.list_models():
        open_clip.add_model_config(folder)
    return TINY


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return register_tiny(tmp_path_factory.mktemp("tiny-config"))


def tiny_model(seed: int = 0):
    import open_clip
    import torch

    torch.manual_seed(seed)
    return open_clip.create_model(TINY)


def card(**overrides) -> dict:
    """A model card as the job writes it (export.model_card reads these keys)."""
    scores = {heldout.SCORE: 0.5}
    return {"base": TINY, "from_scratch": True, "catalog": "tiny", "catalog_format": "csv", "split": "test",
            "train_items": 2, "held_out_items": 2, "skipped": {}, "epochs": 1, "epochs_run": 1, "best_epoch": 0,
            "lr": 1e-3, "batch_size": 2, "workers": 1, "weight_decay": 0.1, "warmup_share": 0.1, "locks": "none",
            "hardware": "CPU", "wall_s": 1.0, "held_out_before": scores, "held_out_after": scores, **overrides}


def write_tiny_base(tiny_name: str, out: Path) -> str:
    """Random weights of the tiny architecture as a model folder (the job's own exporter): a `local-dir:` spec."""
    model = tiny_model()
    export.write_model_folder(out, model_config(tiny_name), export.preprocess_dict(model), model.state_dict(),
                              card())
    return f"local-dir:{out}"


def write_catalog(root: Path, offline: Path, n: int = CATALOG_ROWS, *, missing: bool = False,
                  no_words: bool = False) -> Path:
    """A CSV catalog of the first `n` real offline rows (photos copied), plus an item whose photo is missing and
    an item with a photo but no words, when asked."""
    with (offline / "catalog.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, [row for _, row in zip(range(n), reader)]
    (root / "images").mkdir(parents=True, exist_ok=True)
    for row in rows:
        (root / row["image"]).write_bytes((offline / row["image"]).read_bytes())
    if missing:
        rows.append({**rows[0], "id": "ft-missing", "image": "images/not-there.jpg"})
    if no_words:
        rows.append({**dict.fromkeys(header, ""), "id": "ft-no-words", "image": rows[0]["image"]})
    with (root / "catalog.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return root


# --- 1. The gathered loss: two workers of b equal one worker of 2b -----------------------------------------------

def _ddp_step(rank: int, world: int, port: int, folder: Path) -> None:
    """One worker's step as the job takes it: the DDP-wrapped model through step_loss with clip_loss(rank, world);
    saves the loss averaged over workers and the gradients after DDP's averaging."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    register_tiny(folder / "config")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    try:
        model = tiny_model(seed=rank + 1)  # different on purpose: DDP broadcasts rank 0's, rank 0 loads the start
        model.load_state_dict(torch.load(folder / "start.pt", weights_only=True))
        data = torch.load(folder / "batch.pt", weights_only=True)
        b = len(data["images"]) // world
        images, tokens = data["images"][rank * b:(rank + 1) * b], data["tokens"][rank * b:(rank + 1) * b]
        ddp = DistributedDataParallel(model)  # held until after backward: its hooks average the gradients
        loss = contrastive.step_loss(ddp, images, tokens, contrastive.clip_loss(rank, world))
        loss.backward()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        torch.save({"loss": mean / world, "grads": _grads(model)}, folder / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _grads(model) -> dict:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def test_gathered_loss_two_workers_equal_one_worker_on_the_whole_batch(tiny, tmp_path):
    import open_clip
    import torch
    import torch.multiprocessing as mp

    from tests.conftest import free_port

    b = 4
    model = tiny_model()
    torch.save(model.state_dict(), tmp_path / "start.pt")
    words = [f"{c} {t}" for c in ("red", "blue", "black", "white") for t in ("shirt", "dress")]
    images = torch.randn(2 * b, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    tokens = open_clip.get_tokenizer(TINY)(words[:2 * b])
    torch.save({"images": images, "tokens": tokens}, tmp_path / "batch.pt")
    workers, deadline = mp.spawn(_ddp_step, args=(2, free_port(), tmp_path), nprocs=2, join=False), time.monotonic()
    while not workers.join(timeout=1):  # raises if a worker failed
        if time.monotonic() - deadline > 180:
            for process in workers.processes:
                process.kill()
            pytest.fail("the two DDP workers did not finish in 180 s")
    loss = contrastive.step_loss(model, images, tokens, contrastive.clip_loss())
    loss.backward()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["loss"], loss.detach(), atol=1e-5, rtol=0)
        assert got["grads"].keys() == _grads(model).keys() and len(got["grads"]) > 10
        for name, grad in _grads(model).items():
            torch.testing.assert_close(got["grads"][name], grad, atol=1e-5, rtol=0, msg=name)
    assert any(float(g.abs().max()) > 1e-3 for g in _grads(model).values())  # gradients that say something


# --- 2. The pieces ------------------------------------------------------------------------------------------------

def test_caption_is_colour_and_type_in_lower_case():
    roles = splits.roles_of("csv")
    assert caption_of({"baseColour": "Navy Blue", "articleType": "Tshirts"}, roles) == "navy blue tshirts"
    assert caption_of({"baseColour": "Navy Blue"}, roles) == ""
    assert caption_of({"baseColour": "Multi", "articleType": "Tshirts"}, roles) == ""  # a colour nobody types
    assert caption_of({"color": "Black", "type": "Hoodies"}, splits.roles_of("magento")) == "black hoodies"


def test_split_file_ids_are_held_out_and_items_without_words_skipped(tmp_path, offline_catalog):
    catalog = open_catalog(write_catalog(tmp_path, offline_catalog, 12, no_words=True))
    items = list(catalog.items())
    held = [items[1].id, items[4].id, "not-in-this-catalog"]
    pairs = split_pairs(catalog, items, held)
    assert [r["id"] for r in pairs.held_out] == held[:2]
    assert [r["id"] for r in pairs.train] == [i.id for i in items if i.id not in held and i.id != "ft-no-words"]
    assert pairs.skipped == {"no words": 1}
    row = pairs.train[0]
    assert Path(row["path"]).is_file() and row["document"] == items[0].text
    assert row["caption"] == f"{items[0].metadata['baseColour']} {items[0].metadata['articleType']}".lower()


@pytest.mark.skipif(not (LUMA / "products.csv").is_file(), reason="the luma-sample export is not in ../shared")
def test_group_hash_keeps_colour_variants_of_a_product_on_one_side():
    catalog = open_catalog(LUMA)
    items = list(catalog.items())
    pairs = split_pairs(catalog, items)
    group = {i.id: i.metadata["product_group"] for i in items}
    train, held = {group[r["id"]] for r in pairs.train}, {group[r["id"]] for r in pairs.held_out}
    assert not train & held and len(held) > 20 and len(train) > 20
    assert len(pairs.train) + len(pairs.held_out) + sum(pairs.skipped.values()) == len(items)
    assert max(len([i for i in items if group[i.id] == g]) for g in held) > 1  # groups with variants are held out
    again = split_pairs(catalog, items)
    assert [r["id"] for r in again.held_out] == [r["id"] for r in pairs.held_out]  # the same on every run


def test_text_for_alternates_deterministically():
    rows = [{"id": str(i), "document": f"doc {i}", "caption": f"cap {i}"} for i in range(200)]
    epochs = [[text_for(row, epoch) for row in rows] for epoch in range(8)]
    assert epochs == [[text_for(dict(row), epoch) for row in rows] for epoch in range(8)]
    for epoch in epochs:
        captions = sum(text.startswith("cap") for text in epoch)
        assert 60 < captions < 140  # about half of each batch has each kind
    both = sum({epoch[i][:3] for epoch in epochs} == {"doc", "cap"} for i in range(len(rows)))
    assert both > 0.95 * len(rows)  # over 8 epochs, nearly every item is learnt with both kinds of words
    assert text_for({"id": "1", "document": "only words", "caption": ""}, 0) == "only words"
    assert text_for({"id": "1", "document": "", "caption": "red shirt"}, 3) == "red shirt"


def test_lr_warms_up_linearly_then_falls_by_cosine_to_zero():
    factors = [contrastive.lr_factor(step, 10, 100) for step in range(120)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factors[10] == pytest.approx(1.0) and factors[55] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[100] == pytest.approx(0.0, abs=1e-12) and factors[119] == pytest.approx(0.0, abs=1e-12)


def test_no_decay_groups_hold_gains_biases_norms_and_temperature(tiny):
    model = tiny_model()
    optimizer = contrastive.optimizer_for(model, 1e-3, 0.2)
    plain, decayed = optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert plain["weight_decay"] == 0.0 and decayed["weight_decay"] == 0.2
    assert sorted(map(id, plain["params"] + decayed["params"])) == sorted(names)  # every parameter once
    assert "logit_scale" in {names[id(p)] for p in plain["params"]}
    assert all(p.ndim >= 2 and not any(k in names[id(p)] for k in ("ln", "bias")) for p in decayed["params"])
    assert any(names[id(p)].endswith("ln_final.weight") for p in plain["params"])
    assert {names[id(p)] for p in decayed["params"]} >= {"token_embedding.weight", "text_projection"}


def _unit(*values) -> np.ndarray:
    vector = np.asarray(values, np.float32)
    return vector / np.linalg.norm(vector)


def test_held_out_metrics_on_vectors_with_known_answers():
    """Three photos on the axes; documents a (right), b and c (swapped); captions: a and b share one."""
    images = np.stack([_unit(1, 0, 0), _unit(0, 1, 0), _unit(0, 0, 1)])
    texts = {"doc a": _unit(1, 0, 0), "doc b": _unit(0, 0, 1), "doc c": _unit(0, 1, 0),
             "red shirt": _unit(1, 1, 0), "blue jeans": _unit(0, 0.1, 1)}
    rows = [{"id": "a", "document": "doc a", "caption": "red shirt"},
            {"id": "b", "document": "doc b", "caption": "red shirt"},
            {"id": "c", "document": "doc c", "caption": "blue jeans"}]
    out = heldout.held_out_metrics(images, lambda batch: np.stack([texts[t] for t in batch]), rows)
    assert out["document_i2t_r@1"] == pytest.approx(1 / 3) and out["document_t2i_r@1"] == pytest.approx(1 / 3)
    assert out["document_i2t_r@10"] == out["document_t2i_r@10"] == 1.0  # three texts: all in any top 10
    assert out["caption_i2t_r@1"] == 1.0 and out[heldout.SCORE] == 1.0
    rows[2]["caption"] = ""  # an item without a caption is left out of the caption metric, not counted wrong
    again = heldout.held_out_metrics(images, lambda batch: np.stack([texts[t] for t in batch]), rows)
    assert again["caption_i2t_r@1"] == 1.0 and again["document_i2t_r@1"] == pytest.approx(1 / 3)


def test_held_out_text_to_photo_counts_every_item_with_that_text():
    images = np.stack([_unit(1, 0), _unit(0.9, 0.1), _unit(0, 1)])
    texts = {"twin": _unit(1, 0), "other": _unit(0, 1)}
    rows = [{"id": "a", "document": "twin", "caption": ""}, {"id": "b", "document": "twin", "caption": ""},
            {"id": "c", "document": "other", "caption": ""}]
    out = heldout.held_out_metrics(images, lambda batch: np.stack([texts[t] for t in batch]), rows)
    assert out["document_t2i_r@1"] == pytest.approx((0.5 + 1) / 2)  # "twin" has two photos: its top 1 finds half
    assert "caption_i2t_r@1" not in out and out[heldout.SCORE] == 1.0


def test_model_folder_round_trip_loads_with_the_factory_and_gives_unit_vectors(tiny, tmp_path):
    import torch

    model = tiny_model()
    out = export.write_model_folder(tmp_path / "tiny-ft", model_config(TINY), export.preprocess_dict(model),
                                    model.state_dict(), card(best_epoch=1))
    encoder = load_model(f"local-dir:{out}", device="cpu")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(encoder.model.state_dict()[name], value, msg=name)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    vectors = np.concatenate([encoder.encode_images(pixels), encoder.encode_texts(["red shirt", "blue jeans"])])
    assert vectors.shape == (5, 16) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == 1
    assert "local-dir:" in (out / "MODEL_CARD.md").read_text()


# --- 4. Bad inputs (no Ray: each fails before the job starts one) ------------------------------------------------

@pytest.fixture
def small_catalog(tmp_path, offline_catalog) -> Path:
    return write_catalog(tmp_path / "catalog", offline_catalog, 12, no_words=True)


def _argv(catalog: Path, tmp_path: Path, *flags: str) -> list[str]:
    return ["--catalog", str(catalog), "--out", str(tmp_path / "out"), "--storage-path", str(tmp_path / "runs"),
            *flags]


def test_item_without_words_is_skipped_and_counted(small_catalog, tmp_path, model_spec):
    pairs, split, fmt = finetune.plan_pairs(finetune.parse_args(_argv(small_catalog, tmp_path)))
    assert pairs.skipped == {"no words": 1} and fmt == "csv" and "held out by hash" in split
    assert len(pairs.train) + len(pairs.held_out) == 12


def test_unknown_base_model_is_a_clear_error_with_the_valid_names(small_catalog, tmp_path, capsys):
    argv = _argv(small_catalog, tmp_path)
    assert finetune.main([*argv, "--model", "ViT-Nope/whatever"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'ViT-Nope'" in err and "valid names" in err and "fashion-clip-mini" in err
    assert finetune.main([*argv, "--from-scratch", "--model", "no-such-arch"]) == 2
    assert "valid names" in capsys.readouterr().err
    with pytest.raises(ModelLoadError, match="architecture name.*fashion-clip-mini"):
        finetune.run(finetune.parse_args([*argv, "--from-scratch", "--model", "local-dir:/nowhere"]))
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_split_whose_test_ids_match_no_item_names_the_split(small_catalog, tmp_path, capsys):
    split = tmp_path / "split.json"
    splits.write_split(split, ["a"], ["not-an-id", "nor-this"])
    with pytest.raises(finetune.FinetuneError, match=f"no evaluation items.*{re.escape(str(split))}"):
        finetune.plan_pairs(finetune.parse_args(_argv(small_catalog, tmp_path, "--split-file", str(split))))
    assert finetune.main(_argv(small_catalog, tmp_path, "--split-file", str(split))) == 2
    assert f"split file {split}" in capsys.readouterr().err


def test_unreadable_split_file_is_a_clear_error(small_catalog, tmp_path, capsys):
    (tmp_path / "not-a-split.json").write_text('{"ids": []}')
    for path in (tmp_path / "not-a-split.json", tmp_path / "absent.json"):
        assert finetune.main(_argv(small_catalog, tmp_path, "--split-file", str(path))) == 2
        assert f"{path}: not a split file with test_ids" in capsys.readouterr().err


def test_a_split_holding_out_everything_leaves_no_training_items(small_catalog, tmp_path):
    split = tmp_path / "split.json"
    splits.write_split(split, [], [i.id for i in open_catalog(small_catalog).items()])
    with pytest.raises(finetune.FinetuneError, match="no training items"):
        finetune.plan_pairs(finetune.parse_args(_argv(small_catalog, tmp_path, "--split-file", str(split))))


def write_checkpoint(folder: Path, epoch: int, best_epoch: int, *, cut: str | None = None) -> Path:
    """A checkpoint as a worker writes it; `cut`: that file stopped half-way, as a crash during Ray's copy of the
    checkpoint into storage leaves it (Ray copies the files in parallel: the small state.json lands first)."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    weights = {"w": torch.ones(64, 64)}
    save_file(weights, str(folder / "model.safetensors"))
    if best_epoch:
        save_file(weights, str(folder / "best.safetensors"))
    torch.save({"state": {0: {"exp_avg": torch.ones(64, 64)}}}, folder / "optimizer.pt")
    (folder / "state.json").write_text(json.dumps({"epoch": epoch, "step": 3 * epoch, "history": [],
                                                   "best_epoch": best_epoch}))
    if cut:
        data = (folder / cut).read_bytes()
        (folder / cut).write_bytes(data[:len(data) // 2])
    return folder


def test_resume_takes_the_furthest_whole_checkpoint(tmp_path):
    whole = write_checkpoint(tmp_path / "attempt-1" / "checkpoint_a", 1, 1)
    write_checkpoint(tmp_path / "attempt-1" / "checkpoint_b", 0, 0)
    write_checkpoint(tmp_path / "attempt-2" / "checkpoint_c", 2, 2, cut="model.safetensors")
    write_checkpoint(tmp_path / "attempt-2" / "checkpoint_d", 3, 2, cut="optimizer.pt")
    (write_checkpoint(tmp_path / "attempt-2" / "checkpoint_e", 4, 4) / "best.safetensors").unlink()
    write_checkpoint(tmp_path / "attempt-2" / "checkpoint_f", 5, 4, cut="state.json")
    assert finetune.latest_checkpoint(tmp_path) == str(whole)
    later = write_checkpoint(tmp_path / "attempt-3" / "checkpoint_g", 2, 0)  # the base still best: no best file
    assert finetune.latest_checkpoint(tmp_path) == str(later)
    assert finetune.latest_checkpoint(tmp_path / "no-run-yet") is None


# --- 3. Two CPU workers end to end: checkpoint, kill -9, resume ---------------------------------------------------

EPOCHS = 3


def finetune_command(catalog: Path, base: str, root: Path) -> list[str]:
    return [sys.executable, "-m", "jobs.finetune", "--catalog", str(catalog), "--model", base, "--out",
            str(root / "model"), "--storage-path", str(root / "runs"), "--epochs", str(EPOCHS), "--batch-size", "4",
            "--lr", "1e-3", "--workers", "2", "--cpus-per-worker", "0.5", "--gpus", "0", "--threads", "1",
            "--progress-every-s", "1", "--max-skip-fraction", "0.5"]


def own_ray_env(ray_tmp: Path) -> dict:
    """A Ray of its own, as a fresh `python -m jobs.finetune` would start, in a temp folder only it uses (so what
    it leaves behind is found by that folder, never by a process name)."""
    return {**os.environ, "RAY_ADDRESS": "", "RAY_TMPDIR": str(ray_tmp), "PYTHONUNBUFFERED": "1"}


def checkpointed_epoch(runs: Path) -> int:
    """The furthest epoch any attempt has checkpointed (-1: none yet)."""
    epochs = [-1]
    for state in runs.glob("*/attempt-*/checkpoint_*/state.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            epochs.append(json.loads(state.read_text())["epoch"])
    return max(epochs)


def kill_leftovers(ray_tmp: Path) -> list[int]:
    """SIGKILL every process whose command line names this run's Ray temp folder (Ray's workers and services run
    in sessions of their own, so killing the driver's group can leave them); the pids killed."""
    killed = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if str(ray_tmp).encode() in cmdline.read_bytes() and int(cmdline.parent.name) != os.getpid():
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
                killed.append(int(cmdline.parent.name))
    return killed


def run_until_checkpoint(command: list[str], env: dict, runs: Path, log: Path, seconds: float = 400) -> int:
    """Start the job in its own session; kill -9 its whole group once epoch 1's checkpoint exists; that epoch."""
    with log.open("w") as out:
        job = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + seconds
        while (epoch := checkpointed_epoch(runs)) < 1:
            assert job.poll() is None, f"the job ended (rc {job.returncode}) before a checkpoint:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no epoch checkpointed in {seconds} s:\n{log.read_text()}"
            time.sleep(0.1)
        return epoch
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=60)


@pytest.mark.ray
@pytest.mark.slow
def test_two_workers_checkpoint_kill_resume_and_the_model_loads(tiny, tmp_path, offline_catalog):
    catalog = write_catalog(tmp_path / "catalog", offline_catalog, missing=True, no_words=True)
    command = finetune_command(catalog, write_tiny_base(tiny, tmp_path / "base"), tmp_path)
    ray_tmp = Path(tempfile.mkdtemp(prefix="ft-ray-"))  # short: Ray's socket paths must fit 107 bytes
    env = own_ray_env(ray_tmp)
    try:
        started = time.monotonic()
        killed_at = run_until_checkpoint(command, env, tmp_path / "runs", tmp_path / "first.log")
        first_s = time.monotonic() - started
        left_by_kill = kill_leftovers(ray_tmp)
        assert killed_at < EPOCHS and not (tmp_path / "model").exists(), (tmp_path / "first.log").read_text()
        rerun = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=480,
                               start_new_session=True)
        output = rerun.stdout + rerun.stderr
        assert rerun.returncode == 0, output
    finally:
        left_by_rerun = kill_leftovers(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    print(f"\nkilled after epoch {killed_at} ({first_s:.0f} s; {len(left_by_kill)} Ray processes outlived the group "
          f"kill); rerun {time.monotonic() - started - first_s:.0f} s ({len(left_by_rerun)} left after it)")
    assert "resuming from" in output, output
    assert f"epoch {EPOCHS} done" in output and "epoch 0 done" not in output  # it did not start afresh
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["epochs_run"] == EPOCHS and [h["epoch"] for h in metrics["history"]] == list(range(EPOCHS + 1))
    assert metrics["workers"] == 2 and metrics["skipped"] == {"missing file": 1, "no words": 1}
    assert metrics["train_items"] + metrics["held_out_items"] == CATALOG_ROWS
    encoder = load_model(f"local-dir:{tmp_path / 'model'}", device="cpu")
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    vectors = np.concatenate([encoder.encode_images(pixels), encoder.encode_texts(["red shirt", "blue jeans"])])
    assert vectors.shape == (4, 16) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
