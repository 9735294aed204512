"""The worker's command: template substitution without a shell, exit status, stderr
tail, time limit; and the lease a claim announces."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from streamer.client._runner import STDERR_TAIL, JobFailed, command_argv, run_command
from streamer.client.worker import Claim


def test_the_template_is_split_like_a_shell_but_never_run_by_one() -> None:
    argv = command_argv(
        "ffmpeg -i {input} -vf 'scale=1280:-1' {output}; rm -rf /",
        Path("/c/job_1/source file.mp4"),
        Path("/c/job_1/output.mkv"),
    )
    assert argv == [
        "ffmpeg", "-i", "/c/job_1/source file.mp4", "-vf", "scale=1280:-1",
        "/c/job_1/output.mkv;", "rm", "-rf", "/",
    ]  # fmt: skip
    assert command_argv("cp {input}.{input} x{output}", Path("a"), Path("b")) == [
        "cp",
        "a.a",
        "xb",
    ]
    with pytest.raises(ValueError):
        command_argv("   ", Path("a"), Path("b"))
    with pytest.raises(ValueError):
        command_argv("cp 'unterminated {input}", Path("a"), Path("b"))


async def test_a_failing_command_reports_the_tail_of_its_stderr(tmp_path: Path) -> None:
    noisy = "import sys; sys.stderr.write('x' * 100000 + ' the real reason'); sys.exit(3)"
    with pytest.raises(JobFailed) as failed:
        await run_command([sys.executable, "-c", noisy], None, tmp_path)
    assert failed.value.message.startswith("the command exited 3: ")
    assert failed.value.message.endswith("the real reason") and not failed.value.retry
    assert len(failed.value.message) <= STDERR_TAIL + 100
    await run_command([sys.executable, "-c", "pass"], None, tmp_path)  # exit 0: fine


async def test_a_command_over_its_time_limit_is_killed(tmp_path: Path) -> None:
    with pytest.raises(JobFailed) as failed:
        await run_command([sys.executable, "-c", "import time; time.sleep(60)"], 0.5, tmp_path)
    assert "timed out after 0.5 s" in failed.value.message
    with pytest.raises(JobFailed) as missing:
        await run_command([str(tmp_path / "no-such-program")], None, tmp_path)
    assert "cannot run" in missing.value.message


def test_the_lease_comes_from_the_servers_own_timestamps() -> None:
    job = {"id": "j", "updatedAt": "2026-01-01T10:00:00Z", "leaseExpiresAt": "2026-01-01T10:00:45Z"}
    assert Claim(job, "t").lease_seconds == 45
    assert Claim({"id": "j"}, "t").lease_seconds == 60  # not said: the default
