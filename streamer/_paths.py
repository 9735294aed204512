"""Client paths are hostile: normalise them before any storage sees them.

A *relative path* in streamer is a POSIX string with no leading slash, no empty,
``.`` or ``..`` segments and no NUL, e.g. ``models/config.json``; ``""`` means the
root. Every path that arrives from a client goes through :func:`clean_base` (for
``source.path`` / ``destination.path``, where a leading ``/`` means "the location
root", as seed 000 writes ``/datasets``) or :func:`clean_relative` (for item
paths, which must already be relative). Storages only ever receive cleaned paths.
"""

from __future__ import annotations

from ._errors import InvalidPath

MAX_PATH_BYTES = 4096
MAX_SEGMENT_BYTES = 255


def _segments(path: str, *, what: str) -> list[str]:
    if "\x00" in path:
        raise InvalidPath(f"{what} contains a NUL byte")
    if "\\" in path:
        raise InvalidPath(f"{what} {path!r} contains a backslash; use '/' as the separator")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidPath(f"{what} is longer than {MAX_PATH_BYTES} bytes")
    segments = [s for s in path.split("/") if s not in ("", ".")]
    for segment in segments:
        if segment == "..":
            raise InvalidPath(f"{what} {path!r} contains '..'")
        if len(segment.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
            raise InvalidPath(f"{what} has a name longer than {MAX_SEGMENT_BYTES} bytes")
    return segments


def clean_base(path: str, *, what: str = "path") -> str:
    """Normalise a location base path; a leading ``/`` is the location root.

    Raises :class:`InvalidPath` for ``..``, NUL or over-long names.
    """
    return "/".join(_segments(path, what=what))


def clean_relative(path: str, *, what: str = "item path") -> str:
    """Normalise a path that must be relative (an item inside a base path).

    Raises :class:`InvalidPath` for absolute paths as well as ``..``/NUL.
    """
    if path.startswith("/"):
        raise InvalidPath(f"{what} {path!r} must be relative, not absolute")
    return "/".join(_segments(path, what=what))


def join(*parts: str) -> str:
    """Join cleaned relative paths, skipping empty ones."""
    return "/".join(p for p in parts if p)


def split_name(name: str) -> tuple[str, str]:
    """Split ``weights.tar.gz`` into (``weights.tar``, ``.gz``); dotfiles keep their dot."""
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    return name[:dot], name[dot:]


def renamed(path: str, n: int) -> str:
    """The ``n``-th rename candidate: ``dir/name (n).ext``."""
    head, _, name = path.rpartition("/")
    stem, ext = split_name(name)
    return join(head, f"{stem} ({n}){ext}")
