"""Python clients of a running ``streamer serve`` (used by the ``streamer`` CLI).

Public: :class:`ApiError` and :func:`connect` here; the transfer API, the
resumable download/upload functions and the worker client live in submodules.
"""

from .http import ApiError, connect, raise_for_error

__all__ = ["ApiError", "connect", "raise_for_error"]
