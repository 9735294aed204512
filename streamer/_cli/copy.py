"""``streamer cp SRC DST``: copy between locations, import from the Hub or the web,
or upload local files, as jobs of the node (see :data:`DESCRIPTION`)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..client.api import TransferApi, hash_file
from ..client.endpoints import Endpoint, LocalPath, LocationPath, parse
from ..client.http import ApiError
from ..client.models import Conflicts, JobError, Uploaded
from . import display
from .follow import follow, report_errors
from .session import EXIT_FAILED, EXIT_OK, Session, UsageError, client_command

T = TypeVar("T")
CONFLICTS_SHOWN = 20

DESCRIPTION = """Copy files as a job of the node and follow it with a progress bar.

DST is a directory of a location: ID:dir (local-0:backup/) or s3://bucket/prefix.
SRC is ID:path, s3://bucket/key, hf://[datasets/|spaces/]org/repo[@revision][/path],
an http(s):// URL, or a path on this machine (uploaded). SRC "dir" copies the
directory itself (DST/dir/...), "dir/" its contents. Ctrl-C asks whether to cancel
the job or detach from it. Exit code 0 only when the job completed without errors.
"""

EXAMPLES = """examples:
  streamer cp local-0:models/llama local-0:backup/          # DST/llama/…
  streamer cp local-0:models/ s3://archive/models --conflict overwrite
  streamer cp hf://org/model@v1.0 local-0:models/model
  streamer cp https://example.com/weights.bin local-0:downloads/
  streamer cp ./checkpoints local-0:incoming/ --dry-run     # upload from this machine
