"""The babysit version (one place; the package root and the run directory read it)."""

__version__ = "0.1.0"
