"""The trial adapter: a trial is a `train` call on its own run directory under the study directory.

The notes' workers write checkpoints whose file names carry the validation score; the run
directory of the foundation does exactly that. A Stop condition (not an observer: observers never
steer) writes the heartbeat, reads the kill flag and applies the hopeless rule every epoch.
Disk use is bounded: the best checkpoint of the study's top trials is kept, nothing of the others.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError
from ..losses import chance_loss
from ..status import Stop
from ..store import EpochRecord, RunStore, best_of, list_checkpoints
from ..train import prepare, train
from .space import Param, from_unit, with_limits
from .storage import StudyStore, TrialState, final_trials
from .worker import Hopeless, Objective, Outcome, TrialContext

__all__ = ["train_objective", "hopeless_rule", "keep_best_checkpoints", "check_keys", "worst_value"]

log = logging.getLogger(__name__)


def hopeless_rule(task: Any) -> Hopeless | None:
    """Returns the hopeless-trial rule for the task's loss (None for a custom loss without a chance level)."""
    try:
        return Hopeless(chance_loss(task.loss_kind, task.num_classes), task.num_classes, len(task.splits.val))
    except ConfigError:
        return None


def worst_value(task: Any) -> float:
    """Returns the value told for a trial that ended without a metric (diverged at once): a bad but finite score.

    Accuracy: 0. A loss: minus three times the chance loss (the hopeless threshold). Finite, so a GP
    sampler's standardisation is not wrecked by an infinity.
    """
    if task.metric.mode == "max":
        return 0.0
    rule = hopeless_rule(task)
    return -3.0 * rule.chance_loss if rule is not None else -1e3


def _condition(ctx: TrialContext) -> Any:
    def condition(record: Any) -> tuple[str, str] | None:
        if not isinstance(record, EpochRecord):
            return None
        why = ctx.check(record.epoch, record.train_loss, record.val_acc, first=record.epoch == 1)
        return ("pruned", why) if why else None
    return condition


def _finished_run(task: Any, run_dir: Path) -> Outcome:
    """Returns the outcome of a run that had trained all its epochs before its worker died (re-queued)."""
    hist = RunStore(run_dir).history()
    values = [task.metric.score(r.metric) for r in hist if math.isfinite(r.metric)]
    return Outcome(metric=max(values) if values else None, status="completed", epochs=len(hist))


def train_objective(task: Any, *, device: str = "auto", checkpoint_interval: float = 5.0,
                    monitor: bool = False) -> Objective:
    """Returns the trial objective: train(task, fixed + params) for ctx.epochs, continued or resumed when asked.

    monitor=False (default): trials record scalars only (loss, epoch records), no histograms or arrays,
    except in a stage that asks for telemetry (Stage.monitor).
    """
    def objective(ctx: TrialContext) -> Outcome:
        if ctx.continue_from is not None and not (ctx.run_dir / "config.toml").exists():
            shutil.copytree(ctx.continue_from, ctx.run_dir, dirs_exist_ok=True)  # successive halving
        resume = (ctx.run_dir / "config.toml").exists()  # continued, or re-queued after its worker died
        last = max((c.epoch for c in list_checkpoints(ctx.run_dir)), default=0) if resume else 0
        if last >= ctx.epochs:
            return _finished_run(task, ctx.run_dir)
        run = train(task, ctx.hp, epochs=ctx.epochs, run_dir=ctx.run_dir, seed=ctx.seed, resume=resume,
                    force=not resume and ctx.run_dir.exists(), device=device, stop=Stop(_condition(ctx)),
                    checkpoint_interval=checkpoint_interval, monitor=monitor or ctx.monitor)
        best = run.best_metric
        return Outcome(metric=None if best is None else task.metric.score(best), status=run.status,
                       epochs=len(run.history), reason=run.error)
    return objective


def keep_best_checkpoints(store: StudyStore, keep: int, mode: str = "max") -> None:
    """Deletes checkpoints of finished trials: the best one of the top `keep` trials stays, the others go.

    Trials that a queued or running trial continues are left alone.
    """
    done, protected = [], set()
    s = 0
    while store.stage_id(s) is not None:
        ts = store.trials(s)
        done += [t for t in final_trials(ts) if t.state == TrialState.COMPLETE and t.value is not None]
        protected |= {t.user_attrs.get("continue_from") for t in ts
                      if t.state in (TrialState.RUNNING, TrialState.WAITING)}
        s += 1
    done.sort(key=lambda t: (-float(t.value), t.user_attrs["id"]))  # type: ignore[arg-type]
    top = {t.user_attrs["run_dir"] for t in done[:keep]}
    for t in done:
        rd = t.user_attrs["run_dir"]
        if rd in protected:
            continue
        ckpts = list_checkpoints(rd)
        best = best_of(ckpts, mode) if rd in top else None
        for c in ckpts:
            if best is None or c.path != best.path:
                c.path.unlink(missing_ok=True)


def check_keys(task: Any, space: Mapping[str, Param], fixed: Mapping[str, Any], study_dir: Path) -> None:
    """Raises ConfigError for a searched key nothing reads (a typo, or a key of another rule), before any trial."""
    hp = {**fixed, **{k: from_unit(p, 0.5) for k, p in space.items() if not p.when}}
    plan = prepare(task, hp, epochs=1, run_dir=study_dir / "trials" / "_check")
    bad = [k for k in plan.unused if k in space]
    if bad:
        from .. import hparams

        guess = hparams.ALIASES.get(bad[0]) or hparams.suggest(bad[0], set(hparams.KEYS))
        hint = f"did you mean {guess!r}? " if guess else ""
        raise ConfigError(f"space[{bad[0]!r}]: nothing reads this key with fixed={dict(fixed)!r}; {hint}remove it, "
                          "fix its name, or make it conditional (when={'optimizer': [...]})")


def registry_limits(space: Mapping[str, Param]) -> dict[str, Param]:
    """Returns the space with each known key's hard bounds (hparams registry) as its border-extension limits."""
    from .. import hparams

    out = {}
    for k, p in space.items():
        key = hparams.KEYS.get(k)
        out[k] = with_limits(p, key.low, key.high) if key is not None and p.kind != "choice" else p
    return out
