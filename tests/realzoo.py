"""Real-style code for the gradient checker, written here: numpy layers in the CS231n convention and torch cases.

Layers: forward(*inputs, *params) -> (out, cache), backward(dout, cache) -> gradients, one per array input.
Each `broken_*` variant carries one realistic mistake; `BROKEN` names the gradient it breaks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.autograd import Function

# ------------------------------------------------------------------------------------- numpy layers


def affine_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, tuple]:
    flat = x.reshape(x.shape[0], -1)
    return flat @ w + b, (x, w, b)


def affine_backward(dout: np.ndarray, cache: tuple) -> tuple:
    x, w, _ = cache
    flat = x.reshape(x.shape[0], -1)
    return (dout @ w.T).reshape(x.shape), flat.T @ dout, dout.sum(axis=0)


def broken_affine_backward(dout: np.ndarray, cache: tuple) -> tuple:
    x, w, _ = cache
    flat = x.reshape(x.shape[0], -1)
    return (dout @ w.T).reshape(x.shape), flat.T @ dout / x.shape[0], dout.sum(axis=0)  # a stray 1/N on dw


def keepdims_affine_backward(dout: np.ndarray, cache: tuple) -> tuple:
    dx, dw, db = affine_backward(dout, cache)
    return dx, dw, db.reshape(1, -1)  # a (1, M) bias gradient for an (M,) bias


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.maximum(0, x), x


def relu_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    return dout * (cache > 0)


def broken_relu_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    return (cache > 0).astype(float)  # the local derivative only: dout forgotten


def batchnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, bn_param: dict) -> tuple:
    eps = bn_param.get("eps", 1e-5)
    mu, var = x.mean(axis=0), x.var(axis=0)
    xhat = (x - mu) / np.sqrt(var + eps)
    bn_param["running_mean"] = 0.9 * bn_param.get("running_mean", 0.0) + 0.1 * mu
    return gamma * xhat + beta, (xhat, gamma, np.sqrt(var + eps))


def batchnorm_backward(dout: np.ndarray, cache: tuple) -> tuple:
    xhat, gamma, std = cache
    dxhat = dout * gamma
    dx = (dxhat - dxhat.mean(axis=0) - xhat * (dxhat * xhat).mean(axis=0)) / std
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def broken_batchnorm_backward(dout: np.ndarray, cache: tuple) -> tuple:
    xhat, gamma, std = cache
    dxhat = dout * gamma
    dx = (dxhat - xhat * (dxhat * xhat).mean(axis=0)) / std  # the mean(dxhat) term forgotten
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def dropout_forward(x: np.ndarray, dropout_param: dict) -> tuple:
    p = dropout_param["p"]  # keep probability (inverted dropout)
    mask = (np.random.default_rng(dropout_param["seed"]).random(x.shape) < p) / p
    return x * mask, mask


def dropout_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return dout * mask


def broken_dropout_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return dout / 0.5  # scaled, but the mask forgotten


def conv_forward_naive(x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict) -> tuple:
    s, pad = conv_param["stride"], conv_param["pad"]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    f, _, hh, ww = w.shape
    ho, wo = 1 + (xp.shape[2] - hh) // s, 1 + (xp.shape[3] - ww) // s
    out = np.zeros((x.shape[0], f, ho, wo))
    for i in range(ho):
        for j in range(wo):
            window = xp[:, :, i * s:i * s + hh, j * s:j * s + ww]
            out[:, :, i, j] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out, (x, w, b, conv_param)


def _conv_backward(dout: np.ndarray, cache: tuple, overwrite_dw: bool) -> tuple:
    x, w, _, conv_param = cache
    s, pad = conv_param["stride"], conv_param["pad"]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    _, _, hh, ww = w.shape
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            window = xp[:, :, i * s:i * s + hh, j * s:j * s + ww]
            g = dout[:, :, i, j]
            dxp[:, :, i * s:i * s + hh, j * s:j * s + ww] += np.tensordot(g, w, axes=([1], [0]))
            contribution = np.tensordot(g, window, axes=([0], [0]))
            dw = contribution if overwrite_dw else dw + contribution  # the bug: = where += is needed
    dx = dxp[:, :, pad:pad + x.shape[2], pad:pad + x.shape[3]]
    return dx, dw, dout.sum(axis=(0, 2, 3))


def conv_backward_naive(dout: np.ndarray, cache: tuple) -> tuple:
    return _conv_backward(dout, cache, False)


def broken_conv_backward_naive(dout: np.ndarray, cache: tuple) -> tuple:
    return _conv_backward(dout, cache, True)


def max_pool_forward_naive(x: np.ndarray, pool_param: dict) -> tuple:
    ph, pw, s = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    ho, wo = 1 + (x.shape[2] - ph) // s, 1 + (x.shape[3] - pw) // s
    out = np.zeros(x.shape[:2] + (ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = x[:, :, i * s:i * s + ph, j * s:j * s + pw].max(axis=(2, 3))
    return out, (x, pool_param)


def _pool_backward(dout: np.ndarray, cache: tuple, assign: bool) -> np.ndarray:
    x, pool_param = cache
    ph, pw, s = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    dx = np.zeros_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    window = x[n, c, i * s:i * s + ph, j * s:j * s + pw]
                    a, b = np.unravel_index(np.argmax(window), window.shape)
                    if assign:
                        dx[n, c, i * s + a, j * s + b] = dout[n, c, i, j]  # the bug: overlapping windows overwrite
                    else:
                        dx[n, c, i * s + a, j * s + b] += dout[n, c, i, j]
    return dx


def max_pool_backward_naive(dout: np.ndarray, cache: tuple) -> np.ndarray:
    return _pool_backward(dout, cache, False)


def broken_max_pool_backward_naive(dout: np.ndarray, cache: tuple) -> np.ndarray:
    return _pool_backward(dout, cache, True)


def svm_loss(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    n = x.shape[0]
    margins = np.maximum(0, x - x[np.arange(n), y][:, None] + 1.0)
    margins[np.arange(n), y] = 0
    active = (margins > 0).astype(float)
    active[np.arange(n), y] = -active.sum(axis=1)
    return float(margins.sum() / n), active / n


def broken_svm_loss(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    loss, _ = svm_loss(x, y)
    n = x.shape[0]
    margins = np.maximum(0, x - x[np.arange(n), y][:, None] + 1.0)
    margins[np.arange(n), y] = 0
    return loss, (margins > 0) / n  # the -count on the correct class forgotten


def softmax_loss(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    n = x.shape[0]
    z = x - x.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(n), y]).mean()
    p[np.arange(n), y] -= 1
    return float(loss), p / n


def broken_softmax_loss(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    loss, dx = softmax_loss(x, y)
    return loss, dx * x.shape[0]  # the 1/N forgotten in the gradient


# --------------------------------------------------------------------------- layer cases at one seed


def layer_case(name: str, seed: int, kink: bool = False) -> dict[str, Any]:
    """Returns forward, backward, broken backward, inputs, params and the broken gradient's name.

    kink=True puts points exactly on the layer's kinks: zeros into relu's input, ties into max-pool windows.
    """
    rng = np.random.default_rng(seed)
    if name == "affine":
        inputs = (rng.normal(size=(3, 2, 2)), rng.normal(size=(4, 5)), rng.normal(size=5))
        return {"forward": affine_forward, "backward": affine_backward, "broken": broken_affine_backward,
                    "inputs": inputs, "params": None, "breaks": "w"}
    if name == "relu":
        x = rng.normal(size=(4, 5))
        if kink:
            x[0, 0] = x[2, 3] = 0.0
        return {"forward": relu_forward, "backward": relu_backward, "broken": broken_relu_backward, "inputs": (x,),
                    "params": None, "breaks": "x"}
    if name == "batchnorm":
        inputs = (rng.normal(size=(4, 3)) * 0.01, rng.normal(size=3), rng.normal(size=3))
        return {"forward": batchnorm_forward, "backward": batchnorm_backward, "broken": broken_batchnorm_backward,
                    "inputs": inputs, "params": ({"eps": 1e-5},), "breaks": "x"}
    if name == "dropout":
        return {"forward": dropout_forward, "backward": dropout_backward, "broken": broken_dropout_backward,
                    "inputs": (rng.normal(size=(3, 6)),), "params": ({"p": 0.5, "seed": seed},), "breaks": "x"}
    if name == "conv":
        inputs = (rng.normal(size=(2, 2, 3, 3)), rng.normal(size=(2, 2, 3, 3)), rng.normal(size=2))
        return {"forward": conv_forward_naive, "backward": conv_backward_naive, "broken": broken_conv_backward_naive,
                    "inputs": inputs, "params": ({"stride": 1, "pad": 1},), "breaks": "w"}
    if name == "maxpool":
        x = rng.normal(size=(1, 2, 4, 4))
        if kink:
            x[0, 0, 1, 1] = x[0, 0, 1, 2] = np.abs(x).max() + 1.0  # a tie for the max in overlapping windows
        return {"forward": max_pool_forward_naive, "backward": max_pool_backward_naive,
                    "broken": broken_max_pool_backward_naive, "inputs": (x,),
                    "params": ({"pool_height": 2, "pool_width": 2, "stride": 1},), "breaks": "x"}
    raise KeyError(name)


LAYERS = ["affine", "relu", "batchnorm", "dropout", "conv", "maxpool"]


def loss_case(name: str, seed: int, kink: bool = False) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """Returns (loss, broken loss, scores, labels); kink=True puts one SVM margin exactly on its hinge."""
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(4, 3)), rng.integers(0, 3, size=4)
    if kink:
        j = (y[0] + 1) % 3
        x[0, y[0]], x[0, j] = 0.5, -0.5  # margin s_j - s_y + 1 == 0 exactly
    if name == "svm":
        return svm_loss, broken_svm_loss, x, y
    return softmax_loss, broken_softmax_loss, x, y


# ---------------------------------------------------------------------------------------- torch cases


class ISRLU(Function):
    """Inverse square root linear unit: x for x >= 0, x / sqrt(1 + a x^2) below (a = 1)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.where(x >= 0, x, x / torch.sqrt(1 + x * x))

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad_output * torch.where(x >= 0, torch.ones_like(x), (1 + x * x) ** -1.5)