"""


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    cp = commands.add_parser(
        "cp",
        parents=[common],
        help="copy files between locations, from the Hub or the web, or upload local files",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cp.add_argument("src", metavar="SRC", help="ID:path, s3://, hf://, http(s):// or local path")
    cp.add_argument("dst", metavar="DST", help="ID:dir or s3://bucket/prefix (a directory)")
    cp.add_argument(
        "--conflict",
        choices=["skip", "overwrite", "rename"],
        default="skip",
        help="when a file exists at the destination (default: skip, never destroys data)",
    )
    cp.add_argument(
        "--dry-run", action="store_true", help="show conflicts and warnings, copy nothing"
    )
    cp.add_argument("--detach", action="store_true", help="print the job id and return at once")
    cp.set_defaults(handler=client_command(_cp))


def _cp(session: Session, args: argparse.Namespace) -> int:
    source, destination = parse(args.src), parse(args.dst)
    if not isinstance(destination, LocationPath):
        raise UsageError(f"DST {args.dst!r} must be a location (ID:dir or s3://bucket/prefix)")
    if isinstance(source, LocalPath):
        return _upload(session, args, source, destination)
    request = _Request(source, destination, args.conflict)
    if args.dry_run:
        conflicts = session.run(lambda api: request.send(api.check_conflicts))
        return _show_conflicts(session, conflicts, args.conflict)
    submitted = session.run(lambda api: request.send(api.submit))
    if session.json:
        session.emit(submitted)
    else:
        session.err.print(
            f"{submitted.job_id}: {display.files(submitted.files_queued)}, "
            f"{display.size(submitted.estimated_bytes)}",
            markup=False,
        )
    if args.detach:
        if not session.json:
            print(submitted.job_id, flush=True)
        return EXIT_OK
    return follow(session, submitted.job_id)


@dataclass(frozen=True)
class _Request:
    """A transfer body for SRC → DST, sent with the right item type."""

    source: Endpoint
    destination: LocationPath
    conflict: str

    def body(self, item_type: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "destination": self.destination.side(),
            "conflictResolution": self.conflict,
        }
        source = self.source
        if not isinstance(source, LocationPath):
            assert not isinstance(source, LocalPath)
            return body | {"source": source.side()}
        parent, name = source.split()
        body["source"] = source.side(parent)
        body["items"] = [{"path": name or ".", "type": "directory" if not name else item_type}]
        return body

    async def send(self, call: Callable[[dict[str, Any]], Awaitable[T]]) -> T:
        """``call(body)``; a location path that is no directory is sent again as a file
        (the node's walk answers 404 ``NotFound`` for a file)."""
        try:
            return await call(self.body("directory"))
        except ApiError as exc:
            named_file = isinstance(self.source, LocationPath) and not self.source.contents
            if not (named_file and exc.status == 404 and exc.code == "NotFound"):
                raise
        return await call(self.body("file"))


def _show_conflicts(session: Session, answer: Conflicts, conflict: str) -> int:
    if session.json:
        session.emit(answer)
        return EXIT_OK
    out = session.out
    total = len(answer.conflicts) + len(answer.non_conflicting)
    out.print(
        f"{total} files: {len(answer.non_conflicting)} new, "
        f"{len(answer.conflicts)} already at the destination (--conflict {conflict})"
    )
    for path in answer.conflicts[:CONFLICTS_SHOWN]:
        out.print(f"  exists: {path}", markup=False)
    if len(answer.conflicts) > CONFLICTS_SHOWN:
        out.print(f"  … and {len(answer.conflicts) - CONFLICTS_SHOWN} more")
    if answer.warning is not None:
        session.err.print(f"warning: {answer.warning.message}", markup=False)
    return EXIT_OK


# -- uploads ---------------------------------------------------------------


def local_files(source: LocalPath) -> list[tuple[Path, str]]:
    """The regular files to upload with their paths below DST, sorted.

    A file uploads under its name; a directory under its name, or with a
    trailing ``/`` its contents. Symlinks inside a directory are skipped.
    """
    path = source.path
    if path.is_file():
        return [(path, path.name)]
    if not path.is_dir():
        raise UsageError(f"{path}: no such file or directory")
    prefix = "" if source.contents else path.resolve().name
    found: list[tuple[Path, str]] = []
    for directory, subdirs, names in os.walk(path):
        subdirs.sort()
        base = Path(directory)
        for name in sorted(names):
            file = base / name
            if file.is_file() and not file.is_symlink():
                relative = file.relative_to(path).as_posix()
                found.append((file, f"{prefix}/{relative}" if prefix else relative))
    return found


def _upload(
    session: Session, args: argparse.Namespace, source: LocalPath, destination: LocationPath
) -> int:
    if destination.kind != "local":
        raise UsageError("uploads go to a local location of the node (ID:dir), not to S3")
    if args.detach:
        raise UsageError("--detach does not apply to uploads: the bytes come from this machine")
    files = local_files(source)
    base = destination.path.strip("/")
    targets = [(file, f"{base}/{name}" if base else name) for file, name in files]
    total = sum(file.stat().st_size for file, _ in files)
    if args.dry_run:
        return _show_upload_plan(session, targets, total)
    bars = display.Bars(session.out, enabled=session.terminal)
    with bars.shown():
        results = session.run(
            lambda api: _send_all(api, session, bars, destination, targets, total, args.conflict)
        )
    uploaded = [r for r in results if isinstance(r, Uploaded)]
    errors = [r for r in results if isinstance(r, JobError)]
    if not session.json:
        skipped = sum(u.path is None for u in uploaded)
        session.out.print(
            f"uploaded {len(uploaded) - skipped}/{len(targets)} files"
            + (f", {skipped} skipped" if skipped else "")
            + f", {display.size(total)}",
            markup=False,
        )
    report_errors(session, errors)
    return EXIT_FAILED if errors else EXIT_OK


async def _send_all(
    api: TransferApi,
    session: Session,
    bars: display.Bars,
    destination: LocationPath,
    targets: list[tuple[Path, str]],
    total: int,
    conflict: str,
) -> list[Uploaded | JobError]:
    """Hash then upload each file in turn; a file the node refuses is recorded and the
    rest go on (errors that concern every file, such as 401, stop the run)."""
    bars.set("hash", description="hash", completed=0, total=total)
    bars.set("send", description="upload", completed=0, total=total)
    results: list[Uploaded | JobError] = []
    for done, (file, target) in enumerate(targets):
        bars.describe("hash", f"{done}/{len(targets)} files  {target}")
        sha256 = await hash_file(file, lambda n: bars.advance("hash", n))
        bars.describe("send", f"{done}/{len(targets)} files  {target}")
        try:
            result: Uploaded | JobError = await api.upload(
                destination.location_id,
                target,
                file,
                sha256=sha256,
                conflict=conflict,
                on_progress=lambda n: bars.advance("send", n),
            )
        except ApiError as exc:
            if exc.status in (401, 403) or exc.code == "unknown_location":
                raise
            result = JobError(file=target, error=exc.code, message=exc.message)
        if session.json:
            session.emit(result)
        results.append(result)
    return results


def _show_upload_plan(session: Session, targets: list[tuple[Path, str]], total: int) -> int:
    from .._engine.transfer import large_folder_warning  # the engine: only for --dry-run

    warning = large_folder_warning(len(targets), total)
    if session.json:
        session.emit({"files": [t for _, t in targets], "totalSize": total, "warning": warning})
        return EXIT_OK
    session.out.print(
        f"{display.files(len(targets))}, {display.size(total)} to upload "
        "(conflicts are resolved by --conflict as each file lands)"
    )
    for _, target in targets[:CONFLICTS_SHOWN]:
        session.out.print(f"  {target}", markup=False)
    if len(targets) > CONFLICTS_SHOWN:
        session.out.print(f"  … and {len(targets) - CONFLICTS_SHOWN} more")
    if warning is not None:
        session.err.print(f"warning: {warning['message']}", markup=False)
    return EXIT_OK
