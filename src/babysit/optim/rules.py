"""Update rules by the notes' names (sgd, momentum, nesterov, adagrad, rmsprop, adam, lbfgs), on torch.optim.

Each rule is a factory ``(params, hp) -> torch.optim.Optimizer`` that reads its own keys from the
flat hyperparameter dict, validates them, and hands everything else to torch. babysit's L2 is a
separate loss term, so every rule runs with ``weight_decay=0``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from ..errors import ConfigError

__all__ = ["DEFAULT_LR", "RULES", "build_optimizer", "has_momentum", "is_full_batch", "set_momentum"]

Factory = Callable[[Iterable[Any], Mapping[str, Any]], torch.optim.Optimizer]

DEFAULT_LR: dict[str, float] = {
    "sgd": 1e-2,
    "momentum": 1e-2,
    "nesterov": 1e-2,
    "adagrad": 1e-2,
    "rmsprop": 1e-3,
    "adam": 1e-3,
    "lbfgs": 1.0,
}

# Which param-group entry holds each rule's momentum: SGD's "momentum", Adam's beta1 in "betas".
_MOMENTUM_KEY: dict[str, str] = {"momentum": "momentum", "nesterov": "momentum", "adam": "betas"}
_FULL_BATCH = frozenset({"lbfgs"})
# Param-group tag naming the rule: torch keeps unknown group keys, so it survives state_dict round trips.
_RULE_KEY = "babysit_rule"

_HINTS: dict[str, str] = {
    "lr": "learning rate must be > 0; search it on a log scale, e.g. loguniform(1e-6, 1)",
    "momentum": "momentum must be in [0, 1); typical values are 0.5, 0.9, 0.95, 0.99",
    "decay_rate": "RMSProp decay_rate must be in [0, 1); typical values are 0.9, 0.99, 0.999",
    "beta1": "Adam beta1 must be in [0, 1); the Adam paper recommends 0.9",
    "beta2": "Adam beta2 must be in [0, 1); the Adam paper recommends 0.999",
    "eps": "eps must be > 0; the notes use 1e-4 to 1e-8 (babysit's default is 1e-8)",
    "lbfgs_history": "lbfgs_history must be an integer >= 1, e.g. 10",
    "lbfgs_max_iter": "lbfgs_max_iter must be an integer >= 1, e.g. 20",
}


def _bad(key: str, value: Any, hint: str | None = None) -> ConfigError:
    """Returns the ConfigError naming hp[key], its value and the fix."""
    return ConfigError(f"hp[{key!r}]={value!r}: {hint or _HINTS[key]}")


def _is_real(value: Any) -> bool:
    """Returns True for a finite real number that is not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _real(hp: Mapping[str, Any], key: str, default: float, hint: str | None = None) -> float:
    """Returns hp[key] (or default when absent or None) as a finite float; ConfigError otherwise."""
    value = hp.get(key)
    if value is None:
        return float(default)
    if not _is_real(value):
        raise _bad(key, value, hint)
    return float(value)


def _positive(hp: Mapping[str, Any], key: str, default: float, hint: str | None = None) -> float:
    """Returns hp[key] as a float > 0; ConfigError otherwise."""
    value = _real(hp, key, default, hint)
    if value <= 0:
        raise _bad(key, hp.get(key), hint)
    return value


def _unit(hp: Mapping[str, Any], key: str, default: float, hint: str | None = None) -> float:
    """Returns hp[key] as a float in [0, 1); ConfigError otherwise."""
    value = _real(hp, key, default, hint)
    if not 0.0 <= value < 1.0:
        raise _bad(key, hp.get(key), hint)
    return value


def _count(hp: Mapping[str, Any], key: str, default: int, hint: str | None = None) -> int:
    """Returns hp[key] as an int >= 1; ConfigError otherwise (bools and floats included)."""
    value = hp.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise _bad(key, value, hint)
    return int(value)


def check_rule(name: Any) -> str:
    """Returns name when it is a known rule; ConfigError listing the valid names otherwise."""
    if not isinstance(name, str) or name not in RULES:
        valid = ", ".join(sorted(RULES))
        raise ConfigError(f"hp['optimizer']={name!r}: unknown update rule; valid: {valid}")
    return name


def _lr(hp: Mapping[str, Any], name: str) -> float:
    """Returns the validated hp['lr'], or the rule's default learning rate."""
    return _positive(hp, "lr", DEFAULT_LR[name])


def _tag(optimizer: torch.optim.Optimizer, name: str) -> torch.optim.Optimizer:
    """Returns optimizer with every param group (present and future) tagged with the rule name."""
    optimizer.defaults[_RULE_KEY] = name
    for group in optimizer.param_groups:
        group[_RULE_KEY] = name
    return optimizer


