"""The cluster manifests agree with the code and with each other, checked without a cluster.

cluster/ holds a Ray cluster-launcher config, a KubeRay RayJob (reindex) and RayService (search), Helm values and a
compose file for Qdrant; docs/cluster.md has the commands that use them. A manifest is only read by a real cluster,
so a typo would surface there, after a GPU node came up. Here instead: import paths import, the index job's flags
parse with jobs.index's own parser, Serve configs pass Ray's schema and serve.app.ServeArgs, every FASHION_* name is
a setting, one Ray version, one Qdrant version and one commit everywhere, a GPU for every encoder, the same
collection, model, Qdrant address and API-key Secret on every side; the Serve config builds the deployments that
`serve build` finds.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
DOC = ROOT / "docs" / "cluster.md"
MANIFESTS = sorted(CLUSTER.rglob("*.yaml"))
RAY_JOB = CLUSTER / "kuberay" / "ray-job.reindex.yaml"
FINETUNE_JOB = CLUSTER / "kuberay" / "ray-job.finetune.yaml"
RAY_SERVICE = CLUSTER / "kuberay" / "ray-service.search.yaml"
LAUNCHER = CLUSTER / "ray-cluster.gpu.yaml"
QDRANT_VALUES = CLUSTER / "qdrant" / "values.yaml"
QDRANT_DISTRIBUTED = CLUSTER / "qdrant" / "values.distributed.yaml"
COMPOSE = CLUSTER / "qdrant" / "compose.yaml"

# KubeRay fields whose value is itself YAML (a string): read them as YAML too.
EMBEDDED_YAML = ("serveConfigV2", "runtimeEnvYAML")
SHELL_OPERATORS = {"|", "||", "&", "&&", ";", ">", ">>", "<", "(", ")"}
FASHION_NAME = re.compile(r"\bFASHION_[A-Z0-9_]+\b")
RAY_IMAGE = re.compile(r"\brayproject/ray(?:-ml)?:(\S+)")
RAY_IMAGE_TAG = re.compile(r"^(\d+\.\d+\.\d+)-py(\d)(\d+)(-gpu|-cu\d+)?$")
PINNED_CODE = re.compile(r"https://github\.com/([\w.-]+/[\w.-]+)/archive/([^\"'\s/]+)\.zip|git\+\S+?@([\w.-]+)")
SHA = re.compile(r"^[0-9a-f]{40}$")
GPU = "nvidia.com/gpu"
JOBS_WITH_PARSERS = ("jobs.index", "jobs.query", "jobs.finetune")  # their parse_args(argv) only parses: no I/O


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def walk(node, key: str | None = None):
    """Every (key, value) pair below `node`, descending into lists and into embedded YAML strings."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            if k in EMBEDDED_YAML and isinstance(v, str):
                v = yaml.safe_load(v)
                yield k, v
            yield from walk(v, k)
    elif isinstance(node, list):
        for item in node:
            yield key, item
            yield from walk(item, key)


def strings(node) -> list[str]:
    return [v for _, v in walk(node) if isinstance(v, str)]


def kuberay() -> list[tuple[Path, dict]]:
    """The KubeRay objects (RayJob, RayService) of cluster/."""
    docs = [(p, load(p)) for p in MANIFESTS]
    return [(p, d) for p, d in docs if isinstance(d, dict) and str(d.get("apiVersion", "")).startswith("ray.io/")]


def cluster_spec(doc: dict) -> dict:
    return doc["spec"].get("rayClusterSpec") or doc["spec"]["rayClusterConfig"]


def groups(doc: dict) -> list[tuple[str, dict]]:
    """(name, group) for the head and each worker group of a KubeRay object."""
    spec = cluster_spec(doc)
    return [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]


def ray_container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]  # KubeRay's convention: the Ray container comes first


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def gpus(container: dict) -> int:
    limits = container.get("resources", {}).get("limits", {})
    return int(limits.get(GPU, 0))


