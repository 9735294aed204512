"""Build the worker jobs from the node's config (the token key created 0600 on first start)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .._auth import TokenAuth
from .._keys import load_or_create_token_key
from .models import WorkLimits
from .service import WorkerJobs
from .store import WorkerJobStore
from .tokens import JobTokenSigner

if TYPE_CHECKING:
    from .._config import Config
    from .._storage.registry import Locations


def build_worker_jobs(config: Config, locations: Locations) -> WorkerJobs:
    settings = config.worker
    key = load_or_create_token_key(
        settings.token_key_file or os.path.join(config.state_dir, "worker", "token.key")
    )
    return WorkerJobs(
        WorkerJobStore(config.state_dir),
        locations,
        JobTokenSigner(key),
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
        token_ttl=settings.token_ttl,
        sweep_interval=settings.sweep_interval,
        limits=WorkLimits(
            download=settings.download_timeout,
            upload=settings.upload_timeout,
            command=settings.command_timeout,
        ),
    )


def worker_auth(config: Config, api_tokens: list[str]) -> TokenAuth:
    """The worker credential: one of ``worker.tokens`` or an API token."""
    return TokenAuth([*config.worker.tokens, *api_tokens], enabled=config.auth.enabled)
