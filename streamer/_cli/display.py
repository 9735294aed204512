"""What the client commands print: rich tables and progress bars on a terminal,
plain aligned text elsewhere, one JSON document (or JSON line) per answer with ``--json``."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec
from rich import box
from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from ..client.models import Event, Job, JobError

#: Wide enough that plain (non-terminal) output never wraps a table row.
PLAIN_WIDTH = 10_000
CURRENT_FILE_WIDTH = 40


def console(*, stderr: bool = False) -> Console:
    """A console for stdout (or stderr): rich on a terminal, plain unwrapped text elsewhere."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    return Console(
        file=stream,
        width=None if terminal else PLAIN_WIDTH,
        highlight=False,
        soft_wrap=not terminal,
    )


def size(value: int) -> str:
    return "?" if value < 0 else decimal(value)


def files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


def json_line(value: Any) -> str:
    """``value`` (a msgspec struct or plain data) as one line of JSON."""
    return msgspec.json.encode(value).decode()


def table(*headers: str, terminal: bool) -> Table:
    """A table with ``headers``: boxed on a terminal, bare aligned columns elsewhere."""
    grid = Table(box=box.SIMPLE_HEAD if terminal else None, show_edge=False, pad_edge=False)
    for header in headers:
        grid.add_column(header, overflow="fold")
    return grid


def errors_table(errors: Sequence[JobError], *, terminal: bool) -> Table:
    grid = table("FILE", "ERROR", "MESSAGE", terminal=terminal)
    for error in errors:
        grid.add_row(error.file or "-", error.error, error.message)
    return grid


def jobs_table(jobs: Sequence[Job], *, terminal: bool) -> Table:
    grid = table("JOB", "TYPE", "STATUS", "FILES", "BYTES", "CREATED", "ERRORS", terminal=terminal)
    for job in jobs:
        files = f"{job.files_completed}/{job.total_files}"
        if job.files_skipped:
            files += f" ({job.files_skipped} skipped)"
        grid.add_row(
            job.id,
            job.type,
            job.status,
            files,
            f"{size(job.bytes_transferred)}/{size(job.total_bytes)}",
            _local_time(job.created_at),
            str(len(job.errors)),
        )
    return grid


def summary(job: Job) -> str:
    """One line saying how a job ended (or stands)."""
    parts = [f"{job.files_completed}/{job.total_files} files"]
    if job.files_skipped:
        parts.append(f"{job.files_skipped} skipped")
    if job.files_failed:
        parts.append(f"{job.files_failed} failed")
    parts.append(size(job.bytes_transferred))
    if job.start_time and job.end_time:
        parts.append(f"in {(job.end_time - job.start_time) / 1000:.1f} s")
    return f"{job.id} {job.status}: " + ", ".join(parts)


def _local_time(ms: int | None) -> str:
    return "-" if ms is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def _shorten(path: str, width: int = CURRENT_FILE_WIDTH) -> str:
    return path if len(path) <= width else "…" + path[-(width - 1) :]


class Bars:
    """A rich progress bar per key (a job, or a phase of an upload): bytes done and
    total, percent, rate, ETA and a detail text (the file in flight). Draws nothing
    unless ``enabled`` (a terminal without ``--json``)."""

    def __init__(self, out: Console, *, enabled: bool) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[detail]}"),
            console=out,
            disable=not enabled,
        )
        self._tasks: dict[str, TaskID] = {}

    @contextmanager
    def shown(self) -> Iterator[Bars]:
        """Draw the bars while the block runs; their last state stays on screen."""
        self.progress.start()
        try:
            yield self
        finally:
            self.progress.stop()

    def set(
        self,
        key: str,
        *,
        description: str,
        completed: int,
        total: int | None,
        detail: str = "",
    ) -> None:
        task = self._tasks.get(key)
        if task is None:
            task = self._tasks[key] = self.progress.add_task(description, total=total, detail="")
        self.progress.update(
            task, description=description, completed=completed, total=total, detail=detail
        )

    def advance(self, key: str, amount: int) -> None:
        self.progress.advance(self._tasks[key], amount)

    def describe(self, key: str, detail: str) -> None:
        self.progress.update(self._tasks[key], detail=detail)

    def show(self, event: Event) -> None:
        """Draw a job's progress event."""
        job = event.job
        detail = f"{job.files_completed + job.files_skipped}/{job.total_files} files"
        if event.current_file is not None and not job.finished:
            detail += f"  {_shorten(event.current_file.path)}"
        total = job.total_bytes if job.total_bytes > 0 else None
        if job.finished and total is None:
            total = job.bytes_transferred or 1
        self.set(
            job.id,
            description=f"{job.id} {job.status}",
            completed=job.bytes_transferred,
            total=total,
            detail=detail,
        )
