"""Tests for babysit.data: built-in loaders, from_tensors validation, and batching."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from babysit import data
from babysit.errors import ConfigError, DataError

EXPECTED = {  # name -> (train, val, test, num_classes, input_shape)
    "spiral": (576, 144, 180, 3, (2,)),
    "digits": (1150, 288, 359, 10, (64,)),
    "mnist1d": (3200, 800, 1000, 10, (40,)),
}


def _rows(t: torch.Tensor) -> set[bytes]:
    """Rows as bytes, skipping all-zero rows (every spiral arm starts at the origin)."""
    return {r.tobytes() for r in t.numpy() if r.any()}


@pytest.mark.parametrize("name", data.NAMES)
def test_loader_shapes_sizes_dtypes(name: str) -> None:
    s = data.load(name)
    n_train, n_val, n_test, classes, shape = EXPECTED[name]
    assert (len(s.train), len(s.val), len(s.test)) == (n_train, n_val, n_test)
    assert s.num_classes == classes and s.input_shape == shape
    for split in (s.train, s.val, s.test):
        assert isinstance(split, TensorDataset)
        x, y = split.tensors
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert tuple(x.shape[1:]) == shape and y.ndim == 1
        assert int(y.min()) >= 0 and int(y.max()) < classes
    assert set(data.tensors(s.train)[1].tolist()) == set(range(classes))
    d = s.to_dict()
    assert d["sizes"] == {"train": n_train, "val": n_val, "test": n_test}
    assert d["num_classes"] == classes and d["input_shape"] == list(shape)
    assert d["source"]["name"] == name and d["source"]["seed"] == 0


@pytest.mark.parametrize("name", data.NAMES)
def test_splits_do_not_overlap_and_are_seeded(name: str) -> None:
    a, same, other = data.load(name, seed=0), data.load(name, seed=0), data.load(name, seed=1)
    rows = [_rows(t.tensors[0]) for t in (a.train, a.val, a.test)]
    assert not rows[0] & rows[1] and not rows[0] & rows[2] and not rows[1] & rows[2]
    for s1, s2 in ((a.train, same.train), (a.val, same.val), (a.test, same.test)):
        assert torch.equal(s1.tensors[0], s2.tensors[0]) and torch.equal(s1.tensors[1], s2.tensors[1])
    assert _rows(a.val.tensors[0]) != _rows(other.val.tensors[0])


@pytest.mark.parametrize("name", ["digits", "mnist1d"])
def test_test_split_is_independent_of_seed(name: str) -> None:
    a, b = data.load(name, seed=0), data.load(name, seed=7)
    assert torch.equal(a.test.tensors[1], b.test.tensors[1])
    xa, xb = a.test.tensors[0].double(), b.test.tensors[0].double()
    if name == "mnist1d":
        assert torch.equal(xa, xb)
    else:  # the same raw rows, standardised with each seed's train statistics: affine per feature
        varying = xa.std(0) > 0
        corr = torch.corrcoef(torch.cat([xa[:, varying], xb[:, varying]], 1).T)
        k = int(varying.sum())
        assert torch.allclose(torch.diagonal(corr, k), torch.ones(k, dtype=corr.dtype), atol=1e-6)
        assert not torch.equal(xa, xb)


@pytest.mark.parametrize("name", data.NAMES)
def test_source_rebuilds_the_same_splits(name: str) -> None:
    s = data.load(name, seed=3, val_fraction=0.25)
    again = data.load(**s.source)
    assert torch.equal(s.val.tensors[0], again.val.tensors[0])
    assert torch.equal(s.train.tensors[1], again.train.tensors[1])


def test_digits_standardised_with_train_statistics_only() -> None:
    s = data.digits()
    x_train = s.train.tensors[0].double()
    assert x_train.mean(0).abs().max() < 1e-5
    std = x_train.std(0, unbiased=False)
    varying = std > 0
    assert varying.sum() > 50  # a few border pixels are constant
    assert torch.allclose(std[varying], torch.ones_like(std[varying]), atol=1e-4)
    for split in (s.val, s.test):
        x = split.tensors[0].double()
        assert x.mean(0).abs().max() > 1e-3  # not re-centred on its own statistics
        assert x.mean(0).abs().mean() < 0.3  # but the same scale as train
    assert s.image_shape == (8, 8) and s.to_dict()["image_shape"] == [8, 8]


def test_mnist1d_equals_make_dataset_and_restores_global_rng(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mnist1d.data

    calls: list[tuple[tuple, dict, dict]] = []
    real = mnist1d.data.make_dataset

    def spy(*args: object, **kwargs: object) -> dict:
        out = real(*args, **kwargs)
        calls.append((args, kwargs, out))
        return out

    monkeypatch.setattr(mnist1d.data, "make_dataset", spy)
    monkeypatch.setenv("BABYSIT_CACHE", str(tmp_path))  # an empty cache: generated here
    data._mnist1d_arrays.cache_clear()
    np.random.seed(123)
    random.seed(123)
    np_before, py_before = np.random.get_state(), random.getstate()
    s = data.mnist1d()
    np_after = np.random.get_state()
    assert np_after[0] == np_before[0] and np.array_equal(np_after[1], np_before[1])
    assert np_after[2:] == np_before[2:] and random.getstate() == py_before
    assert len(calls) == 1 and calls[0][:2] == ((), {})  # the published defaults
    ref = calls[0][2]
    x = torch.cat([s.train.tensors[0], s.val.tensors[0]])
    y = torch.cat([s.train.tensors[1], s.val.tensors[1]])
    assert _rows(x) == _rows(torch.as_tensor(ref["x"], dtype=torch.float32))
    label_of = {r.tobytes(): int(c) for r, c in zip(ref["x"].astype(np.float32), ref["y"])}
    assert all(label_of[r.tobytes()] == c for r, c in zip(x.numpy(), y.tolist()))  # pairs kept
    assert torch.equal(s.test.tensors[0], torch.as_tensor(ref["x_test"], dtype=torch.float32))
    assert torch.equal(s.test.tensors[1], torch.as_tensor(ref["y_test"]))
    assert ref["x"].shape == (4000, 40) and ref["x_test"].shape == (1000, 40)


def test_mnist1d_is_cached() -> None:
    data.mnist1d()
    hits = data._mnist1d_arrays.cache_info().hits
    data.mnist1d(seed=5)
    assert data._mnist1d_arrays.cache_info().hits == hits + 1


def test_spiral_classes_balanced_and_options() -> None:
    s = data.spiral(num_classes=4, points_per_class=100, test_fraction=0.0)
    assert s.test is None and s.num_classes == 4
    y = torch.cat([s.train.tensors[1], s.val.tensors[1]])
    assert torch.bincount(y).tolist() == [100] * 4
    train_counts = torch.bincount(s.train.tensors[1], minlength=4)
    assert (train_counts - len(s.train) / 4).abs().max() < 20
    assert s.train.tensors[0].abs().max() <= 1.0 + 1e-6  # radius <= 1
    assert s.source["num_classes"] == 4 and s.source["test_fraction"] == 0.0


def test_load_errors_name_the_problem() -> None:
    with pytest.raises(DataError, match="unknown data set 'mnist'; valid: digits, mnist1d, spiral"):
        data.load("mnist")
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(DataError, match=rf"val_fraction={bad}"):
            data.load("spiral", val_fraction=bad)
    with pytest.raises(DataError, match="unknown option.*noise"):
        data.load("digits", noise=0.1)
    with pytest.raises(DataError, match="noise"):
        data.spiral(noise=-1)


# ---------------------------------------------------------------------------- from_tensors


def _xy(n: int = 100, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 5)), np.arange(n) % classes


def test_from_tensors_accepts_numpy_and_tensors() -> None:
    x, y = _xy()
    s = data.from_tensors(x, y)
    assert s.num_classes == 3 and s.input_shape == (5,) and s.source is None
    assert (len(s.train), len(s.val), len(s.test)) == (64, 16, 20)
    assert s.train.tensors[0].dtype == torch.float32 and s.train.tensors[1].dtype == torch.int64
    t = data.from_tensors(torch.as_tensor(x), torch.as_tensor(y, dtype=torch.int32), test_fraction=0)
    assert t.test is None and len(t.train) + len(t.val) == 100
    assert data.from_tensors(x, y, num_classes=5).num_classes == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"y": np.arange(99) % 3}, r"len\(x\)=100 but len\(y\)=99"),
        ({"y": (np.arange(100) % 3).astype(float)}, "integer class labels"),
        ({"y": np.eye(3)[np.arange(100) % 3].astype(int)}, "1-D"),
        ({"y": np.arange(100) % 3 - 1}, r"labels in \[-1, 1\]"),
        ({"num_classes": 2}, r"labels in \[0, 2\].*num_classes=2"),
        ({"y": np.zeros(100, dtype=int)}, "at least 2 classes"),
        ({"val_fraction": 0.0}, "val_fraction=0.0"),
        ({"test_fraction": 1.0}, "test_fraction=1.0"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction \\+ test_fraction"),
        ({"x": np.full((100, 5), np.nan)}, "NaN"),
        ({"x": np.zeros(100)}, "reshape"),
    ],
)
def test_from_tensors_rejects_bad_input(kwargs: dict, message: str) -> None:
    x, y = _xy()
    args = {"x": x, "y": y, **kwargs}
    with pytest.raises(DataError, match=message):
        data.from_tensors(**args)


def test_from_tensors_too_few_examples_for_a_split() -> None:
    with pytest.raises(DataError, match="empty split"):
        data.from_tensors(np.zeros((3, 2)), np.array([0, 1, 0]))


# ---------------------------------------------------------------------------- batching


class _ListDataset(Dataset):
    """A map-style dataset that is not a TensorDataset (takes the DataLoader path)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def _toy(n: int = 23) -> TensorDataset:
    return TensorDataset(torch.arange(n, dtype=torch.float32).unsqueeze(1), torch.arange(n))


