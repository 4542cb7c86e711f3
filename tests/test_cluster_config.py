"""Configs stay honest: every YAML parses, import paths resolve, args validate, and the app matches `serve build`."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "cluster").rglob("*.yaml"))


def _resolve(import_path: str):
    module, _, attr = import_path.partition(":")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_yaml_parses(path):
    assert list(yaml.safe_load_all(path.read_text()))


def test_serve_config_builds_with_its_args():

    config = yaml.safe_load((ROOT / "cluster" / "serve-config.yaml").read_text())
    assert config["http_options"]["host"] == "127.0.0.1"
    for app in config["applications"]:
        builder = _resolve(app["import_path"])
        application = builder(app.get("args", {}))  # ServeArgs forbids unknown keys: a typo fails here
        assert type(application).__name__ == "Application"


def test_serve_config_matches_serve_build(tmp_path):
    """The deployments our config creates are the ones `serve build` finds in the app."""
    out = tmp_path / "built.yaml"
    subprocess.run([sys.executable, "-m", "ray.serve.scripts", "build", "serve.app:app", "-o", str(out)],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    built = yaml.safe_load(out.read_text())["applications"][0]
    names = {d["name"] for d in built["deployments"]}
    assert names == {"QueryEncoder", "SearchAPI"}
    from serve.app import ServeArgs

    args = yaml.safe_load((ROOT / "cluster" / "serve-config.yaml").read_text())["applications"][0]["args"]
    resources = {d["name"]: d["ray_actor_options"] for d in built["deployments"]}
    defaults = ServeArgs()
    assert resources["QueryEncoder"]["num_cpus"] == defaults.encoder_cpus == args["encoder_cpus"]
    assert resources["SearchAPI"]["num_cpus"] == defaults.ingress_cpus == args["ingress_cpus"]


def test_unknown_serve_arg_is_refused():
    from pydantic import ValidationError

    from serve.app import build_app

    with pytest.raises(ValidationError, match="encoder_cpu"):
        build_app({"encoder_cpu": 2})
