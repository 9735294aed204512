"""Secure worker exchange (seed 003): files staged encrypted at rest for remote workers,
scoped expiring transfer tokens, resumable downloads and uploads."""
