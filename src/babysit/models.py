"""Small reference models built from hyperparameters: an MLP, a 1-D CNN, and the MNIST-1D paper's CNN.

Layers carry readable names (fc1, act1, conv1, ...) because reports show them. The last
layer always starts small, so a healthy model begins at the chance-level loss (ln C).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from torch import nn

from ._check import check_choice, check_number
from ._optional import import_ref
from .errors import ConfigError
from .hparams import ACTIVATIONS, INITS, KEYS

__all__ = ["ACTIVATIONS", "INITS", "MODELS", "cnn1d", "cnn1d_paper", "from_hp", "mlp", "resolve"]

_LEAKY_SLOPE = 0.01
_LAST_LAYER_SCALE = 0.01  # small scores -> uniform softmax -> initial loss ln C

Builder = Callable[[Mapping[str, Any], tuple[int, ...], int], nn.Module]


# ---------------------------------------------------------------------------- validation


def _check_choice(field: str, value: object, valid: Sequence[str]) -> str:
    return check_choice(field, value, valid)


def _check_int(field: str, value: object, minimum: int = 1) -> int:
    return int(check_number(field, value, kind=int, low=minimum, high=2**31 - 1))  # 128.0 from a search is 128


def _check_dropout(value: object) -> float:
    return float(check_number("dropout", value, low=0.0, high=1.0, high_open=True,
                              hint="the probability of dropping a unit, e.g. 0.5"))


def _shape(input_shape: int | Iterable[int]) -> tuple[int, ...]:
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    for d in shape:
        _check_int("input_shape", d)
    if not shape:
        raise ConfigError("input_shape=(): need the shape of one example, e.g. (40,)")
    return tuple(int(d) for d in shape)


def _check_common(activation: str, init: str, dropout: float, num_classes: int) -> None:
    _check_choice("activation", activation, ACTIVATIONS)
    _check_choice("init", init, INITS)
    _check_dropout(dropout)
    _check_int("num_classes", num_classes, 2)


# ---------------------------------------------------------------------------- init


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(_LEAKY_SLOPE)
    return nn.Tanh()


def _init_layer(layer: nn.Linear | nn.Conv1d, init: str, activation: str, *, last: bool) -> None:
    """Initialise one layer in place: weights by `init`, biases zero; the last layer scaled small."""
    w = layer.weight
    if init == "kaiming":
        nn.init.kaiming_normal_(w, a=_LEAKY_SLOPE, mode="fan_in", nonlinearity=activation)  # type: ignore[arg-type]
    elif init == "xavier":
        nn.init.xavier_normal_(w, gain=nn.init.calculate_gain("tanh"))
    else:
        nn.init.normal_(w, mean=0.0, std=0.01)
    if last:
        w.data.mul_(_LAST_LAYER_SCALE)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def _init_all(model: nn.Module, last_name: str, init: str, activation: str) -> None:
    for name, module in model.named_children():
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            _init_layer(module, init, activation, last=name == last_name)


# ---------------------------------------------------------------------------- models


def mlp(
    input_shape: int | Iterable[int],
    num_classes: int,
    hidden: Sequence[int] = (100,),
    activation: str = "relu",
    dropout: float = 0.0,
    init: str = "kaiming",
) -> nn.Sequential:
    """Return a fully connected net: flatten, then (fc_i, act_i[, drop_i]) per hidden layer, then fc_N.

    ``hidden=()`` gives a linear classifier (softmax or SVM, by the loss).
    """
    _check_common(activation, init, dropout, num_classes)
    widths = [_check_int("hidden", h) for h in hidden]
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    fan_in = math.prod(_shape(input_shape))
    for i, width in enumerate(widths, 1):
        layers[f"fc{i}"] = nn.Linear(fan_in, width)
        layers[f"act{i}"] = _activation(activation)
        if dropout > 0:
            layers[f"drop{i}"] = nn.Dropout(dropout)
        fan_in = width
    last = f"fc{len(widths) + 1}"
    layers[last] = nn.Linear(fan_in, num_classes)
    model = nn.Sequential(layers)
    _init_all(model, last, init, activation)
    return model


def cnn1d(
    input_shape: int | Iterable[int],
    num_classes: int,
    channels: Sequence[int] = (32, 32, 32),
    kernel_size: int = 5,
    activation: str = "relu",
    dropout: float = 0.0,
    init: str = "kaiming",
) -> nn.Sequential:
    """Return a 1-D conv net for signals like MNIST-1D: (conv_i, act_i, pool_i[, drop_i]) per layer, then fc.

    Input (L,) is reshaped to one channel; (C, L) is used as is. Convs keep the length; max pools halve it.
    """
    _check_common(activation, init, dropout, num_classes)
    kernel_size = _check_int("kernel_size", kernel_size)
    widths = [_check_int("channels", c) for c in channels]
    shape = _shape(input_shape)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if len(shape) == 1:
        layers["reshape"] = nn.Unflatten(1, (1, shape[0]))
        in_ch, length = 1, shape[0]
    elif len(shape) == 2:
        in_ch, length = shape
    else:
        raise ConfigError(f"input_shape={shape}: cnn1d takes (L,) or (C, L); use mlp for other shapes")
    pad = kernel_size // 2  # keeps the length for odd kernels (one more for even ones)
    for i, width in enumerate(widths, 1):
        layers[f"conv{i}"] = nn.Conv1d(in_ch, width, kernel_size, padding=pad)
        layers[f"act{i}"] = _activation(activation)
        layers[f"pool{i}"] = nn.MaxPool1d(2, ceil_mode=True)
        if dropout > 0:
            layers[f"drop{i}"] = nn.Dropout(dropout)
        in_ch, length = width, math.ceil((length + 2 * pad - kernel_size + 1) / 2)
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(in_ch * length, num_classes)
    model = nn.Sequential(layers)
    _init_all(model, "fc", init, activation)
    return model


def cnn1d_paper(
    input_shape: int | Iterable[int],
    num_classes: int,
    channels: int = 25,
    activation: str = "relu",
    dropout: float = 0.0,
    init: str = "kaiming",
) -> nn.Sequential:
    """Return the CNN of the MNIST-1D paper (Greydanus 2020, "Scaling Down Deep Learning"; 94% there).

    Three stride-2 convs (kernels 5, 3, 3, padding 1) of `channels` each, then one linear layer.
    """
    _check_common(activation, init, dropout, num_classes)
    width = _check_int("channels", channels)
    shape = _shape(input_shape)
    if len(shape) > 2:
        raise ConfigError(f"input_shape={shape}: cnn1d_paper takes (L,) or (C, L); use mlp for other shapes")
    in_ch, length = (1, shape[0]) if len(shape) == 1 else shape
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if len(shape) == 1:
        layers["reshape"] = nn.Unflatten(1, (1, shape[0]))
    for i, k in enumerate((5, 3, 3), 1):
        layers[f"conv{i}"] = nn.Conv1d(in_ch, width, k, stride=2, padding=1)
        layers[f"act{i}"] = _activation(activation)
        if dropout > 0:
            layers[f"drop{i}"] = nn.Dropout(dropout)
        in_ch, length = width, (length + 2 - k) // 2 + 1
        if length < 1:
            raise ConfigError(f"input_shape={shape}: too short for cnn1d_paper's three stride-2 convs")
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(in_ch * length, num_classes)
    model = nn.Sequential(layers)
    _init_all(model, "fc", init, activation)
    return model


# ---------------------------------------------------------------------------- registry


def _hp(hp: Mapping[str, Any], key: str) -> Any:
    """Returns hp[key] checked by the key registry, or its default (the registry is the one place)."""
    value = hp.get(key)
    return KEYS[key].check(value) if value is not None else KEYS[key].default


def _common_hp(hp: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _hp(hp, k) for k in ("activation", "dropout", "init")}


def _mlp_from_hp(hp: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return mlp(input_shape, num_classes, hidden=(_hp(hp, "width"),) * _hp(hp, "depth"), **_common_hp(hp))


def _cnn1d_from_hp(hp: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    channels = (_hp(hp, "width"),) * _hp(hp, "depth")
    return cnn1d(input_shape, num_classes, channels=channels, kernel_size=_hp(hp, "kernel_size"), **_common_hp(hp))


def _cnn1d_paper_from_hp(hp: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return cnn1d_paper(input_shape, num_classes, channels=_hp(hp, "channels"), **_common_hp(hp))


MODELS: dict[str, Builder] = {"mlp": _mlp_from_hp, "cnn1d": _cnn1d_from_hp, "cnn1d_paper": _cnn1d_paper_from_hp}


def resolve(spec: str) -> Builder:
    """Return the model builder fn(hp, input_shape, num_classes) for a built-in name or "pkg.mod:fn"."""
    if isinstance(spec, str) and spec in MODELS:
        return MODELS[spec]
    if isinstance(spec, str) and ":" in spec:
        return import_ref(spec, what="model", signature="fn(hp, input_shape, num_classes) -> nn.Module")
    raise ConfigError(
        f"model={spec!r}: unknown; valid: {', '.join(sorted(MODELS))}, "
        "or 'package.module:function' naming fn(hp, input_shape, num_classes) -> nn.Module"
    )


def from_hp(
    name: str, hp: Mapping[str, Any], input_shape: int | Iterable[int], num_classes: int
) -> nn.Module:
    """Return the model `name` built from hyperparameters (width, depth, dropout, activation, init, ...).

    Keys the model does not read (lr, reg, ...) are ignored: hp is one flat dict.
    """
    return resolve(name)(hp, _shape(input_shape), num_classes)
