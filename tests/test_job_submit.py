"""Documented cluster path, once: `ray start --head`, then `ray job submit --working-dir . -- python -m jobs.index`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, wait_for_status

pytestmark = [pytest.mark.ray, pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def head_node(tmp_path_factory):
    """A head node of our own (`--block`, so terminating it stops exactly the processes it started).

    Every fixed port gets a free one: the session's `ray.init()` cluster already holds the default agent ports,
    and a head whose job agent cannot bind answers every submit with "No available agent".
    """
    dashboard, gcs = free_port(), free_port()
    ports = [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
        "ray-client-server-port")]
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    temp = tmp_path_factory.mktemp("ray-head")
    process = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dashboard}",
         "--dashboard-host=127.0.0.1", "--num-cpus=2", "--include-dashboard=true", f"--temp-dir={temp}", *ports],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        with httpx.Client(base_url=address, timeout=2) as client:
            wait_for_status(client, "/api/version")
        yield address, env
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def _submit(command: list[str], env: dict, attempts: int = 6) -> subprocess.CompletedProcess:
    """Submit, retrying while the head's job agent is still starting (the dashboard answers before it)."""
    for _ in range(attempts):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent" not in result.stdout + result.stderr:
            return result
        time.sleep(5)
    return result


def test_index_job_through_ray_job_submit(head_node, offline_catalog, model_spec, tmp_path):
    address, env = head_node
    summary = tmp_path / "summary.json"
    command = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
               "python", "-m", "jobs.index", "--catalog", str(offline_catalog), "--model", model_spec,
               "--store-path", str(tmp_path / "store"), "--limit", "40", "--encode-cpus", "0.5",
               "--summary-json", str(summary)]
    result = _submit(command, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "indexed 40" in result.stdout and "images/s" in result.stdout
    report = json.loads(summary.read_text())
    assert report["indexed"] == 40 and report["points_in_collection"] == 40 and report["alias_switched"]