def _sgd(params: Iterable[Any], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Returns plain SGD: x += -lr * dx."""
    return _tag(torch.optim.SGD(params, lr=_lr(hp, "sgd"), momentum=0.0, weight_decay=0.0), "sgd")


def _momentum(params: Iterable[Any], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Returns SGD with momentum: v = mu*v - lr*dx; x += v (torch keeps lr outside the buffer)."""
    mu = _unit(hp, "momentum", 0.9)
    return _tag(torch.optim.SGD(params, lr=_lr(hp, "momentum"), momentum=mu, weight_decay=0.0), "momentum")


def _nesterov(params: Iterable[Any], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Returns SGD with Nesterov momentum: x += -mu*v_prev + (1+mu)*v."""
    mu = _unit(hp, "momentum", 0.9)
    if mu == 0:
        raise _bad("momentum", hp.get("momentum"), "nesterov needs momentum > 0; use optimizer 'sgd' for none")
    opt = torch.optim.SGD(params, lr=_lr(hp, "nesterov"), momentum=mu, nesterov=True, weight_decay=0.0)
    return _tag(opt, "nesterov")


def _adagrad(params: Iterable[Any], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Returns Adagrad with the notes' eps (torch's default 1e-10 lies outside the notes' 1e-4..1e-8)."""
    eps = _positive(hp, "eps", 1e-8)
    opt = torch.optim.Adagrad(
        params, lr=_lr(hp, "adagrad"), lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=eps
    )
    return _tag(opt, "adagrad")


def _rmsprop(params: Iterable[Any], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Returns RMSProp: cache = decay*cache + (1-decay)*dx**2 (torch calls decay_rate alpha)."""
    alpha = _unit(hp, "decay_rate", 0.99)
    eps = _positive(hp, "eps", 1e-8)
    opt = torch.optim.RMSprop(
        params, lr=_lr(hp, "rmsprop"), alpha=alpha, eps=eps, weight_decay=0.0, momentum=0.0, centered=False
    )
    return _tag(opt, "rmsprop")


def _adam(params: Iterable[Any], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Returns Adam with bias correction; the paper's eps=1e-8, beta1=0.9, beta2=0.999."""
    betas = (_unit(hp, "beta1", 0.9), _unit(hp, "beta2", 0.999))
    eps = _positive(hp, "eps", 1e-8)
    opt = torch.optim.Adam(params, lr=_lr(hp, "adam"), betas=betas, eps=eps, weight_decay=0.0)
    return _tag(opt, "adam")


def _lbfgs(params: Iterable[Any], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Returns L-BFGS with a strong-Wolfe line search; it needs full batches and a closure."""
    opt = torch.optim.LBFGS(
        params,
        lr=_lr(hp, "lbfgs"),
        max_iter=_count(hp, "lbfgs_max_iter", 20),
        history_size=_count(hp, "lbfgs_history", 10),
        line_search_fn="strong_wolfe",
    )
    return _tag(opt, "lbfgs")


RULES: dict[str, Factory] = {
    "sgd": _sgd,
    "momentum": _momentum,
    "nesterov": _nesterov,
    "adagrad": _adagrad,
    "rmsprop": _rmsprop,
    "adam": _adam,
    "lbfgs": _lbfgs,
}


def build_optimizer(params: Iterable[Any], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Returns the torch optimizer for hp['optimizer'] (default "sgd") over params.

    Reads lr, momentum, decay_rate, beta1, beta2, eps, lbfgs_history, lbfgs_max_iter as the rule
    needs them; a bad value raises ConfigError naming the field, the value and the fix.
    """
    name = check_rule(hp.get("optimizer", "sgd"))
    return RULES[name](params, hp)


def has_momentum(name: str) -> bool:
    """Returns True for the rules whose momentum can be scheduled (momentum, nesterov; adam's beta1)."""
    return check_rule(name) in _MOMENTUM_KEY


def is_full_batch(name: str) -> bool:
    """Returns True for rules that need the whole training set per step and a closure (lbfgs)."""
    return check_rule(name) in _FULL_BATCH


def _momentum_key(group: Mapping[str, Any]) -> str | None:
    """Returns the group entry holding momentum ("momentum" or "betas"), or None if it has none."""
    rule = group.get(_RULE_KEY)
    if rule is not None:
        return _MOMENTUM_KEY.get(rule)
    if "betas" in group:  # an optimizer babysit did not build: Adam-like
        return "betas"
    if group.get("momentum", 0) > 0 or group.get("nesterov", False):
        return "momentum"
    return None


def set_momentum(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Returns None; sets SGD's momentum (momentum, nesterov) or Adam's beta1 in every param group.

    Raises ConfigError when value is outside [0, 1) or the rule has no momentum (sgd, adagrad, ...).
    """
    mu = _unit({"momentum": value}, "momentum", 0.0)
    keys = [_momentum_key(group) for group in optimizer.param_groups]
    for group, key in zip(optimizer.param_groups, keys):
        if key is None:
            rule = group.get(_RULE_KEY, type(optimizer).__name__)
            raise ConfigError(
                f"set_momentum({value!r}): optimizer {rule!r} has no momentum; use 'momentum', 'nesterov' or 'adam'"
            )
    for group, key in zip(optimizer.param_groups, keys):
        if key == "betas":
            group["betas"] = (mu, group["betas"][1])
        else:
            group["momentum"] = mu
