"""One exception tree for babysit: every error names the field, the bad value and the fix."""

from __future__ import annotations

__all__ = ["BabysitError", "ConfigError", "DataError", "CheckFailed", "StoreError", "MissingExtra"]


class BabysitError(Exception):
    """Base of every error babysit raises on purpose."""


class ConfigError(BabysitError, ValueError):
    """A hyperparameter, name or setting is invalid; the message says which and how to fix it."""


class DataError(BabysitError, ValueError):
    """A data set is malformed or unknown."""


class CheckFailed(BabysitError, AssertionError):
    """A gradient or sanity check failed (an AssertionError, so pytest shows it as a failure)."""


class StoreError(BabysitError):
    """The run directory is missing, corrupt, or belongs to a different configuration."""


class MissingExtra(BabysitError, ImportError):
    """An optional dependency is not installed; the message gives the pip command."""
