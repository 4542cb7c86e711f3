"""Crash and resume: a full-catalog --rebuild killed part-way, then the same command again.

python -m bench.resume [--kill-at 0.25]

First a small complete generation (500 items) so the alias has something to keep pointing at; then the whole
offline catalog with --rebuild, killed (SIGKILL, the whole process group) once its progress passes `kill-at`;
then what the store holds; then the same command again, which should resume: encode only the missing items and
switch the alias. Prints the figures docs/performance.md#resume cites.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from jobs import cli
from schemas.jobs import StoreConfig
from schemas.settings import PROJECT_ROOT, get_settings

PROGRESS = re.compile(r"indexed (\d+), skipped (\d+) of (\d+)")


def index_command(store: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "jobs.index", "--store-path", str(store), "--encode-threads", str(os.cpu_count()),
            "--progress-every-s", "1", *flags]


def run_killed(command: list[str], fraction: float) -> int:
    """Run an index command in its own process group (and its own Ray) and kill -9 all of it once its progress
    passes `fraction` of the catalog; the last count of indexed items it reported."""
    env = {**os.environ, "RAY_ADDRESS": ""}  # its own Ray, as a fresh `python -m jobs.index` would have
    run = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, start_new_session=True)
    reached = -1
    try:
        for line in run.stderr:
            if (match := PROGRESS.search(line)) and (reached := int(match[1])) >= fraction * int(match[3]):
                break
        else:
            raise RuntimeError(f"the run ended at {reached} items before it could be killed; kill it earlier")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=60)
    return reached


def kill_shard_holders(store: Path) -> None:
    """kill -9 every process that still holds a shard of the store: a Ray worker can outlive its killed driver
    (it runs in a session of its own) and keep the shard open; waits, bounded, until each is gone."""
    for lock in store.glob("*/shard.lock"):
        pid = int(lock.read_text() or 0)
        if not pid or pid == os.getpid():
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        for _ in range(100):  # the kernel releases the flock when the process is gone
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)


def generations(store: Path) -> dict:
    """The alias's target and each generation's points and completeness, plus how long listing held ids takes."""
    from retrieval.store.base import item_ids
    from retrieval.store.factory import open_store

    alias = get_settings().collection
    with open_store(StoreConfig(backend="edge", path=store)) as s:
        held = {c: (s.count(c), s.collection_spec(c).complete) for c in s.list_collections()}
        partial = [c for c, (_, complete) in held.items() if not complete]
        started = time.perf_counter()
        listed = len(item_ids(s, partial[0])) if partial else 0
        return {"alias": s.resolve_alias(alias), "generations": held, "held_ids_listed": listed,
                "listing_s": round(time.perf_counter() - started, 2)}


def summary_of(command: list[str], path: Path) -> dict:
    subprocess.run(command + ["--summary-json", str(path)], cwd=PROJECT_ROOT, check=True, capture_output=True)
    return json.loads(path.read_text())


@cli.entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.resume", description=__doc__.splitlines()[0])
    parser.add_argument("--kill-at", type=float, default=0.25, help="fraction of the catalog indexed before the kill")
    args = parser.parse_args(argv)
    root = PROJECT_ROOT / "var" / "bench" / "resume"
    shutil.rmtree(root, ignore_errors=True)
    store = root / "qdrant"
    first = summary_of(index_command(store, "--limit", "500"), root / "first.json")
    reached = run_killed(index_command(store, "--rebuild"), args.kill_at)
    kill_shard_holders(store)
    print(json.dumps({"first_generation": first["collection"], "killed_at_progress": reached,
                      "after_kill": generations(store)}, indent=1))
    rerun = summary_of(index_command(store, "--rebuild"), root / "rerun.json")
    keys = ("read", "indexed", "resumed", "already_in_collection", "points_in_collection", "alias_switched",
            "collection", "dropped_generations", "removed_partial_generations", "wall_s")
    print(json.dumps({"rerun": {k: rerun.get(k) for k in keys}, "end": generations(store)}, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
