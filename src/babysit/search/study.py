"""Study: the read model of a search (trials, best, top-k, border warnings), from the study store.

Any process may load a study at any time, also while a search runs; loading never writes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import StoreError
from .space import check_space, parse_space
from .stages import Stage, border_findings
from .storage import JOURNAL, StudyStore, TrialState, final_trials, params_of

__all__ = ["Trial", "Study", "load_study"]


@dataclass(frozen=True)
class Trial:
    """One finished (or running) trial: babysit id, stage, params, status, metric and its run directory.

    status: completed | early_stopped | diverged | pruned | failed | running | queued.
    metric: the trial's best validation metric on a higher-is-better scale (a loss is negated).
    """

    id: int
    stage: int
    params: Mapping[str, Any]
    status: str
    metric: float | None
    run_dir: Path
    epochs: int | None = None
    attempt: int = 0
    reason: str | None = None
    continues: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Returns the trial as plain data."""
        d = asdict(self)
        d["run_dir"], d["params"] = str(self.run_dir), dict(self.params)
        return d


def _record(t: Any) -> Trial:
    a = {**t.user_attrs, **t.user_attrs.get("result", {})}
    if t.state == TrialState.FAIL:
        status = "failed"
    elif t.state == TrialState.COMPLETE:
        status = str(a.get("status", "completed"))
    else:
        status = "running" if t.state == TrialState.RUNNING else "queued"
    reason = a.get("error") or a.get("reaped") or a.get("reason")
    return Trial(id=int(a["id"]), stage=int(a["stage"]), params=params_of(t), status=status,
                 metric=a.get("metric"), run_dir=Path(a["run_dir"]), epochs=a.get("epochs"),
                 attempt=int(a.get("attempt", 0)), reason=reason, continues=a.get("continues"))


class Study:
    """A search's results, read from its store: trials, best, top(k), warnings, stage ranges."""

    def __init__(self, spec: str | Path, name: str = "babysit") -> None:
        self.store = StudyStore(spec, name)
        self.plan = self.store.plan()
        self.dir = Path(self.plan["study_dir"])
        self.stages = [Stage(**d) for d in self.plan["stages"]]

    @property
    def trials(self) -> list[Trial]:
        """Returns every trial that counts (re-queued attempts left out), running and queued ones included, by id."""
        out: list[Trial] = []
        for s in range(len(self.stages)):
            ts = self.store.trials(s)
            out += [_record(t) for t in final_trials(ts)]
            out += [_record(t) for t in ts if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        return sorted(out, key=lambda t: (t.id, t.attempt))

    def top(self, k: int = 5) -> list[Trial]:
        """Returns the k trials with the best metric, best first (for an ensemble of the top k)."""
        done = [t for t in self.trials if t.metric is not None and t.status != "failed"]
        return sorted(done, key=lambda t: (-float(t.metric or 0.0), t.id))[:k]

    @property
    def best(self) -> Trial | None:
        """Returns the trial with the best metric, or None before any trial finished."""
        top = self.top(1)
        return top[0] if top else None

    def ranges(self, stage: int) -> dict[str, Any]:
        """Returns the space (ranges) a stage searched, as plain data ({} when the stage is not created)."""
        return dict(self.store.stage_attrs(stage).get("space", {}))

    def findings(self) -> list[dict[str, Any]]:
        """Returns all border findings: those that re-ranged a stage, and those of the last finished stage."""
        out: list[dict[str, Any]] = []
        last = -1
        for s in range(len(self.stages)):
            attrs = self.store.stage_attrs(s)
            if not attrs:
                break
            out += list(attrs.get("findings", []))
            last = s
        if last >= 0 and not self.store.trials(last, (TrialState.RUNNING, TrialState.WAITING)):
            space = check_space(parse_space(self.ranges(last)), self.plan["fixed"])
            results = [(t.params, float(t.metric)) for t in self.trials
                       if t.stage == last and t.metric is not None]
            out += border_findings(space, results, last)
        return out

    @property
    def warnings(self) -> list[str]:
        """Returns the border warnings (best value at an edge and still improving toward it), in stage order."""
        return [f["message"] for f in self.findings() if f["kind"] == "extend"]

    @property
    def done(self) -> bool:
        """Returns True when every stage's trials are finished."""
        ts = self.trials
        return len({t.id for t in ts if t.status not in ("running", "queued")}) >= sum(s.trials for s in self.stages)

    def html(self, path: str | Path | None = None) -> Path:
        """Returns the path of study.html: border warnings, metric against each parameter, leaderboard."""
        from .html import write_html

        return write_html(self, path)

    def kill(self, trial: int, reason: str = "killed from the study") -> None:
        """Flags a trial to be stopped at its next epoch (recorded as pruned); the one writing action."""
        self.store.kill(trial, reason)

    def __repr__(self) -> str:
        best = self.best
        return (f"Study({str(self.dir)!r}, trials={len(self.trials)}, "
                f"best={None if best is None else round(float(best.metric or 0), 4)})")


def load_study(study_dir: str | Path, *, storage: str | None = None, name: str = "babysit") -> Study:
    """Returns the Study kept in study_dir (or at an RDB storage URL), read-only."""
    d = Path(study_dir)
    if storage is None and not (d / JOURNAL).is_file():
        raise StoreError(f"{str(d)!r} holds no study ({JOURNAL} is missing); run bs.search(..., study_dir=...) first")
    return Study(storage or d, name)
