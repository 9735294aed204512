"""The node's locations: ``(type, locationId)`` → a :class:`Storage`."""

from __future__ import annotations

from collections.abc import Iterable

from .._errors import UnknownLocation, UnsupportedStorage
from .base import Storage


class Locations:
    """Looks up configured storages; unknown ids and unconfigured types are 400s."""

    def __init__(self, storages: Iterable[Storage]) -> None:
        self._by_key = {(s.kind, s.location_id): s for s in storages}
        self._kinds = {s.kind for s in self._by_key.values()}

    def get(self, kind: str, location_id: str) -> Storage:
        storage = self._by_key.get((kind, location_id))
        if storage is not None:
            return storage
        if kind not in self._kinds:
            raise UnsupportedStorage(
                f"storage type {kind!r} is not available on this node: "
                f"no {kind} locations are configured"
            )
        known = ", ".join(sorted(lid for k, lid in self._by_key if k == kind))
        raise UnknownLocation(f"unknown {kind} location {location_id!r} (known: {known})")
