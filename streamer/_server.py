"""``streamer serve``: wire config → storages → engine → app, and run them under trio.

Shutdown (SIGTERM/SIGINT): stop accepting, end SSE streams, cancel running jobs
(their temp files are removed and they stay resumable), close the store, return.
With systemd (``Type=notify``) READY=1 is sent once the socket is bound.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

import hypercorn.config
import hypercorn.trio
import trio

from ._api import Services, create_app
from ._api.upload import Uploads
from ._auth import TokenAuth, load_or_create_token
from ._config import Config, ensure_location_dirs
from ._engine import Engine, Store
from ._engine.copy import CopyRunner
from ._engine.upload import UploadRunner
from ._exchange.setup import build_exchange
from ._hypercorntls import serve_tls_leanly
from ._memory import freeze_startup_heap
from ._netio import tune_client_reads, tune_server_reads
from ._node.service import NodeService
from ._storage import LocalStorage
from ._storage.http import HttpClient
from ._storage.imports import client_settings, importers
from ._storage.registry import Locations
from ._worker.setup import build_worker_jobs, worker_auth

if TYPE_CHECKING:
    from ._api.metrics import RetryCounter
    from ._storage.s3client import S3Client

log = logging.getLogger("streamer")

GRACEFUL_SECONDS = 5.0


def build_services(
    config: Config, store: Store, *, s3: S3Client | None = None, http: HttpClient | None = None
) -> Services:
    """Storages, runners and engine for ``config`` (the engine is not started).

    ``s3`` is the daemon's S3 client (entered) when the config has an ``s3`` section;
    ``http`` the (entered) client of imports (Hugging Face, URLs), which need one.
    """
    ensure_location_dirs(config)
    buckets = None
    if s3 is not None and config.s3 is not None:
        from ._storage.s3locations import bucket_storages

        buckets = bucket_storages(s3, config.s3.buckets)
    locations = Locations(
        (LocalStorage(loc.id, loc.path) for loc in config.locations.local),
        buckets=buckets,
        importers=importers(http, config) if http else None,
    )
    runner = CopyRunner(locations)
    uploads = Uploads(UploadRunner(locations), max_bytes=config.uploads.max_bytes)
    node = NodeService(config, store)
    engine = Engine(
        store,
        {
            **dict.fromkeys(("cross-storage", "s3-upload", "s3-download"), runner),
            **dict.fromkeys(("huggingface", "url"), runner),
            "local-upload": uploads.runner,
            **node.runners,
        },
        max_concurrent=config.transfers.max_concurrent,
        retention_hours=config.transfers.retention_hours,
    )
    node.engine = engine
    node.recover()  # before the engine marks interrupted node jobs failed
    clients: dict[str, RetryCounter] = {"s3": s3} if s3 is not None else {}
    if http is not None:
        clients["http"] = http
    api_tokens = _api_tokens(config)
    return Services(
        engine=engine,
        locations=locations,
        auth=TokenAuth(api_tokens, enabled=config.auth.enabled),
        node=node,
        uploads=uploads,
        exchange=build_exchange(config, locations),
        metrics=config.metrics,
        retry_counters=clients,
        workers=build_worker_jobs(config, locations),
        worker_auth=worker_auth(config, api_tokens),
    )


def _api_tokens(config: Config) -> list[str]:
    """The configured API tokens, else the generated one (created on first call)."""
    tokens = list(config.auth.tokens)
    if config.panel.token:  # the Panel calls this node with its node token, as with Wings
        tokens.append(config.panel.token)
    if config.auth.enabled and not tokens:
        token, created = load_or_create_token(config.state_dir)
        if created:
            path = os.path.join(config.state_dir, "api-token")
            print(f"streamer: generated API token (stored in {path}): {token}", file=sys.stderr)
        tokens.append(token)
    return tokens


def _hypercorn_config(config: Config) -> hypercorn.config.Config:
    tune_server_reads()
    tune_client_reads()  # the node's own S3 and HTTP clients
    hc = hypercorn.config.Config()
    host, port = config.server.host_port
    hc.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    hc.accesslog = None  # the app logs requests itself, with secrets redacted
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.graceful_timeout = GRACEFUL_SECONDS
    hc.keep_alive_timeout = 75
    if config.api.ssl.enabled:
        hc.certfile = config.api.ssl.cert
        hc.keyfile = config.api.ssl.key
        serve_tls_leanly()  # through streamer's TLS stream, not trio's SSLStream
        # HTTP/2 only when asked: Hypercorn's h2 moves a body in 16 KiB frames, each an
        # ASGI message (a 512 MiB upload: 15.5-16.3 s of CPU per GiB, 6.9-8.1 over h1)
        hc.alpn_protocols = ["h2", "http/1.1"] if config.api.ssl.http2 else ["http/1.1"]
    return hc


async def serve(config: Config) -> None:
    """Serve until SIGTERM/SIGINT; returns after a clean shutdown."""
    store = Store(config.state_dir)
    try:
        async with _s3_client(config) as s3, HttpClient(client_settings(config)) as http:
            svc = build_services(config, store, s3=s3, http=http)
            app = create_app(svc)
            async with trio.open_nursery() as nursery:
                if svc.node is not None:
                    await nursery.start(svc.node.run)  # Panel callbacks (outbox)
                await nursery.start(svc.engine.run)
                if svc.exchange is not None:
                    await nursery.start(svc.exchange.run)  # sweeper of expired transfers
                if svc.workers is not None:
                    await nursery.start(svc.workers.run)  # source hashing, lease sweeper
                nursery.start_soon(_wait_for_signal, svc.closing)
                async with trio.open_nursery() as web:
                    binds = await web.start(
                        partial(
                            hypercorn.trio.serve,
                            app,
                            _hypercorn_config(config),
                            shutdown_trigger=svc.closing.wait,
                        )
                    )
                    for bind in binds:
                        print(f"streamer: listening on {bind}", file=sys.stderr, flush=True)
                    log.debug("%d startup objects frozen", freeze_startup_heap())
                    sd_notify("READY=1")
                # Hypercorn has drained in-flight requests; SSE streams ended on `closing`.
                sd_notify("STOPPING=1")
                log.info("shutting down: cancelling running jobs (they resume on next start)")
                nursery.cancel_scope.cancel()
    finally:
        store.close()


@asynccontextmanager
async def _s3_client(config: Config) -> AsyncIterator[S3Client | None]:
    """The daemon's S3 client for its whole life, when S3 is configured (its signer,
    the AWS CRT, is only imported then: ~10 MB of RSS)."""
    if config.s3 is None:
        yield None
        return
    from ._storage.s3client import S3Client
    from ._storage.s3locations import settings_from

    async with S3Client(settings_from(config.s3)) as client:
        yield client


async def _wait_for_signal(closing: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            closing.set()
            return


def sd_notify(state: str) -> None:
    """Tell systemd about our state when run under ``Type=notify``; no-op otherwise."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError as exc:
            log.warning("sd_notify failed: %s", exc)
