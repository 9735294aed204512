"""The job engine: limiter, cancel, resume, outcomes, retention (time via MockClock)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from streamer._engine import Engine, FileStatus, FileTask, Job, JobControl, JobStatus, Store
from streamer._engine.copy import _by_size
from streamer._engine.jobs import now_ms
from streamer._errors import Conflict, NotFound, StorageError, StreamerError


class FakeRunner:
    """Each file takes ``seconds`` of (mock) time; names in ``failing`` fail."""

    resumable = True

    def __init__(self, seconds: float = 1.0, failing: frozenset[str] = frozenset()) -> None:
        self.seconds = seconds
        self.failing = failing
        self.running = 0
        self.peak = 0
        self.recovered: list[str] = []
        self.started: list[str] = []

    async def recover(self, job: Job) -> None:
        self.recovered.append(job.id)

    async def run(self, job: Job, control: JobControl) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            for file in job.files:
                if file.status.finished:
                    continue
                self.started.append(file.source)
                control.file_started(file)
                await trio.sleep(self.seconds / 2)
                control.file_progress(file, file.size // 2)
                await trio.sleep(self.seconds / 2)
                if file.source in self.failing:
                    control.file_failed(file, StorageError("boom", code="EIO"))
                else:
                    control.file_completed(file, sha256="0" * 64, final_path=file.destination)
        finally:
            self.running -= 1


def make_job(job_id: str, *names: str) -> Job:
    files = [FileTask(i, n, f"out/{n}", 100) for i, n in enumerate(names)]
    return Job(id=job_id, kind="copy", spec={}, files=files)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(str(tmp_path / "state"))


async def test_limiter_bounds_running_jobs_and_resizes(
    store: Store, autojump_clock: object
) -> None:
    runner = FakeRunner(seconds=10)
    engine = Engine(store, {"copy": runner}, max_concurrent=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        for i in range(3):
            engine.submit(make_job(f"j{i}", "a"))
        await trio.sleep(1)
        statuses = sorted(engine.get(f"j{i}").status for i in range(3))
        assert statuses == [JobStatus.IN_PROGRESS, JobStatus.PENDING, JobStatus.PENDING]
        engine.max_concurrent = 3  # raising it starts queued jobs at once
        await trio.sleep(1)
        assert all(engine.get(f"j{i}").status is JobStatus.IN_PROGRESS for i in range(3))
        await trio.sleep(30)
        assert all(engine.get(f"j{i}").status is JobStatus.COMPLETED for i in range(3))
        nursery.cancel_scope.cancel()
    assert runner.peak == 3
    assert store.get_setting("maxConcurrentTransfers") == 3


async def test_outcomes_partial_failure_completes_total_failure_fails(
    store: Store, autojump_clock: object
) -> None:
    runner = FakeRunner(failing=frozenset({"bad", "worse"}))
    engine = Engine(store, {"copy": runner})
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        engine.submit(make_job("partial", "good", "bad"))
        engine.submit(make_job("total", "bad", "worse"))
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    partial, total = engine.get("partial"), engine.get("total")
    assert partial.status is JobStatus.COMPLETED
    assert [e.to_json() for e in partial.errors] == [
        {"file": "bad", "error": "EIO", "message": "boom"}
    ]
    assert total.status is JobStatus.FAILED
    assert total.files_failed == 2 and total.files_completed == 0


async def test_cancel_running_and_pending_jobs(store: Store, autojump_clock: object) -> None:
    engine = Engine(store, {"copy": FakeRunner(seconds=10)}, max_concurrent=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        engine.submit(make_job("running", "a", "b"))
        await trio.sleep(1)
        engine.submit(make_job("waiting", "c"))
        await trio.sleep(11)  # first file done, second in flight
        engine.cancel("running")
        engine.cancel("waiting")
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    running = engine.get("running")
    assert running.status is JobStatus.CANCELLED
    statuses = [f.status for f in engine.files("running")]
    assert statuses == [FileStatus.COMPLETED, FileStatus.CANCELLED]
    assert engine.get("waiting").status is JobStatus.CANCELLED
    with pytest.raises(Conflict):
        engine.cancel("running")


async def test_shutdown_keeps_jobs_resumable_and_restart_finishes_them(
    store: Store, autojump_clock: object
) -> None:
    first = FakeRunner(seconds=10)
    engine = Engine(store, {"copy": first})
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        engine.submit(make_job("job", "a", "b", "c"))
        await trio.sleep(15)  # a done, b in flight
        nursery.cancel_scope.cancel()  # shutdown, not a user cancel
    assert store.load_job("job", with_files=False).status is JobStatus.IN_PROGRESS  # type: ignore[union-attr]

    second = FakeRunner(seconds=10)
    engine = Engine(store, {"copy": second})
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert second.recovered == ["job"]
    assert second.started == ["b", "c"]  # the finished file is skipped
    job = engine.get("job")
    assert job.status is JobStatus.COMPLETED and job.files_completed == 3


async def test_cleanup_refuses_active_jobs_then_forgets(
    store: Store, autojump_clock: object
) -> None:
    engine = Engine(store, {"copy": FakeRunner(seconds=10)})
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        engine.submit(make_job("job", "a"))
        await trio.sleep(1)
        with pytest.raises(Conflict):
            engine.cleanup("job")
        await trio.sleep(20)
        engine.cleanup("job")
        nursery.cancel_scope.cancel()
    with pytest.raises(NotFound):
        engine.get("job")


async def test_retention_sweeps_old_finished_jobs_only(
    store: Store, autojump_clock: object
) -> None:
    old = make_job("old", "a")
    old.status, old.finished_at = JobStatus.COMPLETED, now_ms() - 3 * 3_600_000
    fresh = make_job("fresh", "a")
    fresh.status, fresh.finished_at = JobStatus.FAILED, now_ms()
    for job in (old, fresh):
        job.recount()
        store.insert_job(job)
    engine = Engine(store, {"copy": FakeRunner()}, retention_hours=2)
    assert engine.sweep_expired() == ["old"]
    assert engine.get("fresh").status is JobStatus.FAILED


async def test_runner_errors_fail_the_job_not_the_engine(
    store: Store, autojump_clock: object
) -> None:
    class Exploding(FakeRunner):
        async def run(self, job: Job, control: JobControl) -> None:
            raise StreamerError("source bucket vanished", code="NoSuchBucket")

    engine = Engine(store, {"copy": Exploding()})
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        engine.submit(make_job("job", "a"))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    job = engine.get("job")
    assert job.status is JobStatus.FAILED
    assert job.errors[0].error == "NoSuchBucket"


async def test_watchers_are_woken_on_change(store: Store, autojump_clock: object) -> None:
    engine = Engine(store, {"copy": FakeRunner(seconds=2)})
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        job = make_job("job", "a")
        engine.submit(job)
        seen: list[JobStatus] = []
        while not job.status.finished:
            await job.changed.wait()
            seen.append(job.status)
        nursery.cancel_scope.cancel()
    assert seen[0] is JobStatus.IN_PROGRESS and seen[-1] is JobStatus.COMPLETED


def test_files_are_copied_in_groups_by_size_each_with_its_own_concurrency() -> None:
    sizes = [0, 4096, 64 << 10, (64 << 10) + 1, 1 << 20, (1 << 20) + 1, -1, (8 << 20) - 1]
    sizes += [8 << 20, 1 << 30]
    files = [FileTask(i, f"f{i}", f"out/f{i}", size) for i, size in enumerate(sizes)]
    groups = [([f.size for f in group], in_flight) for group, in_flight in _by_size(files)]
    assert groups == [
        ([0, 4096, 64 << 10], 64),  # read whole, tiny: many at once
        ([(64 << 10) + 1, 1 << 20], 16),  # read whole, up to 1 MiB each
        ([(1 << 20) + 1, -1, (8 << 20) - 1], 8),  # unknown size: as a small file
        ([8 << 20, 1 << 30], 1),
    ]
