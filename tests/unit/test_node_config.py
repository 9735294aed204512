"""The node-transfer keys of the config: defaults, validation, messages naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from streamer._config import from_mapping
from streamer._errors import ConfigError


def test_defaults() -> None:
    config = from_mapping({})
    assert config.transfers.perform_checksum_checks is True
    assert config.transfers.archive_format == "tar.gz"
    assert config.transfers.download_limit == config.transfers.upload_limit == 0
    assert config.transfers.zstd_max_window_mib == 128
    assert config.panel.url == "" and config.servers.root == "./servers"
    assert config.servers.hooks.before_archive == [] and config.api.ssl.enabled is False


def test_a_full_node_section() -> None:
    config = from_mapping(
        {
            "panel": {"url": "https://panel.example.com", "token_id": "id", "token": "t" * 40},
            "servers": {"root": "/srv", "hooks": {"after_extract": ["/bin/true"]}},
            "transfers": {"archive_format": "tar.zst", "download_limit": 12.5},
            "api": {"ssl": {"enabled": True, "cert": "/c.pem", "key": "/k.pem"}},
        }
    )
    assert config.transfers.archive_format == "tar.zst"
    assert config.servers.hooks.after_extract == ["/bin/true"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"panel": {"url": "panel.example.com"}}, "panel.url"),
        ({"panel": {"url": "ftp://panel"}}, "panel.url"),
        ({"panel": {"token": "short"}}, "panel.token"),
        ({"panel": {"tokn": "x"}}, "unknown key 'panel.tokn'"),
        ({"api": {"ssl": {"enabled": True}}}, "api.ssl"),
        ({"transfers": {"archive_format": "tar.xz"}}, "transfers.archive_format"),
        ({"transfers": {"download_limit": -1}}, "transfers.download_limit"),
        ({"transfers": {"upload_limit": 1e-300}}, "transfers.upload_limit"),
        ({"transfers": {"push_retries": 99}}, "transfers.push_retries"),
        ({"transfers": {"zstd_max_window_mib": 0}}, "transfers.zstd_max_window_mib"),
        ({"servers": {"hooks": {"before_archive": "stop.sh"}}}, "servers.hooks.before_archive"),
    ],
)
def test_bad_values_name_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        from_mapping(raw)
