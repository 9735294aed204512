"""How ``streamer worker`` shows its work: rich progress bars (:class:`.display.Bars`)
on a terminal, plain log lines otherwise (both are worker ``Reporter``s)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.logging import RichHandler

from ..client._runner import LogReporter, Reporter
from .display import Bars


class RichReporter:
    """A progress bar per job phase (download, upload; see :class:`.display.Bars`) and
    events as log lines above the bars."""

    def __init__(self, bars: Bars) -> None:
        self._bars = bars

    def event(self, job_id: str | None, message: str) -> None:
        self._bars.progress.console.log(f"job {job_id}: {message}" if job_id else message)

    def progress(self, job_id: str, phase: str, done: int, total: int | None) -> None:
        self._bars.set(
            f"{job_id} {phase}", description=f"{job_id[:8]} {phase}", completed=done, total=total
        )

    def finished(self, job_id: str) -> None:
        """The job's bars stay as they ended."""


@contextlib.contextmanager
def worker_display(log_level: str, *, fancy: bool | None = None) -> Iterator[Reporter]:
    """Logging set up at ``log_level`` and the reporter to use: rich bars when stderr
    is a terminal (or ``fancy``), else plain log lines. httpx's line per request is
    left to ``DEBUG``."""
    logging.getLogger("httpx").setLevel(
        logging.DEBUG if log_level.upper() == "DEBUG" else "WARNING"
    )
    if fancy is None:
        fancy = sys.stderr.isatty()
    if not fancy:
        logging.basicConfig(
            level=log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        yield LogReporter()
        return
    console = Console(stderr=True)
    logging.basicConfig(
        level=log_level.upper(),
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    with Bars(console, enabled=True).shown() as bars:
        yield RichReporter(bars)
