"""distill(ensemble, task, hp): one student trained on the ensemble's softened probabilities and the labels.

Hinton et al., "Distilling the Knowledge in a Neural Network": the objective is
alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * data loss (+ L2), with p_T = softmax(z / T).
The ensemble's probabilities are computed once over the training set and carried beside the labels
(train(..., objective=..., carry=...)): the student trains in the ordinary loop, not a second one.
A student trained on the labels alone, same hp and seed, is the baseline the report compares with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import data as data_mod
from .._check import check_number
from ..losses import l2_term, reg_params
from ..runs import load
from ..step import Objective
from ..store import Run
from ..task import Task
from ..train import train
from .core import Ensemble
from .evaluation import Gain, _nll, paired_interval

__all__ = ["DistillReport", "distill", "distill_objective", "soft_targets"]


@torch.no_grad()
def soft_targets(ensemble: Ensemble, dataset: Any, temperature: float) -> torch.Tensor:
    """Returns the ensemble's probabilities at temperature T on a dataset, (examples, classes).

    softmax(log_softmax(z) / T) = softmax(z / T): members' probabilities softened, then averaged.
    """
    lp = ensemble.member_log_probs(dataset) / temperature
    return ensemble.combine(torch.log_softmax(lp, dim=-1))


def distill_objective(task: Task, reg: float, temperature: float, alpha: float) -> Objective:
    """Returns objective(model, x, (labels, soft)): alpha T^2 KL(soft || student_T) + (1 - alpha) loss + L2."""
    t2 = temperature * temperature

    def fn(model: nn.Module, x: torch.Tensor, y: Any) -> torch.Tensor:
        labels, soft = y
        scores = model(x)
        kd = F.kl_div(F.log_softmax(scores / temperature, dim=-1), soft, reduction="batchmean")
        loss = alpha * t2 * kd + (1.0 - alpha) * task.loss_fn(scores, labels)
        return loss + l2_term(reg_params(model), reg) if reg else loss

    return fn


@dataclass(frozen=True)
class DistillReport:
    """Student vs ensemble vs a label-only student on one split; KL(ensemble || model) at T = 1."""

    split: str
    examples: int
    ensemble_acc: float
    ensemble_nll: float
    student_acc: float
    student_nll: float
    student_kl: float
    labels_acc: float
    labels_nll: float
    labels_kl: float
    gain_over_labels: Gain  # student's accuracy minus the label-only student's, paired bootstrap
    kept: float | None  # the share of the ensemble's accuracy gain over the label-only student kept
    student_dir: Path
    labels_dir: Path

    def to_dict(self) -> dict[str, Any]:
        """Returns the report as plain data."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    def table(self) -> str:
        """Returns the comparison as text."""
        rows = [("ensemble", self.ensemble_acc, self.ensemble_nll, 0.0),
                ("distilled student", self.student_acc, self.student_nll, self.student_kl),
                ("label-only student", self.labels_acc, self.labels_nll, self.labels_kl)]
        lines = [f"distillation on {self.split} ({self.examples} examples)",
                 f"{'model':<20} {'acc':>8} {'nll':>8} {'KL(ens||model)':>15}"]
        lines += [f"{n:<20} {a:>8.4f} {nll:>8.4f} {kl:>15.4f}" for n, a, nll, kl in rows]
        kept = "n/a (the ensemble is not better than the label-only student)" if self.kept is None else \
            f"{self.kept:.0%}"
        lines += ["", f"student - label-only accuracy: {self.gain_over_labels} (95% paired bootstrap)",
                  f"share of the ensemble's gain kept: {kept}"]
        return "\n".join(lines)


def _scores(model: nn.Module, dataset: Any) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([torch.softmax(model(x), -1) for x, _ in data_mod.batches(dataset, 1024, shuffle=False)])


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    return float((p * (p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())).sum(-1).mean())


def distill(ensemble: Ensemble, task: Task, hp: Mapping[str, Any], temperature: float = 4.0, alpha: float = 0.9,
            *, epochs: int, run_dir: str | Path, seed: int = 0, split: str = "test", **kwargs: Any) -> DistillReport:
    """Returns the report after training a student on the ensemble (run_dir/student) and one on labels (run_dir/labels).

    alpha: the weight of the soft targets (1 - alpha on the labels). kwargs go to train.
    """
    check_number("temperature", temperature, low=0.0, low_open=True, high=1e3, hint="Hinton et al. use 1 to 20")
    check_number("alpha", alpha, low=0.0, high=1.0, hint="the weight of the soft targets, e.g. 0.9")
    soft = soft_targets(ensemble, task.splits.train, float(temperature))
    obj = distill_objective(task, float(hp.get("reg", 0.0) or 0.0), float(temperature), float(alpha))
    root = Path(run_dir)
    student = train(task, hp, epochs=epochs, run_dir=root / "student", seed=seed, objective=obj, carry=(soft,),
                    **kwargs)
    labels = train(task, hp, epochs=epochs, run_dir=root / "labels", seed=seed, **kwargs)
    return _report(ensemble, task, split, student, labels)


def _report(ensemble: Ensemble, task: Task, split: str, student: Run, labels: Run) -> DistillReport:
    data = getattr(task.splits, split)
    _, y = data_mod.tensors(data)
    p_ens = ensemble.combine(ensemble.member_log_probs(data))
    p_s, p_l = (_scores(load(r.dir, task=task), data) for r in (student, labels))
    acc = [float((p.argmax(-1) == y).float().mean()) for p in (p_ens, p_s, p_l)]
    diff = (p_s.argmax(-1) == y).float() - (p_l.argmax(-1) == y).float()
    kept = (acc[1] - acc[2]) / (acc[0] - acc[2]) if acc[0] > acc[2] else None
    return DistillReport(split, len(y), acc[0], float(_nll(p_ens, y).mean()), acc[1], float(_nll(p_s, y).mean()),
                         _kl(p_ens, p_s), acc[2], float(_nll(p_l, y).mean()), _kl(p_ens, p_l),
                         paired_interval(diff), kept, student.dir, labels.dir)
