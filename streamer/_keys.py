"""Secret keys on disk (the exchange's master key, the HS256 keys of transfer and
worker job tokens): created 0600 on first start, then read back."""

from __future__ import annotations

import os

from ._errors import ConfigError
from ._jwt import MIN_KEY_BYTES


def load_or_create_key(path: str, size: int) -> bytes:
    """The ``size``-byte key in ``path``; a fresh random one (mode 0600) if it is missing.

    Raises :class:`ConfigError` if the file exists with another length.
    """
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        with open(path, "rb") as f:
            key = f.read()
    except FileNotFoundError:
        key = os.urandom(size)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process won the race: use its key
            return load_or_create_key(path, size)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        return key
    if len(key) != size:
        raise ConfigError(f"{path}: expected a {size}-byte key, found {len(key)} bytes")
    return key


def load_or_create_token_key(path: str) -> bytes:
    """The HS256 token key in ``path`` (:data:`~streamer._jwt.MIN_KEY_BYTES` bytes),
    created on first start."""
    return load_or_create_key(path, MIN_KEY_BYTES)
