"""distill(ensemble, task, hp): one student trained on the ensemble's softened probabilities and the labels.

Hinton et al., "Distilling the Knowledge in a Neural Network": the objective is
alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * data loss (+ L2), with p_T = softmax(z / T).
The student also matches the ensemble on a transfer set of unlabelled inputs built from the training inputs
(transfer.py); the label term skips those rows. The ensemble's probabilities are computed once over the
training + transfer inputs and carried beside the labels (train(..., objective=..., carry=...)): the student
trains in the ordinary loop, not a second one. A student trained on the labels alone, same hp, seed, epochs
and optimiser steps, is the baseline the report compares with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from .. import data as data_mod
from .._check import check_choice, check_number
from ..data import Splits
from ..errors import ConfigError
from ..losses import l2_term, reg_params
from ..runs import load
from ..step import Objective
from ..store import Run
from ..task import Task
from ..train import train
from .core import Ensemble
from .evaluation import Gain, _nll, paired_interval
from .transfer import TRANSFER_HINT, TRANSFERS, describe, transfer_inputs

__all__ = ["DEFAULT_TRANSFER_SIZE", "DistillReport", "distill", "distill_objective", "soft_targets"]

# transfer rows per training example when transfer_size is left out. MNIST-1D MLP, 5-init teacher, 8 seeds: the
# student kept a median 28% of the ensemble's gain with no transfer set, 60% with 2x mixup, 76% with 3x (46% and
# 71% of it over a label-only student given the same steps); the cost is (1 + size) times the steps per student.
DEFAULT_TRANSFER_SIZE = 3.0
SOFT_BLOCK = 16384  # rows whose soft targets are computed together


@torch.no_grad()
def soft_targets(ensemble: Ensemble, dataset: Any, temperature: float) -> torch.Tensor:
    """Returns the ensemble's probabilities at temperature T on a dataset, (examples, classes).

    softmax(log_softmax(z) / T) = softmax(z / T): members' probabilities softened, then averaged.
    """
    lp = ensemble.member_log_probs(dataset) / temperature
    return ensemble.combine(torch.log_softmax(lp, dim=-1))


def _label_loss(loss_fn: Any, scores: torch.Tensor, labels: torch.Tensor,
                labelled: torch.Tensor | None) -> torch.Tensor:
    """Returns the data loss over the batch's labelled rows (0 when it has none): synthetic rows have no label."""
    if labelled is None or bool(labelled.all()):
        return loss_fn(scores, labels)
    if not bool(labelled.any()):
        return scores.sum() * 0.0
    return loss_fn(scores[labelled], labels[labelled])


def distill_objective(task: Task, reg: float, temperature: float, alpha: float) -> Objective:
    """Returns objective(model, x, (labels, soft[, labelled])): alpha T^2 KL(soft || student_T) + (1 - alpha) loss + L2.

    labelled (bool per row): the data loss is averaged over the labelled rows only; the soft term over all rows.
    """
    t2 = temperature * temperature

    def fn(model: nn.Module, x: torch.Tensor, y: Any) -> torch.Tensor:
        labels, soft, *rest = y
        scores = model(x)
        kd = F.kl_div(F.log_softmax(scores / temperature, dim=-1), soft, reduction="batchmean")
        loss = alpha * t2 * kd
        if alpha < 1.0:
            loss = loss + (1.0 - alpha) * _label_loss(task.loss_fn, scores, labels, rest[0] if rest else None)
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
    transfer: str = "none"  # the transfer set in words, e.g. "9600 mixup inputs (3x the training split)"

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
        lines += ["", f"transfer set: {self.transfer}"]
        if self.transfer != "none":
            lines += ["label-only student: as many rows per epoch (training rows drawn again), the same steps"]
        lines += [f"student - label-only accuracy: {self.gain_over_labels} (95% paired bootstrap)",
                  f"share of the ensemble's gain kept: {kept}"]
        return "\n".join(lines)


def _scores(model: nn.Module, dataset: Any) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([torch.softmax(model(x), -1) for x, _ in data_mod.batches(dataset, 1024, shuffle=False)])


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    return float((p * (p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())).sum(-1).mean())


