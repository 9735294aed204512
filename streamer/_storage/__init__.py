"""Storage backends: where bytes come from and where they land."""

from .base import (
    Conflict,
    CopyResult,
    DigestFirst,
    Entry,
    HashableSource,
    PositionalWriter,
    RangedSource,
    ServerSideCopy,
    Storage,
    VersionedSource,
    Writer,
)
from .local import LocalStorage

__all__ = [
    "Conflict",
    "CopyResult",
    "DigestFirst",
    "Entry",
    "HashableSource",
    "LocalStorage",
    "PositionalWriter",
    "RangedSource",
    "ServerSideCopy",
    "Storage",
    "VersionedSource",
    "Writer",
]
