"""The job engine: one queue, one limiter, one nursery and cancel scope per job.

Jobs of every kind go through :meth:`Engine.submit`. Each runs in its own task
under its own :class:`trio.CancelScope`; a shared :class:`trio.CapacityLimiter`
bounds how many run at once and can be resized while jobs wait. The kind's
:class:`Runner` does the work and reports through a :class:`JobControl`, which
persists state transitions and wakes watchers (SSE, metrics) — no polling.

Cancellation has two causes and two outcomes: a user's cancel marks the job
``cancelled``; a shutdown of the engine leaves it ``pending``/``in_progress`` in
the store so the next start resumes it (finished files are skipped, the runner
first sweeps what the interrupted files left behind).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import trio

from .._errors import Conflict, NotFound, StreamerError
from .jobs import FileStatus, FileTask, Job, JobError, JobStatus, now_ms
from .store import Store

log = logging.getLogger(__name__)

SETTING_MAX_CONCURRENT = "maxConcurrentTransfers"
MAX_CONCURRENT_RANGE = range(1, 65)
SWEEP_INTERVAL_SECONDS = 3600.0
# Finished files are persisted in batches (one transaction per interval): a crash
# loses at most this much bookkeeping, and those files are simply copied again.
PERSIST_INTERVAL_SECONDS = 0.25


class Runner(Protocol):
    """Does the work of one kind of job."""

    #: Whether an interrupted job of this kind can be run again after a restart.
    resumable: bool

    async def run(self, job: Job, control: JobControl) -> None:
        """Work through the job's unfinished files, reporting through ``control``.

        A per-file failure is reported with :meth:`JobControl.file_failed` and
        the run goes on; raising a :class:`StreamerError` fails the whole job.
        """
        ...

    async def recover(self, job: Job) -> None:
        """Before a resumed run: remove staging left by the files that were in flight."""
        ...


class JobControl:
    """A runner's handle on its job: every state change goes through here."""

    def __init__(self, engine: Engine, job: Job) -> None:
        self._engine = engine
        self.job = job

    def file_started(self, file: FileTask) -> None:
        """In-memory only: an unfinished file is redone from scratch after a restart."""
        file.status = FileStatus.TRANSFERRING
        self.job.bytes_transferred -= file.loaded
        file.loaded = 0
        self.job.current = file
        self.job.touch()

    def file_progress(self, file: FileTask, loaded: int) -> None:
        """In-memory only: called per chunk, persisted at the next transition."""
        self.job.bytes_transferred += loaded - file.loaded
        file.loaded = loaded
        self.job.current = file
        self.job.touch()

    def file_sized(self, file: FileTask, size: int) -> None:
        """A file planned with ``UNKNOWN_SIZE`` turned out to have ``size`` bytes."""
        file.size = size
        self.job.total_bytes += size
        self.job.touch()

    def file_completed(self, file: FileTask, *, sha256: str | None, final_path: str) -> None:
        file.sha256, file.final_path = sha256, final_path
        self.job.bytes_transferred += file.size - file.loaded
        file.loaded = file.size
        self._finish(file, FileStatus.COMPLETED)
        self.job.files_completed += 1

    def file_skipped(self, file: FileTask) -> None:
        self._finish(file, FileStatus.SKIPPED)
        self.job.files_skipped += 1

    def file_failed(self, file: FileTask, error: StreamerError) -> None:
        file.error, file.message = error.code, error.message
        self.job.bytes_transferred -= file.loaded
        file.loaded = 0
        self._finish(file, FileStatus.ERROR)
        self.job.files_failed += 1

    def _finish(self, file: FileTask, status: FileStatus) -> None:
        file.status = status
        self._engine.persist_soon(self.job, file)
        self.job.touch()


@dataclass(slots=True)
class Totals:
    """What the jobs that finished since start moved (the monotonic part of metrics):
    bytes by kind, files by ``(kind, status)``, jobs by ``(kind, status)``."""

    bytes: Counter[str] = field(default_factory=Counter)
    files: Counter[tuple[str, str]] = field(default_factory=Counter)
    jobs: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, job: Job) -> None:
        self.bytes[job.kind] += job.bytes_transferred
        for status, count in file_counts(job).items():
            self.files[(job.kind, status)] += count
        self.jobs[(job.kind, job.status.value)] += 1


