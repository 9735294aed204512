"""Job and file state in SQLite (WAL), so jobs survive restarts.

Writes are small and happen at state transitions (not per chunk); with WAL and
``synchronous=NORMAL`` a commit does no fsync, so calls are made inline from the
event loop. The store is the only module that speaks SQL.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from .jobs import FileStatus, FileTask, Job, JobError, JobStatus, now_ms


class Callback(NamedTuple):
    """A queued Panel callback (see :mod:`streamer._node.panel`)."""

    id: int
    job_id: str
    server: str
    outcome: str
    created_at: int
    attempts: int


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    job_errors TEXT NOT NULL DEFAULT '[]',
    total_files INTEGER NOT NULL DEFAULT 0,
    total_bytes INTEGER NOT NULL DEFAULT 0,
    files_completed INTEGER NOT NULL DEFAULT 0,
    files_failed INTEGER NOT NULL DEFAULT 0,
    files_skipped INTEGER NOT NULL DEFAULT 0,
    bytes_transferred INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE TABLE IF NOT EXISTS files (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    source TEXT NOT NULL,
    destination TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER,
    status TEXT NOT NULL,
    loaded INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT,
    final_path TEXT,
    error TEXT,
    message TEXT,
    expected_sha256 TEXT,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS panel_callbacks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    server TEXT NOT NULL,
    outcome TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS transfer_tokens (
    key TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
"""

_JOB_COLUMNS = (
    "id, kind, status, spec, created_at, started_at, finished_at, job_errors, total_files, "
    "total_bytes, files_completed, files_failed, files_skipped, bytes_transferred"
)
_FILE_COLUMNS = (
    "idx, source, destination, size, mtime_ns, status, loaded, sha256, final_path, error, message, "
    "expected_sha256"
)


