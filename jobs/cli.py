"""What every job's entry point shares: flags derived from the settings and the config schemas, and (from
retrieval/entry.py, which the service uses too) the error boundary.

Flags default to None, so only what the user typed overrides the settings (`Settings.with_values`,
`IndexConfig.from_settings`); the help shows the default that applies.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, PlainValidator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

# Every job takes its boundary from here, with its flags: one import per job.
from retrieval.entry import USAGE_ERROR, UsageError, entry  # noqa: F401
from schemas.jobs import PRECISIONS, STORE_BACKENDS
from schemas.settings import Settings, get_settings

# The settings every command that opens the store offers as flags (the server's timeout stays a setting).
STORE_FLAGS = ("collection", "qdrant_url", "qdrant_api_key", "qdrant_grpc", "store_backend", "store_path")


def add_field(parser: argparse.ArgumentParser, model: type[BaseModel], name: str, **kwargs: Any) -> None:
    """`--name` for a config field: its type (a switch for a bool), its description and its default as help, None
    unless given. A field named as a setting is the setting: declared by Settings, its default the value that
    applies (FASHION_* or the declared one)."""
    is_setting = name in Settings.model_fields
    field = (Settings if is_setting else model).model_fields[name]
    if "action" not in kwargs and "type" not in kwargs:
        kwargs.update({"action": "store_true"} if field.annotation is bool else {"type": _arg_type(field)})
    value = getattr(get_settings(), name) if is_setting else field.default
    default = "" if value in (PydanticUndefined, None) else f" (default: {value})"
    parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                        help=kwargs.pop("help", field.description or "") + default, **kwargs)


def add_setting(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """`--name` for a setting, as the settings declare it."""
    add_field(parser, Settings, name, **kwargs)


def comma_list(text: str) -> tuple[str, ...]:
    """"a, b,c" -> ("a", "b", "c"): a flag that takes several names."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _arg_type(field: FieldInfo) -> Callable[[str], Any]:
    """A flag's parser: the field's own (a PlainValidator is its whole parse, as CatalogRef's), else by its type's
    name."""
    parsers = [meta.func for meta in field.metadata if isinstance(meta, PlainValidator)]
    if parsers:
        return parsers[0]
    text = str(field.annotation)
    for name, kind in (("Path", Path), ("float", float), ("int", int)):
        if name in text:
            return kind
    return str


def add_model_args(parser: argparse.ArgumentParser) -> None:
    add_setting(parser, "model")
    add_setting(parser, "device")
    add_setting(parser, "precision", choices=PRECISIONS)


def add_store_args(parser: argparse.ArgumentParser) -> None:
    """Store flags shared by every command; each is a setting."""
    for name in STORE_FLAGS:
        add_setting(parser, name, **({"choices": STORE_BACKENDS} if name == "store_backend" else {}))


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings with the flags given in their place."""
    return get_settings().with_values(**{k: v for k, v in vars(args).items() if k in Settings.model_fields})


def existing_collection(store, name: str, hint: str) -> tuple[str, Any]:
    """The collection `name` stands for (an alias, or the collection itself) and its spec; if there is none, a
    one-line error: "no collection or alias NAME" and the hint."""
    concrete = store.resolve_alias(name) or name
    spec = store.collection_spec(concrete)
    if spec is None:
        raise UsageError(f"no collection or alias {name!r}{hint}")
    return concrete, spec