def cpus(container: dict) -> float:
    value = str(container["resources"]["limits"]["cpu"])
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def serve_configs() -> list[tuple[str, dict]]:
    """Every Serve config: files with `applications`, and the RayServices' serveConfigV2."""
    found = []
    for path in MANIFESTS:
        doc = load(path)
        if isinstance(doc, dict) and "applications" in doc:
            found.append((path.name, doc))
        found += [(path.name, v) for k, v in walk(doc) if k == "serveConfigV2" and isinstance(v, dict)]
    return found


def service_app() -> dict:
    (config,) = [c for name, c in serve_configs() if name == RAY_SERVICE.name]
    (app,) = config["applications"]
    return app


def doc_commands() -> list[str]:
    """Shell commands of docs/cluster.md's code blocks, continuation lines joined, here-documents left out."""
    commands, heredoc_end = [], None
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", DOC.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if heredoc_end is not None:
                heredoc_end = None if line.strip() == heredoc_end else heredoc_end
                continue
            if line.strip():
                commands.append(line)
                here = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
                heredoc_end = here[1] if here else None
    return commands


def python_modules(command: str) -> list[tuple[str, list[str]]]:
    """(module, argv) for each `python -m module argv...` in a shell command."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = list(lexer)
    found = []
    for i, token in enumerate(tokens[:-2]):
        if re.fullmatch(r"python3?(\.\d+)?", Path(token).name) and tokens[i + 1] == "-m":
            argv = []
            for arg in tokens[i + 3:]:
                if arg in SHELL_OPERATORS:
                    break
                argv.append(arg)
            found.append((tokens[i + 2], argv))
    return found


def manifest_commands() -> list[tuple[str, str]]:
    return [(p.name, s) for p in MANIFESTS for s in strings(load(p)) if "python" in s and "-m" in s]


ENTRYPOINTS = [(src, module, argv) for src, command in manifest_commands() + [(DOC.name, c) for c in doc_commands()]
               for module, argv in python_modules(command)]


def parsed(module: str, argv: list[str], capsys, monkeypatch):
    """The module's own parse_args on these arguments: flags, choices, types (and IndexConfig's validation).

    argparse also takes an unambiguous prefix of a flag (--encode-gpu for --encode-gpus), which a flag added later
    can make ambiguous: each --flag must be spelled out as the parser's help lists it.
    """
    parsers = []
    parse = argparse.ArgumentParser.parse_args
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args",
                        lambda self, *a, **k: parsers.append(self) or parse(self, *a, **k))
    try:
        result = importlib.import_module(module).parse_args(argv)
    except SystemExit as exc:  # argparse exits on an unknown flag or a bad value
        pytest.fail(f"python -m {module} {shlex.join(argv)}: {capsys.readouterr().err.strip()} (exit {exc.code})")
    flags = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", parsers[-1].format_help()))
    spelled = {arg.partition("=")[0] for arg in argv if arg.startswith("--")}
    assert spelled <= flags, f"python -m {module}: {sorted(spelled - flags)} abbreviated or unknown"
    return result


def index_config(argv: list[str], capsys, monkeypatch):
    return parsed("jobs.index", argv, capsys, monkeypatch)


def test_there_is_something_to_check():
    assert {RAY_JOB, FINETUNE_JOB, RAY_SERVICE, LAUNCHER, QDRANT_VALUES, COMPOSE} <= set(MANIFESTS)
    assert DOC.is_file()
    assert {m for _, m, _ in ENTRYPOINTS} >= {"jobs.index"}
    assert any(src == RAY_JOB.name and m == "jobs.index" for src, m, _ in ENTRYPOINTS)


@pytest.mark.parametrize("module", sorted({m for _, m, _ in ENTRYPOINTS}))
def test_python_entrypoints_import(module):
    """`python -m X` in a manifest or in the docs names a module of this environment."""
    assert importlib.util.find_spec(module) is not None, f"python -m {module}: no such module"
    importlib.import_module(module)


@pytest.mark.parametrize("config", serve_configs(), ids=lambda c: c[0])
def test_serve_import_paths_resolve(config):
    _, config = config
    for app in config["applications"]:
        module, _, attr = app["import_path"].partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), app["import_path"]


@pytest.mark.parametrize("entry", [e for e in ENTRYPOINTS if e[1] in JOBS_WITH_PARSERS],
                         ids=lambda e: f"{e[0]}:{e[1]} {' '.join(e[2])[:60]}")
def test_job_flags_are_accepted(entry, capsys, monkeypatch):
    """Every flag given to jobs.index (or jobs.query) in a manifest or the docs is one its parser knows."""
    _, module, argv = entry
    parsed(module, argv, capsys, monkeypatch)


@pytest.mark.parametrize("config", serve_configs(), ids=lambda c: c[0])
def test_serve_configs_pass_rays_schema_and_serve_args(config):
    """Ray's own schema for the config, ServeArgs (unknown keys refused) and build_app's rules for each app."""
    from ray.runtime_env import RuntimeEnv
    from ray.serve.schema import ServeDeploySchema

    from serve.api import SearchAPIDeployment
    from serve.app import ServeArgs, build_app
    from serve.encoder import QueryEncoder

    _, config = config
    ServeDeploySchema.model_validate(config)
    for app in config["applications"]:
        args = app.get("args", {})
        ServeArgs.model_validate(args)
        assert type(build_app(args)).__name__ == "Application"  # e.g. ingress_replicas > 1 needs qdrant_url
        RuntimeEnv(**app.get("runtime_env", {}))  # pip / working_dir forms (a URI must be an archive)
        overridden = {d["name"] for d in app.get("deployments", [])}
        built = {SearchAPIDeployment.name} | ({QueryEncoder.name} if ServeArgs.model_validate(args).encoder_placement ==
                                    "deployment" else set())
        assert overridden <= built, f"no such deployment: {overridden - built}"


def test_runtime_envs_are_valid():
    from ray.runtime_env import RuntimeEnv

    envs = [v for p in MANIFESTS for k, v in walk(load(p)) if k == "runtimeEnvYAML" and isinstance(v, dict)]
    assert envs
    for env in envs:
        RuntimeEnv(**env)


def test_fashion_variables_are_settings():
    """A FASHION_* name in a manifest or the docs is a field of schemas.settings.Settings (else it is ignored)."""
    from schemas.settings import Settings

    known = {f"FASHION_{name.upper()}" for name in Settings.model_fields}
    for path in [*MANIFESTS, DOC]:
        unknown = set(FASHION_NAME.findall(path.read_text())) - known
        assert not unknown, f"{path.relative_to(ROOT)}: {sorted(unknown)} are not settings (known: {sorted(known)})"


def test_one_ray_version_everywhere():
    """rayVersion and every rayproject image name the installed Ray, the one pyproject.toml pins."""
    import ray
    from packaging.specifiers import SpecifierSet

    pyproject = (ROOT / "pyproject.toml").read_text()  # (tomllib is 3.11+, the project supports 3.10)
    assert re.findall(r'"ray\[[\w,]+\]==([^"]+)"', pyproject) == [ray.__version__]
    python_ok = SpecifierSet(re.search(r'^requires-python\s*=\s*"([^"]+)"', pyproject, flags=re.M)[1])
    versions = [v for p in MANIFESTS for k, v in walk(load(p)) if k == "rayVersion"]
    tags = {tag for p in MANIFESTS for s in strings(load(p)) for tag in RAY_IMAGE.findall(s)}
    assert len(versions) == len(kuberay()) and tags
    assert set(versions) == {ray.__version__}, versions
    assert len(tags) == 1, f"one image everywhere, found {sorted(tags)}"
    for tag in tags:
        match = RAY_IMAGE_TAG.match(tag)
        assert match, f"rayproject/ray:{tag} does not name a Ray version and a Python"
        assert match[1] == ray.__version__, tag
        assert f"{match[2]}.{match[3]}" in python_ok, f"{tag}: Python {match[2]}.{match[3]} is not {python_ok}"
        assert match[4], f"{tag}: the GPU nodes need the image with CUDA"


def test_ray_auth_mode_is_explicit():
    """Every Ray container says RAY_AUTH_MODE, in agreement with KubeRay's authOptions; VM nodes get the token."""
    for path, doc in kuberay():
        mode = cluster_spec(doc).get("authOptions", {}).get("mode")
        for name, group in groups(doc):
            env = env_of(ray_container(group))
            assert "value" in env.get("RAY_AUTH_MODE", {}), f"{path.name} {name}: RAY_AUTH_MODE not set"
            assert mode is None or env["RAY_AUTH_MODE"]["value"] == mode, f"{path.name} {name}: authOptions {mode}"
    launcher = load(LAUNCHER)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in launcher[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start), key
    assert "~/.ray/auth_token" in launcher["file_mounts"]


