"""The SRC and DST of ``streamer cp``: one string each, parsed into what it names.

==================================  ==========================================
``local-0:models/``                 a location of the node and a path in it
``s3://bucket/prefix``              an S3 bucket of the node and a prefix
``hf://org/repo[@rev][/path]``      a Hugging Face repo (``hf://datasets/…``,
                                    ``hf://spaces/…`` for the other repo types)
``https://host/file``               a file on the web (URL import)
``./file``, ``/abs/dir``, ``name``  a path on this machine (uploaded)
==================================  ==========================================

``ID:path`` is a location when ``ID`` is a location id (letters, digits, ``.``,
``_``, ``-``) and the text does not start like a local path (``/``, ``./``,
``../``, ``~``); write ``./a:b`` for a local file named ``a:b``. A path ending in
``/`` names a directory's contents (like rsync); without it the file or the
directory itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

_LOCATION = re.compile(r"^(?P<id>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<path>.*)$", re.DOTALL)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_HF_TYPES = {"datasets": "dataset", "spaces": "space", "models": "model"}
_HF_REPO_PART = re.compile(r"^[\w.-]+$")


class EndpointError(ValueError):
    """The text names no endpoint ``streamer cp`` understands."""


@dataclass(frozen=True)
class LocationPath:
    """``path`` inside a location of the node (``kind`` is ``local`` or ``s3``)."""

    kind: str
    location_id: str
    path: str

    @property
    def contents(self) -> bool:
        """Whether the path ends in ``/``: the directory's contents, not the directory."""
        return self.path.endswith("/") or self.path == ""

    def split(self) -> tuple[str, str]:
        """(parent directory, last name) of the path; ``("dir", "")`` for contents."""
        path = self.path.rstrip("/")
        if self.contents:
            return path, ""
        parent, _, name = path.rpartition("/")
        return parent, name

    def side(self, path: str | None = None) -> dict[str, str]:
        """The ``{type, locationId, path}`` object of a transfer body."""
        return {
            "type": self.kind,
            "locationId": self.location_id,
            "path": self.path if path is None else path,
        }


@dataclass(frozen=True)
class HubRepo:
    """A Hugging Face repository at ``revision``, all of it or only ``path``."""

    repo: str
    revision: str = "main"
    repo_type: str = "model"
    path: str = ""

    def side(self) -> dict[str, object]:
        side: dict[str, object] = {
            "type": "huggingface",
            "repo": self.repo,
            "revision": self.revision,
            "repoType": self.repo_type,
        }
        if self.path.strip("/"):
            side["files"] = [self.path.strip("/")]
        return side


@dataclass(frozen=True)
class WebUrl:
    url: str

    def side(self) -> dict[str, object]:
        return {"type": "url", "urls": [self.url]}


@dataclass(frozen=True)
class LocalPath:
    """A file or directory on this machine."""

    path: Path
    contents: bool = False


Endpoint = LocationPath | HubRepo | WebUrl | LocalPath


def parse(text: str) -> Endpoint:
    """What ``text`` names; :class:`EndpointError` when it is empty or malformed."""
    if not text:
        raise EndpointError("an empty endpoint names nothing")
    lowered = text.lower()
    if lowered.startswith(("http://", "https://")):
        return WebUrl(text)
    if lowered.startswith("s3://"):
        return _s3(text[len("s3://") :])
    if lowered.startswith("hf://"):
        return _hub(text[len("hf://") :])
    if _SCHEME.match(text):
        raise EndpointError(f"{text!r}: unknown scheme (use s3://, hf://, http(s):// or ID:path)")
    match = _LOCATION.match(text)
    if match and not text.startswith(("./", "../", "~")):
        return LocationPath("local", match["id"], match["path"])
    return LocalPath(Path(text).expanduser(), contents=text.endswith("/"))


def _s3(rest: str) -> LocationPath:
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise EndpointError("s3:// needs a bucket: s3://bucket/prefix")
    return LocationPath("s3", bucket, prefix)


def _hub(rest: str) -> HubRepo:
    parts = rest.split("/")
    repo_type = _HF_TYPES.get(parts[0], "")
    if repo_type:
        parts = parts[1:]
    else:
        repo_type = "model"
    if not parts or not parts[0]:
        raise EndpointError("hf:// needs a repository: hf://org/repo[@revision][/path]")
    names = parts[:2] if len(parts) > 1 and parts[1] else parts[:1]
    rest_path = "/".join(parts[len(names) :])
    revision = "main"
    last, at, rev = names[-1].partition("@")
    if at:
        if not rev:
            raise EndpointError(f"hf://{rest}: empty revision after '@'")
        names[-1], revision = last, unquote(rev)
    if not all(_HF_REPO_PART.match(name) for name in names):
        raise EndpointError(f"hf://{rest}: not a repository name (org/repo)")
    return HubRepo("/".join(names), revision, repo_type, rest_path)
