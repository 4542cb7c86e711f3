"""One error boundary for every entry point (jobs, benchmarks, `python -m serve.run`): a known error is one line.

It lives here, beside the errors it knows, so that jobs/ and serve/ both use it and the service imports no job.
A known error becomes one line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

from pydantic import ValidationError

USAGE_ERROR = 2


class UsageError(ValueError):
    """Input an entry point cannot use (a bad query file, a malformed flag value); says what to fix."""


def known_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input or environment, not a bug (imported here, at call time, to keep imports light)."""
    from retrieval.catalogs import CatalogError
    from retrieval.evaluation import QueryFileError
    from retrieval.images import ImageRejected
    from retrieval.model import ModelLoadError
    from retrieval.search import QueryError
    from retrieval.segmentation.base import SegmenterError
    from retrieval.splits import SplitError
    from retrieval.store.base import StoreError

    return (UsageError, CatalogError, QueryFileError, ImageRejected, ModelLoadError, QueryError, SegmenterError,
            SplitError, StoreError, ValidationError, OSError)


def one_line(err: BaseException) -> str:
    """The error as one line: pydantic's multi-line report joined, the class named only when it says something."""
    if isinstance(err, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in err.errors())
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{text}" if not isinstance(err, OSError) or err.filename is None else f"{err.strerror}: {err.filename}"


def entry(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap an entry point's main(argv): logging set up, known errors become `error: ...` and exit code 2."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        setup_logging()
        try:
            return main(argv) or 0
        except known_errors() as err:
            print(f"error: {one_line(err)}", file=sys.stderr)
            return USAGE_ERROR
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapped


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
