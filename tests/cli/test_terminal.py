"""What a person sees: rich progress bars and the Ctrl-C question, under a pseudo-terminal."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tests.e2e.node import Node, sparse

from .conftest import Terminal


def test_cp_shows_a_progress_bar_then_the_outcome(node: Node, tmp_path: Path) -> None:
    sparse(node.data / "tty/src/big.bin", 200 << 20)
    term = Terminal(node, tmp_path, "cp", "local-0:tty/src", "local-0:tty/dst")
    assert term.finish() == 0, term.text
    # the bar's columns: job, percent, bytes done/total, rate, file count
    bar = term.expect(
        r"(transfer-\w+) completed\s.*100%\s+209\.7/209\.7 MB\s+[\d.]+ [kMG]?B/s.*1/1 files"
    )
    assert re.search(rf"{bar[1]} completed: 1/1 files, 209\.7 MB", term.text)
    assert "\x1b[" in term.raw.decode()  # drawn with terminal escapes
    with open(node.data / "tty/dst/src/big.bin", "rb") as f:
        assert (
            hashlib.file_digest(f, "sha256").hexdigest()
            == hashlib.sha256(bytes(200 << 20)).hexdigest()
        )


def test_upload_shows_hash_and_upload_bars(node: Node, tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(bytes(3 << 20))
    term = Terminal(node, tmp_path, "cp", "./w.bin", "local-0:tty-up/")
    assert term.finish() == 0, term.text
    term.expect(r"hash\s.*100%\s+3\.1/3\.1 MB")
    term.expect(r"upload\s.*100%\s+3\.1/3\.1 MB")
    term.expect(r"uploaded 1/1 files, 3\.1 MB")
    assert (node.data / "tty-up/w.bin").stat().st_size == 3 << 20


def test_ctrl_c_asks_and_cancel_stops_the_job(node: Node, tmp_path: Path, slow_url: str) -> None:
    term = Terminal(node, tmp_path, "cp", slow_url, "local-0:tty-int/")
    job_id = term.expect(r"(transfer-\w+) in_progress\s.*\d+%")[1]
    term.interrupt()
    term.expect(r"Cancel the job, or detach and leave it running\? \[cancel/detach\]")
    term.write("cancel\n")
    assert term.finish() == 1, term.text
    assert re.search(rf"{job_id} cancelled: 0/1 files", term.text)
    assert node.job(job_id)["status"] == "cancelled"


def test_ctrl_c_then_detach_leaves_the_job_running(
    node: Node, tmp_path: Path, slow_url: str
) -> None:
    term = Terminal(node, tmp_path, "cp", slow_url, "local-0:tty-det/")
    job_id = term.expect(r"(transfer-\w+) in_progress\s.*\d+%")[1]
    term.interrupt()
    term.expect(r"\[cancel/detach\]")
    term.write("detach\n")
    assert term.finish() == 130, term.text
    assert f"detached: {job_id} keeps running" in term.text
    assert node.job(job_id)["status"] == "in_progress"
    with node.client() as client:
        assert client.post(f"/api/transfer/cancel/{job_id}").status_code == 200
    node.wait(job_id)
