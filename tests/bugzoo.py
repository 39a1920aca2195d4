"""A zoo of realistically broken layers and losses, and correct models with kinks, for the gradient checker.

Every broken case names the tensors whose gradient is wrong (`broken`); a checker must fail it and
blame one of them. The correct cases are piecewise-linear in places (ReLU, max-pool, hinge, clamp)
and must pass at any seed; `place_kink` moves a model so that one unit sits exactly on a kink.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function

# --------------------------------------------------------------------------------------------- layers


class LinearFn(Function):
    """y = x W^T + b with a hand-written backward (the correct one; bugs override `grads`)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        return x @ w.t() + b

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        x, w = ctx.saved_tensors
        return g @ w, g.t() @ x, g.sum(0)


class TransposeBugFn(LinearFn):
    """grad_W = x^T g instead of g^T x: shapes agree on a square layer, values do not."""

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        x, w = ctx.saved_tensors
        return g @ w, x.t() @ g, g.sum(0)


class BiasAxisBugFn(LinearFn):
    """Bias gradient summed over the features instead of the batch (batch == out features)."""

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        x, w = ctx.saved_tensors
        return g @ w, g.t() @ x, g.sum(1)


class SignBugFn(LinearFn):
    """Bias gradient with the wrong sign."""

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        x, w = ctx.saved_tensors
        return g @ w, g.t() @ x, -g.sum(0)


class LastRowBugFn(LinearFn):
    """Off-by-one: the loop over output rows stops one short, so the last row's gradient stays 0."""

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        x, w = ctx.saved_tensors
        gw = torch.zeros_like(w)
        gw[:-1] = g.t()[:-1] @ x
        return g @ w, gw, g.sum(0)


class ZeroColumnBugFn(LinearFn):
    """One input column of the weight gradient is zeroed (a bad index in a large layer)."""

    column = 137

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        x, w = ctx.saved_tensors
        gw = g.t() @ x
        gw[:, ZeroColumnBugFn.column] = 0
        return g @ w, gw, g.sum(0)


