"""The user's own data checked before training: Datasets scanned once, errors naming split and index; the cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

import babysit as bs
from babysit.errors import DataError


class Pairs(Dataset):
    """A map-style Dataset a user might write, with one planted defect."""

    def __init__(self, n=60, bad=None, at=37):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
        self.bad, self.at = bad, at

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x, y = self.x[i], int(self.y[i])
        if i == self.at and self.bad == "label":
            y = 7
        if i == self.at and self.bad == "nan":
            x = x.clone()
            x[1] = float("nan")
        if i == self.at and self.bad == "shape":
            x = torch.zeros(5)
        return x, y


def test_clean_datasets_train(tmp_path):
    splits = bs.data.from_datasets(Pairs(), Pairs(30), num_classes=3)
    assert splits.input_shape == (4,) and splits.num_classes == 3
    run = bs.train(bs.Task(build="mlp", data=splits), {"width": 8}, epochs=1, run_dir=tmp_path / "r")
    assert run.status == "completed"


@pytest.mark.parametrize("bad, split, message", [
    ("label", "train", r"train\[37\]: label 7 is not in \[0, num_classes=3\)"),
    ("nan", "val", r"val\[37\]: the input has NaN or infinite values"),
    ("shape", "val", r"val\[37\]: input of shape \(5,\), but the first training example has shape \(4,\)"),
])
def test_a_bad_example_is_a_data_error_naming_split_and_index(bad, split, message):
    train = Pairs(bad=bad) if split == "train" else Pairs()
    val = Pairs(bad=bad) if split == "val" else Pairs()
    with pytest.raises(DataError, match=message):
        bs.data.from_datasets(train, val, num_classes=3)
    # the same when the user builds Splits by hand: the Task checks before any step
    with pytest.raises(DataError, match=message):
        bs.Task(build="mlp", data=bs.data.Splits(train, val, None, 3, (4,)))


def test_nan_in_tensors_names_the_first_bad_row(spiral):
    x, y = bs.data.tensors(spiral.train)
    x = x.clone()
    x[11, 0] = float("inf")
    splits = bs.data.Splits(torch.utils.data.TensorDataset(x, y), spiral.val, None, 3, (2,))
    with pytest.raises(DataError, match=r"train\[11\]: the input has NaN"):
        bs.check_task(bs.Task(build="mlp", data=splits), {"width": 8})


def test_labels_that_skip_a_value_are_named_not_made_into_an_empty_class():
    y = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 10] * 10)
    with pytest.raises(DataError, match=r"labels 0..10 but no 9"):
        bs.data.from_tensors(np.random.rand(100, 3), y)
    assert bs.data.from_tensors(np.random.rand(100, 3), y, num_classes=11).num_classes == 11


def test_a_large_dataset_is_scanned_through_a_bounded_sample():
    scan = bs.data.scan(Pairs(n=300), "train", limit=50)
    assert scan.sampled and scan.checked == 50 and scan.size == 300


def _load_in_new_process(cache: Path) -> subprocess.CompletedProcess:
    code = ("import mnist1d.data, babysit as bs\n"
            "def fail(*a, **k): raise SystemExit('regenerated')\n"
            "import sys\n"
            "if sys.argv[1] == 'cached': mnist1d.data.make_dataset = fail\n"
            "print(len(bs.data.load('mnist1d').train))")
    env = {**os.environ, "BABYSIT_CACHE": str(cache), "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    return lambda mode: subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, env=env,
                                       timeout=300)


def test_mnist1d_is_generated_once_then_read_from_the_cache(tmp_path):
    run = _load_in_new_process(tmp_path)
    assert run("fresh").stdout.strip() == "3200"
    assert (tmp_path / "mnist1d-v1.npz").is_file() and (tmp_path / "mnist1d-v1.sha256").is_file()
    cached = run("cached")  # a second process: make_dataset would exit, so it must not be called
    assert cached.returncode == 0 and cached.stdout.strip() == "3200", cached.stderr
    data = bytearray((tmp_path / "mnist1d-v1.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "mnist1d-v1.npz").write_bytes(bytes(data))  # a corrupted cache file
    assert "regenerated" in run("cached").stderr  # detected: the generator is called again
    again = run("fresh")
    assert again.returncode == 0 and "checksum" in again.stderr
    assert run("cached").returncode == 0  # and the cache is good again
