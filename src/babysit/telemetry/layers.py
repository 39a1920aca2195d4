"""Which modules telemetry watches, and what each one's output means (dead units, saturation).

Forward hooks see modules, not functions: an F.relu called inside forward() is invisible. The
probe pass then reads the next Linear/Conv layer's input instead, when it is non-negative.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["Layer", "watched_layers", "first_weight_layer", "named_trainable"]

_RELU = (nn.ReLU, nn.ReLU6)
_SATURATING = {nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.Hardtanh: "tanh"}
_OTHER_ACT = (nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Softplus, nn.PReLU, nn.Mish, nn.SELU, nn.CELU)
_WEIGHT = (nn.Linear, nn.modules.conv._ConvNd)


@dataclass(frozen=True)
class Layer:
    """A watched module: its qualified name and kind ("linear", "conv", "relu", "tanh", "sigmoid", "act")."""

    name: str
    module: nn.Module
    kind: str

    @property
    def has_weight(self) -> bool:
        """Returns True for Linear and Conv layers (their input can stand for an invisible F.relu)."""
        return self.kind in ("linear", "conv")


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, _RELU):
        return "relu"
    for cls, kind in _SATURATING.items():
        if isinstance(module, cls):
            return kind
    if isinstance(module, _OTHER_ACT):
        return "act"
    return None


def watched_layers(model: nn.Module) -> list[Layer]:
    """Returns the Linear/Conv layers and activation modules of a model, in registration order."""
    out = []
    for name, module in model.named_modules():
        kind = _kind(module)
        if kind is not None:
            out.append(Layer(name or type(module).__name__, module, kind))
    return out


def first_weight_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """Returns (name, module) of the first Linear/Conv layer in registration order, or None."""
    for name, module in model.named_modules():
        if isinstance(module, _WEIGHT):
            return name or type(module).__name__, module
    return None


def named_trainable(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]], list[str], dict[str, list[str]]]:
    """Returns (trainable (name, param) once each, frozen names, {name: other names of a shared param})."""
    seen: dict[int, str] = {}
    shared: dict[str, list[str]] = {}
    trainable: list[tuple[str, nn.Parameter]] = []
    frozen: list[str] = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            shared.setdefault(seen[id(p)], []).append(name)
        elif p.requires_grad:
            seen[id(p)] = name
            trainable.append((name, p))
        else:
            seen[id(p)] = name
            frozen.append(name)
    return trainable, frozen, shared
