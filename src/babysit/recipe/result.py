"""The recipe's records: candidates, stage rows and the RecipeResult (plain data, a text table, recipe.html)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..ensemble.evaluation import Gain
from .plan import Plan

__all__ = ["Candidate", "StageSummary", "RecipeResult"]


@dataclass(frozen=True)
class Candidate:
    """One way to use the final models; val_acc chooses, test_acc (read once, at the end) reports.

    gain: test accuracy minus the single model's, with its 95% paired-bootstrap interval.
    """

    name: str
    description: str
    runs: tuple[str, ...]
    val_acc: float | None
    test_acc: float | None
    test_low: float | None = None
    test_high: float | None = None
    gain: Gain | None = None


@dataclass(frozen=True)
class StageSummary:
    """One stage of the recipe's search: its size, outcome, best trial and training seconds (all workers)."""

    stage: int
    name: str
    trials: int
    epochs: int
    finished: int
    stopped: int
    best_val: float | None
    best_trial: int | None
    seconds: float
    best_params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecipeResult:
    """What recipe() hands back: status "completed" or "preflight_failed", and everything the report shows."""

    status: str
    dir: Path
    plan: Plan | None
    preflight: Mapping[str, Any]
    preflight_text: str
    stages: tuple[StageSummary, ...]
    candidates: tuple[Candidate, ...]
    chosen: str | None
    chance: float
    seconds: Mapping[str, float]
    findings: Mapping[str, list[dict[str, Any]]]
    reports: Mapping[str, str]
    warnings: tuple[str, ...]
    next_steps: tuple[str, ...]
    test_examples: int
    retrained: bool = False
    study_dir: Path | None = None

    @property
    def ok(self) -> bool:
        """Returns True when the recipe ran to the end."""
        return self.status == "completed"

    @property
    def result(self) -> Candidate | None:
        """Returns the recipe's result: the candidate chosen on validation (or its retraining)."""
        return next((c for c in self.candidates if c.name == self.chosen), None)

    @classmethod
    def stopped(cls, root: Path, preflight: Any, seconds: Mapping[str, float], num_classes: int) -> "RecipeResult":
        """Returns the result of a recipe that stopped at a failed preflight."""
        return cls("preflight_failed", root, None, preflight.to_dict(), str(preflight), (), (), None,
                   1.0 / num_classes, dict(seconds), {}, {}, (), _preflight_advice(preflight), 0)

    def to_dict(self) -> dict[str, Any]:
        """Returns the result as plain data (JSON-ready)."""
        d = asdict(self)
        d["dir"], d["study_dir"] = str(self.dir), None if self.study_dir is None else str(self.study_dir)
        d["plan"] = None if self.plan is None else self.plan.to_dict()
        return d

    def table(self) -> str:
        """Returns the summary table as text: each stage's best, then every candidate on validation and test."""
        if self.status != "completed":
            return "\n".join([f"recipe stopped at preflight ({self.dir})", *self.next_steps])
        lines = [f"{'stage':<8} {'trials':>6} {'epochs':>6} {'best val':>9} {'seconds':>8}"]
        lines += [f"{s.name:<8} {s.trials:>6} {s.epochs:>6} {_pct(s.best_val):>9} {s.seconds:>8.0f}"
                  for s in self.stages]
        lines += ["", f"{'candidate':<21} {'val':>7} {'test':>7}  {'95% interval':<15} {'gain over single':<24}"]
        for c in self.candidates:
            mark = " <- result" if c.name == self.chosen else ""
            iv = "" if c.test_low is None else f"[{_pct(c.test_low)}, {_pct(c.test_high)}]"
            gain = "" if c.gain is None else f"{100 * c.gain.value:+.1f} [{100 * c.gain.low:+.1f}, {100 * c.gain.high:+.1f}]"
            lines.append(f"{c.name:<21} {_pct(c.val_acc):>7} {_pct(c.test_acc):>7}  {iv:<15} {gain:<24}{mark}")
        lines += ["", f"chance level {_pct(self.chance)}; test examples {self.test_examples}; "
                      f"{self.seconds.get('total', 0) / 60:.1f} min in all"]
        return "\n".join(lines)

    def write_html(self) -> Path:
        """Returns the path of recipe.html, written in the recipe's directory."""
        from .html import write_html

        return write_html(self)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _preflight_advice(pre: Any) -> tuple[str, ...]:
    out = []
    for name, rep in (("gradient check (data loss)", pre.gradients), ("gradient check (L2 term)", pre.regularisation)):
        if not rep.ok:
            out.append(f"{name} failed: {str(rep).splitlines()[0]}")
    if pre.sanity is not None:
        out += [f"sanity check {c.name} failed: measured {c.measured}, expected {c.expected}. {c.advice}"
                for c in pre.sanity.checks if c.status == "failed"]
    return tuple(out) or ("the preflight failed; see its report",)
