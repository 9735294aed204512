"""The worker loop: claim → download → run the command → upload → clean, repeated.

:func:`run_worker` keeps ``settings.parallel`` jobs going at once. Each job lives
in ``<cache>/job_<id>/`` (``source<ext>`` and ``output<ext>``, the extensions of
the job's source and output paths) and in its own cancel scope, beside a task
that renews its lease every third of the lease. The command is the
``settings.command`` template, split like a shell would (``shlex``) but run
without one, with ``{input}`` and ``{output}`` replaced by the two paths; it must
exit 0 and write ``{output}`` within the command's time limit, else the job is
reported failed with the tail of its stderr. Transfers that fail for good
report the job failed too (``retry`` when the failure was transient or the
transfer ran out of time, so another attempt, maybe on another worker, may
succeed). A lease taken back by the server abandons the job.

Time limits: the download, the command and the upload each get the
``settings`` value when set, else the one the claim carries (the server's
``worker.download_timeout``, ``command_timeout``, ``upload_timeout``), else
:data:`~streamer.client._wire.DEFAULT_TIMEOUT` (transfers, 30 min) or
:data:`DEFAULT_COMMAND_TIMEOUT` (6 h).

``stop`` (SIGTERM in ``streamer worker run``) ends the loop: no more claims;
running jobs get ``grace_period`` seconds to finish, then they are released
(pending again for another worker) and the loop returns. The cache directory of
every job is removed whatever its outcome.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import trio

from .._concurrency import cleanup, open_nursery
from ._jobs import Claim, WorkerClient
from ._wire import DEFAULT_TIMEOUT, DownloadResult, TransferOptions, UploadResult
from .http import ApiError, connect

log = logging.getLogger("streamer.worker")

DEFAULT_COMMAND_TIMEOUT = 21600.0  # seconds (6 h) when neither flag nor claim says
STDERR_TAIL = 4000  # characters of a failed command's stderr sent with the failure
PROGRESS_LOG_SECONDS = 5.0


def lost_lease(error: ApiError) -> bool:
    """Whether ``error`` means the job is not ours any more (taken back, re-claimed,
    finished elsewhere, or our job token refused)."""
    return error.status == 401 or error.code in ("lease_lost", "job_not_processing")


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class WorkerSettings:
    """What ``streamer worker run`` is told (see the module docstring).

    ``command_timeout``, ``download_timeout``, ``upload_timeout``: seconds, None to
    take each claim's (then the defaults). ``max_jobs`` stops after claiming that
    many jobs (None: run until stopped).
    """

    command: str
    cache_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "streamer-worker")
    worker_id: str = field(default_factory=default_worker_id)
    parallel: int = 1
    poll_interval: float = 5.0
    command_timeout: float | None = None
    grace_period: float = 30.0
    download_timeout: float | None = None
    upload_timeout: float | None = None
    max_jobs: int | None = None
    options: TransferOptions = field(default_factory=TransferOptions)


class Reporter(Protocol):
    """Where the loop tells what it does (log lines, or a progress display)."""

    def event(self, job_id: str | None, message: str) -> None: ...

    def progress(self, job_id: str, phase: str, done: int, total: int | None) -> None: ...

    def finished(self, job_id: str) -> None: ...


class LogReporter:
    """Plain log lines; progress at most every ``PROGRESS_LOG_SECONDS`` per job."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def event(self, job_id: str | None, message: str) -> None:
        log.info("job %s: %s", job_id, message) if job_id else log.info("%s", message)

    def progress(self, job_id: str, phase: str, done: int, total: int | None) -> None:
        now = trio.current_time()
        if now - self._last.get(job_id, -PROGRESS_LOG_SECONDS) < PROGRESS_LOG_SECONDS:
            return
        self._last[job_id] = now
        share = f" ({100 * done / total:.0f}%)" if total else ""
        log.info("job %s: %s %d bytes%s", job_id, phase, done, share)

    def finished(self, job_id: str) -> None:
        self._last.pop(job_id, None)


@dataclass
class WorkerStats:
    """What a run did: jobs ``completed``, reported ``failed``, ``released``, ``lost``."""

    completed: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0


