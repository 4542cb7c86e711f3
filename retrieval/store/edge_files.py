"""The edge store's files shared between processes: collection folder locks, atomic JSON and the alias registry."""

# Why each collection folder is locked before its shard is loaded (a second load damages a shard that another
# process has open) is told in edge_store.py; this module only knows folders, locks and JSON files.

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from retrieval.store.base import StoreError

SPEC_FILE, LOCK_FILE = "spec.json", "shard.lock"
ALIASES_FILE, ALIASES_LOCK = "aliases.json", ".aliases.lock"
# Collection and alias names become folder names: keep them to one safe path component.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


def folder_of(root: Path, name: str) -> Path:
    """The folder of a collection (or the name an alias would shadow); StoreError for a name unsafe as a folder."""
    if not NAME_RE.match(name) or name == ALIASES_FILE:
        raise StoreError(f"invalid collection or alias name {name!r}: use letters, digits, '_', '-' and '.'")
    return root / name


def lock_folder(folder: Path, name: str) -> int:
    """Take the collection's cross-process lock, or fail without touching the shard (a failed load corrupts it)."""
    import fcntl

    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreError(
            f"collection {name!r} is open in another process (pid {holder}); an edge shard serves one process at a "
            "time: close it there, or use a Qdrant server for several processes") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def unlock(fd: int) -> None:
    os.close(fd)  # closing the descriptor releases its flock


@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    """A blocking, exclusive cross-process lock on `path` for the block."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write a sibling temp file, fsync it, then os.replace: readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class AliasFile:
    """The alias map in root/aliases.json: re-read only when the file was replaced, edited under a cross-process
    lock and replaced atomically, so every process sees one map or the next, never half of one."""

    def __init__(self, root: Path):
        self.path, self.lock_path = root / ALIASES_FILE, root / ALIASES_LOCK
        self.known: dict[str, str] = {}
        self._stamp: tuple[int, int, int] | None = None

    def read(self) -> tuple[dict[str, str], dict[str, str] | None]:
        """The current map, and the map it replaced (None when the file has not changed since the last read)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            stamp, aliases = None, {}
        else:
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return self.known, None
            aliases = json.loads(self.path.read_text())
        previous, self.known, self._stamp = self.known, aliases, stamp
        return aliases, previous

    def edit(self, change: Callable[[dict[str, str]], dict[str, str]]) -> None:
        """Read-modify-write the file under the registry's lock."""
        with flock(self.lock_path):
            current = json.loads(self.path.read_text()) if self.path.exists() else {}
            write_json_atomic(self.path, change(current))
