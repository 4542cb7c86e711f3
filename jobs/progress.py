"""Progress of long work that reads well both on a terminal and in a log file.

On a TTY it is a tqdm bar; anywhere else (a log, `ray job logs`, CI) it is one plain line every `every_s` seconds
and one at the end: done/total, rate, ETA. No carriage returns end up in files.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("progress")


def eta_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def seconds_left(done: int, total: int, elapsed: float) -> float | None:
    """At the rate so far, the seconds until `total`; None before anything is done."""
    rate = done / elapsed if elapsed > 0 else 0.0
    return (total - done) / rate if rate > 0 else None


def share_text(done: int, total: int) -> str:
    return f" ({100 * done / total:.0f} %)" if total else ""


class Progress:
    """`with Progress("encode", total) as p: ... p.advance(n)`; `line()` is the current state in words."""

    def __init__(self, name: str, total: int, unit: str = "items", every_s: float = 10.0, stream=None):
        self.name, self.total, self.unit, self.every_s = name, total, unit, every_s
        self.done, self.started = 0, time.monotonic()
        self._last_log = self.started
        stream = stream or sys.stderr
        self._bar = None
        if stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=name, unit=unit.rstrip("s") or unit, leave=False, file=stream)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif time.monotonic() - self._last_log >= self.every_s:
            self._last_log = time.monotonic()
            log.info("%s", self.line())

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        left = seconds_left(self.done, self.total, time.monotonic() - self.started)
        eta = eta_text(left) if left is not None else "?"
        return (f"{self.name}: {self.done}/{self.total} {self.unit}{share_text(self.done, self.total)}, "
                f"{self.rate():.1f} {self.unit}/s, ETA {eta}")

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
        log.info("%s, done in %s", self.line().split(", ETA")[0], eta_text(time.monotonic() - self.started))
