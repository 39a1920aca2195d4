"""The built-in data sets: the notes' spiral, scikit-learn's digits and MNIST-1D (generated offline).

The test split is held apart from ``seed``; ``seed`` only chooses the validation split (and, for the
spiral, the generated points).
"""

from __future__ import annotations

import functools
import random

import numpy as np

from ..errors import DataError
from .core import Splits, _check_count, _check_fraction, _dataset, _split_indices

__all__ = ["digits", "mnist1d", "spiral"]


def spiral(
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    num_classes: int = 3,
    points_per_class: int = 300,
    noise: float = 0.2,
    test_fraction: float = 0.2,
) -> Splits:
    """Return Splits of the notes' K-class spiral: 2-D points not linearly separable.

    r = linspace(0, 1, N), t = linspace(4j, 4(j+1), N) + noise * randn; x = (r sin t, r cos t).
    """
    _check_fraction("val_fraction", val_fraction)
    _check_fraction("test_fraction", test_fraction, allow_zero=True)
    _check_count("num_classes", num_classes, 2)
    _check_count("points_per_class", points_per_class, 1)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise DataError(f"noise={noise!r}: must be a number >= 0, e.g. 0.2")
    x, y = _spiral_points(np.random.default_rng(seed), num_classes, points_per_class, float(noise))
    train, val, test = _split_indices(len(y), seed, val_fraction, test_fraction)
    source = {
        "name": "spiral", "seed": seed, "val_fraction": val_fraction, "num_classes": num_classes,
        "points_per_class": points_per_class, "noise": noise, "test_fraction": test_fraction,
    }
    return Splits(
        train=_dataset(x[train], y[train]),
        val=_dataset(x[val], y[val]),
        test=_dataset(x[test], y[test]) if len(test) else None,
        num_classes=num_classes,
        input_shape=(2,),
        source=source,
    )


def _spiral_points(rng: np.random.Generator, k: int, n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Return shuffled (x, y) of k spiral arms with n points each, as in the notes."""
    xs, ys = [], []
    for j in range(k):
        r = np.linspace(0.0, 1.0, n)
        t = np.linspace(j * 4.0, (j + 1) * 4.0, n) + rng.standard_normal(n) * noise
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
        ys.append(np.full(n, j))
    order = rng.permutation(n * k)
    return np.concatenate(xs)[order], np.concatenate(ys)[order]


def digits(*, seed: int = 0, val_fraction: float = 0.2) -> Splits:
    """Return Splits of scikit-learn's bundled 8x8 digits, standardised with train statistics.

    Mean and std come from the train split alone, then apply to val and test (no leakage).
    """
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    _check_fraction("val_fraction", val_fraction)
    bunch = load_digits()
    x, y = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)
    train, val, test = _split_indices(len(y), seed, val_fraction, 0.2)
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std == 0] = 1.0
    x = (x - mean) / std
    return Splits(
        train=_dataset(x[train], y[train]),
        val=_dataset(x[val], y[val]),
        test=_dataset(x[test], y[test]),
        num_classes=10,
        input_shape=(64,),
        source={"name": "digits", "seed": seed, "val_fraction": val_fraction},
        image_shape=(8, 8),
    )


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> tuple[np.ndarray, ...]:
    """Return (x, y, x_test, y_test) of the published MNIST-1D, global RNGs left as found."""
    from mnist1d.data import make_dataset  # type: ignore[import-untyped]

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        ds = make_dataset()  # seeds numpy and random globally
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = tuple(
        np.array(ds[key], dtype=dtype)  # a copy: the caller's arrays are left writable
        for key, dtype in (("x", np.float32), ("y", np.int64), ("x_test", np.float32), ("y_test", np.int64))
    )
    for a in arrays:
        a.flags.writeable = False  # shared by every later call
    return arrays


def mnist1d(*, seed: int = 0, val_fraction: float = 0.2) -> Splits:
    """Return Splits of MNIST-1D (4000 train, 1000 test, 40 features), generated offline.

    The validation split is carved from the 4000 by `seed`; the package's test split stays apart.
    """
    _check_fraction("val_fraction", val_fraction)
    x, y, x_test, y_test = _mnist1d_arrays()
    perm = np.random.default_rng(seed).permutation(len(y))
    n_val = round(val_fraction * len(y))
    val, train = perm[:n_val], perm[n_val:]
    if len(val) < 1 or len(train) < 1:
        raise DataError(f"val_fraction={val_fraction}: leaves an empty split of MNIST-1D's {len(y)}")
    return Splits(
        train=_dataset(x[train], y[train]),
        val=_dataset(x[val], y[val]),
        test=_dataset(x_test.copy(), y_test.copy()),
        num_classes=10,
        input_shape=(x.shape[1],),
        source={"name": "mnist1d", "seed": seed, "val_fraction": val_fraction},
    )