class ISRLUIgnoresGradOutput(ISRLU):
    """The reported bug: backward returns the local derivative without multiplying by grad_output."""

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return torch.where(x >= 0, torch.ones_like(x), (1 + x * x) ** -1.5)


isrlu_broken = ISRLUIgnoresGradOutput.apply  # how tutorials alias it


class Scaled(Function):
    """y = alpha * x * w with a non-tensor argument (alpha) and a tensor that needs no gradient check by name."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.alpha = alpha
        return alpha * x * w

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        x, w = ctx.saved_tensors
        return ctx.alpha * g * w, ctx.alpha * g * x, None


class SigmoidSurrogate(Function):
    """A spike's surrogate gradient: forward sigmoid(k x); backward k e^(-kx) / (1 + e^(-kx))^2.

    Right in float64; in float32 e^(-kx) overflows for kx < -88 and inf / inf is NaN.
    """

    k = 25.0

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.sigmoid(SigmoidSurrogate.k * x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        e = torch.exp(-SigmoidSurrogate.k * x)
        return g * SigmoidSurrogate.k * e / (1 + e) ** 2


class StableSurrogate(SigmoidSurrogate):
    """The fix: k s (1 - s) with s = sigmoid(k x)."""

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(StableSurrogate.k * x)
        return g * StableSurrogate.k * s * (1 - s)


class SquareCancels(Function):
    """y = x^2 whose backward computes 2 ((x + c) - c): exact in float64, ~5% off in float32 (c = 1e6)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return g * 2 * ((x + 1e6) - 1e6)


class Spiking(nn.Module):
    """Linear -> surrogate spike -> Linear."""

    def __init__(self, fn: type[Function]) -> None:
        super().__init__()
        self.lin, self.out, self.fn = nn.Linear(6, 8), nn.Linear(8, 3), fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fn.apply(self.lin(x)))


class Binarised(nn.Module):
    """tanh features plus their binarised copy: (z > 0).float() breaks a float64 copy of the model."""

    def __init__(self, first: nn.Module | None = None) -> None:
        super().__init__()
        self.lin, self.out, self.gate = first or nn.Linear(6, 8), nn.Linear(8, 3), nn.Linear(8, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.tanh(self.lin(x))
        return self.out(z) + self.gate((z > 0).float())


class TwoLayerNet(nn.Module):
    """A hand-written backprop exercise: forward(x, y) returns its own softmax loss."""

    def __init__(self, act: Any = torch.relu) -> None:
        super().__init__()
        self.w1, self.w2 = nn.Parameter(torch.randn(6, 7) * 0.5), nn.Parameter(torch.randn(7, 3) * 0.5)
        self.act = act

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        scores = self.act(x @ self.w1) @ self.w2
        return torch.nn.functional.cross_entropy(scores, y)
