"""Where a catalog's files lie: a local path, or a URI on an object store (`s3://shop/export/catalog.parquet`) read
through the pyarrow filesystem retrieval/files.py builds and keeps for it, so a table catalog and its photos may sit
in a bucket together. A local path keeps pathlib's own calls: this module only adds the URI side."""

from __future__ import annotations

import contextlib
import io
import posixpath
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from retrieval.files import is_uri, resolve

if TYPE_CHECKING:
    from pyarrow.fs import FileSystem

Ref = Path | str  # a local path, or a URI (kept as text: a Path folds s3://b into s3:/b)


def normal(ref: str | Path) -> Ref:
    """A URI as given (file:// included: it is read like any other URI), anything else as an absolute Path."""
    return str(ref) if is_uri(ref) else Path(ref).expanduser().resolve()


def kind(ref: Ref) -> str | None:
    """"file", "dir", or None when nothing is there (an object-store prefix holding objects is a "dir")."""
    if isinstance(ref, Path):
        return "file" if ref.is_file() else "dir" if ref.is_dir() else None
    from pyarrow.fs import FileType

    fs, path = resolve(ref)
    found = fs.get_file_info(path).type
    return {FileType.File: "file", FileType.Directory: "dir"}.get(found)


def join(root: Ref, relative: str) -> Ref:
    """`relative` under `root`: a Path, or the URI with its path joined and normalised (its query, which configures
    the filesystem, kept). Keys are literal (retrieval/files.py): a name holding '?' cannot be told from a query, so
    it reads as a missing object (a full URI does not help either)."""
    if isinstance(root, Path):
        return root / relative
    parts = urlsplit(root, allow_fragments=False)
    return urlunsplit(parts._replace(path=posixpath.normpath(posixpath.join(parts.path or "/", relative))))


def parent(ref: Ref) -> Ref:
    return ref.parent if isinstance(ref, Path) else join(ref, "..")


def suffix(ref: Ref) -> str:
    return ref.suffix if isinstance(ref, Path) else PurePosixPath(urlsplit(ref, allow_fragments=False).path).suffix


def under(root: str, relative: str) -> str | None:
    """The URI of `relative` under the URI `root`, None when it leaves it (`../`) or names a query of its own (a
    cell choosing the filesystem): what the page may read."""
    if "?" in relative:
        return None
    joined, base = join(root, relative), urlsplit(root, allow_fragments=False).path.rstrip("/")
    return joined if urlsplit(joined, allow_fragments=False).path.startswith(base + "/") else None


@contextlib.contextmanager
def open_text(ref: Ref) -> Iterator[IO[str]]:
    """The file as UTF-8 text, newlines as written (the csv module's way), read as a stream."""
    if isinstance(ref, Path):
        with ref.open(newline="", encoding="utf-8") as handle:
            yield handle
        return
    fs, path = resolve(ref)
    with fs.open_input_stream(path) as stream, io.TextIOWrapper(stream, encoding="utf-8", newline="") as handle:
        yield handle


@contextlib.contextmanager
def open_binary(ref: Ref) -> Iterator[IO[bytes]]:
    """The file for random access (a Parquet footer is read first), as pyarrow's native file: a local one too."""
    from pyarrow.fs import LocalFileSystem

    fs, path = (LocalFileSystem(), str(ref)) if isinstance(ref, Path) else resolve(ref)
    with fs.open_input_file(path) as handle:
        yield handle


def files_under(ref: Ref, suffix: str) -> list[Ref]:
    """The files under the folder `ref` whose names end in `suffix`, by folder then name, leaving out what lies
    under a hidden or underscored name (as pyarrow does: _SUCCESS, _temporary/, .spark-staging/)."""
    if isinstance(ref, Path):
        return sorted(p for p in ref.rglob(f"*{suffix}") if p.is_file() and not _hidden(p.relative_to(ref).parts))
    names = sorted(name.split("/") for name in _listed(ref, suffix))  # by folder, then name: as Paths sort
    return [str(join(ref, "/".join(parts))) for parts in names if not _hidden(parts)]


def _hidden(parts) -> bool:
    return any(part.startswith((".", "_")) for part in parts)


def _listed(uri: str, suffix: str) -> list[str]:
    """The names, relative to the folder `uri`, of the files under it whose names end in `suffix`."""
    from pyarrow.fs import FileSelector, FileType

    fs, path = resolve(uri)
    base = path.strip("/")  # a filesystem may name what it lists with or without the leading slash
    return [_below(base, info.path) for info in fs.get_file_info(FileSelector(path, recursive=True))
            if info.type == FileType.File and info.path.endswith(suffix)]


def _below(base: str, listed: str) -> str:
    """A listed file's name relative to the folder listed."""
    name = listed.strip("/")
    if base and not name.startswith(base + "/"):
        raise OSError(f"{listed} was listed under {base}")
    return name[len(base) + 1:] if base else name


def for_ray(refs: list[Ref]) -> tuple[list[str], FileSystem | None]:
    """What a Ray Data read takes: the paths, and the filesystem of URIs (one catalog's files share one); None for
    local paths, which Ray reads as before."""
    if not refs or isinstance(refs[0], Path):
        return [str(r) for r in refs], None
    located = [resolve(str(r)) for r in refs]
    return [path for _, path in located], located[0][0]
