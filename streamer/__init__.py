"""streamer: a node daemon that moves files between places and machines, fast and safely."""

__version__ = "0.1.0"

__all__ = ["__version__"]
