"""Splits, a user's own tensors, and fast batching: the data path every other module shares.

Every in-memory data set is a ``TensorDataset(x_float32, y_int64)``, so batches are sliced from tensors
directly (no DataLoader overhead); other map-style Datasets go through a DataLoader.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .._check import check_number
from ..errors import ConfigError, DataError

__all__ = ["Splits", "batches", "from_tensors", "num_batches", "tensors", "to_device"]

_REAL_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_TEST_SEED = 12345  # the test split never depends on `seed`: searches must not peek at it


@dataclass(frozen=True)
class Splits:
    """Train, validation and (optional) test data of one classification problem."""

    train: Dataset
    val: Dataset
    test: Dataset | None
    num_classes: int
    input_shape: tuple[int, ...]
    source: Mapping[str, Any] | None = None
    image_shape: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data describing the splits: sizes, classes, shapes and how to rebuild them."""
        return {
            "sizes": {
                "train": _size(self.train),
                "val": _size(self.val),
                "test": None if self.test is None else _size(self.test),
            },
            "num_classes": int(self.num_classes),
            "input_shape": list(self.input_shape),
            "source": None if self.source is None else dict(self.source),
            "image_shape": None if self.image_shape is None else list(self.image_shape),
        }


def _size(dataset: Dataset) -> int | None:
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return None


# ---------------------------------------------------------------------------- validation


def _check_fraction(field: str, value: float, *, allow_zero: bool = False) -> float:
    return float(check_number(field, value, low=0.0, high=1.0, low_open=not allow_zero, high_open=True,
                              hint="e.g. 0.2", error=DataError))


def _check_count(field: str, value: int, minimum: int) -> int:
    if isinstance(value, float):
        raise DataError(f"{field}={value!r}: must be an integer >= {minimum}")
    return int(check_number(field, value, kind=int, low=minimum, high=2**31 - 1, error=DataError))


