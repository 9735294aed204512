"""Group commit of small local files: batching, durability order, failure and cancel."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from streamer._errors import PathBlocked
from streamer._storage import Conflict, LocalStorage, groupcommit
from streamer._storage.groupcommit import GroupCommit, Staged, commit_batch
from streamer._storage.localfs import is_temp_name


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    (tmp_path / "root").mkdir()
    return LocalStorage("local-0", tmp_path / "root")


def _visible(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not is_temp_name(p.name)
    }


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_temp_name(p.name)]


async def _write(storage: LocalStorage, path: str, data: bytes, tag: str) -> str | None:
    writer = await storage.open_writer(path, conflict=Conflict.OVERWRITE, tag=tag)
    try:
        await writer.write(data)
        return await writer.commit(sha256=hashlib.sha256(data).hexdigest(), mtime_ns=None)
    finally:
        await writer.abort()


async def test_concurrent_small_files_share_batches(storage: LocalStorage) -> None:
    files = {f"d{n % 3}/f{n}": os.urandom(100 + n) for n in range(60)}
    async with trio.open_nursery() as nursery:
        for n, (path, data) in enumerate(files.items()):
            nursery.start_soon(_write, storage, path, data, f"t{n}")
    root = Path(storage.root)
    assert _visible(root) == files
    assert not _temps(root)
    assert storage.group.batches < len(files) / 4  # many files per flush


async def test_names_appear_only_after_the_flush(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(storage.root)
    seen_at_flush: list[tuple[dict[str, bytes], list[str]]] = []
    real = groupcommit._Flushes.data

    def spy(self: groupcommit._Flushes) -> None:
        batch = [p.name.removeprefix(".streamer-t").removesuffix(".part") for p in _temps(root)]
        seen_at_flush.append((_visible(root), batch))
        real(self)

    monkeypatch.setattr(groupcommit._Flushes, "data", spy)
    async with trio.open_nursery() as nursery:
        for n in range(10):
            nursery.start_soon(_write, storage, f"a/f{n}", b"x" * n, f"t{n}")
    assert seen_at_flush
    for visible, batch in seen_at_flush:
        assert batch  # the batch's temp files exist, their final names not yet
        assert not {f"a/f{n}" for n in batch} & set(visible)
    assert len(_visible(root)) == 10


async def test_a_failed_flush_publishes_nothing_and_leaves_no_temp(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: groupcommit._Flushes) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(groupcommit._Flushes, "data", broken)
    with pytest.raises(Exception, match="Input/output error") as caught:
        await _write(storage, "f", b"data", "t")
    assert getattr(caught.value, "code", None) == "EIO"
    root = Path(storage.root)
    assert _visible(root) == {}
    assert not _temps(root)


async def test_one_blocked_file_fails_alone(storage: LocalStorage) -> None:
    root = Path(storage.root)
    (root / "taken").mkdir(parents=True)
    results: dict[str, object] = {}

    async def one(path: str, tag: str) -> None:
        try:
            results[path] = await _write(storage, path, b"v", tag)
        except PathBlocked as exc:
            results[path] = exc.code

    async with trio.open_nursery() as nursery:
        for n, path in enumerate(["a", "taken", "b"]):
            nursery.start_soon(one, path, f"t{n}")
    assert results == {"a": "a", "taken": "EISDIR", "b": "b"}
    assert _visible(root) == {"a": b"v", "b": b"v"}
    assert not _temps(root)


async def test_cancel_before_the_batch_leaves_nothing(storage: LocalStorage) -> None:
    group = GroupCommit()
    root = Path(storage.root)
    release = threading.Event()
    first = _staged(root, "first")
    _gate_prepare(first, release)  # hold the first batch until told
    second = _staged(root, "second")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(group.commit, first)
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            nursery.start_soon(_cancel_soon, scope)
            await group.commit(second)  # queued behind the running batch, then cancelled
        assert scope.cancelled_caught
        release.set()
    assert _visible(root) == {"first": b"first"}
    assert not _temps(root)
    assert group.batches == 1


async def test_cancel_during_its_batch_still_publishes(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers cancelled while their batch runs (the committer running it, and one
    waiting on it) see it through, their aborts after it: names published, no temp."""
    root = Path(storage.root)
    gates = {"tx": threading.Event(), "tz": threading.Event()}
    real = groupcommit._write_temp

    def gated(temp: str, item: Staged) -> int:
        gate = gates.get(Path(temp).name.removeprefix(".streamer-").removesuffix(".part"))
        if gate is not None:
            assert gate.wait(10)
        return real(temp, item)

    monkeypatch.setattr(groupcommit, "_write_temp", gated)
    results: dict[str, str | None] = {}

    async def write(name: str) -> None:
        results[name] = await _write(storage, name, name.encode(), f"t{name}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write, "x")
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as inner:
                inner.start_soon(write, "y")
                inner.start_soon(write, "z")
                await trio.testing.wait_all_tasks_blocked()
                gates["tx"].set()  # batch 1 ends; batch 2 (y, z) starts and blocks on z
                while storage.group.batches < 1:  # noqa: ASYNC110 - a thread ends it
                    await trio.sleep(0.01)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
                with trio.CancelScope(shield=True):
                    await trio.sleep(0.05)  # the cancel reaches both committers first
                gates["tz"].set()
    assert storage.group.batches == 2
    assert results == {"x": "x", "y": "y", "z": "z"}  # committed, as reported
    assert _visible(root) == {"x": b"x", "y": b"y", "z": b"z"}
    assert not _temps(root)


async def test_a_batch_waiting_for_a_thread_runs_although_its_committer_is_cancelled(
    tmp_path: Path,
) -> None:
    """The committer that took a batch is cancelled while the batch waits for a worker
    thread (all busy): the batch still runs, so the other files in it land."""
    limiter = trio.to_thread.current_default_thread_limiter()
    saved, limiter.total_tokens = limiter.total_tokens, 1
    release_first, release_busy = threading.Event(), threading.Event()
    first = _staged(tmp_path, "first")
    _gate_prepare(first, release_first)  # batch 1 holds the only thread token
    group = GroupCommit()
    try:
        async with trio.open_nursery() as nursery:
            try:
                nursery.start_soon(group.commit, first)
                await trio.testing.wait_all_tasks_blocked()
                scopes = [trio.CancelScope(), trio.CancelScope()]

                async def commit(scope: trio.CancelScope, name: str) -> None:
                    with scope:
                        await group.commit(_staged(tmp_path, name))

                nursery.start_soon(commit, scopes[0], "second")
                nursery.start_soon(commit, scopes[1], "third")
                await trio.testing.wait_all_tasks_blocked()  # both queued for batch 2
                nursery.start_soon(trio.to_thread.run_sync, release_busy.wait)  # next in line
                await trio.testing.wait_all_tasks_blocked()
                release_first.set()  # batch 1 ends; its token goes to the busy thread
                while group.batches < 1:  # noqa: ASYNC110 - a thread ends it
                    await trio.sleep(0.01)
                await trio.testing.wait_all_tasks_blocked()  # batch 2 waits for a token
                for scope in scopes:
                    scope.cancel()  # its runner among them
                await trio.testing.wait_all_tasks_blocked()
            finally:
                release_first.set()
                release_busy.set()  # the threads end even when the test fails
    finally:
        limiter.total_tokens = saved
    assert group.batches == 2
    assert _visible(tmp_path) == {"first": b"first", "second": b"second", "third": b"third"}
    assert not _temps(tmp_path)


def _gate_prepare(item: Staged, gate: threading.Event) -> None:
    """Hold the batch thread in ``item``'s prepare until ``gate`` is set."""
    prepare = item.prepare

    def gated() -> str:
        assert gate.wait(10)
        return prepare()

    item.prepare = gated


def test_commit_batch_alone_publishes_with_mtime(tmp_path: Path) -> None:
    items = [_staged(tmp_path, f"n{n}", mtime_ns=1_000_000_000 * (n + 1)) for n in range(3)]
    commit_batch(items)
    for n, item in enumerate(items):
        assert item.result is not None and item.result.unwrap() == str(tmp_path / f"n{n}")
        assert os.stat(tmp_path / f"n{n}").st_mtime_ns == 1_000_000_000 * (n + 1)
    assert not _temps(tmp_path)


def _staged(directory: Path, name: str, mtime_ns: int | None = None) -> Staged:
    def publish(temp: str) -> str:
        final = str(directory / name)
        os.replace(temp, final)
        return final

    return Staged(
        prepare=lambda: str(directory / f".streamer-{name}.part"),
        data=name.encode(),
        mtime_ns=mtime_ns,
        publish=publish,
    )


async def _cancel_soon(scope: trio.CancelScope) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()
