"""Optional extras: import them lazily and fail with the exact pip command."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtra


def require(module: str, *, extra: str) -> ModuleType:
    """Returns the imported module, or raises MissingExtra naming `pip install 'babysit[extra]'`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(
            f"{module!r} is needed for this feature but is not installed: "
            f"pip install 'babysit[{extra}]'"
        ) from exc
