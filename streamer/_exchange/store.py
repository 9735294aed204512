"""Transfer records in SQLite (WAL), beside the staging files; the exchange's only SQL.

Writes happen at state transitions, not per chunk, so calls are made inline.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from typing import Any

from .models import Transfer, TransferStatus

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exchange_transfers (
    id TEXT PRIMARY KEY,
    worker_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    location_id TEXT NOT NULL,
    path TEXT NOT NULL,
    original_filename TEXT NOT NULL,
    content_type TEXT,
    checksum TEXT,
    sha256 TEXT,
    file_size INTEGER,
    status TEXT NOT NULL,
    bytes_transferred INTEGER NOT NULL DEFAULT 0,
    error_message TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    expires_at REAL NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS exchange_transfers_expiry ON exchange_transfers(status, expires_at);
"""
_COLUMNS = (
    "id",
    "worker_id",
    "direction",
    "location_id",
    "path",
    "original_filename",
    "content_type",
    "checksum",
    "sha256",
    "file_size",
    "status",
    "bytes_transferred",
    "error_message",
    "created_at",
    "started_at",
    "completed_at",
    "expires_at",
    "metadata",
)


class TransferStore:
    """Persistence of :class:`Transfer` records in ``<directory>/transfers.db``."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self._db = sqlite3.connect(
            os.path.join(directory, "transfers.db"), isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def save(self, transfer: Transfer) -> None:
        """Insert or replace the whole record."""
        self._db.execute(
            f"INSERT OR REPLACE INTO exchange_transfers ({', '.join(_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(_COLUMNS))})",
            _row(transfer),
        )

    def get(self, transfer_id: str) -> Transfer | None:
        row = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM exchange_transfers WHERE id=?", (transfer_id,)
        ).fetchone()
        return None if row is None else _from_row(row)

    def delete(self, transfer_id: str) -> None:
        self._db.execute("DELETE FROM exchange_transfers WHERE id=?", (transfer_id,))

    def expired(self, now: float) -> list[Transfer]:
        """Transfers past their expiry still holding (or about to hold) staging: unfinished
        ones, and completed server → worker transfers (whose staged file is still there)."""
        rows = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM exchange_transfers "
            "WHERE expires_at <= ? AND (status IN (?, ?) OR (status = ? AND direction = ?))",
            (
                now,
                TransferStatus.PENDING.value,
                TransferStatus.IN_PROGRESS.value,
                TransferStatus.COMPLETED.value,
                "upload",
            ),
        )
        return [_from_row(r) for r in rows]

    def ids(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT id FROM exchange_transfers")}


def _row(t: Transfer) -> tuple[Any, ...]:
    values: Iterable[Any] = (getattr(t, c) for c in _COLUMNS[:-1])
    return (*values, json.dumps(t.metadata))


def _from_row(row: tuple[Any, ...]) -> Transfer:
    fields = dict(zip(_COLUMNS, row, strict=True))
    fields["status"] = TransferStatus(fields["status"])
    fields["metadata"] = json.loads(fields["metadata"])
    return Transfer(**fields)
