"""Node transfers as a service: who is transferring what, and the rules around it.

:class:`NodeService` owns the node-transfer state the API acts on: the push
and receive in flight per server (at most one of each), the Panel client, the
node-wide bandwidth buckets (every incoming transfer shares
``transfers.download_limit``, every outgoing one ``transfers.upload_limit``),
and the transfer tokens already used or cancelled. The work itself runs as
engine jobs of kinds ``node-push`` (:mod:`.push`) and ``node-receive``
(:mod:`.receive`), so progress, listing, SSE and cancel work as for any job.

Decisions:

* Node jobs bypass the engine's ``max_concurrent`` limiter: a receive that
  waited behind local copies would stall the sender's TCP stream, and a push
  is started by the Panel, which expects it to run now. They are bounded by
  the one-per-server rule instead.
* Node jobs are not resumable: after a restart the engine marks them failed,
  and :meth:`NodeService.recover` (run before the engine starts) queues their
  failure callbacks and sweeps staging directories left behind.
* Token replay: a token that completed a transfer is refused until it
  expires (401); one whose transfer was cancelled with ``DELETE
  /api/transfers`` is refused with 410 (so a retrying source stops). A token
  whose transfer failed may be used again: that is how the source retries.
* A new verified push for a server whose previous push is still being
  received supersedes it (the old one is cancelled without a callback): after
  a dropped connection the source's retry must not wait for the destination
  to notice.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Final

import trio

from .._config import Config
from .._engine import Engine, FileTask, Job, JobStatus, Runner, Store
from .._engine.jobs import new_job_id
from .._errors import BadRequest, Conflict, NotFound, StreamerError, Unauthorized
from .._pipeline.compression import ArchiveFormat
from .._pipeline.throttle import TokenBucket, mib_per_second
from . import servers
from .panel import PanelClient
from .tokens import LEEWAY_SECONDS, TransferClaims, bearer_token, verify_transfer_token

log = logging.getLogger(__name__)

PUSH: Final = "node-push"
RECEIVE: Final = "node-receive"
KINDS: Final = (PUSH, RECEIVE)
SETTING_DOWNLOAD = "nodeDownloadLimitMiBps"
SETTING_UPLOAD = "nodeUploadLimitMiBps"
SUPERSEDE_WAIT_SECONDS = 30.0
INPUT_CHUNKS = 2


class Gone(StreamerError):
    status_code = 410
    code = "transfer_cancelled"


class ShuttingDown(StreamerError):
    status_code = 503
    code = "shutting_down"


@dataclass
class Push:
    """An outgoing transfer: what the push runner needs beyond the job's spec."""

    job: Job
    server: str
    root: str
    url: str
    authorization: str = field(repr=False)
    format: ArchiveFormat