def file_counts(job: Job) -> dict[str, int]:
    """A job's finished files by status (from its counters, so also for summaries)."""
    return {
        FileStatus.COMPLETED.value: job.files_completed,
        FileStatus.SKIPPED.value: job.files_skipped,
        FileStatus.ERROR.value: job.files_failed,
    }


@dataclass(slots=True)
class _Running:
    job: Job
    scope: trio.CancelScope
    cancel_requested: bool = False
    limited: bool = True


class Engine:
    """Owns every job; see the module docstring for the lifecycle."""

    def __init__(
        self,
        store: Store,
        runners: Mapping[str, Runner],
        *,
        max_concurrent: int = 2,
        retention_hours: float = 168.0,
    ) -> None:
        self.store = store
        self._runners = dict(runners)
        saved = store.get_setting(SETTING_MAX_CONCURRENT)
        self._limiter = trio.CapacityLimiter(
            saved if saved in MAX_CONCURRENT_RANGE else max_concurrent
        )
        self._retention_ms = int(retention_hours * 3_600_000)
        self._running: dict[str, _Running] = {}
        self._nursery: trio.Nursery | None = None
        self._unsaved: dict[tuple[str, int], tuple[Job, FileTask]] = {}
        self.totals = Totals()

    # -- lifecycle ---------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the engine until cancelled: resume unfinished jobs, sweep old ones.

        When cancelled (shutdown), running jobs stop, clean their temp state and
        stay resumable.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                self.sweep_expired()
                for job in self.store.list_jobs([JobStatus.PENDING, JobStatus.IN_PROGRESS]):
                    await self._resume(job)
                nursery.start_soon(self._sweep_loop)
                nursery.start_soon(self._persist_loop)
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._nursery = None
                self.persist_now()

    async def _resume(self, summary: Job) -> None:
        runner = self._runners.get(summary.kind)
        job = self.store.load_job(summary.id, with_files=True)
        assert job is not None
        if runner is None or not runner.resumable:
            job.job_errors.append(
                JobError(None, "interrupted", "the node stopped while this job was running")
            )
            self._settle(job, JobStatus.FAILED)
            return
        for file in job.files:
            if not file.status.finished:
                file.status, file.loaded = FileStatus.QUEUED, 0
        job.status = JobStatus.PENDING
        job.recount()
        await runner.recover(job)
        log.info(
            "resuming job %s (%d of %d files left)",
            job.id,
            sum(not f.status.finished for f in job.files),
            len(job.files),
        )
        self._start(job, runner)

    async def _sweep_loop(self) -> None:
        while True:
            await trio.sleep(min(SWEEP_INTERVAL_SECONDS, max(self._retention_ms / 4000, 1.0)))
            self.sweep_expired()

    async def _persist_loop(self) -> None:
        while True:
            await trio.sleep(PERSIST_INTERVAL_SECONDS)
            self.persist_now()

    def persist_soon(self, job: Job, file: FileTask) -> None:
        """Queue a file's new state for the next batched write."""
        self._unsaved[(job.id, file.index)] = (job, file)

    def persist_now(self) -> None:
        """Write every queued file state (and its job's counters) in one transaction."""
        if self._unsaved:
            changes, self._unsaved = list(self._unsaved.values()), {}
            self.store.update_files(changes)

    def sweep_expired(self) -> list[str]:
        """Delete finished jobs that ended more than ``retention_hours`` ago."""
        removed = self.store.delete_finished_before(now_ms() - self._retention_ms)
        if removed:
            log.info("swept %d finished jobs past retention", len(removed))
        return removed

    # -- jobs --------------------------------------------------------------

    def submit(self, job: Job, *, limited: bool = True) -> None:
        """Persist ``job`` and queue it; it starts when the limiter allows.

        ``limited=False`` starts it at once, outside ``max_concurrent`` (node
        transfers: a receive must not stall its sender behind local copies).
        """
        runner = self._runners[job.kind]
        job.recount()
        self.store.insert_job(job)
        self._start(job, runner, limited=limited)

    def _start(self, job: Job, runner: Runner, *, limited: bool = True) -> None:
        if self._nursery is None:
            raise StreamerError("the engine is not running", code="shutting_down")
        running = _Running(job, trio.CancelScope(), limited=limited)
        self._running[job.id] = running
        self._nursery.start_soon(self._run_job, running, runner, name=f"job {job.id}")

    async def _run_job(self, running: _Running, runner: Runner) -> None:
        job = running.job
        final: JobStatus | None = None
        try:
            with running.scope:
                async with self._limiter if running.limited else contextlib.nullcontext():
                    job.status = JobStatus.IN_PROGRESS
                    job.started_at = job.started_at or now_ms()
                    self.store.update_job(job)
                    job.touch()
                    await runner.run(job, JobControl(self, job))
                    final = _outcome(job)
        except StreamerError as exc:
            job.job_errors.append(JobError(None, exc.code, exc.message))
            final = JobStatus.FAILED
        except Exception as exc:  # a runner bug must fail its job, not the node
            log.exception("job %s crashed", job.id)
            job.job_errors.append(JobError(None, "internal_error", f"{type(exc).__name__}: {exc}"))
            final = JobStatus.FAILED
        finally:
            del self._running[job.id]
            if running.cancel_requested and final is None:
                final = JobStatus.CANCELLED
            if final is not None:
                self._settle(job, final)
            else:  # shutdown: keep it resumable
                self.persist_now()
                self.store.update_job(job)

    def _settle(self, job: Job, status: JobStatus) -> None:
        if status is JobStatus.CANCELLED:
            for file in job.files:
                if not file.status.finished:
                    file.status, file.loaded = FileStatus.CANCELLED, 0
                    self.persist_soon(job, file)
            job.recount()
        self.persist_now()
        job.status = status
        job.current = None
        job.finished_at = now_ms()
        self.store.update_job(job)
        self.totals.add(job)
        job.touch()

    def get(self, job_id: str) -> Job:
        """The live job while it runs, else its stored summary; 404 if unknown."""
        running = self._running.get(job_id)
        if running is not None:
            return running.job
        job = self.store.load_job(job_id, with_files=False)
        if job is None:
            raise NotFound(f"no job {job_id!r}", code="job_not_found")
        job.job_errors += self.store.file_errors(job_id)
        return job

    def files(self, job_id: str) -> list[FileTask]:
        running = self._running.get(job_id)
        if running is not None:
            return list(running.job.files)
        self.get(job_id)
        return self.store.load_files(job_id)

    def list(self, status: JobStatus | None = None) -> list[Job]:
        stored = self.store.list_jobs(None if status is None else [status])
        live = [self._running[j.id].job if j.id in self._running else j for j in stored]
        return [j for j in live if status is None or j.status is status]

    def running(self) -> tuple[Job, ...]:
        """The jobs this engine holds now: queued (``pending``) or ``in_progress``."""
        return tuple(r.job for r in self._running.values())

    def cancel(self, job_id: str) -> Job:
        """Cancel a pending or running job; the file in flight stops at once."""
        running = self._running.get(job_id)
        if running is None:
            job = self.get(job_id)
            raise Conflict(f"job {job_id} is already {job.status.value}", code="job_finished")
        running.cancel_requested = True
        running.scope.cancel()
        return running.job

    def cleanup(self, job_id: str) -> None:
        """Forget a finished job; 409 while it is pending or running."""
        job = self.get(job_id)
        if not job.status.finished:
            raise Conflict(f"job {job_id} is still {job.status.value}", code="job_active")
        self.store.delete_job(job_id)

    # -- concurrency -------------------------------------------------------

    @property
    def max_concurrent(self) -> int:
        return int(self._limiter.total_tokens)

    @max_concurrent.setter
    def max_concurrent(self, value: int) -> None:
        """Resize the limiter at once (waiting jobs start when raised); persisted."""
        self._limiter.total_tokens = value
        self.store.set_setting(SETTING_MAX_CONCURRENT, value)

    @property
    def active_count(self) -> int:
        return int(self._limiter.borrowed_tokens)


def _outcome(job: Job) -> JobStatus:
    """``failed`` when nothing landed and something failed, else ``completed``."""
    if job.job_errors:
        return JobStatus.FAILED
    if job.files_failed and not job.files_completed:
        return JobStatus.FAILED
    return JobStatus.COMPLETED
