"""The node's storages: request endpoints → :class:`Storage` objects.

Local locations are configured by id. S3 locations are buckets: any bucket the
credentials reach (or only those listed in ``s3.buckets``), each a storage made
on first use. Imports (Hugging Face, URLs) are read-only storages built from the
request's source by a factory registered per source type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._errors import UnknownLocation, UnsupportedStorage
from .base import Storage

StorageFactory = Callable[[Any], Storage]


class Locations:
    """Looks up storages; unknown ids and unconfigured types are 400s naming them."""

    def __init__(
        self,
        storages: Iterable[Storage],
        *,
        buckets: Callable[[str], Storage] | None = None,
        importers: Mapping[str, StorageFactory] | None = None,
    ) -> None:
        self._local = {s.location_id: s for s in storages}
        self._buckets = buckets
        self._bucket_cache: dict[str, Storage] = {}
        self._importers = dict(importers or {})

    def get(self, kind: str, location_id: str) -> Storage:
        """The storage of a ``{type, locationId}`` endpoint."""
        if kind == "local":
            storage = self._local.get(location_id)
            if storage is None:
                known = ", ".join(sorted(self._local))
                raise UnknownLocation(f"unknown local location {location_id!r} (known: {known})")
            return storage
        if kind == "s3":
            if self._buckets is None:
                raise UnsupportedStorage(
                    "storage type 's3' is not available on this node: no s3 section is configured"
                )
            if location_id not in self._bucket_cache:
                self._bucket_cache[location_id] = self._buckets(location_id)
            return self._bucket_cache[location_id]
        raise UnsupportedStorage(f"unknown storage type {kind!r}")

    def source(self, endpoint: Any) -> Storage:
        """The storage a transfer reads from: a location or an import."""
        kind = type(endpoint).__struct_config__.tag  # msgspec tag: "local", "s3", …
        if kind in ("local", "s3"):
            return self.get(kind, endpoint.location_id)
        factory = self._importers.get(kind)
        if factory is None:
            raise UnsupportedStorage(f"{kind} imports are not available on this node")
        return factory(endpoint)

    def destination(self, endpoint: Any) -> Storage:
        kind = type(endpoint).__struct_config__.tag
        return self.get(kind, endpoint.location_id)
