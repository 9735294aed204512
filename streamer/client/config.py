"""Where the client finds its node: server URL and token.

Each value comes from the first of: the command line (``--server``/``--token``),
the environment (``STREAMER_URL``/``STREAMER_TOKEN``), the client file
``$XDG_CONFIG_HOME/streamer/client.yml`` (``~/.config/…`` by default, written by
``streamer login`` with mode 0600), and for the server only the default
``http://127.0.0.1:8080`` (what ``streamer serve`` binds without a config).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_SERVER = "http://127.0.0.1:8080"


class ClientConfigError(Exception):
    """The client file cannot be read or is not what ``streamer login`` writes."""


@dataclass(frozen=True)
class ClientConfig:
    server: str
    token: str | None


def config_path(env: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/streamer/client.yml``, else ``~/.config/streamer/client.yml``."""
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "streamer" / "client.yml"


def read_file(path: Path) -> dict[str, str]:
    """The ``server`` and ``token`` saved in ``path`` (empty when there is no file)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ClientConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ClientConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not all(
        key in ("server", "token") and isinstance(value, str) for key, value in data.items()
    ):
        raise ClientConfigError(f"{path} must hold only 'server' and 'token' strings")
    return data


def resolve(
    server: str | None = None,
    token: str | None = None,
    *,
    env: Mapping[str, str] = os.environ,
    path: Path | None = None,
) -> ClientConfig:
    """Pick the server URL and token by the precedence in the module docstring."""
    saved = read_file(path or config_path(env))
    return ClientConfig(
        server=server or env.get("STREAMER_URL") or saved.get("server") or DEFAULT_SERVER,
        token=token or env.get("STREAMER_TOKEN") or saved.get("token"),
    )


def save(config: ClientConfig, path: Path) -> None:
    """Write ``config`` to ``path`` atomically, readable by its owner only (0600).

    The directory is created 0700 when missing; a temp file beside ``path`` is
    written, fsynced and renamed over it, so a reader never sees half a file.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = {"server": config.server} | ({"token": config.token} if config.token else {})
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
