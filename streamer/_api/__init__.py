"""The HTTP edge: parse and validate, call the engine, map errors once."""

from .app import Services, create_app

__all__ = ["Services", "create_app"]
