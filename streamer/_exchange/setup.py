"""Build the exchange from the node's config (keys created 0600 on first start)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .._keys import load_or_create_key, load_or_create_token_key
from .._pipeline import aead
from .service import Exchange
from .tokens import TokenSigner

if TYPE_CHECKING:
    from .._config import Config
    from .._storage.registry import Locations


def build_exchange(config: Config, locations: Locations) -> Exchange:
    directory = os.path.join(config.state_dir, "exchange")
    settings = config.exchange
    master = load_or_create_key(
        settings.key_file or os.path.join(directory, "master.key"), aead.KEY_SIZE
    )
    token_key = load_or_create_token_key(
        settings.token_key_file or os.path.join(directory, "token.key")
    )
    return Exchange(
        directory,
        master_key=master,
        signer=TokenSigner(token_key),
        locations=locations,
        default_ttl=settings.default_ttl,
        max_ttl=settings.max_ttl,
        sweep_interval=settings.sweep_interval,
    )