class StaleBufferFn(Function):
    """Linear whose backward accumulates grad_W into a persistent buffer and returns the buffer."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.buf = buf
        return x @ w.t() + b

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        x, w = ctx.saved_tensors
        ctx.buf.add_(g.t() @ x)  # should have been a fresh tensor
        return g @ w, ctx.buf.clone(), g.sum(0), None


class FnLinear(nn.Module):
    """nn.Linear driven by a custom autograd Function."""

    def __init__(self, n_in: int, n_out: int, fn: type[Function] = LinearFn) -> None:
        super().__init__()
        ref = nn.Linear(n_in, n_out)
        self.weight, self.bias, self.fn = nn.Parameter(ref.weight.detach()), nn.Parameter(ref.bias.detach()), fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn.apply(x, self.weight, self.bias)


class StaleLinear(FnLinear):
    """FnLinear with the stateful backward."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__(n_in, n_out)
        self.register_buffer("buf", torch.zeros(n_out, n_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return StaleBufferFn.apply(x, self.weight, self.bias, self.buf)


# ---------------------------------------------------------------------------------------- activations


def _unary(name: str, fwd: Callable, bwd: Callable) -> type[Function]:
    """Returns an autograd Function y = fwd(x) with backward g * bwd(x, y)."""

    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = fwd(x)
        ctx.save_for_backward(x, y)
        return y

    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        x, y = ctx.saved_tensors
        return g * bwd(x, y)

    return type(name, (Function,), {"forward": staticmethod(forward), "backward": staticmethod(backward)})


SquareMissing2 = _unary("SquareMissing2", lambda x: x * x, lambda x, y: x)              # d x^2 = 2x
SigmoidUsesInput = _unary("SigmoidUsesInput", torch.sigmoid, lambda x, y: x * (1 - x))  # y (1 - y)
TanhOneMinusX = _unary("TanhOneMinusX", torch.tanh, lambda x, y: 1 - x)                  # 1 - y^2
ReluNoMask = _unary("ReluNoMask", lambda x: x.clamp(min=0), lambda x, y: torch.ones_like(x))  # x > 0


class Act(nn.Module):
    """A module applying a custom autograd Function."""

    def __init__(self, fn: type[Function]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn.apply(x)


class NormForgetsMean(Function):
    """Per-sample normalisation (x - mean) / std whose backward forgets the mean(g) term."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        mu, sd = x.mean(1, keepdim=True), (x.var(1, unbiased=False, keepdim=True) + 1e-5).sqrt()
        y = (x - mu) / sd
        ctx.save_for_backward(y, sd)
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        y, sd = ctx.saved_tensors
        return (g - y * (g * y).mean(1, keepdim=True)) / sd  # missing "- g.mean(1, keepdim=True)"


class DropoutForgetsMask(Function):
    """Inverted dropout whose backward scales by 1/(1-p) but forgets to apply the mask."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float) -> torch.Tensor:
        ctx.p = p
        return x * (torch.rand_like(x) > p) / (1 - p)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        return g / (1 - ctx.p), None


class BadDropout(nn.Module):
    """Dropout layer (identity in eval mode) using DropoutForgetsMask in train mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return DropoutForgetsMask.apply(x, 0.5) if self.training else x


class DetachedGate(nn.Module):
    """out = sigmoid(G x) * (L x), with the gate detached by mistake: G never gets a gradient."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.gate, self.lin = nn.Linear(n_in, n_out), nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate(x)).detach() * self.lin(x)


# --------------------------------------------------------------------------------------------- losses


class MeanMissing1OverN(Function):
    """Mean of per-sample losses whose backward forgets the 1/N."""

    @staticmethod
    def forward(ctx: Any, losses: torch.Tensor) -> torch.Tensor:
        ctx.shape = losses.shape
        return losses.mean()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g * torch.ones(ctx.shape, dtype=g.dtype)


class SoftmaxCEForgetsOneHot(Function):
    """Softmax cross-entropy whose backward is p/N instead of (p - onehot)/N."""

    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logp = scores.log_softmax(1)
        ctx.save_for_backward(logp.exp())
        return -logp.gather(1, y[:, None]).mean()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        (p,) = ctx.saved_tensors
        return g * p / p.shape[0], None


class SvmForgetsCorrectClass(Function):
    """Multiclass SVM (Weston-Watkins) whose backward forgets -count on the correct class."""

    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        margins = (scores - scores.gather(1, y[:, None]) + 1).clamp(min=0)
        margins = margins.scatter(1, y[:, None], 0.0)
        ctx.save_for_backward((margins > 0).to(scores.dtype))
        return margins.sum() / scores.shape[0]

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        (active,) = ctx.saved_tensors
        return g * active / active.shape[0], None  # missing: active[i, y_i] -= active[i].sum()


class L2ForgetsGradient(Function):
    """0.5 * reg * sum(W^2) whose backward was never written (returns zeros)."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, reg: float) -> torch.Tensor:
        ctx.save_for_backward(w)
        return 0.5 * reg * (w * w).sum()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        (w,) = ctx.saved_tensors
        return torch.zeros_like(w), None


def svm_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Returns the Weston-Watkins multiclass SVM loss written with plain torch ops (correct)."""
    margins = (scores - scores.gather(1, y[:, None]) + 1).clamp(min=0)
    return margins.scatter(1, y[:, None], 0.0).sum() / scores.shape[0]


# ---------------------------------------------------------------------------------------------- cases


@dataclass
class Case:
    """A model, its loss and batch, the check's extra options, and which tensors are wrong."""

    name: str
    model: nn.Module
    loss_fn: Callable[[Any, Any], torch.Tensor]
    batch: tuple[torch.Tensor, torch.Tensor]
    broken: frozenset[str] = frozenset()
    kwargs: dict[str, Any] = field(default_factory=dict)


def _batch(seed: int, n_in: int = 6, n: int = 4, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns a Gaussian batch (x, y) from its own generator."""
    gen = torch.Generator().manual_seed(1000 + seed)
    return torch.randn(n, n_in, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def _mlp(act: nn.Module, n_in: int = 6, hidden: int = 5, classes: int = 3) -> nn.Sequential:
    """Returns Linear -> act -> Linear."""
    return nn.Sequential(nn.Linear(n_in, hidden), act, nn.Linear(hidden, classes))


FIRST = frozenset({"0.weight", "0.bias"})
ALL2 = frozenset({"0.weight", "0.bias", "2.weight", "2.bias"})


def _bugs(seed: int) -> list[Case]:
    """Returns the broken cases (model init seeded by `seed`)."""
    torch.manual_seed(seed)
    x, y = _batch(seed)
    ce = F.cross_entropy
    xl = torch.randn(4, 300, generator=torch.Generator().manual_seed(seed))
    return [
        Case("square_missing_2", _mlp(Act(SquareMissing2)), ce, (x, y), FIRST),
        Case("mean_missing_1_over_n", _mlp(nn.ReLU()), lambda o, t: MeanMissing1OverN.apply(
            F.cross_entropy(o, t, reduction="none")), (x, y), ALL2),
        Case("wrong_transpose", nn.Sequential(FnLinear(6, 6, TransposeBugFn), nn.Tanh(), nn.Linear(6, 3)),
             ce, (x, y), frozenset({"0.weight"})),
        Case("bias_summed_over_wrong_axis", nn.Sequential(FnLinear(6, 4, BiasAxisBugFn), nn.Tanh(),
                                                          nn.Linear(4, 3)), ce, (x, y), frozenset({"0.bias"})),
        Case("forgotten_reg_gradient", _mlp(nn.ReLU()), lambda o, t: o.sum() * 0, (x, y),
             frozenset({"0.weight", "2.weight"}),
             {"penalty": lambda m: sum(L2ForgetsGradient.apply(p, 0.1) for n, p in m.named_parameters()
                                       if p.ndim >= 2)}),
        Case("softmax_ce_off_by_onehot", _mlp(nn.Tanh()), SoftmaxCEForgetsOneHot.apply, (x, y), ALL2),
        Case("stale_buffer", nn.Sequential(StaleLinear(6, 5), nn.Tanh(), nn.Linear(5, 3)), ce, (x, y),
             frozenset({"0.weight"})),
        Case("last_row_zeroed", nn.Sequential(FnLinear(6, 5, LastRowBugFn), nn.Tanh(), nn.Linear(5, 3)),
             ce, (x, y), frozenset({"0.weight"})),
        Case("sigmoid_uses_input", _mlp(Act(SigmoidUsesInput)), ce, (x, y), FIRST),
        Case("tanh_1_minus_x", _mlp(Act(TanhOneMinusX)), ce, (x, y), FIRST),
        Case("relu_passes_negative", _mlp(Act(ReluNoMask)), ce, (x, y), FIRST),
        Case("zeroed_column_large_layer", nn.Sequential(FnLinear(300, 200, ZeroColumnBugFn), nn.Tanh(),
                                                        nn.Linear(200, 3)), ce, (xl, y), frozenset({"0.weight"})),
        Case("wrong_sign", nn.Sequential(FnLinear(6, 5, SignBugFn), nn.ReLU(), nn.Linear(5, 3)), ce, (x, y),
             frozenset({"0.bias"})),
        Case("norm_forgets_mean", nn.Sequential(nn.Linear(6, 5), Act(NormForgetsMean), nn.Linear(5, 3)), ce,
             (x, y), FIRST),
        Case("svm_forgets_correct_class", nn.Sequential(nn.Linear(6, 3)), SvmForgetsCorrectClass.apply,
             (x, y), frozenset({"0.weight", "0.bias"})),
        Case("dropout_forgets_mask", nn.Sequential(nn.Linear(6, 8), BadDropout(), nn.Tanh(), nn.Linear(8, 3)),
             ce, (x, y), FIRST, {"stochastic": "seeded"}),
        Case("detach_cuts_path", nn.Sequential(DetachedGate(6, 5), nn.Tanh(), nn.Linear(5, 3)), ce, (x, y),
             frozenset({"0.gate.weight", "0.gate.bias"})),
    ]


BUG_NAMES = [c.name for c in _bugs(0)]


def bug(name: str, seed: int = 0) -> Case:
    """Returns the broken case `name` built with `seed`."""
    return next(c for c in _bugs(seed) if c.name == name)


# ------------------------------------------------------------------------------------------ correct


class ClampAbsWhere(nn.Module):
    """A custom layer written with plain torch ops: where-based leaky branch, abs and a clamp."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.lin(x)
        return torch.where(z > 0, z, 0.1 * z) + 0.5 * z.abs().clamp(max=1.0) - (z.clamp(-0.5, 0.5) ** 2)


class PoolNet(nn.Module):
    """Conv -> ReLU -> 2x2 max-pool -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 3, 3, padding=1), nn.Linear(3 * 3 * 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.max_pool2d(F.relu(self.conv(x.view(-1, 1, 6, 6))), 2).flatten(1))


def correct(name: str, seed: int) -> Case:
    """Returns a correct model with kinks, built with `seed` (model init and batch)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(2000 + seed)
    x, y = torch.randn(4, 6, generator=gen), torch.randint(0, 3, (4,), generator=gen)
    ce = F.cross_entropy
    if name == "relu_mlp":
        return Case(name, nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)),
                    ce, (x, y))
    if name == "leaky_relu_mlp":
        return Case(name, _mlp(nn.LeakyReLU(0.1), hidden=8), ce, (x, y))
    if name == "svm_linear":
        return Case(name, nn.Sequential(nn.Linear(6, 3)), svm_loss, (x, y))
    if name == "maxpool_convnet":
        return Case(name, PoolNet(), ce, (torch.randn(4, 36, generator=gen), y))
    if name == "clamp_abs_where":
        return Case(name, nn.Sequential(ClampAbsWhere(6, 8), nn.Linear(8, 3)), ce, (x, y))
    raise KeyError(name)


CORRECT_NAMES = ["relu_mlp", "leaky_relu_mlp", "svm_linear", "maxpool_convnet", "clamp_abs_where"]


def first_bias(model: nn.Module) -> torch.Tensor:
    """Returns the bias of the first layer (the one feeding the first kinked op)."""
    return next(p for n, p in model.named_parameters() if n.endswith("bias"))


@torch.no_grad()
def place_kink(case: Case, offset: float = 0.0) -> None:
    """Moves the first bias so that one kinked unit of sample 0 sits at `offset` from its kink.

    Unit 0 of the first layer for the nets (an edge index, always sampled); for the SVM, the margin of
    sample 0 against its first wrong class.
    """
    x, y = case.batch
    b = first_bias(case.model)
    if case.name == "svm_linear":
        s = case.model(x)
        j = 1 if int(y[0]) == 0 else 0
        b[j] -= s[0, j] - s[0, int(y[0])] + 1 - offset
        return
    first = case.model.conv if case.name == "maxpool_convnet" else case.model[0]
    first = getattr(first, "lin", first)
    z = first(x.view(-1, 1, 6, 6) if case.name == "maxpool_convnet" else x)
    b[0] -= z.reshape(z.shape[0], -1)[0, 0] - offset
