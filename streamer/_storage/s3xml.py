"""The XML of the S3 REST API: parse responses, build request bodies.

Pure functions over bytes, namespace-agnostic (AWS qualifies every tag with
``http://s3.amazonaws.com/doc/2006-03-01/``; some compatible servers do not).
Bodies come from the configured endpoint, which is trusted to speak S3 but not
to be small: the client caps what it reads before anything here parses it, and
expat (Python >= 3.11) refuses entity-expansion bombs.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote
from xml.sax.saxutils import escape

from .._errors import StorageError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ObjectSummary:
    """One key of a ListObjectsV2 page."""

    key: str
    size: int
    last_modified_ns: int | None
    etag: str


@dataclass(frozen=True, slots=True)
class ObjectPage:
    """One ListObjectsV2 page; ``next_token`` is ``None`` on the last page."""

    objects: list[ObjectSummary]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class UploadSummary:
    """One in-progress multipart upload of a ListMultipartUploads page."""

    key: str
    upload_id: str


@dataclass(frozen=True, slots=True)
class UploadPage:
    """One ListMultipartUploads page; the markers are ``None`` on the last page."""

    uploads: list[UploadSummary]
    next_key_marker: str | None
    next_upload_id_marker: str | None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _root(body: bytes) -> ET.Element:
    try:
        return ET.fromstring(body)
    except ET.ParseError as exc:
        snippet = body[:200].decode("utf-8", "replace")
        raise StorageError(
            f"malformed S3 response: {exc}: {snippet!r}", code="MalformedXML"
        ) from exc


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def _text(element: ET.Element, name: str) -> str | None:
    """Text of the first child called ``name``; ``""`` when empty, ``None`` when absent."""
    for child in element:
        if _local(child.tag) == name:
            return child.text or ""
    return None


def _required(element: ET.Element, name: str) -> str:
    value = _text(element, name)
    if value is None:
        raise StorageError(
            f"malformed S3 response: <{_local(element.tag)}> has no <{name}>", code="MalformedXML"
        )
    return value


def parse_error(body: bytes) -> tuple[str, str] | None:
    """``(code, message)`` of an ``<Error>`` document, or ``None`` if ``body`` is not one.

    Used both for error statuses and for the 200 responses with an error body
    that CompleteMultipartUpload, CopyObject and UploadPartCopy may return.
    """
    if b"<Error" not in body[:512]:
        return None
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    if _local(root.tag) != "Error":
        return None
    return _text(root, "Code") or "UnknownError", _text(root, "Message") or ""


def parse_timestamp_ns(value: str) -> int:
    """Nanoseconds since the epoch of an ISO 8601 timestamp such as ``2024-05-01T12:00:00.000Z``."""
    return datetime_ns(datetime.fromisoformat(value))


def datetime_ns(moment: datetime) -> int:
    """Nanoseconds since the epoch of an aware datetime, without float rounding."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def parse_object_page(body: bytes) -> ObjectPage:
    """A ListObjectsV2 result; keys are URL-decoded when the server used ``encoding-type=url``."""
    root = _root(body)
    url_encoded = _text(root, "EncodingType") == "url"
    objects = []
    for item in _children(root, "Contents"):
        key = _required(item, "Key")
        modified = _text(item, "LastModified")
        objects.append(
            ObjectSummary(
                key=unquote(key) if url_encoded else key,
                size=int(_required(item, "Size")),
                last_modified_ns=parse_timestamp_ns(modified) if modified else None,
                etag=_text(item, "ETag") or "",
            )
        )
    truncated = _text(root, "IsTruncated") == "true"
    token = _text(root, "NextContinuationToken") if truncated else None
    if truncated and not token:
        raise StorageError(
            "malformed S3 response: truncated listing without a continuation token",
            code="MalformedXML",
        )
    return ObjectPage(objects, token)


def parse_upload_page(body: bytes) -> UploadPage:
    """A ListMultipartUploads result (keys URL-decoded under ``encoding-type=url``)."""
    root = _root(body)
    url_encoded = _text(root, "EncodingType") == "url"
    uploads = []
    for item in _children(root, "Upload"):
        key = _required(item, "Key")
        uploads.append(
            UploadSummary(unquote(key) if url_encoded else key, _required(item, "UploadId"))
        )
    if _text(root, "IsTruncated") != "true":
        return UploadPage(uploads, None, None)
    key_marker = _text(root, "NextKeyMarker") or ""
    return UploadPage(
        uploads,
        unquote(key_marker) if url_encoded else key_marker,
        _text(root, "NextUploadIdMarker") or "",
    )


def parse_upload_id(body: bytes) -> str:
    """The UploadId of an InitiateMultipartUploadResult."""
    return _required(_root(body), "UploadId")


def parse_etag(body: bytes) -> str:
    """The ETag of a CompleteMultipartUpload, CopyObject or UploadPartCopy result."""
    return _required(_root(body), "ETag")


def complete_body(etags: list[str]) -> bytes:
    """The CompleteMultipartUpload request body for parts 1..n with ``etags`` in order."""
    parts = "".join(
        f"<Part><PartNumber>{number}</PartNumber><ETag>{escape(etag)}</ETag></Part>"
        for number, etag in enumerate(etags, start=1)
    )
    return f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
