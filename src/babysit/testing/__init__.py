"""Conformance suites: one shared table of checks that every update rule and schedule passes, yours too.

Call them from your own tests on your own extensions (optax and optuna do the same)::

    from babysit.testing import check_update_rule, check_schedule
    check_update_rule(my_factory)                    # (params, hp) -> torch.optim.Optimizer
    check_schedule(my_build, {"lr": 0.1})           # (hp) -> an object like babysit.optim.Schedule

Each returns a Conformance (every check's result) and raises CheckFailed, listing the failures, when
one fails (strict=False returns instead). SUITES holds the tables by kind; `register(kind, name)` adds a
check, so suites for samplers and diagnose rules join the same machinery. Only tests import this package.
"""

from __future__ import annotations

from ._core import SUITES, Conformance, Result, register, run_suite
from .optim import check_schedule, check_update_rule

__all__ = ["SUITES", "Conformance", "Result", "check_schedule", "check_update_rule", "register", "run_suite"]
