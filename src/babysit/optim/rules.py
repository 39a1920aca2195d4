"""Update rules by the notes' names (sgd, momentum, nesterov, adagrad, rmsprop, adam, lbfgs), on torch.optim.

Each rule is a factory ``(params, hp) -> torch.optim.Optimizer`` that reads its own keys from the
flat hyperparameter dict, validates them, and hands everything else to torch. babysit's L2 is a
separate loss term, so every rule runs with ``weight_decay=0``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from .._check import check_choice, check_number
from ..errors import ConfigError
from ..hparams import DEFAULT_LR, KEYS, default_of

__all__ = ["DEFAULT_LR", "RULES", "build_optimizer", "check_rule", "has_momentum", "is_full_batch", "set_momentum"]

Factory = Callable[[Iterable[Any], Mapping[str, Any]], torch.optim.Optimizer]

# Which param-group entry holds each rule's momentum: SGD's "momentum", Adam's beta1 in "betas".
_MOMENTUM_KEY: dict[str, str] = {"momentum": "momentum", "nesterov": "momentum", "adam": "betas"}
_FULL_BATCH = frozenset({"lbfgs"})
# Param-group tag naming the rule: torch keeps unknown group keys, so it survives state_dict round trips.
_RULE_KEY = "babysit_rule"


def _get(hp: Mapping[str, Any], key: str) -> Any:
    """Returns hp[key] checked by the key registry, or the registry's default when absent or None."""
    value = hp.get(key)
    return KEYS[key].check(value) if value is not None else default_of(key, hp)


def check_rule(name: Any) -> str:
    """Returns name when it is a known rule; ConfigError listing the valid names otherwise."""
    return check_choice("hp['optimizer']", name, RULES, noun="update rule")


def _lr(hp: Mapping[str, Any], name: str) -> float:
    """Returns the validated hp['lr'], or the rule's default learning rate."""
    value = hp.get("lr")
    return KEYS["lr"].check(value) if value is not None else DEFAULT_LR[name]


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
    mu = _get(hp, "momentum")
    return _tag(torch.optim.SGD(params, lr=_lr(hp, "momentum"), momentum=mu, weight_decay=0.0), "momentum")


def _nesterov(params: Iterable[Any], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Returns SGD with Nesterov momentum: x += -mu*v_prev + (1+mu)*v."""
    mu = _get(hp, "momentum")
    if mu == 0:
        raise ConfigError(f"hp['momentum']={hp.get('momentum')!r}: nesterov needs momentum > 0; "
                          "use optimizer 'sgd' for none")
    opt = torch.optim.SGD(params, lr=_lr(hp, "nesterov"), momentum=mu, nesterov=True, weight_decay=0.0)
    return _tag(opt, "nesterov")


def _adagrad(params: Iterable[Any], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Returns Adagrad with the notes' eps (torch's default 1e-10 lies outside the notes' 1e-4..1e-8)."""
    eps = _get(hp, "eps")
    opt = torch.optim.Adagrad(
        params, lr=_lr(hp, "adagrad"), lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=eps
    )
    return _tag(opt, "adagrad")


def _rmsprop(params: Iterable[Any], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Returns RMSProp: cache = decay*cache + (1-decay)*dx**2 (torch calls decay_rate alpha)."""
    alpha = _get(hp, "decay_rate")
    eps = _get(hp, "eps")
    opt = torch.optim.RMSprop(
        params, lr=_lr(hp, "rmsprop"), alpha=alpha, eps=eps, weight_decay=0.0, momentum=0.0, centered=False
    )
    return _tag(opt, "rmsprop")


def _adam(params: Iterable[Any], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Returns Adam with bias correction; the paper's eps=1e-8, beta1=0.9, beta2=0.999."""
    betas = (_get(hp, "beta1"), _get(hp, "beta2"))
    eps = _get(hp, "eps")
    opt = torch.optim.Adam(params, lr=_lr(hp, "adam"), betas=betas, eps=eps, weight_decay=0.0)
    return _tag(opt, "adam")


def _lbfgs(params: Iterable[Any], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Returns L-BFGS with a strong-Wolfe line search; it needs full batches and a closure."""
    opt = torch.optim.LBFGS(
        params,
        lr=_lr(hp, "lbfgs"),
        max_iter=_get(hp, "lbfgs_max_iter"),
        history_size=_get(hp, "lbfgs_history"),
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
    mu = check_number("hp['momentum']", value, low=0.0, high=1.0, high_open=True,
                      hint="typical values are 0.5, 0.9, 0.95, 0.99")
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