def _given_rows(transfer: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Returns the user's own transfer inputs as x's dtype on the CPU after checking their shape and values."""
    if transfer.ndim != x.ndim or tuple(transfer.shape[1:]) != tuple(x.shape[1:]) or len(transfer) == 0:
        want = ", ".join(["rows >= 1", *map(str, x.shape[1:])])
        raise ConfigError(f"transfer: a tensor of inputs needs shape ({want}) like the training inputs, got "
                          f"{tuple(transfer.shape)}")
    if not bool(torch.isfinite(transfer).all()):
        raise ConfigError("transfer: the tensor of inputs holds NaN or inf; remove those rows")
    return transfer.detach().to("cpu", x.dtype)


def _transfer_rows(transfer: Any, size: float | None, task: Task, seed: int) -> torch.Tensor:
    """Returns the transfer set's inputs: generated from the training inputs alone, none, or the user's own tensor."""
    x, _ = data_mod.tensors(task.splits.train)
    if isinstance(transfer, str):
        check_choice("transfer", transfer, TRANSFERS, hint=TRANSFER_HINT)
    elif not isinstance(transfer, torch.Tensor):
        raise ConfigError(f"transfer={transfer!r}: must be one of {', '.join(TRANSFERS)} or a tensor of unlabelled "
                          "inputs shaped like the training inputs")
    generated = isinstance(transfer, str) and transfer != "none"
    if size is not None and not generated:
        given = f"transfer={transfer!r}" if isinstance(transfer, str) else "your own inputs (transfer=tensor)"
        raise ConfigError(f"transfer_size={size!r}: applies to a generated transfer set (transfer='mixup' or "
                          f"'munge'), not to {given}; leave it out")
    if isinstance(transfer, torch.Tensor):
        return _given_rows(transfer, x)
    size = DEFAULT_TRANSFER_SIZE if size is None else check_number(
        "transfer_size", size, low=0.0, low_open=True, high=100.0,
        hint="rows of the transfer set per training example, e.g. 3; transfer='none' for no transfer set")
    return transfer_inputs(x, str(transfer), max(1, round(size * len(x))) if generated else 0, seed)


def _with_train(task: Task, x: torch.Tensor, y: torch.Tensor) -> Task:
    """Returns the task with (x, y) as its training split; validation, test, model and loss unchanged.

    The source is kept, so that load(run_dir) and evaluate rebuild the model and the held-out splits by name.
    """
    s = task.splits
    splits = Splits(TensorDataset(x, y), s.val, s.test, s.num_classes, s.input_shape, s.source, s.image_shape)
    return Task(build=task.build, data=splits, loss=task.loss, name=task.name, hp_keys=tuple(task.hp_keys),
                metric=task.metric, search_path=task.search_path)


def _student_data(ensemble: Ensemble, task: Task, extra: torch.Tensor,
                  temperature: float) -> tuple[Task, torch.Tensor, torch.Tensor]:
    """Returns (the student's task, soft targets, labelled mask) over the training inputs followed by the extra ones.

    An extra row's label column holds the ensemble's most probable class (so the run's train accuracy reads as
    agreement with the ensemble there); the mask keeps it out of the label term.
    """
    x, y = data_mod.tensors(task.splits.train)
    xs = torch.cat([x, extra.to(x.device)])
    # in blocks: the members' log-probabilities of every row at once would be members x rows x classes
    soft = torch.cat([soft_targets(ensemble, TensorDataset(b, torch.zeros(len(b), dtype=torch.long)), temperature)
                      for b in xs.split(SOFT_BLOCK)])
    labels = torch.cat([y, soft[len(x):].argmax(-1).to(y.device, y.dtype)])
    labelled = torch.arange(len(xs)) < len(x)
    return (_with_train(task, xs, labels) if len(extra) else task), soft, labelled


def _baseline_task(task: Task, extra_rows: int, seed: int) -> Task:
    """Returns the label-only student's task: the training split plus extra_rows of its rows drawn again.

    Each epoch then has as many rows as the distilled student's (same optimiser steps, same schedule).
    """
    if not extra_rows:
        return task
    x, y = data_mod.tensors(task.splits.train)
    gen = torch.Generator().manual_seed(int(seed) + 104729)
    again = torch.cat([torch.randperm(len(x), generator=gen) for _ in range(-(-extra_rows // len(x)))])[:extra_rows]
    again = again.to(x.device)
    return _with_train(task, torch.cat([x, x[again]]), torch.cat([y, y[again.to(y.device)]]))


def distill(ensemble: Ensemble, task: Task, hp: Mapping[str, Any], temperature: float = 4.0, alpha: float = 0.9,
            *, transfer: str | torch.Tensor = "mixup", transfer_size: float | None = None, epochs: int,
            run_dir: str | Path, seed: int = 0, split: str = "test", **kwargs: Any) -> DistillReport:
    """Returns the report after training a student on the ensemble (run_dir/student) and one on labels (run_dir/labels).

    A teacher fits its training split almost perfectly, so there its soft targets say little beyond the labels;
    on a transfer set around the training inputs they show how it generalises (Bucila et al. 2006).

    Args:
        alpha: the weight of the soft targets (1 - alpha on the labels, which only labelled rows have).
        transfer: unlabelled inputs the student also matches the ensemble on: "mixup" (default: pairs of
            training inputs interpolated), "munge" (features redrawn near each input's nearest neighbour),
            "none", or a tensor of your own inputs shaped like the training inputs.
        transfer_size: rows generated per training example (default DEFAULT_TRANSFER_SIZE = 3, measured);
            each student then takes (1 + transfer_size) times the optimiser steps per epoch.
        kwargs: go to train, for both students.

    The label-only student trains with the same hp, seed and epochs on an epoch of as many rows, the training
    split and its rows drawn again: the same optimiser steps and schedule as the distilled student. With a
    transfer set, a map-style training split is read once into tensors (random transforms are not redrawn).
    """
    check_number("temperature", temperature, low=0.0, low_open=True, high=1e3, hint="Hinton et al. use 1 to 20")
    check_number("alpha", alpha, low=0.0, high=1.0, hint="the weight of the soft targets, e.g. 0.9")
    x, _ = data_mod.tensors(task.splits.train)
    extra = _transfer_rows(transfer, transfer_size, task, seed)
    student_task, soft, labelled = _student_data(ensemble, task, extra, float(temperature))
    obj = distill_objective(task, float(hp.get("reg", 0.0) or 0.0), float(temperature), float(alpha))
    root = Path(run_dir)
    student = train(student_task, hp, epochs=epochs, run_dir=root / "student", seed=seed, objective=obj,
                    carry=(soft, labelled), **kwargs)
    labels = train(_baseline_task(task, len(extra), seed), hp, epochs=epochs, run_dir=root / "labels", seed=seed,
                   **kwargs)
    return _report(ensemble, task, split, student, labels, describe(transfer, len(extra), len(x)))


def _report(ensemble: Ensemble, task: Task, split: str, student: Run, labels: Run, transfer: str) -> DistillReport:
    data = getattr(task.splits, split)
    _, y = data_mod.tensors(data)
    p_ens = ensemble.combine(ensemble.member_log_probs(data))
    p_s, p_l = (_scores(load(r.dir, task=task), data) for r in (student, labels))
    acc = [float((p.argmax(-1) == y).float().mean()) for p in (p_ens, p_s, p_l)]
    diff = (p_s.argmax(-1) == y).float() - (p_l.argmax(-1) == y).float()
    kept = (acc[1] - acc[2]) / (acc[0] - acc[2]) if acc[0] > acc[2] else None
    return DistillReport(split, len(y), acc[0], float(_nll(p_ens, y).mean()), acc[1], float(_nll(p_s, y).mean()),
                         _kl(p_ens, p_s), acc[2], float(_nll(p_l, y).mean()), _kl(p_ens, p_l),
                         paired_interval(diff), kept, student.dir, labels.dir, transfer)
