"""Optional extras and the user's own code: import them lazily, fail with the exact fix."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from .errors import MissingExtra

__all__ = ["import_ref", "require"]


def require(module: str, *, extra: str) -> ModuleType:
    """Returns the imported module, or raises MissingExtra naming `pip install 'babysit[extra]'`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(
            f"{module!r} is needed for this feature but is not installed: "
            f"pip install 'babysit[{extra}]'"
        ) from exc


def _import(module_name: str, search: Iterable[str | os.PathLike[str]]) -> ModuleType:
    """Returns the module, looked up on sys.path, then in `search` and the current directory (kept on sys.path)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name.split(".")[0]):
            raise
        for d in [*map(str, search), os.getcwd()]:
            d = os.path.abspath(d)
            if d in sys.path or not os.path.isdir(d):
                continue
            sys.path.insert(0, d)  # kept: the user's module must stay importable (workers, resume)
            try:
                return importlib.import_module(module_name)
            except ModuleNotFoundError as again:
                if again.name is None or not module_name.startswith(again.name.split(".")[0]):
                    raise
                sys.path.remove(d)
        raise


def import_ref(ref: str, *, what: str, signature: str, search: Iterable[str | os.PathLike[str]] = ()) -> Any:
    """Returns the callable a "package.module:function" reference names, or ConfigError saying which part failed.

    The module is looked up on sys.path, then in `search` (a config file's folder) and the current
    directory, as users expect. Dotted names after the colon reach nested attributes.
    """
    from .errors import ConfigError, UserCodeError, describe_user_error

    module_name, _, attr = ref.partition(":")
    if not module_name or not attr or ":" in attr:
        raise ConfigError(f"{what} {ref!r}: expected the form 'package.module:function'")
    try:
        obj: Any = _import(module_name, search)
    except ImportError as exc:
        raise ConfigError(f"{what} {ref!r}: cannot import module {module_name!r} ({exc}); "
                          "is it installed, on sys.path, beside the config file or in the current directory?") from exc
    except Exception as exc:  # the user's module raised while importing
        raise UserCodeError(describe_user_error(exc, f"importing {module_name!r} for {what} {ref!r}")) from exc
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"{what} {ref!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(obj):
        raise ConfigError(f"{what} {ref!r}: {attr!r} is not callable; need {signature}")
    return obj
