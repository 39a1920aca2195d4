"""Update rules and learning-rate schedules by the notes' names, built on torch.optim.

Rules (``RULES``): sgd, momentum, nesterov, adagrad, rmsprop, adam, lbfgs; ``build_optimizer(params, hp)``
returns the torch optimizer. Schedules (``SCHEDULES``): constant, step, exp, inv_t, plateau, plus a
linear momentum schedule; ``build_schedule(hp)`` returns a ``Schedule`` whose ``apply(optimizer, epoch)``
the training loop calls every step with a fractional epoch.

Example:
    >>> opt = build_optimizer(model.parameters(), {"optimizer": "nesterov", "lr": 0.05})
    >>> sched = build_schedule({"optimizer": "nesterov", "lr": 0.05, "schedule": "step"})
    >>> lr = sched.apply(opt, step / steps_per_epoch)
"""

from __future__ import annotations

from .rules import (
    DEFAULT_LR,
    RULES,
    build_optimizer,
    check_rule,
    has_momentum,
    is_full_batch,
    set_momentum,
)
from .schedules import (
    SCHEDULES,
    Plateau,
    Schedule,
    build_schedule,
    lr_factor,
    momentum_at,
)

__all__ = [
    "DEFAULT_LR",
    "Plateau",
    "RULES",
    "SCHEDULES",
    "Schedule",
    "build_optimizer",
    "build_schedule",
    "check_rule",
    "has_momentum",
    "is_full_batch",
    "lr_factor",
    "momentum_at",
    "set_momentum",
]