@dataclass
class Incoming:
    """An incoming transfer, shared by the request handler (which feeds the body
    in) and the receive runner (which consumes it)."""

    job: Job
    claims: TransferClaims
    boundary: str
    send: trio.MemorySendChannel[bytes]
    receive: trio.MemoryReceiveChannel[bytes]
    error: StreamerError | None = None
    superseded: bool = False
    ended: trio.Event = field(default_factory=trio.Event)
    _input_scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    async def feed(self, body: Any) -> None:
        """Handler side: pass the request body's chunks to the runner until the body
        ends or the runner stops reading (its outcome then says why)."""
        try:
            with self._input_scope:
                async for chunk in body:
                    if chunk:
                        await self.send.send(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.send.close()

    def stop_input(self) -> None:
        """Runner side: stop the handler reading a body nobody consumes any more."""
        self._input_scope.cancel()

    async def finished(self) -> Job:
        """The job, once its runner has ended (503 if the node is shutting down)."""
        await self.ended.wait()
        await trio.lowlevel.checkpoint()  # the engine settles the job right after
        if not self.job.status.finished:
            raise ShuttingDown("the node is shutting down")
        return self.job


class NodeService:
    """See the module docstring. ``engine`` is set once the engine exists."""

    def __init__(self, config: Config, store: Store, *, panel: PanelClient | None = None) -> None:
        from .push import PushRunner
        from .receive import ReceiveRunner

        self.config = config
        self.store = store
        self.root = os.path.abspath(config.servers.root)
        self.panel = panel or PanelClient(
            store,
            url=config.panel.url,
            token_id=config.panel.token_id,
            token=config.panel.token,
        )
        transfers = config.transfers
        self.download = TokenBucket(
            mib_per_second(_saved(store, SETTING_DOWNLOAD, transfers.download_limit))
        )
        self.upload = TokenBucket(
            mib_per_second(_saved(store, SETTING_UPLOAD, transfers.upload_limit))
        )
        self.runners: dict[str, Runner] = {PUSH: PushRunner(self), RECEIVE: ReceiveRunner(self)}
        self.engine: Engine | None = None
        self._pushes: dict[str, Push] = {}
        self._incoming: dict[str, Incoming] = {}
        if config.panel.token and len(config.panel.token) < 32:
            log.warning("panel.token is shorter than 32 bytes: weak key for HS256 tokens")

    # -- lifecycle ---------------------------------------------------------

    def recover(self) -> None:
        """Before the engine starts: queue failure callbacks for node jobs a previous
        run left unfinished (the engine will mark them failed) and sweep staging."""
        for job in self.store.list_jobs([JobStatus.PENDING, JobStatus.IN_PROGRESS]):
            server = job.spec.get("server")
            if job.kind in KINDS and isinstance(server, str):
                log.warning("node job %s was interrupted by a restart: reporting failure", job.id)
                self.panel.report(server, success=False, job_id=job.id)
        for name in servers.sweep(self.root):
            log.info("removed %s left in %s by an interrupted transfer", name, self.root)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work (the Panel callback outbox) until cancelled."""
        await self.panel.run(task_status=task_status)

    def _engine(self) -> Engine:
        if self.engine is None:
            raise StreamerError("the engine is not running", code="shutting_down")
        return self.engine

    # -- source side -------------------------------------------------------

    def start_push(
        self, server: str, *, url: str, token: str, archive_format: str | None = None
    ) -> Job:
        """Start pushing ``servers.root/<server>`` to ``url``; 404/409 as documented."""
        root = servers.existing_server_dir(self.root, server)
        server = server.lower()
        self._check_idle(server)
        authorization = token.strip()
        if not authorization.lower().startswith("bearer "):
            authorization = f"Bearer {authorization}"  # Wings wants the prefix; be forgiving
        fmt = ArchiveFormat(archive_format or self.config.transfers.archive_format)
        display_url = url.split("?", 1)[0]
        job = Job(
            id=new_job_id(),
            kind=PUSH,
            spec={
                "server": server,
                "source": {"type": "server", "uuid": server},
                "destination": {"type": "node", "url": display_url},
                "format": fmt.value,
            },
            files=[FileTask(0, f"servers/{server}", display_url, 0)],  # sized by the runner
        )
        push = Push(job, server, root, url, authorization, fmt)
        self._pushes[server] = push
        try:
            self._engine().submit(job, limited=False)
        except BaseException:
            del self._pushes[server]
            raise
        return job

    def push_for(self, job: Job) -> Push:
        for push in self._pushes.values():
            if push.job is job:
                return push
        raise StreamerError(f"job {job.id} has no push context", code="internal_error")

    def push_done(self, push: Push) -> None:
        if self._pushes.get(push.server) is push:
            del self._pushes[push.server]

    def cancel_push(self, server: str) -> Job:
        push = self._pushes.get(server.lower())
        if push is None:
            raise NotFound(f"server {server} has no outgoing transfer", code="transfer_not_found")
        return self._engine().cancel(push.job.id)

    # -- destination side --------------------------------------------------

    def verify(self, authorization: str | None) -> TransferClaims:
        """The claims of a transfer token presented as ``Authorization: Bearer <jwt>``."""
        claims = verify_transfer_token(bearer_token(authorization), self.config.panel.token)
        state = self.store.token_state(claims.replay_key)
        if state == "used":
            raise Unauthorized("this transfer token was already used", code="token_used")
        if state == "cancelled":
            raise Gone("this transfer was cancelled; ask the Panel for a new one")
        return claims

    async def start_receive(
        self, claims: TransferClaims, *, boundary: str, remote: str | None
    ) -> Incoming:
        """Create the ``node-receive`` job for a verified request (superseding a stale one)."""
        server = claims.server
        if server in self._pushes:
            raise Conflict(f"server {server} is being pushed from this node", code="transferring")
        previous = self._incoming.get(server)
        if previous is not None:
            log.warning("a new push for server %s supersedes job %s", server, previous.job.id)
            previous.superseded = True
            self._engine().cancel(previous.job.id)
            with trio.move_on_after(SUPERSEDE_WAIT_SECONDS):
                await previous.ended.wait()
            if self._incoming.get(server) is previous:
                raise Conflict(f"server {server} is still receiving", code="transferring")
        os.makedirs(self.root, exist_ok=True)
        target = servers.server_dir(self.root, server)
        job = Job(
            id=new_job_id(),
            kind=RECEIVE,
            spec={
                "server": server,
                "source": {"type": "node", "address": remote},
                "destination": {"type": "server", "uuid": server},
            },
            files=[FileTask(0, "archive", target, 0)],  # size unknown until the end
        )
        send, receive = trio.open_memory_channel[bytes](INPUT_CHUNKS)
        incoming = Incoming(job, claims, boundary, send, receive)
        self._incoming[server] = incoming
        try:
            self._engine().submit(job, limited=False)
        except BaseException:
            del self._incoming[server]
            raise
        return incoming

    def incoming_for(self, job: Job) -> Incoming:
        for incoming in self._incoming.values():
            if incoming.job is job:
                return incoming
        raise StreamerError(f"job {job.id} has no incoming stream", code="internal_error")

    def incoming_done(self, incoming: Incoming, *, success: bool) -> None:
        incoming.ended.set()
        if self._incoming.get(incoming.claims.server) is incoming:
            del self._incoming[incoming.claims.server]
        if success:
            self._remember(incoming.claims, "used")

    def cancel_receive(self, server: str) -> Job:
        incoming = self._incoming.get(server.lower())
        if incoming is None:
            raise NotFound(f"server {server} has no incoming transfer", code="transfer_not_found")
        self._remember(incoming.claims, "cancelled")
        return self._engine().cancel(incoming.job.id)

    def _remember(self, claims: TransferClaims, state: str) -> None:
        expires = math.ceil((claims.expires_at + LEEWAY_SECONDS) * 1000)
        self.store.set_token_state(claims.replay_key, state, expires)

    def _check_idle(self, server: str) -> None:
        if server in self._pushes or server in self._incoming:
            raise Conflict(f"server {server} is already transferring", code="transferring")

    # -- bandwidth ---------------------------------------------------------

    def bandwidth(self) -> dict[str, float]:
        return {
            "downloadLimit": self.download.rate / mib_per_second(1),
            "uploadLimit": self.upload.rate / mib_per_second(1),
        }

    def set_bandwidth(self, *, download: float | None, upload: float | None) -> dict[str, float]:
        """Change the limits (MiB/s, 0 = unlimited) at once; remembered across restarts."""
        for value in (download, upload):
            if value is not None and (value < 0 or not math.isfinite(value)):
                raise BadRequest("limits are MiB/s, 0 or more", code="invalid_limit")
        if download is not None:
            self.download.rate = mib_per_second(download)
            self.store.set_setting(SETTING_DOWNLOAD, download)
        if upload is not None:
            self.upload.rate = mib_per_second(upload)
            self.store.set_setting(SETTING_UPLOAD, upload)
        return self.bandwidth()


def _saved(store: Store, key: str, default: float) -> float:
    value = store.get_setting(key)
    if isinstance(value, int | float) and value >= 0 and math.isfinite(value):
        return float(value)
    return default
