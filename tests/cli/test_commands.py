"""The client commands against a real ``streamer serve``, run as subprocesses without
a terminal: plain output, ``--json`` parsed, exit codes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from tests.e2e.node import TOKEN, Node, sparse, staging_files, tree
from tests.support.faultproxy import RequestHead, start_in_thread

from .conftest import cli, cli_env


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_cp_between_locations_copies_every_file_and_exits_0(node: Node, tmp_path: Path) -> None:
    tree(node.data / "cp1/models", {"config.json": b"{}", "unet/w.bin": os.urandom(3 << 20)})
    done = cli(node, tmp_path, "cp", "local-0:cp1/models", "local-0:cp1/backup/")
    assert done.returncode == 0, done.stderr
    for name in ("config.json", "unet/w.bin"):
        copied = node.data / "cp1/backup/models" / name
        assert sha256(copied) == sha256(node.data / "cp1/models" / name)
    assert "completed: 2/2 files" in done.stdout
    assert "\x1b[" not in done.stdout + done.stderr  # no terminal: no escapes, no bar

    single = cli(node, tmp_path, "cp", "local-0:cp1/models/config.json", "local-0:cp1/one")
    assert single.returncode == 0, single.stderr
    assert (node.data / "cp1/one/config.json").read_bytes() == b"{}"

    contents = cli(node, tmp_path, "cp", "local-0:cp1/models/", "local-0:cp1/flat", "--json")
    assert contents.returncode == 0, contents.stderr
    lines = json_lines(contents.stdout)
    assert lines[0]["filesQueued"] == 2
    assert lines[-1]["type"] == "complete"
    assert sorted(p.name for p in (node.data / "cp1/flat").iterdir()) == ["config.json", "unet"]


def test_cp_uploads_a_local_directory_with_checksums(node: Node, tmp_path: Path) -> None:
    local = tmp_path / "ckpt"
    tree(local, {"a.bin": os.urandom(5 << 20), "sub/b.txt": b"b", "empty": b""})
    done = cli(node, tmp_path, "cp", "./ckpt", "local-0:up1/", "--json")
    assert done.returncode == 0, done.stderr
    answers = json_lines(done.stdout)
    assert sorted(a["path"] for a in answers) == [
        "up1/ckpt/a.bin",
        "up1/ckpt/empty",
        "up1/ckpt/sub/b.txt",
    ]  # type: ignore[type-var]
    for answer in answers:
        landed = node.data / str(answer["path"])
        assert sha256(landed) == answer["sha256"] == sha256(local / str(answer["path"])[9:])
    jobs = json.loads(cli(node, tmp_path, "jobs", "--json").stdout)["jobs"]
    assert {a["jobId"] for a in answers} <= {j["id"] for j in jobs if j["type"] == "local-upload"}

    again = cli(node, tmp_path, "cp", str(local / "a.bin"), "local-0:up1/ckpt")
    assert again.returncode == 0, again.stderr
    assert "1 skipped" in again.stdout  # --conflict skip is the default
    assert staging_files(node.data) == []


def test_dry_run_shows_conflicts_and_the_large_folder_warning(node: Node, tmp_path: Path) -> None:
    tree(node.data / "dry/src", {"a.txt": b"a", "b.txt": b"b"})
    tree(node.data / "dry/dst/src", {"a.txt": b"old"})
    sparse(node.data / "dry/src/huge.bin", 11 << 30)
    shown = cli(node, tmp_path, "cp", "local-0:dry/src", "local-0:dry/dst", "--dry-run")
    assert shown.returncode == 0, shown.stderr
    assert "3 files: 2 new, 1 already at the destination" in shown.stdout
    assert "exists: dry/src/a.txt" in shown.stdout
    assert "warning: This folder contains 3 files (11 GB)" in shown.stderr
    answer = json.loads(
        cli(
            node, tmp_path, "cp", "local-0:dry/src", "local-0:dry/dst", "--dry-run", "--json"
        ).stdout
    )
    assert answer["conflicts"] == ["dry/src/a.txt"]
    assert answer["warning"]["type"] == "large_folder"
    assert not (node.data / "dry/dst/src/b.txt").exists()  # nothing was copied


def test_jobs_lists_and_filters(node: Node, tmp_path: Path) -> None:
    tree(node.data / "jobs/src", {"x.txt": b"x"})
    done = cli(node, tmp_path, "cp", "local-0:jobs/src/x.txt", "local-0:jobs/dst", "--json")
    job_id = json_lines(done.stdout)[0]["jobId"]
    listed = json.loads(cli(node, tmp_path, "jobs", "--status", "completed", "--json").stdout)
    assert job_id in [j["id"] for j in listed["jobs"]]
    assert {j["status"] for j in listed["jobs"]} == {"completed"}
    table = cli(node, tmp_path, "jobs")
    row = next(line for line in table.stdout.splitlines() if str(job_id) in line)
    assert row.split()[1:4] == ["cross-storage", "completed", "1/1"]
    assert cli(node, tmp_path, "jobs", "--status", "nope").returncode == 2  # argparse


def test_watch_cancel_cleanup(node: Node, tmp_path: Path, slow_url: str) -> None:
    started = cli(node, tmp_path, "cp", slow_url, "local-0:wc/", "--detach")
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.strip()
    node.wait(job_id, until=lambda j: j["bytesTransferred"] > 0)

    watch = subprocess.Popen(
        [sys.executable, "-m", "streamer", "watch", job_id, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(node, tmp_path),
    )
    assert cli(node, tmp_path, "cleanup", job_id).returncode == 1  # still running
    cancelled = cli(node, tmp_path, "cancel", job_id, "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["jobId"] == job_id
    out, err = watch.communicate(timeout=30)
    assert watch.returncode == 1, err  # the job did not complete
    events = json_lines(out)
    assert events[-1]["type"] == "cancelled"
    assert all(e["job"]["id"] == job_id for e in events)

    again = cli(node, tmp_path, "watch", job_id)  # a finished job: its end at once
    assert again.returncode == 1 and f"{job_id} cancelled" in again.stdout
    second = cli(node, tmp_path, "cancel", job_id)
    assert second.returncode == 1 and "already cancelled" in second.stderr
    assert cli(node, tmp_path, "cleanup", job_id).returncode == 0
    gone = cli(node, tmp_path, "watch", job_id)
    assert gone.returncode == 1 and "no job" in gone.stderr and "HTTP 404" in gone.stderr
    assert not (node.data / "wc/slow.bin").exists()
    assert staging_files(node.data) == []


def test_watch_reopens_a_progress_stream_that_broke(node: Node, tmp_path: Path) -> None:
    tree(node.data / "re/src", {"x.txt": b"x"})
    done = cli(node, tmp_path, "cp", "local-0:re/src", "local-0:re/dst", "--detach")
    job_id = done.stdout.strip()

    def progress(head: RequestHead) -> bool:
        return "/api/transfer/progress/" in head.target

    proxy = start_in_thread(int(node.url.rsplit(":", 1)[1]))
    try:
        proxy.proxy.drop_after(300, when=progress)  # mid-way through the first event
        url = f"http://127.0.0.1:{proxy.port}"
        watched = cli(node, tmp_path, "watch", job_id, "--json", STREAMER_URL=url)
    finally:
        proxy.stop()
    assert watched.returncode == 0, watched.stderr
    assert [e["type"] for e in json_lines(watched.stdout)] == ["complete"]
    assert proxy.proxy.dropped == 1
    assert sum(progress(head) for head in proxy.proxy.log) == 2


def test_interrupt_without_a_terminal_detaches(node: Node, tmp_path: Path, slow_url: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer", "cp", slow_url, "local-0:int/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(node, tmp_path),
    )
    assert proc.stderr is not None
    job_id = proc.stderr.readline().split(":")[0]
    node.wait(job_id, until=lambda j: j["bytesTransferred"] > 0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert out.strip() == job_id and f"detached: {job_id} keeps running" in err
    assert node.job(job_id)["status"] == "in_progress"  # still running on the node
    assert cli(node, tmp_path, "cancel", job_id).returncode == 0
    assert node.wait(job_id)["status"] == "cancelled"


def test_settings_max_concurrent(node: Node, tmp_path: Path) -> None:
    assert cli(node, tmp_path, "settings", "max-concurrent").stdout == "max-concurrent 2\n"
    changed = cli(node, tmp_path, "settings", "max-concurrent", "5", "--json")
    assert json.loads(changed.stdout) == {"maxConcurrentTransfers": 5}
    refused = cli(node, tmp_path, "settings", "max-concurrent", "0")
    assert refused.returncode == 1 and "maxConcurrentTransfers" in refused.stderr
    assert cli(node, tmp_path, "settings", "max-concurrent", "2").returncode == 0


def test_login_saves_a_private_file_and_refuses_a_bad_token(node: Node, tmp_path: Path) -> None:
    saved = tmp_path / "config/streamer/client.yml"
    bad = cli(node, tmp_path, "login", stdin="wrong-token-0123456789\n", STREAMER_TOKEN="")
    assert bad.returncode == 1 and "HTTP 401" in bad.stderr and "streamer login" in bad.stderr
    assert not saved.exists()
    good = cli(node, tmp_path, "login", stdin=f"{TOKEN}\n", STREAMER_TOKEN="")
    assert good.returncode == 0, good.stderr
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    # later commands find the node and token in the file alone
    listed = cli(node, tmp_path, "jobs", "--json", STREAMER_TOKEN="", STREAMER_URL="")
    assert listed.returncode == 0, listed.stderr
    assert isinstance(json.loads(listed.stdout)["jobs"], list)


def test_errors_exit_non_zero_with_a_readable_message(node: Node, tmp_path: Path) -> None:
    missing = cli(node, tmp_path, "cp", "local-0:nowhere/x.bin", "local-0:dst")
    assert missing.returncode == 1
    assert (
        missing.stderr
        == "streamer: source file 'nowhere/x.bin' does not exist [NotFound, HTTP 404]\n"
    )
    unknown = cli(node, tmp_path, "cp", "nope-9:x", "local-0:dst", "--json")
    assert unknown.returncode == 1
    assert json.loads(unknown.stderr)["error"] == "unknown_location"
    assert cli(node, tmp_path, "cp", "ftp://h/x", "local-0:d").returncode == 2
    to_local = cli(node, tmp_path, "cp", "local-0:x", "./here")
    assert to_local.returncode == 2 and "must be a location" in to_local.stderr
    down = cli(node, tmp_path, "jobs", STREAMER_URL="http://127.0.0.1:9")
    assert down.returncode == 1 and "cannot reach http://127.0.0.1:9" in down.stderr
    assert "Traceback" not in missing.stderr + unknown.stderr + down.stderr


def test_file_errors_are_a_table_and_exit_1(node: Node, tmp_path: Path) -> None:
    tree(node.data / "fe/src", {"ok.txt": b"ok", "blocked.txt": b"x"})
    (node.data / "fe/dst/src/blocked.txt").mkdir(parents=True)  # a directory in the way
    done = cli(node, tmp_path, "cp", "local-0:fe/src", "local-0:fe/dst", "--conflict", "overwrite")
    assert done.returncode == 1
    assert "completed: 1/2 files, 1 failed" in done.stdout
    header = next(line for line in done.stdout.splitlines() if "FILE" in line)
    assert header.split() == ["FILE", "ERROR", "MESSAGE"]
    assert any(
        line.split()[:2] == ["fe/src/blocked.txt", "EISDIR"] for line in done.stdout.splitlines()
    )