def test_fast_path_covers_every_example_once() -> None:
    ds = _toy()
    got = list(data.batches(ds, 5, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(b[1]) for b in got] == [5, 5, 5, 5, 3] and data.num_batches(ds, 5) == len(got)
    ys = torch.cat([b[1] for b in got])
    assert sorted(ys.tolist()) == list(range(23)) and ys.tolist() != list(range(23))
    assert all(torch.equal(xb[:, 0].long(), yb) for xb, yb in got)  # pairs stay together
    plain = list(data.batches(ds, 5, shuffle=False))
    assert torch.cat([b[1] for b in plain]).tolist() == list(range(23))
    assert plain[0][0].data_ptr() == ds.tensors[0].data_ptr()  # a view, no copy


def test_same_generator_state_same_order() -> None:
    ds = _toy()
    g = torch.Generator().manual_seed(42)
    state = g.get_state()
    first = torch.cat([b[1] for b in data.batches(ds, 4, shuffle=True, generator=g)])
    second = torch.cat([b[1] for b in data.batches(ds, 4, shuffle=True, generator=g)])
    g.set_state(state)
    again = torch.cat([b[1] for b in data.batches(ds, 4, shuffle=True, generator=g)])
    assert torch.equal(first, again) and not torch.equal(first, second)


def test_generic_dataset_path_agrees_with_fast_path() -> None:
    ds = _toy()
    other = _ListDataset(*ds.tensors)
    fast = list(data.batches(ds, 5, shuffle=False))
    slow = list(data.batches(other, 5, shuffle=False))
    assert len(fast) == len(slow) == data.num_batches(other, 5)
    for (xf, yf), (xs, ys) in zip(fast, slow):
        assert torch.equal(xf, xs) and torch.equal(yf, ys)
    runs = [list(data.batches(other, 5, shuffle=True, generator=torch.Generator().manual_seed(1))) for _ in range(2)]
    ys = [torch.cat([b[1] for b in run]) for run in runs]
    assert torch.equal(ys[0], ys[1]) and sorted(ys[0].tolist()) == list(range(23))
    assert all(torch.equal(xb[:, 0].long(), yb) for xb, yb in runs[0])


def test_tensors_and_to_device() -> None:
    ds = _toy()
    x, y = data.tensors(ds)
    assert x is ds.tensors[0] and y is ds.tensors[1]
    xs, ys = data.tensors(_ListDataset(*ds.tensors))
    assert torch.equal(xs, x) and torch.equal(ys, y)
    moved = data.to_device(ds, "cpu")
    assert isinstance(moved, TensorDataset) and torch.equal(moved.tensors[0], x)
    other = _ListDataset(x, y)
    assert data.to_device(other, "cpu") is other


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_batch_size_validated(bad: object) -> None:
    with pytest.raises(ConfigError, match=f"batch_size={bad!r}"):
        data.batches(_toy(), bad, shuffle=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch_size"):
        data.num_batches(_toy(), bad)  # type: ignore[arg-type]