class JobFailed(Exception):
    """The job cannot be done here: report it with ``message`` (``retry``: pending
    again while attempts remain)."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry


def command_argv(template: str, source: Path, output: Path) -> list[str]:
    """``template`` split like a shell would, ``{input}``/``{output}`` replaced."""
    argv = shlex.split(template)
    if not argv:
        raise ValueError("the command is empty")
    return [a.replace("{input}", str(source)).replace("{output}", str(output)) for a in argv]


async def run_command(argv: list[str], time_limit: float | None, cwd: Path) -> None:
    """Run ``argv`` (no shell); raise :class:`JobFailed` unless it exits 0 in time."""
    tail: deque[str] = deque()
    size = 0

    async def collect(stream: Any) -> None:
        nonlocal size
        async for piece in stream:
            tail.append(piece.decode(errors="replace"))
            size += len(tail[-1])
            while size > STDERR_TAIL and len(tail) > 1:
                size -= len(tail.popleft())

    started = trio.current_time()
    with trio.move_on_after(time_limit if time_limit is not None else float("inf")) as scope:
        try:
            async with open_nursery() as nursery:
                process = await nursery.start(
                    partial(
                        trio.run_process,
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        check=False,
                        cwd=cwd,
                    )
                )
                nursery.start_soon(collect, process.stderr)
        except OSError as exc:
            raise JobFailed(f"cannot run {argv[0]!r}: {exc}", retry=False) from None
    stderr = "".join(tail)[-STDERR_TAIL:].strip()
    if scope.cancelled_caught:
        raise JobFailed(f"the command timed out after {time_limit:g} s: {stderr}", retry=False)
    if process.returncode != 0:
        raise JobFailed(f"the command exited {process.returncode}: {stderr}", retry=False)
    log.debug("command done in %.1f s: %s", trio.current_time() - started, stderr)


def _resumed(result: DownloadResult | UploadResult) -> str:
    if not result.resumed:
        return ""
    return f", resumed at byte {', '.join(map(str, result.resumed))} after {result.retries} retries"


def _extension(path: str) -> str:
    suffix = PurePosixPath(path).suffix
    return suffix if suffix.isascii() and suffix[1:].isalnum() else ""


class Worker:
    """The loop of :func:`run_worker` over one :class:`WorkerClient`."""

    def __init__(
        self, client: WorkerClient, settings: WorkerSettings, reporter: Reporter | None = None
    ) -> None:
        self.client = client
        self.settings = settings
        self.reporter = reporter or LogReporter()
        self.stats = WorkerStats()
        self._claimed = 0
        self._active: dict[str, trio.CancelScope] = {}

    async def run(self, stop: trio.Event | None = None) -> WorkerStats:
        """Work until ``stop`` is set (then as the module docstring says) or
        ``max_jobs`` were claimed. Raises :class:`ApiError` when the server refuses
        the worker (a wrong token)."""
        stop = stop if stop is not None else trio.Event()
        self.settings.cache_dir.mkdir(parents=True, exist_ok=True)
        async with open_nursery() as nursery:
            nursery.start_soon(self._release_after_grace, stop)
            async with open_nursery() as slots:
                for _ in range(max(1, self.settings.parallel)):
                    slots.start_soon(self._slot, stop)
            nursery.cancel_scope.cancel()
        return self.stats

    def _more(self, stop: trio.Event) -> bool:
        limit = self.settings.max_jobs
        return not stop.is_set() and (limit is None or self._claimed < limit)

    async def _slot(self, stop: trio.Event) -> None:
        while self._more(stop):
            claim = await self._claim()
            if claim is None:
                with trio.move_on_after(self.settings.poll_interval):
                    await stop.wait()
                continue
            if not self._more(stop):  # the limit was reached by another slot meanwhile
                await cleanup(self._release, claim)
                return
            self._claimed += 1
            await self._process(claim)

    async def _claim(self) -> Claim | None:
        try:
            return await self.client.claim()
        except ApiError as exc:
            if not exc.retryable:
                raise
            self.reporter.event(None, f"claim failed, will poll again: {exc}")
            return None

    async def _release_after_grace(self, stop: trio.Event) -> None:
        await stop.wait()
        if self._active:
            self.reporter.event(
                None,
                f"stopping: {len(self._active)} job(s) get {self.settings.grace_period:g} s "
                "to finish, then are released",
            )
        await trio.sleep(self.settings.grace_period)
        for scope in self._active.values():
            scope.cancel()

    # -- one job ---------------------------------------------------------------------

    async def _process(self, claim: Claim) -> None:
        job_id = claim.id
        directory = self.settings.cache_dir / f"job_{job_id}"
        lost = trio.Event()
        self.reporter.event(job_id, f"claimed (attempt {claim.job.get('attempts')})")
        try:
            with trio.CancelScope() as scope:
                self._active[job_id] = scope
                async with open_nursery() as nursery:
                    nursery.start_soon(self._heartbeats, claim, scope, lost)
                    try:
                        await self._work(claim, directory)
                    except JobFailed as exc:
                        await self._fail(claim, exc)
                    except ApiError as exc:  # only a lost lease gets here
                        self.reporter.event(job_id, f"lease lost ({exc}): abandoning the job")
                        lost.set()
                    else:
                        self.stats.completed += 1
                        self.reporter.event(job_id, "completed")
                    nursery.cancel_scope.cancel()
            if lost.is_set():
                self.stats.lost += 1
            elif scope.cancelled_caught:
                await cleanup(self._release, claim)
        finally:
            self._active.pop(job_id, None)
            self.reporter.finished(job_id)
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(partial(shutil.rmtree, directory, True))

    async def _work(self, claim: Claim, directory: Path) -> None:
        job_id, job = claim.id, claim.job
        source = directory / f"source{_extension(job['source']['path'])}"
        output = directory / f"output{_extension(job['output']['path'])}"
        try:
            argv = command_argv(self.settings.command, source, output)
        except ValueError as exc:
            raise JobFailed(f"bad command template: {exc}", retry=False) from None
        got = await self._transfer(
            claim,
            "download",
            self.client.download_source(
                job_id,
                source,
                token=claim.token,
                progress=self._progress(job_id, "download"),
                time_limit=_limit(self.settings.download_timeout, claim.download_timeout),
            ),
        )
        self.reporter.event(
            job_id, f"downloaded {got.size} bytes (sha256 {got.sha256[:12]}…){_resumed(got)}"
        )
        self.reporter.event(job_id, f"running {shlex.join(argv)}")
        started = trio.current_time()
        command_limit = _limit(
            self.settings.command_timeout, claim.command_timeout, DEFAULT_COMMAND_TIMEOUT
        )
        await run_command(argv, command_limit, directory)
        if not await trio.to_thread.run_sync(output.is_file):
            raise JobFailed(f"the command exited 0 but wrote no {output.name}", retry=False)
        self.reporter.event(job_id, f"command done in {trio.current_time() - started:.1f} s")
        async with open_nursery() as nursery:  # a failed upload surfaces as itself
            # The source is done with: free its disk and page cache while the result
            # uploads (a retry downloads it again anyway).
            nursery.start_soon(partial(trio.to_thread.run_sync, partial(_remove, source)))
            sent = await self._transfer(
                claim,
                "upload",
                self.client.upload_result(
                    job_id,
                    output,
                    token=claim.token,
                    progress=self._progress(job_id, "upload"),
                    time_limit=_limit(self.settings.upload_timeout, claim.upload_timeout),
                ),
            )
        self.reporter.event(
            job_id, f"uploaded {sent.size} bytes (sha256 {sent.sha256[:12]}…){_resumed(sent)}"
        )

    async def _transfer(self, claim: Claim, what: str, transfer: Any) -> Any:
        """Await ``transfer``; failures become :class:`JobFailed` (a lost lease stops)."""
        try:
            return await transfer
        except ApiError as exc:
            if lost_lease(exc):
                raise  # nothing to report: the job is not ours any more
            retry = exc.retryable or exc.code == "timeout"  # a faster link may make it
            raise JobFailed(f"{what} failed: {exc}", retry=retry) from None
        except OSError as exc:
            raise JobFailed(f"{what} failed: {exc}", retry=True) from None

    def _progress(self, job_id: str, phase: str) -> Any:
        def report(done: int, total: int | None) -> None:
            self.reporter.progress(job_id, phase, done, total)

        return report

    async def _heartbeats(self, claim: Claim, scope: trio.CancelScope, lost: trio.Event) -> None:
        interval = max(claim.lease_seconds / 3, 0.05)
        while True:
            await trio.sleep(interval)
            try:
                await self.client.heartbeat(claim)
            except ApiError as exc:
                if not lost_lease(exc):
                    self.reporter.event(claim.id, f"heartbeat failed, will retry: {exc}")
                    continue
                if await self._completed(claim.id):
                    return  # our upload just landed: its answer is on its way
                self.reporter.event(claim.id, f"lease lost ({exc}): abandoning the job")
                lost.set()
                scope.cancel()
                return

    async def _completed(self, job_id: str) -> bool:
        try:
            return (await self.client.job(job_id)).get("status") == "completed"
        except ApiError:
            return False

    async def _fail(self, claim: Claim, failure: JobFailed) -> None:
        self.stats.failed += 1
        self.reporter.event(claim.id, f"failed: {failure.message}")
        try:
            await self.client.fail(claim, failure.message, retry=failure.retry)
        except ApiError as exc:
            self.reporter.event(claim.id, f"could not report the failure: {exc}")

    async def _release(self, claim: Claim) -> None:
        try:
            await self.client.release(claim)
        except ApiError as exc:
            self.reporter.event(claim.id, f"could not release the job: {exc}")
            return
        self.stats.released += 1
        self.reporter.event(claim.id, "released (pending again)")


async def run_worker(
    server: str,
    token: str,
    settings: WorkerSettings,
    *,
    stop: trio.Event | None = None,
    reporter: Reporter | None = None,
) -> WorkerStats:
    """Run the worker loop against ``server`` with worker token ``token`` until
    ``stop`` is set (or ``settings.max_jobs`` were claimed); see the module docstring.

    Raises :class:`~streamer.client.http.ApiError` when the server refuses the
    worker's token (status 401) or the worker routes (not enabled: 400).
    """
    async with connect(server, token) as http:
        client = WorkerClient(http, settings.worker_id, options=settings.options)
        return await Worker(client, settings, reporter).run(stop)


def _limit(flag: float | None, claimed: float | None, default: float = DEFAULT_TIMEOUT) -> float:
    """The time limit in force: the worker's own ``flag``, else the claim's, else ``default``."""
    return flag if flag is not None else claimed if claimed is not None else default


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
