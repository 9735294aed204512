"""syncfs is used only where it reports failed writebacks; elsewhere files are fsynced."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from streamer import _syncfs
from streamer._storage import groupcommit
from streamer._storage.groupcommit import Staged, commit_batch

FUSE_SUPER_MAGIC = 0x65735546


@pytest.mark.parametrize(
    ("release", "reports"),
    [
        ("5.8.0", True),
        ("6.18.44-fc-v669", True),
        ("5.10.0-23-amd64", True),
        ("5.7.19", False),
        ("4.18.0-553.el8_10.x86_64", False),
        ("garbage", False),
    ],
)
def test_kernels_from_5_8_report_syncfs_errors(release: str, reports: bool) -> None:
    assert _syncfs.kernel_reports_errors(release) is reports


def test_the_filesystem_type_is_read(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        assert _syncfs.filesystem_type(fd) not in (None, 0)
    finally:
        os.close(fd)


def _batch(directory: Path, names: list[str]) -> list[Staged]:
    def staged(name: str) -> Staged:
        def publish(temp: str) -> str:
            os.replace(temp, directory / name)
            return str(directory / name)

        return Staged(
            prepare=lambda: str(directory / f".streamer-{name}.part"),
            data=name.encode(),
            mtime_ns=None,
            publish=publish,
        )

    return [staged(name) for name in names]


def _files_fsynced(
    monkeypatch: pytest.MonkeyPatch, kind: Callable[[int], bool] = stat.S_ISREG
) -> list[int]:
    """The files of ``kind`` (by mode; regular files by default) fsynced from now on."""
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if kind(os.fstat(fd).st_mode):
            synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(groupcommit.os, "fsync", fsync)
    return synced


@pytest.mark.parametrize("magic", [FUSE_SUPER_MAGIC, None])
def test_an_untrusted_filesystem_gets_an_fsync_per_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, magic: int | None
) -> None:
    monkeypatch.setattr(_syncfs, "filesystem_type", lambda fd: magic)
    synced = _files_fsynced(monkeypatch)
    monkeypatch.setattr(_syncfs, "_syncfs", None if magic is None else _syncfs._syncfs)
    batch = _batch(tmp_path, ["a", "b", "c"])
    commit_batch(batch)
    assert len(synced) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]


def test_a_trusted_filesystem_gets_one_syncfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _syncfs._KERNEL_OK or _syncfs._syncfs is None:
        pytest.skip("no trustworthy syncfs on this kernel")
    monkeypatch.setattr(_syncfs, "filesystem_type", lambda fd: 0xEF53)
    synced = _files_fsynced(monkeypatch)
    commit_batch(_batch(tmp_path, ["a", "b", "c"]))
    assert synced == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]


@pytest.mark.parametrize("trusted", [True, False])
def test_names_in_many_directories_are_flushed_by_one_syncfs_where_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trusted: bool
) -> None:
    if trusted and (not _syncfs._KERNEL_OK or _syncfs._syncfs is None):
        pytest.skip("no trustworthy syncfs on this kernel")
    monkeypatch.setattr(_syncfs, "filesystem_type", lambda fd: 0xEF53 if trusted else None)
    syncfs_calls: list[int] = []
    real_sync = groupcommit.sync_filesystem

    def sync_filesystem(fd: int) -> bool:
        syncfs_calls.append(fd)
        return real_sync(fd)

    monkeypatch.setattr(groupcommit, "sync_filesystem", sync_filesystem)
    directories_synced = _files_fsynced(monkeypatch, stat.S_ISDIR)
    batch = []
    for n in range(4):
        (tmp_path / f"d{n}").mkdir()
        batch += _batch(tmp_path / f"d{n}", ["a", "b"])
    commit_batch(batch)
    assert all(item.result is not None and item.result.unwrap() for item in batch)
    if trusted:
        assert (len(syncfs_calls), directories_synced) == (2, [])  # data, then names
    else:
        assert len(directories_synced) == 4
    for n in range(4):
        assert sorted(p.name for p in (tmp_path / f"d{n}").iterdir()) == ["a", "b"]
