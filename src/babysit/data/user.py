"""The user's own data: Datasets scanned once before training, and data named "package.module:function".

A bad label, a NaN/inf input or a shape mismatch is a DataError naming the split and the first bad
index, before any step: not a torch IndexError from inside the loop.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from .._optional import import_ref
from ..errors import DataError, UserCodeError, describe_user_error
from .core import Splits, _size, from_tensors

__all__ = ["DIGEST_ROWS", "SCAN_LIMIT", "Scan", "digest", "from_datasets", "label_gaps", "load_ref", "scan", "validate_splits"]

log = logging.getLogger(__name__)

SCAN_LIMIT = 20_000  # examples read from a Dataset that is not in memory; beyond it a seeded sample


@dataclass(frozen=True)
class Scan:
    """What one scan of a split saw: its size, how many examples were read, their shape and labels."""

    split: str
    size: int
    checked: int
    input_shape: tuple[int, ...]
    labels: frozenset[int]

    @property
    def sampled(self) -> bool:
        """Returns True when only a sample of the split was read."""
        return self.checked < self.size


def _bad(split: str, i: int, what: str) -> DataError:
    return DataError(f"{split}[{i}]: {what}")


def _scan_tensors(split: str, x: Tensor, y: Tensor, shape: tuple[int, ...] | None, num_classes: int | None) -> Scan:
    n = len(x)
    if len(y) != n:
        raise DataError(f"{split}: {n} inputs but {len(y)} labels; x and y need one row per example")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or y.ndim != 1:
        raise DataError(f"{split}: labels of dtype {y.dtype} and shape {tuple(y.shape)}: need 1-D integer "
                        "class labels (not one-hot: use y.argmax(1))")
    if shape is not None and tuple(x.shape[1:]) != shape:
        raise _bad(split, 0, f"input of shape {tuple(x.shape[1:])}, but the training examples have shape {shape}")
    if x.is_floating_point():
        bad = (~torch.isfinite(x.reshape(n, -1))).any(1).nonzero()
        if len(bad):
            raise _bad(split, int(bad[0]), "the input has NaN or infinite values: clean or impute them first")
    low = (y < 0).nonzero()
    if len(low):
        raise _bad(split, int(low[0]), f"label {int(y[low[0]])} is negative: labels must be 0..C-1")
    if num_classes is not None:
        high = (y >= num_classes).nonzero()
        if len(high):
            raise _bad(split, int(high[0]), f"label {int(y[high[0]])} is not in [0, num_classes={num_classes})")
    return Scan(split, n, n, tuple(x.shape[1:]), frozenset(torch.unique(y).tolist()))


def _example(ds: Dataset, split: str, i: int) -> tuple[Tensor, int]:
    try:
        item = ds[i]
    except Exception as exc:
        raise UserCodeError(describe_user_error(exc, f"the Dataset's __getitem__ on {split}[{i}]")) from exc
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise _bad(split, i, f"the Dataset yields {type(item).__name__}: need (x, y) pairs")
    x = torch.as_tensor(np.asarray(item[0]) if not isinstance(item[0], Tensor) else item[0])
    y = torch.as_tensor(item[1])
    if y.numel() != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise _bad(split, i, f"label {item[1]!r}: need one integer class label per example")
    return x, int(y)


def scan(ds: Dataset, split: str, *, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
         limit: int = SCAN_LIMIT, seed: int = 0) -> Scan:
    """Returns the Scan of a split, raising DataError at its first bad example (label, NaN/inf, shape).

    In-memory data (a TensorDataset) and Datasets of up to `limit` examples are read whole; larger
    ones through a seeded sample of `limit` examples (the log says so).
    """
    if isinstance(ds, TensorDataset) and len(ds.tensors) == 2:
        return _scan_tensors(split, ds.tensors[0], ds.tensors[1], input_shape, num_classes)
    n = _size(ds)
    if not n:
        raise DataError(f"{split}: {type(ds).__name__} is empty or has no len(): need a map-style Dataset")
    order = range(n) if n <= limit else sorted(np.random.default_rng(seed).choice(n, limit, replace=False).tolist())
    if n > limit:
        log.info("%s: %d examples; scanned a seeded sample of %d", split, n, limit)
    labels: set[int] = set()
    for i in order:
        x, y = _example(ds, split, int(i))
        shape = tuple(x.shape)
        if input_shape is None:
            input_shape = shape
        elif shape != input_shape:
            raise _bad(split, int(i), f"input of shape {shape}, but the first training example has shape {input_shape}")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise _bad(split, int(i), "the input has NaN or infinite values: clean or impute them first")
        if y < 0 or (num_classes is not None and y >= num_classes):
            raise _bad(split, int(i), f"label {y} is not in [0, num_classes={num_classes})")
        labels.add(y)
    return Scan(split, n, len(order), tuple(input_shape or ()), frozenset(labels))


def label_gaps(labels: frozenset[int] | set[int]) -> list[int]:
    """Returns the labels missing from 0..max(labels)."""
    return sorted(set(range(max(labels) + 1)) - set(labels)) if labels else []


def _gap_error(labels: frozenset[int] | set[int]) -> DataError:
    missing = label_gaps(labels)
    shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
    return DataError(f"labels skip {shown} (seen: {min(labels)}..{max(labels)}, {len(labels)} distinct): "
                     f"num_classes would be {max(labels) + 1} with empty classes; relabel to 0..C-1, or pass "
                     "num_classes= if those classes exist but have no examples here")


def from_datasets(train: Dataset, val: Dataset, test: Dataset | None = None, *,
                  num_classes: int | None = None) -> Splits:
    """Returns Splits of the user's own map-style Datasets of (x, y) pairs, each scanned once and validated.

    num_classes defaults to max(label) + 1; labels that skip a value are refused unless it is given.
    """
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 2):
        raise DataError(f"num_classes={num_classes!r}: need an integer >= 2")
    first = scan(train, "train", num_classes=num_classes)
    scans = [first] + [scan(d, name, input_shape=first.input_shape, num_classes=num_classes)
                       for name, d in (("val", val), ("test", test)) if d is not None]
    labels = frozenset().union(*(s.labels for s in scans))
    if num_classes is None:
        if not labels:
            raise DataError("train: no labels found")
        if label_gaps(labels) and not any(s.sampled for s in scans):
            raise _gap_error(labels)
        num_classes = max(max(labels) + 1, 2)
    return Splits(train=train, val=val, test=test, num_classes=num_classes, input_shape=first.input_shape)


def validate_splits(splits: Splits) -> None:
    """Raises DataError at the first bad example of any split (label, NaN/inf input, shape mismatch)."""
    first = scan(splits.train, "train", num_classes=splits.num_classes)
    if tuple(splits.input_shape) != first.input_shape:
        raise DataError(f"Splits.input_shape={tuple(splits.input_shape)} but the training examples have shape "
                        f"{first.input_shape}")
    for name in ("val", "test"):
        ds = getattr(splits, name)
        if ds is not None:
            scan(ds, name, input_shape=first.input_shape, num_classes=splits.num_classes)


def _wrap(got: Any, ref: str, seed: int, val_fraction: float) -> Splits:
    if isinstance(got, Splits):
        return got
    if isinstance(got, dict) and "train" in got and "val" in got:
        return from_datasets(got["train"], got["val"], got.get("test"))
    if isinstance(got, Sequence) and not isinstance(got, str) and len(got) in (2, 3) \
            and all(isinstance(d, Dataset) for d in got if d is not None):
        return from_datasets(*got)
    if isinstance(got, Sequence) and len(got) == 2:
        return from_tensors(got[0], got[1], seed=seed, val_fraction=val_fraction)
    raise DataError(f"data {ref!r} returned {type(got).__name__}: return Splits, (x, y) arrays, "
                    "(train, val[, test]) Datasets or a dict with 'train' and 'val'")


def load_ref(ref: str, *, seed: int = 0, val_fraction: float = 0.2, search: tuple[str, ...] = (),
             **options: Any) -> Splits:
    """Returns the Splits that the function "package.module:function"(**options) gives, validated.

    The source recorded in the Splits rebuilds them: load(**splits.source).
    """
    fn = import_ref(ref, what="data", signature="fn(**options) -> Splits | (x, y) | (train, val[, test])",
                    search=search)
    try:
        inspect.signature(fn).bind(**options)
    except TypeError as exc:
        raise DataError(f"data {ref!r}: cannot be called with options {sorted(options)} ({exc}); "
                        "set them in [task] data_options") from exc
    except ValueError:  # no signature to inspect (a builtin): just call it
        pass
    try:
        got = fn(**options)
    except Exception as exc:
        raise UserCodeError(describe_user_error(exc, f"the data function {ref!r}")) from exc
    splits = _wrap(got, ref, seed, val_fraction)
    source = {"name": ref, "seed": seed, "val_fraction": val_fraction, **options}
    return replace(splits, source=source)




DIGEST_ROWS = 10_000  # rows hashed from a large split (evenly spaced), with its size


def digest(ds: Dataset, rows: int = DIGEST_ROWS) -> str:
    """Returns "sha256:<hex16>/n=<size>": a content hash of a split (every row, or `rows` evenly spaced ones).

    A resume compares it, so a run is never continued on other data (shuffled labels, another file).
    """
    h = hashlib.sha256()
    n = _size(ds) or 0
    idx = range(n) if n <= rows else np.linspace(0, n - 1, rows).astype(np.int64).tolist()
    if isinstance(ds, TensorDataset) and len(ds.tensors) == 2:
        x, y = ds.tensors
        pick = torch.as_tensor(list(idx)) if n > rows else slice(None)
        for t in (x[pick], y[pick]):
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    else:
        for i in idx:
            xi, yi = _example(ds, "data", int(i))
            h.update(xi.detach().cpu().contiguous().numpy().tobytes())
            h.update(str(yi).encode())
    return f"sha256:{h.hexdigest()[:16]}/n={n}"
