"""The byte pipeline shared by every kind of transfer."""

from .pump import Sink, Stage, capped, coalesce, pump, write_through
from .stages import Progress, Sha256

__all__ = ["Progress", "Sha256", "Sink", "Stage", "capped", "coalesce", "pump", "write_through"]
