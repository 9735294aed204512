"""Node-to-node server transfers (seed 002), wire-compatible with Wings.

:mod:`.service` holds the state and rules, :mod:`.push` and :mod:`.receive`
are the engine runners of the two sides, :mod:`.panel` delivers the Panel
callbacks, :mod:`.tokens` verifies transfer JWTs, :mod:`.multipart` frames and
parses the body, :mod:`.servers` handles server directories and hooks.
"""
