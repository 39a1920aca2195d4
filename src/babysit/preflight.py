"""check_task(task, hp) -> PreflightReport: the gradient checks and the sanity checks, before any training.

The notes: check the data loss alone (reg = 0) first, then the regularisation term alone with a
strength that matters; then the sanity checks (loss at chance, reg raises loss, overfit 20 examples).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch

from .data import tensors
from .gradcheck import GradientReport, check_gradients
from .losses import l2_term, reg_params
from .sanity import SanityReport, sanity_checks
from .task import Task
from .threads import resolve_threads, torch_threads

__all__ = ["PreflightReport", "check_task"]

GRAD_BATCH = 4  # the notes: "use only few datapoints" -- fewer kinks, and as good as a whole batch
REG_ALONE = 1.0  # with the data loss switched off, any strength >0 makes the L2 gradient non-negligible


@dataclass(frozen=True)
class PreflightReport:
    """The preflight verdict: gradients of the data loss, of the L2 term alone, and the sanity checks."""

    ok: bool
    gradients: GradientReport
    regularisation: GradientReport
    sanity: SanityReport | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Returns the report as plain data (JSON-ready)."""
        return {"ok": self.ok, "seconds": self.seconds, "gradients": self.gradients.to_dict(),
                "regularisation": self.regularisation.to_dict(),
                "sanity": self.sanity.to_dict() if self.sanity is not None else None}

    def __str__(self) -> str:
        parts = [f"== gradient check: data loss alone (reg = 0), batch of {GRAD_BATCH}\n{self.gradients}",
                 f"== gradient check: L2 term alone (reg = {REG_ALONE:g}, data loss off)\n{self.regularisation}"]
        if self.sanity is not None:
            parts.append(f"== sanity checks\n{self.sanity}")
        verdict = "PASSED" if self.ok else "FAILED"
        parts.append(f"preflight {verdict} in {self.seconds:.1f} s")
        return "\n\n".join(parts)


def _batch(task: Task, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = tensors(task.splits.train)
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:GRAD_BATCH]
    return x[idx.to(x.device)], y[idx.to(y.device)]


def _no_data_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return scores.sum() * 0.0


def check_task(task: Task, hp: Mapping[str, Any], *, seed: int = 0, per_tensor: int = 10, burn_in: int = 10,
               sanity: bool = True, checks: Iterable[str] | None = None, allow_unknown: bool = False,
               threads: int | str | None = "auto") -> PreflightReport:
    """Returns the PreflightReport of a task with hp: gradient checks (data loss, L2 alone) and sanity checks.

    burn_in: SGD steps on the check's batch first, so the check runs in a characteristic mode of
    operation (the notes: a tiny-weight init can hide a wrong gradient).
    """
    start = time.perf_counter()
    given, hp = dict(hp), task.resolve_hp(hp)
    batch = _batch(task, seed)
    read: set[str] = set()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = task.build_model({**hp, "reg": 0.0}, record=read)
    task.unused_keys(given, hp, read, allow_unknown=allow_unknown)
    with torch_threads(resolve_threads(threads, model, batch[0])):
        return _checks(task, hp, model, batch, seed, per_tensor, burn_in, sanity, checks, start)


def _checks(task: Task, hp: dict[str, Any], model: Any, batch: tuple[torch.Tensor, torch.Tensor], seed: int,
            per_tensor: int, burn_in: int, sanity: bool, checks: Iterable[str] | None, start: float) -> PreflightReport:
    grads = check_gradients(model, task.loss_fn, batch, per_tensor=per_tensor, seed=seed, burn_in=burn_in)
    reg = check_gradients(model, _no_data_loss, batch, per_tensor=per_tensor, seed=seed,
                          penalty=lambda m: l2_term(reg_params(m), REG_ALONE))
    san = sanity_checks(task, hp, seed=seed, checks=checks) if sanity else None
    ok = grads.ok and reg.ok and (san is None or san.ok)
    return PreflightReport(ok, grads, reg, san, time.perf_counter() - start)
