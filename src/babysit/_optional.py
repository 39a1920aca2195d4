"""Optional extras: import them lazily and fail with the exact pip command."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

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


def import_ref(ref: str, *, what: str, signature: str) -> Any:
    """Returns the callable a "package.module:function" reference names, or ConfigError saying which part failed.

    Dotted names after the colon reach nested attributes (a module-level class's static method, say).
    """
    from .errors import ConfigError

    module_name, _, attr = ref.partition(":")
    if not module_name or not attr or ":" in attr:
        raise ConfigError(f"{what} {ref!r}: expected the form 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what} {ref!r}: cannot import module {module_name!r} ({exc}); "
                          "is it installed or on sys.path?") from exc
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"{what} {ref!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(obj):
        raise ConfigError(f"{what} {ref!r}: {attr!r} is not callable; need {signature}")
    return obj
