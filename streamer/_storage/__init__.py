"""Storage backends: where bytes come from and where they land."""

from .base import (
    Conflict,
    CopyResult,
    DeclaringSource,
    DigestFirst,
    Entry,
    FileDigest,
    HashableSource,
    PartLender,
    Pinned,
    PositionalFile,
    PositionalSource,
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
    "DeclaringSource",
    "DigestFirst",
    "Entry",
    "FileDigest",
    "HashableSource",
    "LocalStorage",
    "PartLender",
    "Pinned",
    "PositionalFile",
    "PositionalSource",
    "PositionalWriter",
    "RangedSource",
    "ServerSideCopy",
    "Storage",
    "VersionedSource",
    "Writer",
]
