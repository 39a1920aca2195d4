"""One exception tree for babysit: every error names the field, the bad value and the fix."""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback

__all__ = ["BabysitError", "ConfigError", "DataError", "CheckFailed", "StoreError", "MissingExtra",
           "UserCodeError", "user_frame", "describe_user_error"]


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


class UserCodeError(BabysitError):
    """The user's own code (model, data, loss, metric) raised; the cause is chained and its file:line named."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_LIBRARY_DIRS = tuple({os.path.abspath(p) for p in (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
                                                     sysconfig.get_paths()["platlib"], sys.prefix, sys.base_prefix)})


def user_frame(exc: BaseException) -> str | None:
    """Returns "file:line in function" of the innermost frame of the user's code in exc's traceback, or None.

    User code is any file outside babysit, the standard library and installed packages; failing that,
    the innermost frame outside babysit and torch (a user's package installed in site-packages).
    """
    frames = traceback.extract_tb(exc.__traceback__)
    outside = [f for f in frames if not os.path.abspath(f.filename).startswith(_PACKAGE)]
    mine = [f for f in outside if not os.path.abspath(f.filename).startswith(_LIBRARY_DIRS)]
    if not mine:
        mine = [f for f in outside if f"{os.sep}torch{os.sep}" not in f.filename and not f.filename.startswith("<")]
    if not mine:
        return None
    f = mine[-1]
    return f"{f.filename}:{f.lineno} in {f.name}"


def describe_user_error(exc: BaseException, what: str = "your code") -> str:
    """Returns a one-line cause: "<what> raised ValueError: boom (at file.py:12 in forward)"."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    where = user_frame(exc)
    return f"{what} raised {type(exc).__name__}{': ' + text if text else ''}" + (f" (at {where})" if where else "")
