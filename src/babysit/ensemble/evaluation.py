"""evaluate(ensemble, split): accuracy and NLL of the ensemble and each member, gains with paired-bootstrap bands.

The best member is chosen by its validation accuracy, never by the split being reported, and the
size curve adds members in that order. A gain's interval is a paired bootstrap over the split's
examples (the same resampled examples for both sides), so a gain inside the noise shows as such.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from .. import data as data_mod
from ..errors import ConfigError
from .core import Ensemble

__all__ = ["EnsembleReport", "Gain", "MemberScore", "evaluate_ensemble", "paired_interval"]

_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Gain:
    """A difference (positive: the ensemble is better) and its 95% paired-bootstrap interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


@dataclass(frozen=True)
class MemberScore:
    """One member on the split, with the validation accuracy that ranks it."""

    name: str
    val_acc: float
    accuracy: float
    nll: float


@dataclass(frozen=True)
class EnsembleReport:
    """The ensemble against its members on one split (members listed best validation score first)."""

    split: str
    examples: int
    accuracy: float
    nll: float
    members: tuple[MemberScore, ...]
    best: str  # the member with the best validation accuracy
    gain_acc: Gain  # over the best member (by validation)
    gain_nll: Gain  # best member's NLL minus the ensemble's
    gain_acc_over_mean: Gain  # over the mean member
    sizes: tuple[tuple[int, float, float], ...]  # (members, accuracy, nll), best validation first

    def to_dict(self) -> dict[str, Any]:
        """Returns the report as plain data."""
        return asdict(self)

    def table(self) -> str:
        """Returns the gain table as text."""
        lines = [f"ensemble of {len(self.members)} on {self.split} ({self.examples} examples)",
                 f"{'model':<40} {'val_acc':>8} {'acc':>8} {'nll':>8}"]
        lines += [f"{m.name[-40:]:<40} {m.val_acc:>8.4f} {m.accuracy:>8.4f} {m.nll:>8.4f}" for m in self.members]
        lines.append(f"{'ensemble':<40} {'':>8} {self.accuracy:>8.4f} {self.nll:>8.4f}")
        lines += ["", f"gain in accuracy over the best member ({self.best}, by validation): {self.gain_acc}",
                  f"gain in accuracy over the mean member: {self.gain_acc_over_mean}",
                  f"NLL lowered by (best member - ensemble): {self.gain_nll}",
                  "95% paired-bootstrap intervals over the examples", "",
                  "members  accuracy  nll"]
        lines += [f"{k:>7}  {acc:>8.4f}  {nll:.4f}" for k, acc, nll in self.sizes]
        return "\n".join(lines)


def paired_interval(diff: torch.Tensor, *, repeats: int = 1000, seed: int = 0) -> Gain:
    """Returns mean(diff) and the 2.5/97.5 percentiles of its mean over examples resampled with replacement."""
    n = len(diff)
    g = torch.Generator().manual_seed(seed)
    means = torch.cat([diff[torch.randint(n, (min(100, repeats - i), n), generator=g)].mean(1)
                       for i in range(0, repeats, 100)])
    low, high = torch.quantile(means.double(), torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return Gain(float(diff.mean()), float(low), float(high))


def _nll(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Returns each example's negative log-likelihood of its label."""
    return -torch.log(probs.gather(-1, y[..., None]).squeeze(-1).clamp_min(1e-12))


def evaluate_ensemble(ens: Ensemble, split: Any = "test", *, repeats: int = 1000, seed: int = 0) -> EnsembleReport:
    """Returns the ensemble's report on split ("train" / "val" / "test" of its task, or a Dataset)."""
    name = split if isinstance(split, str) else "dataset"
    if isinstance(split, str):
        if split not in _SPLITS or getattr(ens.task.splits, split, None) is None:
            raise ConfigError(f"split={split!r}: use one of {_SPLITS} (a split the task has) or a Dataset")
        split = getattr(ens.task.splits, split)
    _, y_val = data_mod.tensors(ens.task.splits.val)
    val_acc = (ens.member_log_probs(ens.task.splits.val).argmax(-1) == y_val).float().mean(1)
    order = sorted(range(len(ens)), key=lambda i: (-float(val_acc[i]), i))
    _, y = data_mod.tensors(split)
    lp = ens.member_log_probs(split)[order]
    correct = (lp.argmax(-1) == y).float()  # (members, examples)
    nll = -lp.gather(-1, y.expand(len(order), -1)[..., None]).squeeze(-1)
    probs = ens.combine(lp)
    e_correct, e_nll = (probs.argmax(-1) == y).float(), _nll(probs, y)
    sizes = []
    for k in range(1, len(order) + 1):
        p = ens.combine(lp[:k])
        sizes.append((k, float((p.argmax(-1) == y).float().mean()), float(_nll(p, y).mean())))
    members = tuple(MemberScore(ens.members[i].name, float(val_acc[i]), float(correct[j].mean()), float(nll[j].mean()))
                    for j, i in enumerate(order))
    return EnsembleReport(
        name, len(y), float(e_correct.mean()), float(e_nll.mean()), members, ens.members[order[0]].name,
        paired_interval(e_correct - correct[0], repeats=repeats, seed=seed),
        paired_interval(nll[0] - e_nll, repeats=repeats, seed=seed),
        paired_interval(e_correct - correct.mean(0), repeats=repeats, seed=seed), tuple(sizes))
