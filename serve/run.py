"""Run a Serve config on this machine with a known metrics port: what `make serve` does.

python -m serve.run cluster/serve-config.yaml [--metrics-port 8080]

`serve run` starts Ray with a random metrics port; this starts it on --metrics-port (Prometheus scrapes
http://127.0.0.1:<port>/metrics), deploys every application of the config with its builder and args, prints where
the page, the API, the metrics and the dashboards' scrape file are, and runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
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


@entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve.run", description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="a Serve config file (cluster/serve-config.yaml)")
    parser.add_argument("--metrics-port", type=int, default=8080, help="Ray's Prometheus port on this node")
    args = parser.parse_args(argv)
    use_fast_path()  # before Ray starts: Serve reads these at import
    import ray
    from ray import serve

    config = yaml.safe_load(args.config.read_text())
    if unhandled(config):
        raise UsageError(f"{args.config}: {', '.join(unhandled(config))} not applied by python -m serve.run; "
                         "use `serve run` or `serve deploy` for such a config")
    http = {"host": "127.0.0.1", "port": 8000, **config.get("http_options", {})}
    ray.init(_metrics_export_port=args.metrics_port, include_dashboard=False)
    serve.start(proxy_location=config.get("proxy_location"), http_options=http)
    routes = deploy(config)
    base = f"http://{http['host']}:{http['port']}"
    print(f"search page {base}{routes[0]}  API docs {base}/docs  metrics http://127.0.0.1:{args.metrics_port}/metrics"
          f"  (Prometheus file_sd: /tmp/ray/prom_metrics_service_discovery.json; Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
