"""Storage backends: where bytes come from and where they land."""

from .base import Conflict, Entry, Storage, Writer
from .local import LocalStorage

__all__ = ["Conflict", "Entry", "LocalStorage", "Storage", "Writer"]
