"""Import sources from config: the HTTP client's settings and the importer factories."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .. import __version__
from .._config import Config, HttpConfig, HuggingFaceConfig
from .http import HttpClient, HttpSettings
from .huggingface import HubImporter, HubSettings
from .registry import StorageFactory
from .urlimport import UrlImport


def http_settings(config: HttpConfig, *, trusted: tuple[str, ...] = ()) -> HttpSettings:
    """Settings of the daemon's import client for the ``http`` config section;
    ``trusted`` base URLs (the Hub endpoint) are reached whatever their address."""
    return HttpSettings(
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        max_retries=config.max_retries,
        user_agent=f"streamer/{__version__}",
        allow_private_networks=config.allow_private_networks,
        trusted_origins=trusted,
    )


def client_settings(config: Config) -> HttpSettings:
    """The import client's settings for the node's config (trusting its Hub endpoint)."""
    return http_settings(config.http, trusted=(config.huggingface.endpoint,))


def hub_settings(config: HuggingFaceConfig) -> HubSettings:
    """The ``huggingface`` section; an empty token falls back to ``HF_TOKEN``."""
    return HubSettings(
        endpoint=config.endpoint.rstrip("/"),
        token=config.token or os.environ.get("HF_TOKEN", ""),
    )


def importers(client: HttpClient, config: Config) -> Mapping[str, StorageFactory]:
    """The factories for ``Locations(importers=...)``: ``huggingface`` and ``url``."""

    def url_import(source: Any) -> UrlImport:  # refuses blocked literal hosts (a 400)
        return UrlImport(client, source.urls)

    return {"huggingface": HubImporter(client, hub_settings(config.huggingface)), "url": url_import}
