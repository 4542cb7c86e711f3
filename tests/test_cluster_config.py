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
    """The deployments our config creates are the ones `serve build` finds in the app, with the same resources."""
    out = tmp_path / "built.yaml"
    subprocess.run([sys.executable, "-m", "ray.serve.scripts", "build", "serve.app:app", "-o", str(out)],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    built = yaml.safe_load(out.read_text())["applications"][0]
    from serve.app import ServeArgs

    args = yaml.safe_load((ROOT / "cluster" / "serve-config.yaml").read_text())["applications"][0]["args"]
    defaults = ServeArgs()
    assert args["encoder_placement"] == defaults.encoder_placement == "ingress"
    assert {d["name"] for d in built["deployments"]} == {"SearchAPI"}  # the encoder runs inside the ingress
    ingress = built["deployments"][0]["ray_actor_options"]
    assert args["encoder_cpus"] == defaults.encoder_cpus and args["ingress_cpus"] == defaults.ingress_cpus
    assert ingress["num_cpus"] == defaults.ingress_cpus + defaults.encoder_cpus


def test_encoder_deployment_placement_builds_both_deployments():
    from serve.app import build_app

    app = build_app({"encoder_placement": "deployment", "encoder_cpus": 0.5, "encoder_gpus": 1})
    deployments = {d.name: d for d in _deployments(app)}
    assert set(deployments) == {"QueryEncoder", "SearchAPI"}
    assert deployments["QueryEncoder"].ray_actor_options == {"num_cpus": 0.5, "num_gpus": 1}


def _deployments(app):
    """Every deployment bound in an Application (the ingress and what its arguments bind)."""
    from ray.serve._private.build_app import build_app as flatten

    return flatten(app, name="probe").deployments


def test_unknown_serve_arg_is_refused():
    from pydantic import ValidationError

    from serve.app import build_app

    with pytest.raises(ValidationError, match="encoder_cpu"):
        build_app({"encoder_cpu": 2})
