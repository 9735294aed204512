"""The ``huggingface`` and ``http`` config sections and what they turn into."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streamer._config import Config, from_mapping
from streamer._errors import ConfigError
from streamer._storage.imports import client_settings, http_settings, hub_settings

ROOT = Path(__file__).resolve().parent.parent.parent


def test_defaults_and_the_example_file_agree() -> None:
    example = from_mapping(yaml.safe_load((ROOT / "config.example.yml").read_text()))
    assert example.huggingface == Config().huggingface
    assert example.http == Config().http
    assert Config().huggingface.endpoint == "https://huggingface.co"


def test_settings_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    config = from_mapping(
        {
            "huggingface": {"endpoint": "http://127.0.0.1:9/hub/", "token": "hf_x"},
            "http": {"connect_timeout": 1, "read_timeout": 2.5, "max_retries": 0},
        }
    )
    hub = hub_settings(config.huggingface)
    assert (hub.endpoint, hub.token) == ("http://127.0.0.1:9/hub", "hf_x")
    assert "hf_x" not in repr(hub)
    http = http_settings(config.http)
    assert (http.connect_timeout, http.read_timeout, http.max_retries) == (1, 2.5, 0)
    assert http.user_agent.startswith("streamer/")
    assert http.allow_private_networks is False and http.trusted_origins == ()
    assert client_settings(config).trusted_origins == ("http://127.0.0.1:9/hub/",)
    opened = from_mapping({"http": {"allow_private_networks": True}})
    assert http_settings(opened.http).allow_private_networks is True

    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    assert hub_settings(from_mapping({}).huggingface).token == "hf_from_env"
    monkeypatch.delenv("HF_TOKEN")
    assert hub_settings(from_mapping({}).huggingface).token == ""


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"huggingface": {"endpoint": "ftp://hub"}}, "huggingface.endpoint"),
        ({"huggingface": {"endpoint": "https://hub?x=1"}}, "huggingface.endpoint"),
        ({"huggingface": {"tokn": "x"}}, "huggingface.tokn"),
        ({"http": {"max_retries": 21}}, "http.max_retries"),
        ({"http": {"read_timeout": 0}}, "http.read_timeout"),
        ({"http": {"allow_private_networks": "yes"}}, "http.allow_private_networks"),
    ],
)
def test_bad_values_name_their_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_mapping(raw)
