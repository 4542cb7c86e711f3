"""python -m serve.run (what `make serve` runs) as a process manager sees it: it prints folders that are its own,
and SIGTERM drains, stops Serve and Ray and exits 0 within a bounded time."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from tests.conftest import free_port, wait_for_status

pytestmark = [pytest.mark.ray, pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[1]
STOPPED_WITHIN_S = 60


@pytest.fixture
def service(small_index, model_spec, tmp_path):
    """`python -m serve.run` over the small index on free ports: the process, its first lines, a client."""
    port, config = free_port(), yaml.safe_load((ROOT / "cluster" / "serve-config.yaml").read_text())
    config["http_options"]["port"] = port
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "FASHION_MODEL": model_spec, "FASHION_STORE_PATH": str(small_index.store.path),
           "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()), "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port())}
    env.pop("RAY_ADDRESS", None)  # its own Ray, as make serve starts
    log = (tmp_path / "out.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "serve.run", str(tmp_path / "serve.yaml"), "--metrics-port",
                                str(free_port())], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        wait_for_status(client, "/readyz", seconds=240)
        printed(tmp_path / "out.log", r"^logs (\S+)/logs ")  # /readyz may answer before the line is out
        yield process, (tmp_path / "out.log"), client, port
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
        log.close()


def printed(out: Path, pattern: str, seconds: float = 60) -> re.Match:
    """The first match of `pattern` in the process's output, waiting for it (bounded)."""
    deadline = time.monotonic() + seconds
    while not (found := re.search(pattern, out.read_text(), re.MULTILINE)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert found, f"{pattern!r} never printed: {out.read_text()[-2000:]}"
    return found


def test_sigterm_drains_stops_serve_and_ray_and_exits_0(service):
    process, out, client, port = service
    session = Path(printed(out, r"^logs (\S+)/logs ").group(1))
    assert (session / "logs" / "serve").is_dir(), "the printed log folder is this run's own and exists"
    assert "prom_metrics_service_discovery" not in out.read_text()  # a file this service never writes
    assert client.post("/search", json={"text": "red dress"}).status_code == 200
    family = psutil.Process(process.pid).children(recursive=True)  # Ray's processes, Serve's actors, HAProxy
    assert family
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=STOPPED_WITHIN_S) == 0, out.read_text()[-3000:]
    _, alive = psutil.wait_procs(family, timeout=max(1.0, STOPPED_WITHIN_S - (time.monotonic() - started)))
    assert not alive, [p.info if hasattr(p, "info") else p.pid for p in alive]
    assert "Aborted" not in out.read_text() and "Fatal" not in out.read_text()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    replica_logs = "".join(p.read_text() for p in (session / "logs" / "serve").glob("replica_*.log"))
    assert '"status": 200' in replica_logs, "the search's log line is in the documented folder"
