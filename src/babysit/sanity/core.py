"""sanity_checks(task, hp) -> SanityReport: the notes' checks before learning, each with a verdict and advice.

Each check builds its own model from the user's hp with the same seed, so no check sees another's
changes and the caller's objects are never touched; torch's global RNG is restored afterwards.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import torch

from ..errors import BabysitError, CheckFailed, ConfigError, describe_user_error
from ..task import Task
from .context import Context, make_context
from .graph_checks import batch_independence, params_get_gradient
from .init_checks import chance_loss, reg_raises_loss
from .report import Check, SanityReport, failed
from .train_checks import learnable_signal, overfit_tiny

__all__ = ["CHECKS", "SANITY_CHECKS", "assert_sanity", "sanity_checks"]

log = logging.getLogger(__name__)

CHECKS: dict[str, Callable[[Context], Check]] = {
    "chance_loss": chance_loss,
    "reg_raises_loss": reg_raises_loss,
    "overfit_tiny": overfit_tiny,
    "learnable_signal": learnable_signal,
    "batch_independence": batch_independence,
    "params_get_gradient": params_get_gradient,
}
SANITY_CHECKS: tuple[str, ...] = tuple(CHECKS)


def _select(checks: str | Iterable[str] | None) -> tuple[str, ...]:
    """Returns the names to run, in SANITY_CHECKS order; ConfigError naming unknown ones and the valid names."""
    if checks is None:
        return SANITY_CHECKS
    wanted = [checks] if isinstance(checks, str) else list(checks)
    unknown = [c for c in wanted if c not in CHECKS]
    if unknown:
        raise ConfigError(f"checks={unknown!r}: unknown sanity check(s); valid: {', '.join(SANITY_CHECKS)}")
    if not wanted:
        raise ConfigError(f"checks={checks!r}: name at least one check; valid: {', '.join(SANITY_CHECKS)}")
    return tuple(c for c in SANITY_CHECKS if c in wanted)


def _rng_devices() -> list[int]:
    """Returns the CUDA devices whose RNG state must be restored too (none without CUDA)."""
    return [torch.cuda.current_device()] if torch.cuda.is_available() else []


def _crashed(name: str, exc: Exception) -> Check:
    """Returns a failed Check for a check that raised in the user's code: the set-up could not even run it."""
    text = f"{type(exc).__name__}: {exc}"
    text = text if len(text) <= 200 else text[:197] + "..."
    check = failed(name, f"raised {text}", "runs without an error",
                   "the set-up fails while this check runs it (model, loss or data); fix the error above first")
    return replace(check, error=describe_user_error(exc, f"your code, during the sanity check {name},"))


def _timed(name: str, ctx: Context) -> Check:
    """Returns the check's verdict with the seconds it took; an error of the set-up is a failed check.

    babysit's own errors (a ConfigError: the task or hp cannot be used at all) are raised, not reported.
    """
    start = time.perf_counter()
    try:
        check = CHECKS[name](ctx)
    except BabysitError:
        raise
    except Exception as exc:  # the user's model, loss or data raised: report it, run the other checks
        check = _crashed(name, exc)
        log.warning("sanity check %s: %s", name, check.error)
    check = replace(check, seconds=time.perf_counter() - start)
    log.info("sanity check %s %s in %.3f s: %s", name, check.status, check.seconds, check.measured or check.reason)
    return check


def sanity_checks(task: Task, hp: Mapping[str, Any], *, checks: str | Iterable[str] | None = None, seed: int = 0,
                  optimizer: Mapping[str, Any] | None = None) -> SanityReport:
    """Returns the SanityReport of the task with hp: chance loss, reg raises loss, overfit 20, learnable signal, ...

    The trainings inside use Adam at lr 1e-3 (or `optimizer`, e.g. {"optimizer": "adam", "lr": 1e-3}), not
    the user's learning rate: they test the model, the loss and the data. Raises ConfigError on bad input.
    """
    names = _select(checks)
    with torch.random.fork_rng(devices=_rng_devices()):
        ctx = make_context(task, hp, seed, optimizer)
        results = tuple(_timed(name, ctx) for name in names)
    report = SanityReport(ok=not any(c.status == "failed" for c in results), checks=results)
    log.info("sanity checks %s in %.2f s", "passed" if report.ok else "FAILED", report.seconds)
    return report


def assert_sanity(task: Task, hp: Mapping[str, Any], **kw: Any) -> SanityReport:
    """Returns the SanityReport when no check failed; raises CheckFailed (an AssertionError) with its table.

    One line in a pytest test: assert_sanity(task, hp).
    """
    report = sanity_checks(task, hp, **kw)
    if not report.ok:
        raise CheckFailed(str(report))
    return report
