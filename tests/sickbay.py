"""Sick runs for the diagnose tests: each really trains a few epochs on built-in data, with one known cause.

CASES maps a name to (task maker, hp, epochs); expected codes and the codes that would point at
another cause live in the tests. Models are small so the whole sickbay trains in seconds.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

import babysit as bs

BASE = {"optimizer": "adam", "lr": 3e-3, "width": 64, "depth": 2, "batch_size": 32}


def _mlp(hp: dict[str, Any], splits: bs.data.Splits) -> torch.nn.Module:
    return bs.models.from_hp("mlp", hp, splits.input_shape, splits.num_classes)


def dead_relu_task(splits: bs.data.Splits) -> bs.Task:
    """A ReLU layer whose bias starts at -20: every unit of act1 is <= 0 for every input."""
    def build(hp: dict[str, Any]) -> torch.nn.Module:
        model = _mlp(hp, splits)
        with torch.no_grad():
            model.fc1.bias.fill_(-20.0)
        return model
    return bs.Task(build=build, data=splits)


def saturated_tanh_task(splits: bs.data.Splits) -> bs.Task:
    """tanh hidden layers with weights 20x their init: almost every unit sits at +-1."""
    def build(hp: dict[str, Any]) -> torch.nn.Module:
        model = _mlp({**hp, "activation": "tanh"}, splits)
        with torch.no_grad():
            model.fc1.weight.mul_(20.0)
            model.fc2.weight.mul_(20.0)
        return model
    return bs.Task(build=build, data=splits)


def big_last_layer_task(splits: bs.data.Splits) -> bs.Task:
    """The last layer initialised 300x larger than babysit's small last layer: the loss at init is far above ln C."""
    def build(hp: dict[str, Any]) -> torch.nn.Module:
        model = _mlp(hp, splits)
        with torch.no_grad():
            model.fc3.weight.mul_(300.0)
        return model
    return bs.Task(build=build, data=splits)


def small_subset(splits: bs.data.Splits, n: int) -> bs.data.Splits:
    """Returns splits whose training set is the first n examples (validation unchanged)."""
    x, y = bs.data.tensors(splits.train)
    return bs.data.Splits(torch.utils.data.TensorDataset(x[:n], y[:n]), splits.val, splits.test,
                          splits.num_classes, splits.input_shape)


def cases(digits: bs.data.Splits) -> dict[str, tuple[bs.Task, dict[str, Any], int]]:
    """Returns {name: (task, hp, epochs)} for every sick run and the healthy one."""
    plain = bs.Task(build="mlp", data=digits)
    return {
        "healthy": (plain, BASE, 8),
        "reference": (plain, {k: v for k, v in BASE.items() if k not in ("width", "depth")}, 8),  # the default MLP
        "lr_far_too_high": (plain, {**BASE, "optimizer": "momentum", "lr": 3.0}, 4),
        "lr_far_too_low": (plain, {**BASE, "optimizer": "momentum", "lr": 1e-5}, 4),
        "overfitting": (bs.Task(build="mlp", data=small_subset(digits, 100)),
                        {**BASE, "width": 512, "lr": 1e-3, "batch_size": 20}, 25),
        "underfitting": (plain, {**BASE, "width": 2, "depth": 1}, 8),
        "dead_relu": (dead_relu_task(digits), BASE, 4),
        "saturated_tanh": (saturated_tanh_task(digits), {**BASE, "optimizer": "momentum", "lr": 1e-3}, 4),
        "big_last_layer": (big_last_layer_task(digits), {**BASE, "lr": 1e-3}, 3),
        "batch_size_1": (plain, {**BASE, "optimizer": "sgd", "lr": 0.01, "batch_size": 1}, 2),
    }


def train_all(digits: bs.data.Splits, root: Any, names: Callable[[str], bool] = lambda n: True) -> dict[str, Any]:
    """Trains every case into root/<name>; returns {name: Run}."""
    out = {}
    for name, (task, hp, epochs) in cases(digits).items():
        if names(name):
            out[name] = bs.train(task, hp, epochs=epochs, run_dir=root / name, seed=0, device="cpu")
    return out
