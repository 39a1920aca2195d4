"""Launchers: where workers run. local.py forks them on this machine; each runs ask -> train -> tell."""

from .local import MasterLock, run_local

__all__ = ["MasterLock", "run_local"]
