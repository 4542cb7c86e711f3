"""Entry points: one error boundary (a known error is one line and exit 2, a bug keeps its traceback), flags derived
from the settings that override them and nothing else, every `python -m` entry point behind the boundary, and a
service that imports no job."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import cli
from schemas.jobs import IndexConfig, StoreConfig
from schemas.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def run_module(*argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(ROOT), **env})


@pytest.mark.parametrize("argv, words", [
    (("jobs.query", "--model", "ViT-B-32", "--text", "hi"), "random weights"),
    (("jobs.query", "--model", "local-dir:/nope", "--text", "hi"), "not an open_clip folder"),
    (("jobs.index", "--catalog", "/nope/catalog"), "does not exist"),
    (("jobs.query", "--text", "hi", "--filter", "gender"), "field=value"),
])
def test_known_errors_are_one_line_and_exit_2(argv, words):
    result = run_module(*argv)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and words in lines[-1], result.stderr
    assert "Traceback" not in result.stderr


def test_a_bug_keeps_its_traceback(capsys):
    @cli.entry
    def buggy(argv=None):
        return {}["missing"]

    with pytest.raises(KeyError):
        buggy([])
    assert cli.entry(lambda argv=None: None)([]) == 0


def test_validation_errors_name_the_field(capsys):
    @cli.entry
    def bad_config(argv=None):
        IndexConfig.from_settings(batch_size=0)

    assert bad_config([]) == cli.USAGE_ERROR
    assert capsys.readouterr().err.startswith("error: batch_size: Input should be greater than 0")


def entry_modules() -> list[str]:
    """Every module of jobs/, bench/ and serve/ with a main()."""
    found = []
    for package in ("jobs", "bench", "serve"):
        for info in pkgutil.iter_modules([str(ROOT / package)]):
            module = importlib.import_module(f"{package}.{info.name}")
            if callable(getattr(module, "main", None)):
                found.append(module.__name__)
    return found


@pytest.mark.parametrize("module", entry_modules())
def test_every_entry_point_is_behind_the_boundary(module):
    main = importlib.import_module(module).main
    assert getattr(main, "__wrapped__", None) is not None, f"{module}.main is not wrapped by retrieval.entry.entry"


def test_the_service_imports_no_job():
    code = ("import sys, serve.app, serve.run; "
            "jobs = [m for m in sys.modules if m.split('.')[0] == 'jobs']; assert not jobs, jobs")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr


def test_flags_override_settings_and_nothing_else(tmp_path):
    settings = Settings(collection="from-env", store_path=tmp_path / "env-store", letterbox=True)
    cfg = IndexConfig.from_settings(settings, catalog=tmp_path, limit=None, store_path=None, batch_size=8)
    assert cfg.collection == "from-env" and cfg.letterbox and cfg.limit is None and cfg.batch_size == 8
    assert cfg.store.path == (tmp_path / "env-store").resolve() and cfg.catalog == tmp_path
    assert cfg.store == StoreConfig.from_settings(settings)
    moved = IndexConfig.from_settings(settings, store_path=tmp_path / "flag-store", qdrant_url=None)
    assert moved.store.path == (tmp_path / "flag-store").resolve() and moved.store.url is None


def test_settings_flags_are_the_settings_declarations():
    """A flag named as a setting is the setting: its type, its description and its bounds are the setting's, and a
    config field named as a setting declares nothing of its own."""
    from jobs import index, query

    parser = query.build_parser()
    flags = {action.dest: action for action in [*parser._actions, *index.build_parser()._actions]}
    for name in (*cli.STORE_FLAGS, "model", "device", "precision", "catalog", "catalog_format", "letterbox"):
        assert Settings.model_fields[name].description in flags[name].help, name
    for name in set(IndexConfig.model_fields) & set(Settings.model_fields):
        field = IndexConfig.model_fields[name]
        assert field.is_required() and field.description is None, name
        assert field.metadata in ([], Settings.model_fields[name].metadata), name  # only what the shared type carries
    assert flags["qdrant_grpc"].nargs == 0 and flags["store_path"].type is Path
    args = parser.parse_args(["--text", "x", "--collection", "flagged", "--qdrant-grpc", "--store-path", "/tmp/s"])
    s = cli.settings_of(args)
    assert (s.collection, s.qdrant_grpc, s.store_path, s.model) == ("flagged", True, Path("/tmp/s"),
                                                                     Settings().model)
    with pytest.raises(ValueError, match="qdrant_timeout_s"):
        Settings().with_values(qdrant_timeout_s=-1)
    with pytest.raises(TypeError, match="not settings: limit"):
        Settings().with_values(limit=3)


def test_the_api_key_is_kept_out_of_reprs_and_help(tmp_path):
    settings = Settings(qdrant_api_key="s3cret", store_path=tmp_path)
    assert "s3cret" not in repr(settings) and StoreConfig.from_settings(settings).api_key == "s3cret"
    result = run_module("jobs.inspect", "--help", FASHION_QDRANT_API_KEY="s3cret")
    assert result.returncode == 0 and "--qdrant-api-key" in result.stdout and "s3cret" not in result.stdout


def test_index_flags_default_to_none_so_settings_apply():
    from jobs import index

    given = {k: v for k, v in vars(index.build_parser().parse_args([])).items() if v is not None}
    assert given == {}
    assert "(default: 64)" in index.build_parser().format_help()
