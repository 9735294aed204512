"""A small S3 client: SigV4-signed requests, retries, the operations streamer uses.

Requests are signed by the AWS Common Runtime's SigV4 (no hand-rolled crypto;
:mod:`.s3signer`) with the SHA-256 of the payload, which every request has
because bodies are always in memory (a part at most): S3 rejects a body that
does not hash to the signed value, so uploads are integrity-checked on the wire.
Over https (by default; ``sign_payload`` decides), object and part bodies are
sent as ``UNSIGNED-PAYLOAD`` instead, as botocore and the AWS CLI do: one SHA-256
pass less per byte uploaded, every byte guarded by TLS's AEAD (over plain http
only TCP's checksum would guard it, so there bodies are signed).

Requests are retried on connection errors, 5xx (but 501), 429 and S3's
throttling codes, with exponential backoff and full jitter. Nearly every
operation is idempotent for streamer's purposes (a retried part upload lands the
same bytes under the same key); the two that are not are made safe where they
are sent: an interrupted CreateMultipartUpload aborts the uploads it may have
created before it is retried (:meth:`S3Client.create_multipart_upload`), and a
retried CompleteMultipartUpload that finds its upload gone checks by HEAD that
the object it completed is there (:meth:`S3Client.complete_multipart_upload`).
Sleeps use :func:`trio.sleep`, so a ``MockClock`` drives them;
:attr:`S3Client.retries` counts the retries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from functools import partial
from types import TracebackType
from typing import Self, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import trio

from .._concurrency import open_nursery
from .._netio import tune_client_reads
from .._retry import Backoff
from . import s3xml
from .httpexchange import Exchange, HttpxTransport, Response, Transport
from .httppool import PooledTransport
from .s3body import Body, sha256_hex
from .s3errors import S3Error, code_for_status, s3_error, transport_errors
from .s3multipart import NO_SUCH_UPLOAD, MultipartOps
from .s3object import ObjectInfo, read_range
from .s3request import Reply, Request, copy_source, meta_headers
from .s3settings import MiB, S3Settings
from .s3signer import Signer

T = TypeVar("T")

MAX_RESPONSE_BYTES = 16 * MiB  # cap on buffered (XML) response bodies
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
USER_AGENT = "streamer"


class S3Client(MultipartOps):
    """Speaks S3 to one endpoint; use as ``async with S3Client(settings) as client``.

    Inside the ``async with`` the client owns a connection pool and a service
    nursery (:attr:`nursery`) in which storages run per-transfer background
    tasks (part uploads, prefetches); leaving it cancels what is still running.
    Requests go out through :class:`~.httppool.PooledTransport` (see :mod:`.httpexchange`);
    ``transport``, any httpx transport, replaces the network (tests).
    """

    def __init__(
        self, settings: S3Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        tune_client_reads()
        self.settings = settings
        self._backoff = Backoff(settings.backoff_base, settings.backoff_max, settings.max_retries)
        self._signer = Signer(settings.credentials(), settings.region)
        self._endpoint = urlsplit(settings.endpoint)
        self._host = self._endpoint.hostname or ""
        self._port = self._endpoint.port or (443 if self._endpoint.scheme == "https" else 80)
        timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
        self._timeouts = timeout.as_dict()
        # Requests go to the transport directly: no cookies, redirects or auth flows
        # to run (httpx.AsyncClient's per-request cost, which small objects feel).
        self._http: Transport = (
            PooledTransport(
                max_connections=settings.max_connections, ssl_context=settings.tls_context()
            )
            if transport is None
            else HttpxTransport(transport)
        )
        self._stack = AsyncExitStack()
        self._nursery: trio.Nursery | None = None
        #: Uploads aborted as created by an attempt whose answer was lost.
        self.orphans_aborted = 0

    async def __aenter__(self) -> Self:
        self._stack.push_async_callback(self._http.aclose)
        self._nursery = await self._stack.enter_async_context(open_nursery())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
            self._nursery = None
        return await self._stack.__aexit__(exc_type, exc, tb)

    @property
    def nursery(self) -> trio.Nursery:
        """The service nursery for background tasks (only inside ``async with``)."""
        if self._nursery is None:
            raise RuntimeError("S3Client used outside its 'async with' block")
        return self._nursery

    # -- transport, signing, retries ------------------------------------------

    def _locate(
        self, bucket: str, key: str, query: Sequence[tuple[str, str]]
    ) -> tuple[str, str, str]:
        """``(host, netloc, target)`` of a request: the host to connect to, the Host
        header, and the path and query, percent-encoded; path- or virtual-host-style."""
        path = quote(key, safe="/~")
        host = self._host
        if self.settings.addressing_style == "virtual":
            host = f"{bucket}.{host}"
            netloc, target = f"{bucket}.{self._endpoint.netloc}", f"{self._endpoint.path}/{path}"
        else:
            netloc = self._endpoint.netloc
            target = (
                f"{self._endpoint.path}/{bucket}/{path}"
                if key
                else f"{self._endpoint.path}/{bucket}"
            )
        if query:
            target += "?" + "&".join(
                f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}"
                for name, value in sorted(query)
            )
        return host, netloc, target

    def url(self, bucket: str, key: str = "", query: Sequence[tuple[str, str]] = ()) -> str:
        """The request URL (see :meth:`_locate`)."""
        _, netloc, target = self._locate(bucket, key, query)
        return f"{self._endpoint.scheme}://{netloc}{target}"

    async def _send(self, req: Request) -> Response:
        """One signed attempt; returns the response with its body unread."""
        host, netloc, target = self._locate(req.bucket, req.key, req.query)
        url = f"{self._endpoint.scheme}://{netloc}{target}"
        headers = self._signer.sign(
            req.method, target, {**req.headers, "Host": netloc}, req.payload_sha256
        )
        headers["Accept-Encoding"] = "identity"  # bytes exactly as stored
        headers["User-Agent"] = USER_AGENT
        body = None
        if req.method in ("PUT", "POST"):
            headers["Content-Length"] = str(len(req.body))
            body = req.body
        exchange = Exchange(
            req.method,
            url,
            self._endpoint.scheme,
            host,
            self._port,
            target,
            headers,
            body,
            self._timeouts,
        )
        with transport_errors(req.describe):
            return await self._http.exchange(exchange)

    async def _read_body(self, response: Response, req: Request) -> bytes:
        """The whole body, at most MAX_RESPONSE_BYTES; read to the end (see s3object)."""
        if req.method == "HEAD":
            return b""  # Content-Length is the object's size; there is no body

        def too_large() -> S3Error:
            return S3Error(
                f"{req.describe()}: response body over {MAX_RESPONSE_BYTES} bytes",
                code="ResponseTooLarge",
                status=response.status,
            )

        if int(response.headers.get("content-length", "0")) > MAX_RESPONSE_BYTES:
            raise too_large()
        chunks: list[bytes] = []
        size = 0
        with transport_errors(req.describe):
            async for chunk in response:
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise too_large()  # a server lying about Content-Length
                chunks.append(chunk)
        return b"".join(chunks)

    def _error(self, req: Request, response: Response, body: bytes) -> S3Error:
        status = response.status
        parsed = s3xml.parse_error(body) if body else None
        if parsed is not None:
            code, message = parsed
        else:
            code = code_for_status(status)
            message = f"{req.describe()}: HTTP {status}"
        region = response.headers.get("x-amz-bucket-region")
        # AWS's answers to a request for another region; other servers may send the
        # header with every answer, where it tells nothing about the error
        if status in (301, 307, 400) and region and region != self.settings.region:
            configured = self.settings.region
            message += f" (bucket {req.bucket} is in {region}, not {configured}: set s3.region)"
        return s3_error(message, code=code, status=status)

    @property
    def retries(self) -> int:
        """Retries taken so far, over all requests."""
        return self._backoff.retries

    async def backoff(self, failures: int) -> None:
        """Count one retry and sleep (see :class:`~streamer._retry.Backoff`)."""
        await self._backoff.sleep(failures)

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        return await self._backoff.run(attempt, S3Error)

    async def _call(
        self, req: Request, *, ok: Sequence[int] = (200,), error_in_body: bool = False
    ) -> Reply:
        """Send ``req`` (with retries) and read the whole (capped) response body.

        ``error_in_body``: a 200 may carry an ``<Error>`` document (Complete, Copy).
        """

        return await self._retrying(partial(self._attempt, req, ok, error_in_body))

    async def _attempt(
        self, req: Request, ok: Sequence[int] = (200,), error_in_body: bool = False
    ) -> Reply:
        """One attempt of :meth:`_call`."""
        response = await self._send(req)
        try:
            body = await self._read_body(response, req)
        finally:
            await response.aclose()
        if response.status not in ok:
            raise self._error(req, response, body)
        if error_in_body and (parsed := s3xml.parse_error(body)) is not None:
            raise s3_error(parsed[1], code=parsed[0], status=response.status)
        return Reply(response.status, response.headers, body)

    async def _open(self, req: Request, *, ok: Sequence[int]) -> Response:
        """Send ``req`` (with retries) and return the response with its body still unread."""

        async def attempt() -> Response:
            response = await self._send(req)
            if response.status in ok:
                return response
            try:
                body = await self._read_body(response, req)
            finally:
                await response.aclose()
            raise self._error(req, response, body)

        return await self._retrying(attempt)

    async def payload_hash(self, body: Body, *, sha256: str | None = None) -> str:
        """What an object or part upload of ``body`` signs as its payload: its SHA-256
        (``sha256`` when the caller already knows it), or ``UNSIGNED-PAYLOAD`` when
        the settings do not sign payloads (by default: over https)."""
        if not self.settings.signs_payload:
            return UNSIGNED_PAYLOAD
        return sha256 or await sha256_hex(body)

    # -- buckets and listings -------------------------------------------------

    async def head_bucket(self, bucket: str) -> None:
        """Raises ``NoSuchBucket`` (a :class:`S3NotFound`) or ``AccessDenied`` unless reachable."""
        try:
            await self._call(Request("HEAD", bucket))
        except S3Error as exc:
            if exc.status == 404:
                raise s3_error(
                    "The specified bucket does not exist", code="NoSuchBucket", status=404
                ) from None
            raise

    async def list_objects_page(
        self, bucket: str, prefix: str, *, token: str | None = None, max_keys: int | None = None
    ) -> s3xml.ObjectPage:
        """One ListObjectsV2 page of the keys starting with ``prefix``."""
        query = [
            ("list-type", "2"),
            ("prefix", prefix),
            ("max-keys", str(max_keys or self.settings.list_page_size)),
            ("encoding-type", "url"),
        ]
        if token is not None:
            query.append(("continuation-token", token))
        reply = await self._call(Request("GET", bucket, query=query))
        return s3xml.parse_object_page(reply.body)

    async def list_objects(self, bucket: str, prefix: str) -> list[s3xml.ObjectSummary]:
        """Every key starting with ``prefix``, following continuation tokens."""
        found: list[s3xml.ObjectSummary] = []
        token: str | None = None
        while True:
            page = await self.list_objects_page(bucket, prefix, token=token)
            found += page.objects
            if page.next_token is None:
                return found
            token = page.next_token

    async def list_multipart_uploads(self, bucket: str, prefix: str) -> list[s3xml.UploadSummary]:
        """Every in-progress multipart upload whose key starts with ``prefix``.

        A ``NoSuchUpload`` answer to the listing (no upload id was asked about) means
        there are none: ``rclone serve s3`` answers so when no upload is in progress.
        """
        found: list[s3xml.UploadSummary] = []
        markers: list[tuple[str, str]] = []
        while True:
            query = [("uploads", ""), ("prefix", prefix), ("encoding-type", "url"), *markers]
            try:
                reply = await self._call(Request("GET", bucket, query=query))
            except S3Error as exc:
                if exc.code == NO_SUCH_UPLOAD:
                    return found
                raise
            page = s3xml.parse_upload_page(reply.body)
            found += page.uploads
            if page.next_key_marker is None:
                return found
            markers = [("key-marker", page.next_key_marker)]
            if page.next_upload_id_marker:
                markers.append(("upload-id-marker", page.next_upload_id_marker))

    # -- objects --------------------------------------------------------------

    async def head_object(self, bucket: str, key: str) -> ObjectInfo | None:
        """The object's size, ETag and metadata; ``None`` on 404 (no key, or no bucket)."""
        reply = await self._call(Request("HEAD", bucket, key), ok=(200, 404))
        if reply.status == 404:
            return None
        return ObjectInfo.from_headers(reply.headers, int(reply.headers.get("content-length", 0)))

    async def get_response(self, bucket: str, key: str, headers: dict[str, str]) -> Response:
        """A GET with ``headers`` (retried) whose 200/206 response body is still unread."""
        return await self._open(Request("GET", bucket, key, headers=headers), ok=(200, 206))

    async def get_range(
        self, bucket: str, key: str, *, start: int, end: int, etag: str | None = None
    ) -> tuple[ObjectInfo, bytearray]:
        """Bytes ``[start, end)`` of an object, resuming after drops; see :func:`read_range`."""
        return await read_range(self, bucket, key, start=start, end=end, etag=etag)

    async def put_object(
        self,
        bucket: str,
        key: str,
        body: Body,
        *,
        metadata: Mapping[str, str],
        payload_sha256: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        """Store ``body`` under ``key``; returns the ETag.

        ``payload_sha256``: :meth:`payload_hash` of ``body``, when already known.
        ``if_none_match``: only if the key does not exist (else ``PreconditionFailed``).
        """
        headers = meta_headers(metadata)
        if if_none_match:
            headers["If-None-Match"] = "*"
        digest = payload_sha256 or await self.payload_hash(body)
        req = Request("PUT", bucket, key, headers=headers, body=body, payload_sha256=digest)
        return str((await self._call(req)).headers.get("etag", ""))

    async def delete_object(self, bucket: str, key: str) -> None:
        """Delete ``key``; deleting a missing key succeeds."""
        await self._call(Request("DELETE", bucket, key), ok=(200, 204))

    async def copy_object(
        self,
        bucket: str,
        key: str,
        source_bucket: str,
        source_key: str,
        *,
        metadata: Mapping[str, str] | None = None,
        source_etag: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        """Server-side copy (up to 5 GiB) within this endpoint; returns the new ETag.

        ``metadata`` replaces the source's user metadata; ``source_etag`` pins the source.
        """
        headers = {"x-amz-copy-source": copy_source(source_bucket, source_key)}
        if metadata is not None:
            headers |= meta_headers(metadata) | {"x-amz-metadata-directive": "REPLACE"}
        if source_etag:
            headers["x-amz-copy-source-if-match"] = source_etag
        if if_none_match:
            headers["If-None-Match"] = "*"
        reply = await self._call(Request("PUT", bucket, key, headers=headers), error_in_body=True)
        return s3xml.parse_etag(reply.body)
