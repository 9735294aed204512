"""Configuration: frozen, typed, validated at start.

``streamer serve --config FILE`` (or ``STREAMER_CONFIG``) reads YAML; without a
file the embedded defaults serve one local location ``local-0`` under ``./data``
with state under ``./state`` on ``127.0.0.1:8080``. Unknown or mistyped keys stop
the start with a :class:`ConfigError` naming the key. Relative paths are taken
from the working directory.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any

import msgspec
import yaml

from ._errors import ConfigError

LOCATION_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    bind: str = "127.0.0.1:8080"

    @property
    def host_port(self) -> tuple[str, int]:
        """``bind`` split into host and port (``[::1]:80`` style for IPv6)."""
        return parse_bind(self.bind)


class AuthConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    enabled: bool = True
    tokens: list[Annotated[str, msgspec.Meta(min_length=16)]] = []


class TransfersConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    max_concurrent: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    retention_hours: Annotated[float, msgspec.Meta(ge=0)] = 168.0


class LocalLocationConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    id: Annotated[str, msgspec.Meta(pattern=LOCATION_ID)]
    path: Annotated[str, msgspec.Meta(min_length=1)]


class LocationsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    local: list[LocalLocationConfig] = msgspec.field(
        default_factory=lambda: [LocalLocationConfig(id="local-0", path="./data")]
    )


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    state_dir: str = "./state"
    transfers: TransfersConfig = TransfersConfig()
    locations: LocationsConfig = LocationsConfig()


def parse_bind(bind: str) -> tuple[str, int]:
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]]+):(\d{1,5})", bind)
    if match is None or int(match.group(2)) > 65535:
        raise ConfigError(f"server.bind: expected 'HOST:PORT', got {bind!r}")
    return match.group(1).strip("[]"), int(match.group(2))


def load(path: str | None) -> Config:
    """Read and validate the config file at ``path``; ``None`` → embedded defaults."""
    raw: Any = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                raw = yaml.safe_load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc
    return from_mapping(raw or {})


def from_mapping(raw: Any) -> Config:
    """Validate an already-parsed mapping (as from YAML) into a :class:`Config`."""
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid config: {_describe(exc)}") from exc
    config.server.host_port  # noqa: B018 - validates bind
    ids = [loc.id for loc in config.locations.local]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"locations.local: duplicate id {', '.join(duplicates)}")
    return config


def _describe(exc: msgspec.ValidationError) -> str:
    """Turn msgspec's ``... - at `$.server.bind``` into ``server.bind: ...``."""
    text = str(exc)
    message, sep, where = text.rpartition(" - at `$")
    if not sep:
        message, where = text, ""
    key = where.rstrip("`").lstrip(".")
    unknown = re.fullmatch(r"Object contains unknown field `(.+)`", message)
    if unknown:
        return f"unknown key '{_join(key, unknown.group(1))}'"
    return f"{key or '<root>'}: {message}"


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def ensure_location_dirs(config: Config) -> None:
    """Create missing location roots; raise :class:`ConfigError` naming one that cannot be."""
    for location in config.locations.local:
        try:
            os.makedirs(location.path, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"locations.local[{location.id}]: cannot create {location.path}: {exc.strerror}"
            ) from exc
        if not os.path.isdir(location.path):
            raise ConfigError(f"locations.local[{location.id}]: {location.path} is not a directory")
