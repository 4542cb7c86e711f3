"""Run a Serve config on this machine with a known metrics port: what `make serve` does.

python -m serve.run cluster/serve-config.yaml [--metrics-port 8080]

`serve run` starts Ray with a random metrics port; this starts it on --metrics-port (Prometheus scrapes
http://127.0.0.1:<port>/metrics), deploys every application of the config with its builder and args, prints where
the page, the API, the metrics and this Ray session's logs are, and runs until Ctrl-C or SIGTERM (what Kubernetes,
systemd and every process manager send): both drain the requests in flight (Serve's graceful shutdown), stop Serve
and Ray, and exit 0; a stop that takes over --stop-timeout-s exits 1 instead of hanging.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from pathlib import Path

import yaml

from retrieval.entry import UsageError, entry
from serve.runtime import use_fast_path


HANDLED = {"proxy_location", "http_options", "applications"}
APP_HANDLED = {"name", "route_prefix", "import_path", "args"}


def unhandled(config: dict) -> list[str]:
    """The config's settings this runner would not apply (it refuses them rather than serve something else)."""
    keys = [key for key in config if key not in HANDLED]
    return keys + [f"applications[{i}].{key}" for i, app in enumerate(config.get("applications", []))
                   for key in app if key not in APP_HANDLED]


def deploy(config: dict) -> list[str]:
    """Each application of a Serve config, built by its import path with its args; their route prefixes."""
    from ray import serve

    routes = []
    for app in config["applications"]:
        module, _, attr = app["import_path"].partition(":")
        target = getattr(importlib.import_module(module), attr)
        application = target(app.get("args", {})) if callable(target) else target
        serve.run(application, name=app.get("name", "default"), route_prefix=app.get("route_prefix", "/"),
                  blocking=False)
        routes.append(app.get("route_prefix", "/"))
    return routes


class Stop(Exception):
    """SIGTERM arrived: stop as Ctrl-C does."""


def _on_sigterm(signum, frame) -> None:
    raise Stop()


def run_until_stopped(stop_timeout_s: float) -> None:
    """Wait for Ctrl-C or SIGTERM, then drain and stop Serve and Ray; past `stop_timeout_s`, exit 1 regardless.
    Ray's driver installs a handler of its own that aborts with a stack trace: ours replaces it."""
    import ray
    from ray import serve

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        threading.Event().wait()
    except (KeyboardInterrupt, Stop):
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the drain short
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watchdog = threading.Timer(stop_timeout_s, os._exit, (1,))
    watchdog.daemon = True
    watchdog.start()
    print("stopping: draining requests in flight", flush=True)
    serve.shutdown()
    ray.shutdown()
    watchdog.cancel()
    print("stopped", flush=True)


def where(http: dict, route: str, metrics_port: int, session_dir: str) -> str:
    """The line printed at start: every address and folder in it belongs to this run."""
    base = f"http://{http['host']}:{http['port']}"
    return (f"search page {base}{route}  API docs {base}/docs  metrics http://127.0.0.1:{metrics_port}/metrics\n"
            f"logs {session_dir}/logs (the service's own: {session_dir}/logs/serve/)  Ctrl-C or SIGTERM stops")


@entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve.run", description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="a Serve config file (cluster/serve-config.yaml)")
    parser.add_argument("--metrics-port", type=int, default=8080, help="Ray's Prometheus port on this node")
    parser.add_argument("--stop-timeout-s", type=float, default=60.0,
                        help="longest a stop (drain, Serve and Ray shutdown) may take before exiting 1")
    args = parser.parse_args(argv)
    use_fast_path()  # before Ray starts: Serve reads these at import
    import ray
    from ray import serve

    config = yaml.safe_load(args.config.read_text())
    if unhandled(config):
        raise UsageError(f"{args.config}: {', '.join(unhandled(config))} not applied by python -m serve.run; "
                         "use `serve run` or `serve deploy` for such a config")
    http = {"host": "127.0.0.1", "port": 8000, **config.get("http_options", {})}
    context = ray.init(_metrics_export_port=args.metrics_port, include_dashboard=False)
    serve.start(proxy_location=config.get("proxy_location"), http_options=http)
    routes = deploy(config)
    print(where(http, routes[0], args.metrics_port, context.address_info["session_dir"]), flush=True)
    run_until_stopped(args.stop_timeout_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
