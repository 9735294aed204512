"""The ``huggingface`` import: the files of a Hub repository at one commit, read-only.

Listing: ``GET {endpoint}/api/{models|datasets|spaces}/{repo}/revision/{revision}?blobs=true``
gives the commit the revision points at (``sha``) and every file (``siblings``:
``rfilename``, ``size`` and, for LFS files, ``lfs.sha256``). Files are then
downloaded from ``{endpoint}/[datasets/|spaces/]{repo}/resolve/{commit}/{path}``
by commit, not by revision, so a branch that moves during a transfer cannot mix
two versions: the plan records the commit in the job's source
(:class:`~streamer._storage.VersionedSource`), and the runs of the job, after a
restart too, are given it back. The Hub redirects LFS files to a CDN; the token (sent as
``Authorization: Bearer``, to the endpoint only) does not follow the redirect
there, since httpx drops it when a redirect leaves the origin.

Integrity: LFS files carry their SHA-256, which becomes ``Entry.sha256`` and is
verified by the copy runner before anything is published (a mismatch fails the
file with ``ChecksumMismatch``). Files kept in git itself (configs, READMEs)
are named by a git blob SHA-1 only: their SHA-256 is computed and recorded, and
their size checked, but there is nothing to verify the content against.

Every ``rfilename`` must already be a clean relative path (see
:mod:`streamer._paths`): a Hub listing a name like ``../x`` fails the plan with
``UnsafePath`` instead of writing outside the destination.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import msgspec
import trio

from .. import _paths
from .._errors import BadRequest, InvalidPath, SourceNotFound, StorageError, UnsupportedStorage
from .base import UNKNOWN_SIZE, Conflict, Entry, Writer
from .http import HttpClient
from .httperrors import HttpError, HttpNotFound

DEFAULT_ENDPOINT = "https://huggingface.co"
_API_PATH = {"model": "models", "dataset": "datasets", "space": "spaces"}
_FILE_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class HubSettings:
    """Where the Hub is and how to authenticate (``token`` empty: anonymous)."""

    endpoint: str = DEFAULT_ENDPOINT
    token: str = field(default="", repr=False)


class _Lfs(msgspec.Struct):
    sha256: str
    size: int


class _Sibling(msgspec.Struct):
    rfilename: str
    size: int | None = None
    lfs: _Lfs | None = None


class _RepoInfo(msgspec.Struct):
    sha: str | None = None
    siblings: list[_Sibling] = []


class HubImporter:
    """Makes a :class:`HuggingFaceRepo` per source (the ``huggingface`` importer): a
    request's, or a job's as planned, whose ``commit`` the repo then reads."""

    def __init__(self, client: HttpClient, settings: HubSettings) -> None:
        self._client = client
        self.settings = settings

    def __call__(self, source: Any) -> HuggingFaceRepo:
        return HuggingFaceRepo(
            self._client,
            self.settings,
            repo=source.repo,
            revision=source.revision,
            repo_type=source.repo_type,
            files=source.files,
            commit=source.commit,
        )


class HuggingFaceRepo:
    """One repository at one revision (optionally only some ``files``), read-only.

    ``commit``, when given, is the commit to list and read (a job's, as planned);
    else the revision is resolved when listed (or first read). :attr:`version`
    is the commit once known.
    """

    kind = "huggingface"

    def __init__(
        self,
        client: HttpClient,
        settings: HubSettings,
        *,
        repo: str,
        revision: str = "main",
        repo_type: str = "model",
        files: list[str] | None = None,
        commit: str | None = None,
    ) -> None:
        if repo_type not in _API_PATH:
            raise BadRequest(f"unknown Hugging Face repo type {repo_type!r}")
        if any(part in ("", ".", "..") for part in repo.split("/")):
            raise BadRequest(f"invalid Hugging Face repo id {repo!r}")
        self._client = client
        self._endpoint = settings.endpoint.rstrip("/")
        self._auth = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        self._has_token = bool(settings.token)
        self.repo, self.revision, self.repo_type = repo, revision, repo_type
        self._files = None if files is None else [self._wanted(f) for f in files]
        self.location_id = f"{repo_type}:{repo}@{revision}"
        if commit is None and _COMMIT.fullmatch(revision):
            commit = revision
        self._commit: str | None = commit
        self._commit_lock = trio.Lock()
        self._entries: list[Entry] | None = None

    @staticmethod
    def _wanted(name: str) -> str:
        return _paths.clean_relative(name, what="files entry").rstrip("/")

    # -- URLs ----------------------------------------------------------------

    def api_url(self) -> str:
        """The listing of the commit when known, else of the revision."""
        return (
            f"{self._endpoint}/api/{_API_PATH[self.repo_type]}/{quote(self.repo, safe='/')}"
            f"/revision/{quote(self._commit or self.revision, safe='')}"
        )

    @property
    def version(self) -> str | None:
        """The commit read from: given, listed or resolved; ``None`` until then."""
        return self._commit

    def file_url(self, commit: str, path: str) -> str:
        return (
            f"{self._endpoint}/{_FILE_PREFIX[self.repo_type]}{quote(self.repo, safe='/')}"
            f"/resolve/{commit}/{quote(path, safe='/')}"
        )

    # -- listing -------------------------------------------------------------

    async def _info(self, *, blobs: bool) -> tuple[str, list[_Sibling]]:
        url = self.api_url() + ("?blobs=true" if blobs else "")
        try:
            reply = await self._client.fetch("GET", url, headers=self._auth)
        except HttpError as exc:
            raise self._explain(exc) from None
        try:
            info = msgspec.json.decode(reply.body, type=_RepoInfo)
        except msgspec.DecodeError as exc:
            raise StorageError(
                f"{self.location_id}: the Hub answered an unexpected listing ({exc})",
                code="InvalidResponse",
            ) from None
        if info.sha is None or not _COMMIT.fullmatch(info.sha):
            raise StorageError(
                f"{self.location_id}: the Hub did not name the commit of {self.revision!r}",
                code="InvalidResponse",
            )
        return info.sha, info.siblings

    def _explain(self, exc: HttpError) -> HttpError:
        """The error of a listing, with what it means for this repo."""
        kind = f"{self.repo_type} repository {self.repo!r}"
        if exc.code == "RevisionNotFound":
            what = f"revision {self.revision!r} not found in {kind}"
        elif exc.code == "RepoNotFound" or isinstance(exc, HttpNotFound):
            what = f"{kind} not found at {self._endpoint}"
            if not self._has_token:
                what += " (private and gated repositories need huggingface.token)"
        elif exc.code == "GatedRepo":
            what = f"{kind} is gated: accept its conditions on the Hub for huggingface.token's user"
        elif exc.status in (401, 403):
            what = f"access to {kind} denied"
        else:
            return exc
        return type(exc)(f"{what}; {exc.message}", code=exc.code, status=exc.status)

    async def _listing(self) -> list[Entry]:
        if self._entries is None:
            commit, siblings = await self._info(blobs=True)
            entries = sorted((self._entry(s) for s in siblings), key=lambda e: e.path)
            self._commit = commit
            self._entries = entries
        return self._entries

    def _entry(self, sibling: _Sibling) -> Entry:
        name = sibling.rfilename
        try:
            path = _paths.clean_relative(name, what="file name")
        except InvalidPath as exc:
            raise StorageError(
                f"{self.location_id}: the Hub lists an unsafe {exc.message}", code="UnsafePath"
            ) from None
        if path != name:
            raise StorageError(
                f"{self.location_id}: the Hub lists an unsafe file name {name!r}",
                code="UnsafePath",
            )
        size = sibling.size
        sha256 = None
        if sibling.lfs is not None:
            size, sha256 = sibling.lfs.size, sibling.lfs.sha256.lower()
            if not _SHA256.fullmatch(sha256):
                raise StorageError(
                    f"{self.location_id}: the Hub lists {name!r} with an invalid sha256",
                    code="InvalidResponse",
                )
        if size is not None and size < 0:
            raise StorageError(
                f"{self.location_id}: the Hub lists {name!r} with size {size}",
                code="InvalidResponse",
            )
        return Entry(path, UNKNOWN_SIZE if size is None else size, sha256=sha256)

    async def walk(self, path: str) -> list[Entry]:
        """The files below ``path`` (``""``: all), narrowed to ``files`` when given.

        Raises ``RepoNotFound``/``RevisionNotFound`` (404s), ``GatedRepo`` (403),
        and ``EntryNotFound`` (404) naming the ``files`` that do not exist.
        """
        entries = await self._listing()
        if self._files is not None:
            entries = self._select(entries, self._files)
        if path:
            entries = [e for e in entries if e.path.startswith(f"{path}/")]
            if not entries:
                raise SourceNotFound(f"{self.location_id}: no directory {path!r}")
        return entries

    def _select(self, entries: list[Entry], wanted: list[str]) -> list[Entry]:
        """The entries named in ``wanted``, each a file or a directory of the repo."""
        paths = [e.path for e in entries]  # sorted: a directory's files are adjacent
        chosen: dict[str, Entry] = {}
        missing: list[str] = []
        for name in wanted:
            hits: list[Entry] = []
            exact = bisect.bisect_left(paths, name)
            if name and exact < len(paths) and paths[exact] == name:
                hits.append(entries[exact])
            prefix = f"{name}/"
            below = bisect.bisect_left(paths, prefix)
            while name and below < len(paths) and paths[below].startswith(prefix):
                hits.append(entries[below])
                below += 1
            if not hits:
                missing.append(name or "/")
            chosen.update((e.path, e) for e in hits)
        if missing:
            shown = ", ".join(repr(m) for m in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise SourceNotFound(
                f"{self.location_id} has no file {shown}{more}", code="EntryNotFound"
            )
        return sorted(chosen.values(), key=lambda e: e.path)

    async def stat(self, path: str) -> Entry | None:
        return next((e for e in await self._listing() if e.path == path), None)

    # -- reading -------------------------------------------------------------

    async def commit(self) -> str:
        """The commit to download from: the one given or listed, else the revision's now."""
        async with self._commit_lock:
            if self._commit is None:
                self._commit = (await self._info(blobs=False))[0]
            return self._commit

    async def read(self, path: str, *, chunk_size: int) -> AsyncGenerator[bytes]:
        """The bytes of ``path`` at the commit, resuming after dropped connections."""
        url = self.file_url(await self.commit(), path)
        download = self._client.stream(url, chunk_size=chunk_size, headers=self._auth)
        async with aclosing(download) as chunks:
            async for chunk in chunks:
                yield chunk

    async def open_writer(self, path: str, *, conflict: Conflict, tag: str) -> Writer:
        raise UnsupportedStorage("a Hugging Face import is a source only")

    async def sweep(self, path: str, *, tag: str) -> None:
        """Nothing is ever staged here."""
