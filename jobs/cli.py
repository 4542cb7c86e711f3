"""What every job's entry point shares: flags built from the config schemas, and (from retrieval/entry.py, which the
service uses too) the error boundary.

Flags default to None, so only what the user typed overrides the settings (`IndexConfig.from_settings`); the help
shows the default that applies.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

# Every job takes its boundary from here, with its flags: one import per job.
from retrieval.entry import USAGE_ERROR, UsageError, entry  # noqa: F401
from schemas.jobs import PRECISIONS, STORE_BACKENDS, STORE_SETTINGS, StoreConfig
from schemas.settings import get_settings


def add_field(parser: argparse.ArgumentParser, model: type[BaseModel], name: str, **kwargs: Any) -> None:
    """`--name` for a config field: its description and default (the setting's, for a setting) as help, None
    unless given."""
    field = model.model_fields[name]
    if "action" not in kwargs and "type" not in kwargs:
        kwargs["type"] = _arg_type(field.annotation)
    settings = get_settings()
    value = getattr(settings, name) if name in type(settings).model_fields else field.default
    default = "" if value is PydanticUndefined else f" (default: {value})"
    parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                        help=kwargs.pop("help", field.description or "") + default, **kwargs)


def comma_list(text: str) -> tuple[str, ...]:
    """"a, b,c" -> ("a", "b", "c"): a flag that takes several names."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _arg_type(annotation: Any) -> Callable[[str], Any]:
    text = str(annotation)
    for name, kind in (("Path", Path), ("float", float), ("int", int)):
        if name in text:
            return kind
    return str


def add_model_args(parser: argparse.ArgumentParser) -> None:
    s = get_settings()
    parser.add_argument("--model", help=f"NAME/TAG, hf-hub:ORG/REPO or local-dir:PATH (default: {s.model})")
    parser.add_argument("--device", help=f"auto, cpu, cuda (default: {s.device})")
    parser.add_argument("--precision", choices=PRECISIONS, help=f"(default: {s.precision})")


def add_store_args(parser: argparse.ArgumentParser) -> None:
    """Store flags shared by every command; each is also a FASHION_* setting."""
    s = get_settings()
    parser.add_argument("--collection", help=f"alias searched and (re)built (default: {s.collection})")
    parser.add_argument("--qdrant-url", help="Qdrant server URL (default: the embedded store)")
    parser.add_argument("--qdrant-api-key")
    parser.add_argument("--qdrant-grpc", action="store_true", default=None, help="prefer gRPC to the server")
    parser.add_argument("--store-backend", choices=STORE_BACKENDS, help=f"(default: {s.store_backend})")
    parser.add_argument("--store-path", type=Path, help=f"folder of the embedded store (default: {s.store_path})")


def store_config(args: argparse.Namespace) -> StoreConfig:
    """The store the flags name, the settings filling in the rest."""
    return StoreConfig.from_settings(**{k: v for k, v in vars(args).items() if k in STORE_SETTINGS})


def model_choice(args: argparse.Namespace) -> dict[str, str]:
    """model, device and precision: the flags where given, else the settings."""
    s = get_settings()
    return {name: getattr(args, name, None) or getattr(s, name) for name in ("model", "device", "precision")}


def collection_of(args: argparse.Namespace) -> str:
    return getattr(args, "collection", None) or get_settings().collection


def existing_collection(store, name: str, hint: str) -> tuple[str, Any]:
    """The collection `name` stands for (an alias, or the collection itself) and its spec; if there is none, a
    one-line error: "no collection or alias NAME" and the hint."""
    concrete = store.resolve_alias(name) or name
    spec = store.collection_spec(concrete)
    if spec is None:
        raise UsageError(f"no collection or alias {name!r}{hint}")
    return concrete, spec
