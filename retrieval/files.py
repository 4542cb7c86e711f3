"""Image bytes by reference: a local path, or a URI read through pyarrow's filesystems with retries and a timeout.

A URI (`s3://bucket/key`, `gs://`, `abfs://`, `hdfs://`, `file://`) is read with the filesystem pyarrow builds for its
scheme and authority, built once per process and kept (an S3 filesystem looks its bucket's region up over the
network); a query string configures it (`s3://bucket/key?region=eu-west-1&endpoint_override=minio:9000`).
Credentials are pyarrow's usual ones (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or an instance
role, GOOGLE_APPLICATION_CREDENTIALS, ...). Each file gets `timeout_s` in all, retries included; transient errors
are retried with doubling backoff; what cannot be read becomes an Unreadable with a reason the index run counts,
as a bad file is. A local path is read directly, as before: it is the fast path, and a disk does not time out.
"""

from __future__ import annotations

import io
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence
from urllib.parse import SplitResult, urlsplit

if TYPE_CHECKING:
    from pyarrow.fs import FileSystem

    from schemas.jobs import IndexConfig
    from schemas.settings import Settings

MISSING = "missing file"  # the reason a missing local file has had all along: both count as one
CHUNK = 1 << 20  # read in 1 MiB pieces: a trickling object is stopped at its deadline, not when it ends
# Object-store answers that no retry changes (pyarrow puts the AWS/GCS error name in the message): give up at once.
PERMANENT = ("ACCESS_DENIED", "NO_SUCH_BUCKET", "PERMISSION_DENIED", "INVALID_ARGUMENT", "is a directory")
PAGE_MAX_BYTES = 20_000_000  # an item photo the page shows through the service; a larger object is refused


@dataclass(frozen=True)
class FetchConfig:
    """How URIs are read: seconds per file (retries included), retries of a transient error, files read at once,
    the first backoff, and a size bound (None: any)."""

    timeout_s: float
    retries: int
    threads: int
    backoff_s: float = 0.2
    max_bytes: int | None = None

    @classmethod
    def of(cls, source: Settings | IndexConfig | None = None, **overrides: Any) -> FetchConfig:
        """From what carries the image_* settings (the settings, or an IndexConfig, whose fields of those names
        are the settings); default: this process's settings."""
        from schemas.settings import get_settings

        s = source or get_settings()
        return replace(cls(s.image_timeout_s, s.image_retries, s.image_read_threads), **overrides)


class Unreadable(Exception):
    """A file that was not read: `reason` is what the index run counts; `kind` is missing, timeout or error."""

    def __init__(self, reason: str, kind: str = "error"):
        super().__init__(reason)
        self.reason, self.kind = reason, kind


def is_uri(ref: str | Path) -> bool:
    """`scheme://...` (a one-letter scheme is a Windows drive, not a URI)."""
    text = str(ref)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").replace("-", "").replace(".", "").isalnum()


def is_local_uri(ref: str) -> bool:
    return str(ref).lower().startswith("file://")


def local_path(uri: str) -> Path:
    """file:///a/b -> /a/b."""
    return Path(urlsplit(uri, allow_fragments=False).path)


# (scheme, authority, query) -> (filesystem, the path of the authority in it); per process, so per Ray worker.
_filesystems: dict[tuple[str, str, str], tuple[FileSystem, str]] = {}
_lock = threading.Lock()


def mount(prefix: str, filesystem: FileSystem, base: str | None = None) -> None:
    """Read URIs under `scheme://authority` from `filesystem` in this process (one configured in code, or an
    in-memory one in tests); `base` is the authority's path in it (default: the authority, as a bucket is)."""
    parts = urlsplit(prefix, allow_fragments=False)
    with _lock:
        _filesystems[(parts.scheme, parts.netloc, parts.query)] = (filesystem, parts.netloc if base is None else base)


def unmount(prefix: str) -> None:
    parts = urlsplit(prefix, allow_fragments=False)
    with _lock:
        _filesystems.pop((parts.scheme, parts.netloc, parts.query), None)


def resolve(uri: str) -> tuple[FileSystem, str]:
    """The filesystem that serves `uri` and the path in it (the key taken literally: no percent-decoding)."""
    parts = urlsplit(uri, allow_fragments=False)
    key = (parts.scheme, parts.netloc, parts.query)
    with _lock:  # held while connecting: a batch's threads wait for the first one's filesystem, not build their own
        if key not in _filesystems:
            _filesystems[key] = _connect(parts)
        filesystem, base = _filesystems[key]
    return filesystem, base.rstrip("/") + "/" + parts.path.lstrip("/")


def _connect(parts: SplitResult) -> tuple[FileSystem, str]:
    """pyarrow's filesystem for the authority, and the authority's path in it (a bucket's name, '/' for a host)."""
    from pyarrow.fs import FileSystem

    query = f"?{parts.query}" if parts.query else ""
    return FileSystem.from_uri(f"{parts.scheme}://{parts.netloc}/{query}")


