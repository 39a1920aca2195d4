"""The objective protocol: objective(model, x, y) -> loss replaces the task's loss + L2; carried tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import babysit as bs
from babysit.errors import ConfigError
from babysit.losses import reg_params
from babysit.step import task_objective

HP = {"optimizer": "adam", "lr": 0.01, "width": 16, "depth": 1, "batch_size": 64, "reg": 1e-3}


def test_default_objective_gives_the_same_numbers_as_the_task_loss(spiral_task, tmp_path):
    plain = bs.train(spiral_task, HP, epochs=2, run_dir=tmp_path / "a")
    calls = []

    def obj(model, x, y):
        calls.append(len(y))
        return task_objective(spiral_task.loss_fn, reg_params(model), HP["reg"])(model, x, y)

    mine = bs.train(spiral_task, HP, epochs=2, run_dir=tmp_path / "b", objective=obj)
    assert calls and [r.val_loss for r in mine.history] == [r.val_loss for r in plain.history]


def test_objective_really_replaces_the_loss(spiral_task, tmp_path):
    # an objective that rewards predicting class 0 everywhere drives validation accuracy to chance
    def obj(model, x, y):
        return F.cross_entropy(model(x), torch.zeros_like(y))

    run = bs.train(spiral_task, HP, epochs=3, run_dir=tmp_path / "r", objective=obj)
    assert run.history[-1].val_acc < 0.5


def test_carried_tensors_arrive_beside_the_labels_row_aligned(spiral_task, tmp_path):
    _, y = bs.data.tensors(spiral_task.splits.train)
    seen = []

    def obj(model, xb, yb):
        labels, copy = yb
        seen.append(bool((labels == copy).all()))
        return F.cross_entropy(model(xb), labels)

    run = bs.train(spiral_task, HP, epochs=2, run_dir=tmp_path / "r", objective=obj, carry=(y.clone(),))
    assert run.status == "completed" and seen and all(seen)


def test_carry_of_the_wrong_length_is_refused(spiral_task, tmp_path):
    with pytest.raises(ConfigError, match=r"carry\[0\].*one row per training example"):
        bs.train(spiral_task, HP, epochs=1, run_dir=tmp_path / "r", objective=lambda m, x, y: m(x).sum(),
                 carry=(torch.zeros(3),))