class Store:
    """SQLite-backed persistence of jobs, their files and runtime settings."""

    def __init__(self, state_dir: str) -> None:
        os.makedirs(state_dir, exist_ok=True)
        self._db = sqlite3.connect(
            os.path.join(state_dir, "streamer.db"), isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- jobs --------------------------------------------------------------

    def insert_job(self, job: Job) -> None:
        """Persist a new job and all its files in one transaction."""
        with self._transaction():
            self._db.execute(
                f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({', '.join('?' * 14)})",
                self._job_row(job),
            )
            self._db.executemany(
                f"INSERT INTO files (job_id, {_FILE_COLUMNS}) VALUES ({', '.join('?' * 13)})",
                ((job.id, *self._file_row(f)) for f in job.files),
            )

    def update_job(self, job: Job) -> None:
        """Persist the job's status, times, errors and counters."""
        row = self._job_row(job)
        self._db.execute(
            "UPDATE jobs SET status=?, started_at=?, finished_at=?, job_errors=?, total_files=?, "
            "total_bytes=?, files_completed=?, files_failed=?, files_skipped=?, "
            "bytes_transferred=? WHERE id=?",
            (*row[2:3], *row[5:], job.id),
        )

    def update_files(self, changes: Iterable[tuple[Job, FileTask]]) -> None:
        """Persist file states and their jobs' counters in one transaction."""
        changes = list(changes)
        jobs = {job.id: job for job, _ in changes}
        with self._transaction():
            self._db.executemany(
                "UPDATE files SET status=?, size=?, loaded=?, sha256=?, final_path=?, error=?, "
                "message=? WHERE job_id=? AND idx=?",
                (
                    (
                        f.status.value,
                        f.size,  # learned while copying when it was planned unknown
                        f.loaded,
                        f.sha256,
                        f.final_path,
                        f.error,
                        f.message,
                        j.id,
                        f.index,
                    )
                    for j, f in changes
                ),
            )
            for job in jobs.values():
                self.update_job(job)

    def load_job(self, job_id: str, *, with_files: bool) -> Job | None:
        row = self._db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            return None
        job = self._job_from_row(row)
        if with_files:
            job.files = self.load_files(job_id)
        return job

    def load_files(self, job_id: str) -> list[FileTask]:
        rows = self._db.execute(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE job_id=? ORDER BY idx", (job_id,)
        )
        return [FileTask(r[0], r[1], r[2], r[3], r[4], FileStatus(r[5]), *r[6:]) for r in rows]

    def file_errors(self, job_id: str) -> list[JobError]:
        rows = self._db.execute(
            "SELECT source, error, message FROM files WHERE job_id=? AND status='error' "
            "ORDER BY idx",
            (job_id,),
        )
        return [JobError(r[0], r[1] or "error", r[2] or r[1] or "") for r in rows]

    def list_jobs(self, statuses: Iterable[JobStatus] | None = None) -> list[Job]:
        query = f"SELECT {_JOB_COLUMNS} FROM jobs"
        args: tuple[str, ...] = ()
        if statuses is not None:
            args = tuple(s.value for s in statuses)
            query += f" WHERE status IN ({', '.join('?' * len(args))})"
        rows = self._db.execute(query + " ORDER BY created_at, id", args)
        return [self._job_from_row(r) for r in rows]

    def count_jobs(self) -> dict[tuple[str, str], int]:
        """How many jobs are stored, by ``(kind, status)``."""
        rows = self._db.execute("SELECT kind, status, COUNT(*) FROM jobs GROUP BY kind, status")
        return {(kind, status): count for kind, status, count in rows}

    def delete_job(self, job_id: str) -> None:
        self._db.execute("DELETE FROM jobs WHERE id=?", (job_id,))

    def delete_finished_before(self, cutoff_ms: int) -> list[str]:
        """Delete finished jobs that ended before ``cutoff_ms``; return their ids."""
        finished = tuple(s.value for s in JobStatus if s.finished)
        rows = self._db.execute(
            f"SELECT id FROM jobs WHERE status IN ({', '.join('?' * len(finished))}) "
            "AND finished_at < ?",
            (*finished, cutoff_ms),
        ).fetchall()
        ids = [r[0] for r in rows]
        with self._transaction():
            self._db.executemany("DELETE FROM jobs WHERE id=?", ((i,) for i in ids))
        return ids

    # -- settings ----------------------------------------------------------

    def get_setting(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_setting(self, key: str, value: Any) -> None:
        self._db.execute(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, json.dumps(value)),
        )

    # -- node transfers: Panel callback outbox, used transfer tokens -------

    def add_callback(self, job_id: str, server: str, outcome: str) -> bool:
        """Queue a Panel callback (one per job: ``False`` if the job already has one).
        A ``success`` drops the server's undelivered ``failure`` callbacks."""
        with self._transaction():
            if outcome == "success":
                self._db.execute(
                    "DELETE FROM panel_callbacks WHERE server=? AND outcome='failure'", (server,)
                )
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO panel_callbacks (job_id, server, outcome, created_at) "
                "VALUES (?, ?, ?, ?)",
                (job_id, server, outcome, now_ms()),
            )
        return cursor.rowcount > 0

    def pending_callbacks(self) -> list[Callback]:
        rows = self._db.execute(
            "SELECT id, job_id, server, outcome, created_at, attempts FROM panel_callbacks "
            "ORDER BY id"
        )
        return [Callback(*r) for r in rows]

    def callback_attempted(self, callback_id: int, attempts: int, error: str) -> None:
        self._db.execute(
            "UPDATE panel_callbacks SET attempts=?, last_error=? WHERE id=?",
            (attempts, error[:500], callback_id),
        )

    def delete_callback(self, callback_id: int) -> None:
        self._db.execute("DELETE FROM panel_callbacks WHERE id=?", (callback_id,))

    def token_state(self, key: str) -> str | None:
        """What happened to a transfer token (``None``: unknown or expired)."""
        row = self._db.execute(
            "SELECT state FROM transfer_tokens WHERE key=? AND expires_at>=?", (key, now_ms())
        ).fetchone()
        return None if row is None else str(row[0])

    def set_token_state(self, key: str, state: str, expires_at_ms: int) -> None:
        """Remember a token's ``state`` until it expires; forget expired tokens."""
        with self._transaction():
            self._db.execute("DELETE FROM transfer_tokens WHERE expires_at<?", (now_ms(),))
            self._db.execute(
                "INSERT INTO transfer_tokens (key, state, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET state=excluded.state",
                (key, state, expires_at_ms),
            )

    # -- rows --------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @staticmethod
    def _job_row(job: Job) -> tuple[Any, ...]:
        return (
            job.id,
            job.kind,
            job.status.value,
            json.dumps(job.spec),
            job.created_at,
            job.started_at,
            job.finished_at,
            json.dumps([e.to_json() for e in job.job_errors]),
            job.total_files,
            job.total_bytes,
            job.files_completed,
            job.files_failed,
            job.files_skipped,
            job.bytes_transferred,
        )

    @staticmethod
    def _file_row(f: FileTask) -> tuple[Any, ...]:
        return (
            f.index,
            f.source,
            f.destination,
            f.size,
            f.mtime_ns,
            f.status.value,
            f.loaded,
            f.sha256,
            f.final_path,
            f.error,
            f.message,
            f.expected_sha256,
        )

    @staticmethod
    def _job_from_row(row: tuple[Any, ...]) -> Job:
        job = Job(id=row[0], kind=row[1], spec=json.loads(row[3]), status=JobStatus(row[2]))
        job.created_at, job.started_at, job.finished_at = row[4], row[5], row[6]
        job.job_errors = [JobError(**e) for e in json.loads(row[7])]
        (
            job.total_files,
            job.total_bytes,
            job.files_completed,
            job.files_failed,
            job.files_skipped,
            job.bytes_transferred,
        ) = row[8:14]
        return job