def test_every_ray_pod_has_the_same_environment():
    """Drivers, actors and replicas run on any pod: they must all see the same settings."""
    for path, doc in kuberay():
        envs = {name: ray_container(group).get("env") for name, group in groups(doc)}
        assert len({json.dumps(e, sort_keys=True) for e in envs.values()}) == 1, f"{path.name}: {envs}"


def test_the_launcher_config_passes_rays_schema():
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(load(LAUNCHER), schema)


def test_a_gpu_for_every_encoder(capsys, monkeypatch):
    """One whole GPU per encoder actor (job) and replica (service), and enough GPU pods for all of them."""
    job = load(RAY_JOB)
    cfg = index_config(python_modules(job["spec"]["entrypoint"])[0][1], capsys, monkeypatch)
    assert cfg.encode_gpus == 1, "one whole GPU per encoder actor"
    gpu_groups = [(n, g) for n, g in groups(job) if gpus(ray_container(g))]
    assert gpu_groups, "the RayJob has no GPU worker group"
    assert not cluster_spec(job).get("enableInTreeAutoscaling"), "a fixed-size cluster for the batch job"
    for name, group in gpu_groups:
        container = ray_container(group)
        assert container["resources"]["requests"][GPU] == container["resources"]["limits"][GPU], name
        assert cpus(container) >= cfg.encode_cpus, f"{name}: fewer CPUs than one encoder actor asks for"
    assert sum(g["replicas"] * gpus(ray_container(g)) for _, g in gpu_groups) >= cfg.encode_actors * cfg.encode_gpus

    service = load(RAY_SERVICE)
    app = service_app()
    args = app["args"]
    scaling = {d["name"]: d.get("autoscaling_config", {}) for d in app.get("deployments", [])}
    encoder, ingress = scaling["QueryEncoder"], scaling["SearchAPI"]
    assert args["encoder_placement"] == "deployment", "GPU encoder replicas scale apart from the ingress"
    assert args["encoder_gpus"] == 1, "one whole GPU per encoder replica"
    assert encoder["min_replicas"] <= args["encoder_replicas"] <= encoder["max_replicas"]
    assert ingress["min_replicas"] <= args["ingress_replicas"] <= ingress["max_replicas"]
    gpu_groups = [g for _, g in groups(service) if gpus(ray_container(g))]
    assert gpu_groups and cluster_spec(service)["enableInTreeAutoscaling"]
    assert all(cpus(ray_container(g)) >= args["encoder_cpus"] for g in gpu_groups)
    assert sum(g["minReplicas"] * gpus(ray_container(g)) for g in gpu_groups) >= encoder["min_replicas"]
    assert sum(g["maxReplicas"] * gpus(ray_container(g)) for g in gpu_groups) >= encoder["max_replicas"]
    head = cluster_spec(service)["headGroupSpec"]
    cpu_total = sum(g["maxReplicas"] * cpus(ray_container(g)) for n, g in groups(service) if n != "head")
    cpu_total += float(head.get("rayStartParams", {}).get("num-cpus", cpus(ray_container(head))))
    needed = encoder["max_replicas"] * args["encoder_cpus"] + ingress["max_replicas"] * args["ingress_cpus"]
    assert cpu_total >= needed, f"{cpu_total} CPUs at most for {needed} CPUs of replicas"

    launcher = load(LAUNCHER)
    gpu_nodes = [t for t in launcher["available_node_types"].values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_nodes, "the launcher config has no GPU node type"
    for node in gpu_nodes:
        assert 0 <= node["min_workers"] <= node["max_workers"] <= launcher["max_workers"]


def test_a_gpu_for_every_training_worker(capsys, monkeypatch):
    """The fine-tune job's workers each get a whole GPU, and its checkpoints and model folder lie on storage that
    every pod mounts (rank 0 writes checkpoints on a worker pod, the driver writes the folder on the head)."""
    job = load(FINETUNE_JOB)
    cfg = parsed("jobs.finetune", python_modules(job["spec"]["entrypoint"])[0][1], capsys, monkeypatch)
    assert cfg.gpus == "1" and cfg.workers >= 2, "data-parallel over whole GPUs"
    gpu_groups = [g for _, g in groups(job) if gpus(ray_container(g))]
    assert sum(g["replicas"] * gpus(ray_container(g)) for g in gpu_groups) >= cfg.workers
    assert all(cpus(ray_container(g)) >= cfg.cpus_per_worker for g in gpu_groups)
    for name, group in groups(job):
        mounts = {m["mountPath"]: m for m in ray_container(group).get("volumeMounts", [])}
        for path in (cfg.out, cfg.storage_path):
            mount = next((m for p, m in mounts.items() if str(path).startswith(p + "/")), None)
            assert mount and not mount.get("readOnly"), f"{name}: {path} is not on a writable shared mount"


def test_the_catalog_is_mounted_where_the_job_reads_it(capsys, monkeypatch):
    """Decode tasks read the photos on any pod, and the service serves them from the recorded catalog root."""
    job = load(RAY_JOB)
    cfg = index_config(python_modules(job["spec"]["entrypoint"])[0][1], capsys, monkeypatch)
    assert cfg.catalog_format == "deepfashion-mm"
    for path, doc in kuberay():
        for name, group in groups(doc):
            mounts = {m["mountPath"]: m for m in ray_container(group).get("volumeMounts", [])}
            assert str(cfg.catalog) in mounts, f"{path.name} {name}: {cfg.catalog} is not mounted"
            mount = mounts[str(cfg.catalog)]
            assert mount.get("readOnly"), f"{path.name} {name}: mount the catalog read-only"
            volume = {v["name"]: v for v in group["template"]["spec"]["volumes"]}[mount["name"]]
            assert volume["persistentVolumeClaim"]["claimName"], f"{path.name} {name}: not shared storage"
    launcher = load(LAUNCHER)
    assert any(f":{cfg.catalog}:ro" in option for option in launcher["docker"]["run_options"])


def test_the_collection_is_the_same_everywhere():
    from schemas.settings import Settings

    default = Settings.model_fields["collection"].default
    found = []
    for path in MANIFESTS:
        doc = load(path)
        found += [(path.name, e["value"]) for k, e in walk(doc) if isinstance(e, dict)
                  and e.get("name") == "FASHION_COLLECTION" and "value" in e]
        found += [(path.name, v) for s in strings(doc) for v in re.findall(r"\bFASHION_COLLECTION=(\S+)", s)]
    found += [(name, app["args"]["collection"]) for name, c in serve_configs() for app in c["applications"]
              if "collection" in app.get("args", {})]
    found += [(src, argv[argv.index("--collection") + 1]) for src, _, argv in ENTRYPOINTS if "--collection" in argv]
    assert {name for name, _ in found} >= {RAY_JOB.name, RAY_SERVICE.name, LAUNCHER.name}
    assert {value for _, value in found} == {default}, found


def test_the_same_real_model_on_every_side():
    """The job and the service use one hub model (the collection records it), downloaded: HF_HUB_OFFLINE=0."""
    import open_clip

    from retrieval.model import ModelSpec

    models, offline = [], []
    for path, doc in kuberay():
        for _, group in groups(doc):
            env = env_of(ray_container(group))
            models.append((path.name, env["FASHION_MODEL"]["value"]))
            offline.append((path.name, env["HF_HUB_OFFLINE"]["value"]))
    for command in strings(load(LAUNCHER)):
        if "ray start" in command:
            models += [(LAUNCHER.name, m) for m in re.findall(r"\bFASHION_MODEL=(\S+)", command)]
            offline += [(LAUNCHER.name, m) for m in re.findall(r"\bHF_HUB_OFFLINE=(\S+)", command)]
    assert {name for name, _ in models} == {RAY_JOB.name, FINETUNE_JOB.name, RAY_SERVICE.name, LAUNCHER.name}
    assert len({m for _, m in models}) == 1, models
    assert {o for _, o in offline} == {"0"}, offline
    spec = ModelSpec.parse(models[0][1])
    assert spec.local_dir is None and spec.pretrained, f"{spec}: not NAME/TAG of open_clip's hub models"
    assert (spec.name, spec.pretrained) in open_clip.list_pretrained(), f"{spec} is not an open_clip model"


def test_qdrant_is_reached_at_the_charts_service():
    """The URL in the Ray manifests is the chart's Service and HTTP port; compose publishes the same ports."""
    values = load(QDRANT_VALUES)
    ports = {p["name"]: p["port"] for p in values["service"]["ports"]}
    namespaces = {doc["metadata"]["namespace"] for _, doc in kuberay()}
    assert len(namespaces) == 1
    host = f"{values['fullnameOverride']}.{namespaces.pop()}.svc.cluster.local"
    urls = [e["value"] for _, doc in kuberay() for k, e in walk(doc)
            if isinstance(e, dict) and e.get("name") == "FASHION_QDRANT_URL"]
    urls += [service_app()["args"]["qdrant_url"]]
    urls += [argv[argv.index("--qdrant-url") + 1] for src, _, argv in ENTRYPOINTS
             if "--qdrant-url" in argv and src != DOC.name]
    assert len(urls) >= 2
    for url in urls:
        parts = urlsplit(url)
        # With an API key and no scheme, qdrant-client assumes https: the scheme must be written.
        assert parts.scheme == "http" and parts.hostname == host and parts.port == ports["http"] == 6333, url
    compose = load(COMPOSE)["services"]["qdrant"]
    assert set(compose["ports"]) == {f"127.0.0.1:{ports['http']}:6333", f"127.0.0.1:{ports['grpc']}:6334"}


def test_the_distributed_qdrant_overlay_holds_the_layout_it_documents():
    """3 nodes in consensus over the chart's p2p port, one pod per Kubernetes node and at most one down at a time,
    and the index command it shows asks for no more copies than there are nodes (Qdrant would refuse it)."""
    base, overlay = load(QDRANT_VALUES), load(QDRANT_DISTRIBUTED)
    ports = {p["name"]: p["port"] for p in base["service"]["ports"]}
    nodes = overlay["replicaCount"]
    assert nodes >= 3 and overlay["config"]["cluster"]["enabled"] is True
    assert overlay["config"]["cluster"]["p2p"]["port"] == ports["p2p"]
    assert overlay["podDisruptionBudget"]["maxUnavailable"] == 1
    spread = overlay["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert not {"image", "apiKey", "service", "fullnameOverride"} & set(overlay), "the overlay changes only the layout"
    layout = dict(re.findall(r"--(shard-number|replication-factor|write-consistency-factor) (\d+)",
                             QDRANT_DISTRIBUTED.read_text()))
    shards, copies, acks = (int(layout[k]) for k in ("shard-number", "replication-factor", "write-consistency-factor"))
    assert shards % nodes == 0 and 2 <= copies <= nodes and 1 <= acks <= copies


def test_one_qdrant_version_within_reach_of_the_client():
    from importlib.metadata import version

    values = load(QDRANT_VALUES)
    compose_image = load(COMPOSE)["services"]["qdrant"]["image"]
    assert values["image"]["repository"].endswith("qdrant/qdrant") and compose_image.startswith("qdrant/qdrant:")
    tags = {values["image"]["tag"], compose_image.partition(":")[2]}
    assert len(tags) == 1, tags
    server = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", tags.pop())
    assert server, "pin the Qdrant image to a release (vX.Y.Z)"
    client = [int(x) for x in version("qdrant-client").split(".")[:2]]
    assert int(server[1]) == client[0] and abs(int(server[2]) - client[1]) <= 1, "qdrant-client warns beyond a minor"


def test_the_qdrant_api_key_only_comes_from_the_secret():
    values = load(QDRANT_VALUES)
    secret = values["apiKey"]["valueFrom"]["secretKeyRef"]
    refs = []
    for path in MANIFESTS:
        for _, entry in walk(load(path)):
            if isinstance(entry, dict) and entry.get("name") == "FASHION_QDRANT_API_KEY":
                assert "value" not in entry, f"{path.name}: the API key written in a manifest"
                refs.append(entry["valueFrom"]["secretKeyRef"])
    assert refs and all(r == secret for r in refs), refs
    for _, config in serve_configs():
        assert all("qdrant_api_key" not in app.get("args", {}) for app in config["applications"])
    assert not [e for e in ENTRYPOINTS if "--qdrant-api-key" in e[2] and e[0] != DOC.name]
    assert re.search(r"QDRANT__SERVICE__API_KEY: \$\{FASHION_QDRANT_API_KEY:\?", COMPOSE.read_text())


def test_code_is_pinned_to_one_commit():
    """Clusters install this repository at one commit (an archive of a SHA), never a branch."""
    pins = [m.groups() for p in MANIFESTS for m in PINNED_CODE.finditer(p.read_text())]
    assert pins, "no pinned code found"
    refs = {archive or git for _, archive, git in pins}
    assert len(refs) == 1 and SHA.match(next(iter(refs))), f"one full commit SHA everywhere, found {sorted(refs)}"
    assert len({repo for repo, _, _ in pins if repo}) == 1
    for path in (RAY_JOB, RAY_SERVICE):
        envs = [v for k, v in walk(load(path)) if k in ("runtimeEnvYAML", "runtime_env") and isinstance(v, dict)]
        assert envs and all(PINNED_CODE.search(str(env.get("working_dir", ""))) for env in envs), path.name
    assert any(PINNED_CODE.search(c) for c in load(LAUNCHER)["setup_commands"])
    sha = refs.pop()
    if shutil.which("git") is None:
        pytest.skip("no git: cannot look the pinned commit up")
    shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=ROOT, capture_output=True, text=True)
    if shallow.returncode != 0 or shallow.stdout.strip() != "false":
        pytest.skip("not a full git checkout: cannot look the pinned commit up")
    for obj in (f"{sha}^{{commit}}", f"{sha}:jobs/index.py", f"{sha}:serve/app.py"):
        found = subprocess.run(["git", "cat-file", "-e", obj], cwd=ROOT, capture_output=True)
        assert found.returncode == 0, f"{obj} is not in this repository's history"


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently: a second `env:` or `resources:` would drop the first."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=True) for key, _ in node.value]
        repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
        if repeated:
            raise yaml.constructor.ConstructorError(None, None, f"keys given twice: {repeated}", node.start_mark)
        return super().construct_mapping(node, deep)


KUBERAY_KINDS = {"ray-job": "RayJob", "ray-service": "RayService"}  # KubeRay's file names: <kind>.<purpose>.yaml


def test_a_repeated_key_is_refused():
    with pytest.raises(yaml.constructor.ConstructorError, match="given twice"):
        yaml.load("env:\n  A: 1\nenv:\n  B: 2\n", Loader=UniqueKeyLoader)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_is_one_mapping_without_repeated_keys(path):
    """One YAML document, a mapping, no key given twice, in the file and in the YAML embedded in its strings; a
    KubeRay file holds the kind its name says."""
    docs = list(yaml.load_all(path.read_text(), Loader=UniqueKeyLoader))
    assert len(docs) == 1 and isinstance(docs[0], dict), f"{path.name}: one mapping expected"
    for key, value in walk(docs[0]):
        if key in EMBEDDED_YAML and isinstance(value, str):
            assert isinstance(yaml.load(value, Loader=UniqueKeyLoader), dict), f"{path.name}: {key}"
    kind = KUBERAY_KINDS.get(path.name.split(".")[0])
    if kind:
        assert docs[0]["apiVersion"] == "ray.io/v1" and docs[0]["kind"] == kind, path.name
        assert docs[0]["metadata"]["name"] and docs[0]["metadata"]["namespace"], path.name


def test_serve_config_matches_serve_build(tmp_path):
    """The deployments our config creates are the ones `serve build` finds in the app, with the same resources."""
    from serve.app import ServeArgs

    out = tmp_path / "built.yaml"
    subprocess.run([sys.executable, "-m", "ray.serve.scripts", "build", "serve.app:app", "-o", str(out)],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    built = yaml.safe_load(out.read_text())["applications"][0]
    (_, config), = [c for c in serve_configs() if c[0] == "serve-config.yaml"]
    args, defaults = config["applications"][0]["args"], ServeArgs()
    assert config["http_options"]["host"] == "127.0.0.1"
    assert args["encoder_placement"] == defaults.encoder_placement == "ingress"
    assert {d["name"] for d in built["deployments"]} == {"SearchAPI"}  # the encoder runs inside the ingress
    ingress = built["deployments"][0]["ray_actor_options"]
    assert args["encoder_cpus"] == defaults.encoder_cpus and args["ingress_cpus"] == defaults.ingress_cpus
    assert ingress["num_cpus"] == defaults.ingress_cpus + defaults.encoder_cpus


def test_make_serve_applies_every_setting_of_its_config():
    """python -m serve.run (make serve) applies the config's proxy, HTTP options and applications, and refuses a
    config with settings it would otherwise drop."""
    from serve.run import unhandled

    (_, config), = [c for c in serve_configs() if c[0] == "serve-config.yaml"]
    assert unhandled(config) == []
    extended = {**config, "grpc_options": {}, "applications": [{**config["applications"][0], "runtime_env": {}}]}
    assert unhandled(extended) == ["grpc_options", "applications[0].runtime_env"]


def test_encoder_deployment_placement_builds_both_deployments():
    from ray.serve._private.build_app import build_app as flatten

    from serve.app import build_app

    app = build_app({"encoder_placement": "deployment", "encoder_cpus": 0.5, "encoder_gpus": 1})
    deployments = {d.name: d for d in flatten(app, name="probe").deployments}
    assert set(deployments) == {"QueryEncoder", "SearchAPI"}
    assert deployments["QueryEncoder"].ray_actor_options == {"num_cpus": 0.5, "num_gpus": 1}


def test_unknown_serve_arg_is_refused():
    from pydantic import ValidationError

    from serve.app import build_app

    with pytest.raises(ValidationError, match="encoder_cpu"):
        build_app({"encoder_cpu": 2})


def test_serve_args_declare_no_setting_and_take_each_by_name():
    """A setting is declared once (schemas/settings.py): ServeArgs takes it by name over FASHION_*, and hands the
    encoder and SearchAPI typed configs built from it."""
    from schemas.settings import Settings, get_settings
    from serve.app import SERVICE_SETTINGS, ServeArgs

    assert set(SERVICE_SETTINGS) <= set(Settings.model_fields)
    assert not set(ServeArgs.model_fields) & set(Settings.model_fields), "a setting declared again"
    assert ServeArgs().settings == get_settings()
    args = ServeArgs.model_validate({"collection": "other", "query_max_pixels": 1000, "encoder_cpus": 2})
    encoder, api = args.encoder_config(), args.search_api_config()
    assert (encoder.max_pixels, encoder.threads, encoder.model) == (1000, 2, get_settings().model)
    assert api.collection == "other" and api.store == args.store()


def test_importing_the_app_module_builds_nothing():
    """`serve run`/`serve build` import serve.app on the driver: the app is built only when asked for."""
    code = "import sys, serve.app; assert 'app' not in vars(serve.app) and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
