"""Preflight: check_task runs the gradient checks (data loss, then L2 alone) and the sanity checks."""

from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn

import babysit as bs


class _BadBackward(torch.autograd.Function):
    """tanh whose backward forgets the square: 1 - y instead of 1 - y**2."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y)


class BrokenNet(nn.Module):
    def __init__(self, d, c):
        super().__init__()
        self.hidden = nn.Linear(d, 32)
        self.out = nn.Linear(32, c)

    def forward(self, x):
        return self.out(_BadBackward.apply(self.hidden(x)))


def broken_net(hp, input_shape, num_classes):
    return BrokenNet(input_shape[0], num_classes)


@pytest.fixture(scope="module")
def mnist1d():
    return bs.data.load("mnist1d")


def test_healthy_mnist1d_mlp_passes_everything_in_seconds(mnist1d):
    torch.set_num_threads(2)
    task = bs.Task(build="mlp", data=mnist1d)
    bs.check_task(task, {"width": 128}, sanity=False)  # warm-up: first dispatch-mode use imports sympy
    start = time.perf_counter()
    rep = bs.check_task(task, {"width": 128, "depth": 2})
    seconds = time.perf_counter() - start
    assert rep.ok, str(rep)
    assert rep.gradients.ok and rep.regularisation.ok and rep.sanity.ok
    assert [c.name for c in rep.sanity.checks] == ["chance_loss", "reg_raises_loss", "overfit_tiny",
                                                   "learnable_signal", "batch_independence", "params_get_gradient"]
    assert set(rep.gradients.by_tensor) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight",
                                            "fc3.bias"}
    assert seconds < 15, f"preflight took {seconds:.1f} s (target: under 15 s on 2 cores)"
    assert "preflight PASSED" in str(rep)
    json.dumps(rep.to_dict(), default=str)


def test_a_wrong_backward_fails_and_names_the_tensor(mnist1d):
    task = bs.Task(build=lambda hp: BrokenNet(40, 10), data=mnist1d)
    rep = bs.check_task(task, {}, sanity=False)
    assert not rep.ok and not rep.gradients.ok
    assert rep.gradients.worst.name == "hidden.weight" or not rep.gradients.by_tensor["hidden.weight"].ok
    assert not rep.gradients.by_tensor["hidden.bias"].ok and rep.gradients.by_tensor["out.weight"].ok
    assert rep.regularisation.ok  # the L2 term alone is still right
    assert "preflight FAILED" in str(rep)


def test_the_l2_term_alone_is_checked_with_the_data_loss_off(mnist1d):
    task = bs.Task(build="mlp", data=mnist1d)
    rep = bs.check_task(task, {"width": 16}, sanity=False)
    reg = rep.regularisation
    assert reg.ok
    # with reg = 1 and the data loss off, the gradient of fc1.weight is the weight itself: far from zero
    assert abs(reg.by_tensor["fc1.weight"].max_rel_error) < 1e-4
    nonzero = [e for e in reg.entries if e.name.endswith("weight") and e.kind == "coordinate" and e.analytic != 0]
    assert nonzero, "the L2-alone check must see non-zero gradients"
    assert all(e.analytic == 0 for e in reg.entries if e.name.endswith("bias"))  # no L2 on biases


def test_sanity_subset_and_bad_names(mnist1d):
    task = bs.Task(build="mlp", data=mnist1d)
    rep = bs.check_task(task, {"width": 16}, checks=["chance_loss"])
    assert [c.name for c in rep.sanity.checks] == ["chance_loss"]
    with pytest.raises(bs.ConfigError, match="valid: chance_loss"):
        bs.check_task(task, {"width": 16}, checks=["chance"])
    with pytest.raises(bs.ConfigError, match=r"hp\['lr'\]"):
        bs.check_task(task, {"lr": -1})
