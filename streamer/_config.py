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
from typing import Annotated, Any, Literal

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
    # Node-to-node server transfers (seed 002).
    download_limit: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    upload_limit: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    perform_checksum_checks: bool = True
    archive_format: Literal["tar.gz", "tar.zst"] = "tar.gz"
    push_retries: Annotated[int, msgspec.Meta(ge=0, le=20)] = 3
    max_archive_members: Annotated[int, msgspec.Meta(ge=1)] = 2_000_000
    max_extracted_gib: Annotated[float, msgspec.Meta(gt=0)] = 1024.0
    zstd_max_window_mib: Annotated[int, msgspec.Meta(ge=1, le=2048)] = 128
    fsync_before_commit: bool = True


class LocalLocationConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    id: Annotated[str, msgspec.Meta(pattern=LOCATION_ID)]
    path: Annotated[str, msgspec.Meta(min_length=1)]


class LocationsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    local: list[LocalLocationConfig] = msgspec.field(
        default_factory=lambda: [LocalLocationConfig(id="local-0", path="./data")]
    )


class PanelConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    url: str = ""
    token_id: str = ""
    token: str = ""


class HooksConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    before_archive: list[str] = []
    after_extract: list[str] = []
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 300.0


class ServersConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    root: Annotated[str, msgspec.Meta(min_length=1)] = "./servers"
    hooks: HooksConfig = HooksConfig()


class SslConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    enabled: bool = False
    cert: str = ""
    key: str = ""
    http2: bool = False  # offer h2 in ALPN too (bulk bodies cost ~2x the CPU over it)


class ApiConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    ssl: SslConfig = SslConfig()


class S3Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """S3 storage; present (even empty) means S3 locations (= buckets) are served."""

    endpoint_url: str = ""
    region: str = "us-east-1"
    access_key_id: str = ""
    secret_access_key: str = ""
    addressing_style: Literal["path", "virtual"] = "path"
    buckets: list[Annotated[str, msgspec.Meta(min_length=3, max_length=63)]] = []
    part_size_mib: Annotated[int, msgspec.Meta(ge=5, le=5120)] = 16
    parts_in_flight: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=20)] = 5
    sign_payload: bool | Literal["auto"] = "auto"  # auto: over http only, as botocore
    ca_bundle: str = ""  # PEM CAs for an https endpoint; empty: AWS_CA_BUNDLE, else public


class HuggingFaceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Hugging Face imports: the Hub to list and download from, and its token."""

    endpoint: Annotated[str, msgspec.Meta(pattern=r"^https?://[^/\s?#]+(/[^\s?#]*)?$")] = (
        "https://huggingface.co"
    )
    token: str = ""  # empty: HF_TOKEN from the environment, else anonymous


class HttpConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The HTTP client of imports (Hugging Face, URLs)."""

    connect_timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    read_timeout: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=20)] = 5
    allow_private_networks: bool = False  # else only public addresses (huggingface.endpoint: any)


class UploadsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """``PUT /api/upload/...``: the largest body accepted, in bytes (0: no limit)."""

    max_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0


class ExchangeConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Secure worker exchange (``/api/v1/transfers``); empty key paths live in state_dir."""

    key_file: str = ""  # master key (32 bytes, 0600); default <state_dir>/exchange/master.key
    token_key_file: str = ""  # JWT HS256 key; default <state_dir>/exchange/token.key
    default_ttl: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    max_ttl: Annotated[float, msgspec.Meta(gt=0)] = 86400.0
    sweep_interval: Annotated[float, msgspec.Meta(gt=0)] = 300.0


class MetricsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """``GET /metrics`` (Prometheus): on or off, and who may scrape it."""

    enabled: bool = True
    auth: bool = True  # require a bearer: ``token`` below, or an API token
    token: str = ""  # a scrape-only token (at least 16 characters); empty: API tokens only


class WorkerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Worker jobs (``/api/worker``, seed 004): credentials, leases, retries, timeouts."""

    tokens: list[Annotated[str, msgspec.Meta(min_length=16)]] = []  # worker bearer tokens
    token_key_file: str = ""  # HS256 key of job tokens; default <state_dir>/worker/token.key
    lease_seconds: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    token_ttl: Annotated[float, msgspec.Meta(gt=0)] = 86400.0
    sweep_interval: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    download_timeout: Annotated[float, msgspec.Meta(gt=0)] = 1800.0
    upload_timeout: Annotated[float, msgspec.Meta(gt=0)] = 1800.0
    command_timeout: Annotated[float, msgspec.Meta(gt=0)] = 21600.0


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    server: ServerConfig = ServerConfig()
    api: ApiConfig = ApiConfig()
    panel: PanelConfig = PanelConfig()
    servers: ServersConfig = ServersConfig()
    auth: AuthConfig = AuthConfig()
    state_dir: str = "./state"
    transfers: TransfersConfig = TransfersConfig()
    locations: LocationsConfig = LocationsConfig()
    s3: S3Config | None = None
    huggingface: HuggingFaceConfig = HuggingFaceConfig()
    http: HttpConfig = HttpConfig()
    uploads: UploadsConfig = UploadsConfig()
    exchange: ExchangeConfig = ExchangeConfig()
    metrics: MetricsConfig = MetricsConfig()
    worker: WorkerConfig = WorkerConfig()


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
    _check_node(config)
    if config.metrics.token and len(config.metrics.token) < 16:
        raise ConfigError("metrics.token: expected at least 16 characters")
    ids = [loc.id for loc in config.locations.local]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"locations.local: duplicate id {', '.join(duplicates)}")
    return config


#: The smallest positive bandwidth limit (MiB/s, about 1 KiB/s): below it a transfer
#: would effectively stall forever, which is never what a limit is set for.
MIN_BANDWIDTH_LIMIT = 0.001


def bandwidth_limit_problem(limit: float) -> str | None:
    """Why ``limit`` (MiB/s; 0 = unlimited) is not a usable limit, or None if it is."""
    if limit == 0 or limit >= MIN_BANDWIDTH_LIMIT:
        return None
    return f"expected 0 (unlimited) or at least {MIN_BANDWIDTH_LIMIT} MiB/s, got {limit:g}"


def _check_node(config: Config) -> None:
    """Cross-field rules of the node-transfer keys (panel, api.ssl)."""
    url = config.panel.url
    if url and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", url):
        raise ConfigError(f"panel.url: expected an http(s) base URL, got {url!r}")
    if config.panel.token and len(config.panel.token) < 16:
        raise ConfigError("panel.token: expected at least 16 characters")
    for name, value in (
        ("transfers.download_limit", config.transfers.download_limit),
        ("transfers.upload_limit", config.transfers.upload_limit),
    ):
        problem = bandwidth_limit_problem(value)
        if problem:
            raise ConfigError(f"{name}: {problem}")
    ssl = config.api.ssl
    if ssl.enabled and not (ssl.cert and ssl.key):
        raise ConfigError("api.ssl: 'cert' and 'key' are required when 'enabled' is true")


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
