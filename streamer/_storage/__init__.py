"""Storage backends: where bytes come from and where they land."""

from .base import Conflict, CopyResult, Entry, ServerSideCopy, Storage, Writer
from .local import LocalStorage

__all__ = [
    "Conflict",
    "CopyResult",
    "Entry",
    "LocalStorage",
    "ServerSideCopy",
    "Storage",
    "Writer",
]
