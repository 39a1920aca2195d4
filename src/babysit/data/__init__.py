"""Data: the built-in data sets (spiral, digits, mnist1d), the user's own tensors or Datasets, fast batching.

    splits = load("mnist1d")                 # also "digits", "spiral", or "package.module:function"
    splits = from_tensors(x, y)              # a user's arrays: validated, split train/val/test
    splits = from_datasets(train, val, test) # map-style Datasets: scanned once, validated
"""

from __future__ import annotations

from typing import Any

from ..errors import DataError
from .builtin import _mnist1d_arrays, digits, mnist1d, spiral
from .core import Splits, _check_fraction, batches, from_tensors, num_batches, tensors, to_device
from .user import SCAN_LIMIT, Scan, digest, from_datasets, load_ref, scan, validate_splits

__all__ = ["NAMES", "SCAN_LIMIT", "Scan", "Splits", "batches", "digest", "digits", "from_datasets", "from_tensors", "load",
           "load_ref", "mnist1d", "num_batches", "scan", "spiral", "tensors", "to_device", "validate_splits"]

NAMES = ("digits", "mnist1d", "spiral")
_OPTIONS: dict[str, tuple[str, ...]] = {
    "digits": (),
    "mnist1d": (),
    "spiral": ("num_classes", "points_per_class", "noise", "test_fraction"),
}


def load(name: str, *, seed: int = 0, val_fraction: float = 0.2, search: tuple[str, ...] = (),
         **options: Any) -> Splits:
    """Return the Splits of a built-in data set ("digits", "mnist1d", "spiral") or of "package.module:function".

    The function is called with ``options`` and returns Splits, (x, y) arrays, or (train, val[, test])
    Datasets; search: folders where its module may sit. ``load(**splits.source)`` rebuilds the same splits.
    """
    if isinstance(name, str) and ":" in name:
        return load_ref(name, seed=seed, val_fraction=val_fraction, search=tuple(search), **options)
    if name not in NAMES:
        raise DataError(f"unknown data set {name!r}; valid: {', '.join(NAMES)}, or 'package.module:function'")
    _check_fraction("val_fraction", val_fraction)
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        valid = ", ".join(_OPTIONS[name]) or "(none)"
        raise DataError(f"unknown option(s) for data set {name!r}: {', '.join(unknown)}; valid: {valid}")
    loader = {"digits": digits, "mnist1d": mnist1d, "spiral": spiral}[name]
    return loader(seed=seed, val_fraction=val_fraction, **options)  # type: ignore[operator]


_ = _mnist1d_arrays  # re-exported for tests that clear its cache
