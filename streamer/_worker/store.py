"""Worker job records in the node's state database (``<state_dir>/streamer.db``, WAL);
the worker jobs' only SQL.

Writes are small and happen at state transitions, so calls are made inline from
the event loop. :meth:`WorkerJobStore.claim` is one ``UPDATE … RETURNING``
statement: two claims (from tasks, threads or processes) never get the same job.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from .models import JobStatus, WorkerJob

DATABASE = "streamer.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS worker_jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    source_location TEXT NOT NULL,
    source_path TEXT NOT NULL,
    output_location TEXT NOT NULL,
    output_path TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    source_size INTEGER,
    source_mtime_ns INTEGER,
    source_sha256 TEXT,
    worker_id TEXT,
    claim_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    lease_expires_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    error TEXT,
    result_size INTEGER,
    result_sha256 TEXT,
    upload_length INTEGER,
    upload_sha256 TEXT
);
CREATE INDEX IF NOT EXISTS worker_jobs_queue ON worker_jobs(status, created_at);
"""
_COLUMNS = tuple(WorkerJob.__struct_fields__)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM worker_jobs"


class WorkerJobStore:
    """Persistence of :class:`WorkerJob` records (table ``worker_jobs``)."""

    def __init__(self, state_dir: str) -> None:
        os.makedirs(state_dir, exist_ok=True)
        self._db = sqlite3.connect(
            os.path.join(state_dir, DATABASE),
            isolation_level=None,
            check_same_thread=False,
            timeout=10.0,
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def insert(self, job: WorkerJob) -> None:
        self._db.execute(
            f"INSERT INTO worker_jobs ({', '.join(_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(_COLUMNS))})",
            _row(job),
        )

    def save(self, job: WorkerJob) -> None:
        """Write every field of an existing record (its queue position is kept)."""
        self._db.execute(
            f"UPDATE worker_jobs SET {', '.join(f'{c}=?' for c in _COLUMNS[1:])} WHERE id=?",
            (*_row(job)[1:], job.id),
        )

    def get(self, job_id: str) -> WorkerJob | None:
        row = self._db.execute(f"{_SELECT} WHERE id=?", (job_id,)).fetchone()
        return None if row is None else _from_row(row)

    def jobs(self, status: JobStatus | None = None) -> list[WorkerJob]:
        """Jobs oldest first, all or those in ``status``."""
        if status is None:
            rows = self._db.execute(f"{_SELECT} ORDER BY created_at, rowid")
        else:
            rows = self._db.execute(
                f"{_SELECT} WHERE status=? ORDER BY created_at, rowid", (status.value,)
            )
        return [_from_row(r) for r in rows]

    def expired_leases(self, now: float) -> list[WorkerJob]:
        rows = self._db.execute(
            f"{_SELECT} WHERE status=? AND lease_expires_at <= ? ORDER BY created_at, rowid",
            (JobStatus.PROCESSING.value, now),
        )
        return [_from_row(r) for r in rows]

    def claim(
        self, worker_id: str, claim_id: str, *, now: float, lease_until: float
    ) -> WorkerJob | None:
        """Atomically make the oldest pending job ``processing`` for ``worker_id`` under
        ``claim_id`` (one more attempt, lease until ``lease_until``); None when nothing
        is pending."""
        rows = self._db.execute(
            "UPDATE worker_jobs SET status=?, worker_id=?, claim_id=?, attempts=attempts + 1, "
            "lease_expires_at=?, updated_at=?, upload_length=NULL, upload_sha256=NULL "
            "WHERE id=(SELECT id FROM worker_jobs WHERE status=? ORDER BY created_at, rowid "
            f"LIMIT 1) AND status=? RETURNING {', '.join(_COLUMNS)}",
            (
                JobStatus.PROCESSING.value,
                worker_id,
                claim_id,
                lease_until,
                now,
                JobStatus.PENDING.value,
                JobStatus.PENDING.value,
            ),
        ).fetchall()
        return _from_row(rows[0]) if rows else None


def _row(job: WorkerJob) -> tuple[Any, ...]:
    return tuple(json.dumps(job.metadata) if c == "metadata" else getattr(job, c) for c in _COLUMNS)


def _from_row(row: tuple[Any, ...]) -> WorkerJob:
    fields = dict(zip(_COLUMNS, row, strict=True))
    fields["status"] = JobStatus(fields["status"])
    fields["metadata"] = json.loads(fields["metadata"])
    return WorkerJob(**fields)