def _split_indices(
    n: int, seed: int, val_fraction: float, test_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (train, val, test) index arrays: test from a fixed permutation, val by `seed`."""
    n_test = round(test_fraction * n)
    rest = np.random.RandomState(_TEST_SEED).permutation(n)
    test, rest = rest[:n_test], rest[n_test:]
    rest = rest[np.random.default_rng(seed).permutation(len(rest))]
    n_val = round(val_fraction * len(rest))
    val, train = rest[:n_val], rest[n_val:]
    if len(train) < 1 or len(val) < 1 or (test_fraction > 0 and len(test) < 1):
        raise DataError(
            f"{n} examples with val_fraction={val_fraction}, test_fraction={test_fraction} "
            f"leave an empty split (train {len(train)}, val {len(val)}, test {len(test)}); "
            "use more data or other fractions"
        )
    return train, val, test


def _dataset(x: np.ndarray | Tensor, y: np.ndarray | Tensor) -> TensorDataset:
    xt = torch.as_tensor(x).to(torch.float32).contiguous()
    yt = torch.as_tensor(y).to(torch.int64).contiguous()
    return TensorDataset(xt, yt)


def _as_tensor(field: str, value: Any) -> Tensor:
    try:
        return torch.as_tensor(np.asarray(value) if not isinstance(value, Tensor) else value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{field}: cannot be converted to a tensor ({exc}); pass a numpy array or tensor") from exc


def _check_labels(y: Tensor, n: int, num_classes: int | None) -> int:
    """Return num_classes after checking that y holds 1-D integer labels in [0, num_classes)."""
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DataError(f"y has dtype {y.dtype}: must hold integer class labels; convert with y.astype(int)")
    if y.ndim != 1:
        raise DataError(f"y has shape {tuple(y.shape)}: must be 1-D class labels (not one-hot); use y.argmax(1)")
    if len(y) != n:
        raise DataError(f"len(x)={n} but len(y)={len(y)}: x and y must have one row per example")
    if num_classes is None:
        num_classes = int(y.max()) + 1
        seen = torch.unique(y)
        if int(y.min()) >= 0 and len(seen) < num_classes:
            missing = sorted(set(range(num_classes)) - set(seen.tolist()))
            shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
            raise DataError(f"y has labels 0..{num_classes - 1} but no {shown}: that would make {num_classes} "
                            "classes, some empty; relabel to 0..C-1, or pass num_classes= if those classes "
                            "exist but have no examples here")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise DataError(f"num_classes={num_classes!r}: need at least 2 classes")
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= num_classes:
        raise DataError(
            f"y has labels in [{low}, {high}]: must be in [0, num_classes={num_classes}); relabel to 0..C-1"
        )
    return num_classes


def from_tensors(
    x: np.ndarray | Tensor,
    y: np.ndarray | Tensor,
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    num_classes: int | None = None,
) -> Splits:
    """Return Splits of a user's own (x, y): x features, y integer labels in [0, num_classes).

    num_classes defaults to max(y) + 1; test_fraction=0 gives no test split.
    """
    xt, yt = _as_tensor("x", x), _as_tensor("y", y)
    if xt.ndim < 2 or len(xt) == 0:
        raise DataError(f"x has shape {tuple(xt.shape)}: need (examples, features...); reshape a 1-D x to (N, 1)")
    if xt.is_complex() or not (xt.is_floating_point() or xt.dtype in _REAL_INT_DTYPES):
        raise DataError(f"x has dtype {xt.dtype}: must be real numbers")
    xt = xt.to(torch.float32)
    if not bool(torch.isfinite(xt).all()):
        raise DataError("x has NaN or infinite values: clean or impute them first")
    num_classes = _check_labels(yt, len(xt), num_classes)
    _check_fraction("val_fraction", val_fraction)
    _check_fraction("test_fraction", test_fraction, allow_zero=True)
    if val_fraction + test_fraction >= 1:
        raise DataError(f"val_fraction + test_fraction = {val_fraction + test_fraction}: must be < 1")
    train, val, test = (torch.as_tensor(i) for i in _split_indices(len(yt), seed, val_fraction, test_fraction))
    return Splits(
        train=_dataset(xt[train], yt[train]),
        val=_dataset(xt[val], yt[val]),
        test=_dataset(xt[test], yt[test]) if len(test) else None,
        num_classes=num_classes,
        input_shape=tuple(xt.shape[1:]),
    )


# ---------------------------------------------------------------------------- batching


def tensors(dataset: Dataset, limit: int | None = None) -> tuple[Tensor, Tensor]:
    """Return the dataset (its first `limit` examples) as (x, y): a TensorDataset's own tensors, else stacked."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        x, y = dataset.tensors[0], dataset.tensors[1]
        return (x, y) if limit is None else (x[:limit], y[:limit])
    n = _size(dataset)
    if not n:
        raise DataError(f"dataset {type(dataset).__name__} is empty or has no len(): need a map-style Dataset")
    items = [dataset[i] for i in range(n if limit is None else min(n, limit))]
    if not isinstance(items[0], (tuple, list)) or len(items[0]) != 2:
        raise DataError(f"dataset {type(dataset).__name__} yields {type(items[0]).__name__}: need (x, y) pairs")
    x = torch.stack([torch.as_tensor(item[0]) for item in items])
    y = torch.stack([torch.as_tensor(item[1]) for item in items])
    return x, y


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r}: must be an integer >= 1, e.g. 64")
    return batch_size


def num_batches(dataset: Dataset, batch_size: int) -> int:
    """Return the number of batches per epoch, ceil(len / batch_size): the last partial one counts."""
    _check_batch_size(batch_size)
    return math.ceil(len(dataset) / batch_size)  # type: ignore[arg-type]


def batches(
    dataset: Dataset, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Return an iterator over one epoch of (x, y) batches; the same generator state, the same order.

    A TensorDataset is sliced directly (one permutation per epoch); other datasets use a DataLoader.
    """
    _check_batch_size(batch_size)
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        return _tensor_batches(dataset.tensors[0], dataset.tensors[1], batch_size, shuffle, generator)
    return _loader_batches(dataset, batch_size, shuffle, generator)


def _tensor_batches(
    x: Tensor, y: Tensor, batch_size: int, shuffle: bool, generator: torch.Generator | None
) -> Iterator[tuple[Tensor, Tensor]]:
    n = len(x)
    if not shuffle:
        for start in range(0, n, batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
        return
    device = x.device if generator is None else generator.device
    idx = torch.randperm(n, generator=generator, device=device).to(x.device)
    for start in range(0, n, batch_size):
        b = idx[start : start + batch_size]
        yield x[b], y[b]


def _loader_batches(
    dataset: Dataset, batch_size: int, shuffle: bool, generator: torch.Generator | None
) -> Iterator[tuple[Tensor, Tensor]]:
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator):
        if len(batch) != 2:
            raise DataError(f"dataset {type(dataset).__name__} yields {len(batch)} items: need (x, y) pairs")
        yield batch[0], batch[1]


def to_device(dataset: Dataset, device: torch.device | str) -> Dataset:
    """Return a TensorDataset with its tensors moved to `device` once; other datasets unchanged."""
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t.to(device) for t in dataset.tensors))
    return dataset
