"""Helpers shared by streamer's test suites (not part of the package)."""
