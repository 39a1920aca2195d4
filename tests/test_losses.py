"""Tests for babysit.losses against independent oracles (hand computation, numpy loops, autograd)."""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from babysit import losses
from babysit.errors import ConfigError


def _svm_numpy(scores: np.ndarray, y: np.ndarray, margin: float = 1.0) -> float:
    """The notes' loop: L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + margin), averaged."""
    total = 0.0
    for i in range(scores.shape[0]):
        for j in range(scores.shape[1]):
            if j != y[i]:
                total += max(0.0, scores[i, j] - scores[i, y[i]] + margin)
    return total / scores.shape[0]


def test_softmax_loss_matches_hand_computation() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([2, 0])
    by_hand = []
    for s, label in zip(scores.tolist(), y.tolist()):
        by_hand.append(-math.log(math.exp(s[label]) / sum(math.exp(v) for v in s)))
    assert losses.softmax_loss(scores, y).item() == pytest.approx(sum(by_hand) / 2, rel=1e-12)


@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_svm_loss_matches_numpy_loop(margin: float) -> None:
    rng = np.random.default_rng(0)
    scores, y = rng.standard_normal((16, 7)), rng.integers(0, 7, 16)
    got = losses.svm_loss(torch.as_tensor(scores), torch.as_tensor(y), margin=margin).item()
    assert got == pytest.approx(_svm_numpy(scores, y, margin), rel=1e-12)
    assert _svm_numpy(scores, y, margin) > 0


def test_svm_loss_gradient_matches_autograd_of_plain_formula() -> None:
    rng = np.random.default_rng(1)
    scores = torch.as_tensor(rng.standard_normal((10, 5)), dtype=torch.float64)
    y = torch.as_tensor(rng.integers(0, 5, 10))
    a = scores.clone().requires_grad_(True)
    losses.svm_loss(a, y).backward()
    b = scores.clone().requires_grad_(True)
    rows = []
    for i in range(b.shape[0]):  # the numpy-like loop, differentiated by autograd
        terms = [torch.clamp(b[i, j] - b[i, y[i]] + 1.0, min=0) for j in range(b.shape[1]) if j != y[i]]
        rows.append(torch.stack(terms).sum())
    torch.stack(rows).mean().backward()
    assert torch.allclose(a.grad, b.grad, rtol=0, atol=1e-12)
    assert a.grad.abs().sum() > 0
    # the notes' analytic form: -(count of violated margins)/N on the correct class
    violated = ((scores - scores.gather(1, y[:, None]) + 1) > 0).double().sum(1) - 1
    assert torch.allclose(a.grad.gather(1, y[:, None]).squeeze(1), -violated / 10)


def test_chance_values_and_zero_scores_give_them_exactly() -> None:
    assert losses.chance_loss("softmax", 10) == pytest.approx(2.302585, abs=1e-6)
    assert losses.chance_loss("svm", 10) == 9.0
    zeros = torch.zeros(8, 10, dtype=torch.float64)
    y = torch.arange(8)
    # float64 mean of eight ln 10 terms: equal up to one rounding
    assert losses.softmax_loss(zeros, y).item() == pytest.approx(losses.chance_loss("softmax", 10), rel=1e-15)
    assert losses.svm_loss(zeros, y).item() == losses.chance_loss("svm", 10)
    assert losses.svm_loss(torch.zeros(8, 10), y).item() == 9.0
    with pytest.raises(ConfigError, match="unknown for custom losses"):
        losses.chance_loss("custom", 10)
    with pytest.raises(ConfigError, match="num_classes=1"):
        losses.chance_loss("softmax", 1)


def test_reg_params_picks_weights_only() -> None:
    parts = nn.ModuleDict({
        "conv1d": nn.Conv1d(1, 4, 3), "bn1d": nn.BatchNorm1d(4), "conv2d": nn.Conv2d(1, 2, 3),
        "bn2d": nn.BatchNorm2d(2), "ln": nn.LayerNorm(8), "ln2d": nn.LayerNorm((2, 4)),  # 2-D norm weight
        "gn": nn.GroupNorm(2, 4), "fc": nn.Linear(8, 3),
    })
    got = [id(p) for p in losses.reg_params(parts)]
    want = [id(parts[k].weight) for k in ("conv1d", "conv2d", "fc")]
    assert sorted(got) == sorted(want)


def test_reg_params_counts_a_shared_weight_once() -> None:
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(losses.reg_params(model)) == 1


def test_l2_term_value_and_gradient() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(2.0)
    # weights: 6 + 4 entries of 2.0 -> sum W^2 = 40; biases ignored
    assert losses.l2_term(model, 0.1).item() == pytest.approx(0.5 * 0.1 * 40)
    params = losses.reg_params(model)
    term = losses.l2_term(params, 0.1)
    term.backward()
    assert torch.allclose(model[0].weight.grad, 0.1 * model[0].weight)  # d/dW 0.5 reg W^2 = reg W
    assert model[0].bias.grad is None
    assert losses.l2_term(params, 0.0).item() == 0.0
    assert losses.l2_term(iter(params), 0.5).item() == pytest.approx(0.5 * 0.5 * 40)
    assert losses.l2_term([], 0.5).item() == 0.0
    with pytest.raises(ConfigError, match="reg=-1"):
        losses.l2_term(params, -1)


def test_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert losses.resolve("softmax") == (losses.softmax_loss, "softmax")
    assert losses.resolve("svm") == (losses.svm_loss, "svm")
    assert losses.resolve(losses.svm_loss) == (losses.svm_loss, "svm")

    def mine(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return scores.sum()

    assert losses.resolve(mine) == (mine, "custom")
    (tmp_path / "my_losses_pkg.py").write_text(textwrap.dedent("""
        def half_svm(scores, y):
            return scores.abs().mean()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    fn, kind = losses.resolve("my_losses_pkg:half_svm")
    assert kind == "custom" and fn.__name__ == "half_svm"
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        losses.resolve("my_losses_pkg:nope")
    with pytest.raises(ConfigError, match="cannot import module"):
        losses.resolve("no_such_module_xyz:fn")
    with pytest.raises(ConfigError, match="loss='hinge'.*softmax, svm.*package.module:function"):
        losses.resolve("hinge")
    sys.modules.pop("my_losses_pkg", None)