def read_uri(uri: str, cfg: FetchConfig) -> bytes:
    """The object's bytes, within cfg.timeout_s; transient errors retried with doubling, jittered backoff."""
    from pyarrow import ArrowException

    deadline = time.monotonic() + cfg.timeout_s
    for attempt in range(cfg.retries + 1):
        try:
            return _within(deadline - time.monotonic(), _attempt, uri, deadline, cfg.max_bytes)
        except TimeoutError as err:
            raise Unreadable(f"timed out ({cfg.timeout_s:g} s)", "timeout") from err
        except OSError as err:
            if not _transient(err) or attempt == cfg.retries:
                raise _unreadable(err, attempt + 1) from err
            pause = cfg.backoff_s * 2**attempt * random.uniform(0.5, 1.5)  # jitter: workers do not retry in step
            if time.monotonic() + pause >= deadline:
                raise Unreadable(f"timed out ({cfg.timeout_s:g} s)", "timeout") from err
            time.sleep(pause)
        except (ArrowException, ValueError) as err:  # a scheme pyarrow has no filesystem for, a malformed URI
            raise Unreadable(f"unreadable URI ({type(err).__name__})") from err
    raise AssertionError("unreachable: the last attempt returns or raises")


def _attempt(uri: str, deadline: float, max_bytes: int | None) -> bytes:
    filesystem, path = resolve(uri)
    chunks, size = [], 0
    with filesystem.open_input_stream(path) as stream:
        while chunk := stream.read(CHUNK):
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise Unreadable(f"file larger than {max_bytes} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError
            chunks.append(chunk)
    return b"".join(chunks)


def _within(seconds: float, fn: Callable[..., bytes], *args: Any) -> bytes:
    """fn(*args) in a daemon thread, waited for `seconds` at most: a hung read is left to end with its connection
    (its thread stops at the next piece it reads), never waited for."""
    if seconds <= 0:
        raise TimeoutError
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as err:  # noqa: BLE001 - handed to the waiting thread, which raises it
            box["error"] = err

    thread = threading.Thread(target=run, daemon=True, name="read-uri")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError
    if "error" in box:
        raise box["error"]
    return box["value"]


def _transient(err: OSError) -> bool:
    """Worth another try: not a missing object, a refusal, or an answer no retry changes."""
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    return not any(mark in str(err) for mark in PERMANENT)


def _unreadable(err: OSError, tries: int) -> Unreadable:
    """The reason counted for a failed read: few distinct values, so the run's summary groups them."""
    if isinstance(err, FileNotFoundError):
        return Unreadable(MISSING, "missing")
    if isinstance(err, PermissionError) or "ACCESS_DENIED" in str(err) or "PERMISSION_DENIED" in str(err):
        return Unreadable("unreadable file (permission denied)")
    retried = f" after {tries} tries" if tries > 1 else ""
    return Unreadable(f"unreadable file ({type(err).__name__}{retried})")


def read_local(path: Path) -> tuple[bytes, str]:
    try:
        return path.read_bytes(), ""
    except FileNotFoundError:
        return b"", MISSING
    except OSError as err:
        return b"", f"unreadable file ({err.strerror})"


def fetch(ref: str, cfg: FetchConfig) -> tuple[bytes, str]:
    """One reference's bytes and error ("" when read): a local path directly, a URI through its filesystem."""
    if not is_uri(ref):
        return read_local(Path(ref))
    try:
        return read_uri(ref, cfg), ""
    except Unreadable as err:
        return b"", err.reason


def fetch_all(refs: Sequence[str], cfg: FetchConfig) -> list[tuple[bytes, str]]:
    """Every reference's bytes and error, in order: local paths in turn, URIs cfg.threads at a time."""
    remote = [i for i, ref in enumerate(refs) if is_uri(ref)]
    if len(remote) < 2:
        return [fetch(ref, cfg) for ref in refs]
    out = {i: read_local(Path(ref)) for i, ref in enumerate(refs) if not is_uri(ref)}
    with ThreadPoolExecutor(min(cfg.threads, len(remote)), thread_name_prefix="fetch") as pool:
        out.update(zip(remote, pool.map(lambda i: fetch(refs[i], cfg), remote)))
    return [out[i] for i in range(len(refs))]


def page_image(uri: str, cfg: FetchConfig | None = None) -> tuple[bytes, str]:
    """An item photo on an object store for the page: its bytes (PAGE_MAX_BYTES at most) and media type, told by
    the bytes (keys often have no extension); only images are served, so a catalog row naming another kind of
    object never exposes it."""
    data = read_uri(uri, cfg or FetchConfig.of(max_bytes=PAGE_MAX_BYTES))
    media_type = _image_type(data)
    if media_type is None:
        raise Unreadable("not an image", "missing")
    return data, media_type


def _image_type(data: bytes) -> str | None:
    """The media type of an image Pillow recognises from its header (nothing is decoded), else None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return Image.MIME.get(image.format or "")
    except (UnidentifiedImageError, OSError, ValueError):
        return None
