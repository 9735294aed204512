"""How ``streamer worker`` shows its work: a rich progress display on a terminal,
plain log lines otherwise (both implement :class:`streamer.client.worker.Reporter`)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from types import TracebackType

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ..client._runner import LogReporter, Reporter


class RichReporter:
    """One progress bar per job phase (download, upload) and events as log lines
    above the bars; use as a context manager (it owns the live display)."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._tasks: dict[tuple[str, str], TaskID] = {}

    def __enter__(self) -> RichReporter:
        self._progress.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def event(self, job_id: str | None, message: str) -> None:
        self._progress.console.log(f"job {job_id}: {message}" if job_id else message)

    def progress(self, job_id: str, phase: str, done: int, total: int | None) -> None:
        key = (job_id, phase)
        task = self._tasks.get(key)
        if task is None:
            task = self._progress.add_task(f"{job_id[:8]} {phase}", total=total)
            self._tasks[key] = task
        self._progress.update(task, completed=done, total=total)

    def finished(self, job_id: str) -> None:
        for key in [k for k in self._tasks if k[0] == job_id]:
            self._progress.remove_task(self._tasks.pop(key))


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
    with RichReporter(console) as shown:
        yield shown
