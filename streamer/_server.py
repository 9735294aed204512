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
from functools import partial

import hypercorn.config
import hypercorn.trio
import trio

from ._api import Services, create_app
from ._auth import TokenAuth, load_or_create_token
from ._config import Config, ensure_location_dirs
from ._engine import Engine, Store
from ._engine.copy import CopyRunner
from ._storage import LocalStorage
from ._storage.registry import Locations

log = logging.getLogger("streamer")

GRACEFUL_SECONDS = 5.0


def build_services(config: Config, store: Store) -> Services:
    """Storages, runners and engine for ``config`` (the engine is not started)."""
    ensure_location_dirs(config)
    locations = Locations(LocalStorage(loc.id, loc.path) for loc in config.locations.local)
    runner = CopyRunner(locations)
    engine = Engine(
        store,
        {"cross-storage": runner, "s3-upload": runner, "s3-download": runner},
        max_concurrent=config.transfers.max_concurrent,
        retention_hours=config.transfers.retention_hours,
    )
    return Services(engine=engine, locations=locations, auth=_token_auth(config))


def _token_auth(config: Config) -> TokenAuth:
    tokens = list(config.auth.tokens)
    if config.auth.enabled and not tokens:
        token, created = load_or_create_token(config.state_dir)
        if created:
            path = os.path.join(config.state_dir, "api-token")
            print(f"streamer: generated API token (stored in {path}): {token}", file=sys.stderr)
        tokens.append(token)
    return TokenAuth(tokens, enabled=config.auth.enabled)


def _hypercorn_config(config: Config) -> hypercorn.config.Config:
    hc = hypercorn.config.Config()
    host, port = config.server.host_port
    hc.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    hc.accesslog = None  # the app logs requests itself, with secrets redacted
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.graceful_timeout = GRACEFUL_SECONDS
    hc.keep_alive_timeout = 75
    return hc


async def serve(config: Config) -> None:
    """Serve until SIGTERM/SIGINT; returns after a clean shutdown."""
    store = Store(config.state_dir)
    try:
        svc = build_services(config, store)
        app = create_app(svc)
        async with trio.open_nursery() as nursery:
            await nursery.start(svc.engine.run)
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
                sd_notify("READY=1")
            # Hypercorn has drained in-flight requests; SSE streams ended on `closing`.
            sd_notify("STOPPING=1")
            log.info("shutting down: cancelling running jobs (they resume on next start)")
            nursery.cancel_scope.cancel()
    finally:
        store.close()


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
