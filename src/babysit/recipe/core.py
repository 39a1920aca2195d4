"""recipe(task, space, budget=...): the notes' summary, end to end, for the user's model and data.

Gradient check and sanity checks first (stop with the advice when one fails); random search coarse to
fine within the budget; final longer trainings with step decay and a running average of weights;
then the best single model, its averaged weights, an ensemble of the final models (optionally distilled),
chosen on validation. The test split is read once, at the very end, for every candidate together.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping

from ..ensemble.distillation import DEFAULT_TRANSFER_SIZE
from ..errors import ConfigError, StoreError
from ..preflight import check_task
from ..search import load_study, search
from ..workers import threads_per_worker
from ..search.samplers import DEFAULT_SAMPLER
from ..search.space import Param, check_space, from_unit, with_limits
from ..task import Task
from ..threads import torch_threads
from ..store import RunStore
from ..store.files import atomic_write
from ..train import train
from .evaluate import evaluate_final, next_steps, stage_summaries
from .plan import FINE, FINE_EPOCHS, SHARES, USABLE, Budget, Plan, final_fixed, final_stage, plan_stages
from .result import RecipeResult

# distillation trains a student and a label-only student, each on the training split plus its transfer set
DISTILL_ROUNDS = math.ceil(2 * (1 + DEFAULT_TRANSFER_SIZE))

__all__ = ["recipe"]

log = logging.getLogger(__name__)
RECORD = "recipe.json"
CONTENTION = 1.4  # measured here: two workers on two cores each train an epoch 1.3-1.7x slower than one alone
TRIAL_BOOKKEEPING = 0.4  # seconds per trial in the study store (ask, tell, heartbeats), two workers, journal
FINAL_TELEMETRY = 1.2  # a final epoch also evaluates the averaged weights and records the telemetry
FINAL_SHARE = 0.85  # of the time left: final models differ in size, and a round lasts as long as its slowest
# (measured with 1.0: 10-minute budgets ran 10.5 min (CNN) and 12.0 min (MLP))
EVALUATION = 3.0  # seconds per final model for the evaluation, its diagnosis and its report


def _check_args(workers: Any, final_models: Any) -> None:
    for name, v, lo in (("workers", workers, 0), ("final_models", final_models, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"{name}={v!r}: must be an integer >= {lo}")


def _sizes_bounded(space: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the space with every integer range (widths, channels, depths) as its own border limits.

    A border extension of a size costs time the budget does not have (measured: an MLP width range
    [64, 1024] extended to 3,779 at depth 3, 43 s per epoch, one trial over 20 minutes of a 10-minute
    recipe). Rates, strengths and dropout still extend; a border warning still says where the best sits.
    """
    return {k: with_limits(p, p.lo, p.hi) if isinstance(p, Param) and p.kind == "intuniform" else p
            for k, p in space.items()}


def _point(space: Mapping[str, Any], fixed: Mapping[str, Any], u: float) -> dict[str, Any]:
    """Returns fixed plus the point u in [0, 1) of every searched range (each in its own scale)."""
    concrete = {k: p for k, p in space.items() if not (isinstance(p, str) and p == "auto")}
    params = check_space(concrete, fixed)
    return {**fixed, **{k: from_unit(p, u) for k, p in params.items() if not p.when}}


def _calibrate(task: Task, space: Mapping[str, Any], fixed: Mapping[str, Any], root: Path, seed: int, workers: int,
               device: str) -> tuple[float, float]:
    """Returns (seconds per epoch, seconds of fixed cost per trial), measured on three points of the space.

    The middle of every range trains 2 epochs (the first pays the warm-up), the points at a quarter and
    three quarters 1 epoch each: their mean is the epoch of an average trial. Workers that share the
    cores run slower than one alone (CONTENTION), and every trial pays the study store's bookkeeping.
    """
    times, fixed_cost = [], []
    for u, epochs in ((0.5, 2), (0.25, 1), (0.75, 1)):
        start = time.perf_counter()
        run = train(task, _point(space, fixed, u), epochs=epochs, run_dir=root / "calibration", seed=seed,
                    force=True, monitor=False, threads=threads_per_worker(max(1, workers)), device=device)
        total = time.perf_counter() - start
        if not run.history:
            raise ConfigError(f"the calibration training ended as {run.status!r} before an epoch finished "
                              f"({run.error or 'no error recorded'}): fix the configuration, or give budget epochs")
        times.append(run.history[-1].seconds)
        fixed_cost.append(max(0.0, total - sum(r.seconds for r in run.history)))
    shared = workers > 1 and workers >= threads_per_worker(1)
    return max(sum(times) / len(times), 1e-3) * (CONTENTION if shared else 1.0), \
        min(fixed_cost) + TRIAL_BOOKKEEPING


def _round_down(n: float) -> int:
    """Returns n rounded down to two significant digits: calibration noise should not change the plan."""
    if n < 100:
        return int(n)
    scale = 10 ** (int(math.log10(n)) - 1)
    return int(n // scale * scale)


def _plan(task: Task, space: Mapping[str, Any], fixed: Mapping[str, Any], budget: Budget, mid: Mapping[str, Any],
          root: Path, seed: int, workers: int, final_models: int, device: str, spent: float) -> Plan:
    spe, over = None, 0.0
    if budget.minutes is not None:
        t = time.perf_counter()
        spe, over = _calibrate(task, space, fixed, root, seed, workers, device)
        left = budget.minutes * 60.0 - spent - (time.perf_counter() - t)
        epochs = _round_down(max(0.0, left) * USABLE * max(1, workers) / spe)
    else:
        epochs = int(budget.epochs or 0)
    stages = plan_stages(epochs, final_models, overhead=over / spe if spe else 0.0,
                         final=_final_hp(task, fixed, space, mid))
    return Plan(epochs, stages, budget.minutes, spe, over)


def _final_hp(task: Task, fixed: Mapping[str, Any], space: Mapping[str, Any],
              mid: Mapping[str, Any]) -> Callable[[int], dict[str, Any]]:
    hp = task.resolve_hp(mid)
    steps = max(1, math.ceil(len(task.splits.train) / int(hp.get("batch_size", 64))))  # type: ignore[arg-type]
    return lambda e: final_fixed(e, fixed, space, steps)


def _measured(study: Any, stage: int, k: int) -> float | None:
    """Returns the mean seconds per epoch of the stage's top k trials (as they ran: beside the other workers)."""
    top = sorted((t for t in study.trials if t.stage == stage and t.metric is not None),
                 key=lambda t: (-float(t.metric), t.id))[:k]
    per = []
    for t in top:
        hist = RunStore(t.run_dir).history() if Path(t.run_dir).exists() else ()
        if hist:
            per.append(sum(r.seconds for r in hist) / len(hist))
    return sum(per) / len(per) if per else None


def _timed_fine(plan: Plan, study: Any, left: float, workers: int) -> Plan:
    """Returns the plan with the fine stage sized from the time left and the measured epochs of the coarse
    stage's top trials (the fine stage searches around them; they are often the largest models)."""
    coarse, fine, final = plan.stages
    spe = _measured(study, 0, coarse.top) or float(plan.seconds_per_epoch or 1.0)
    share = max(0.0, left) * SHARES[1] / (SHARES[1] + SHARES[2]) * max(1, workers)
    e1, over = fine.epochs, plan.overhead_seconds
    n1 = math.floor(share / (e1 * spe + over))
    if n1 < FINE[0]:
        e1, n1 = max(FINE_EPOCHS[0], math.floor((share / FINE[0] - over) / spe)), FINE[0]
    new = replace(fine, trials=min(n1, FINE[1]), epochs=e1)
    return replace(plan, stages=(coarse, new, final_stage(final.epochs, final.trials, new)), fine_measured=True,
                   fine_seconds_per_epoch=spe)


def _timed_final(plan: Plan, study: Any, left: float, workers: int, rounds_after: int,
                 final: Callable[[int], Mapping[str, Any]]) -> Plan:
    """Returns the plan with the final stage's epochs set from the time left and the measured epoch of the
    configurations it will train again (the fine stage's top ones ran beside the other workers, as it will)."""
    fine, n2 = plan.stages[1], plan.stages[2].trials
    spe = (_measured(study, 1, n2) or float(plan.seconds_per_epoch or 1.0)) * FINAL_TELEMETRY
    rounds = math.ceil(n2 / max(1, workers)) + rounds_after
    epochs = _round_down(max(0.0, FINAL_SHARE * left / rounds - plan.overhead_seconds) / spe)
    stage = final_stage(epochs, n2, fine, final)
    return replace(plan, stages=(*plan.stages[:2], stage), final_measured=True, final_seconds_per_epoch=spe)


def _write(root: Path, record: Mapping[str, Any]) -> None:
    data = json.dumps(record, indent=2, default=str).encode()
    atomic_write(root / RECORD, lambda f: f.write(data))


def _progress(say: Callable[[str], None], study_dir: Path, plan: Plan, start: float,
              every: float) -> Callable[[], None]:
    names = ("coarse", "fine", "final")
    last = [time.monotonic()]

    def poll() -> None:
        if time.monotonic() - last[0] < every:
            return
        last[0] = time.monotonic()
        try:
            study = load_study(study_dir)
            trials = study.trials
        except Exception:  # the store may be mid-write; the next poll shows it
            return
        done = [t for t in trials if t.status not in ("running", "queued")]
        s = max((t.stage for t in trials), default=0)
        st = plan.stages[s]
        in_stage = sum(t.stage == s for t in done)
        best = study.best
        left = "" if plan.minutes is None else \
            f", {max(0.0, plan.minutes - (time.perf_counter() - start) / 60):.1f} of {plan.minutes:g} min left"
        say(f"stage {s + 1}/3 ({names[s]}, {st.epochs} epoch{'s' * (st.epochs > 1)} each): {in_stage}/{st.trials} "
            f"trials done, {sum(st.trials for st in plan.stages) - len(done)} left in all; best val "
            f"{'-' if best is None else f'{best.metric:.4f}'}{left}")
    return poll


def _recorded_plan(path: str | Path) -> Plan:
    """Returns the fully sized plan recorded in a recipe.json (or a recipe directory), to run again as it was."""
    p = Path(path)
    p = p / RECORD if p.is_dir() else p
    try:
        plan = Plan.from_dict(json.loads(p.read_text())["plan"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"repeat={str(path)!r}: not a recipe.json with a plan ({type(exc).__name__}: {exc})") from exc
    if plan.minutes is not None and not plan.final_measured:
        raise ConfigError(f"repeat={str(path)!r}: that recipe stopped before its stages were all sized; resume it "
                          "(--resume) instead of repeating it")
    return replace(plan, fine_measured=True, final_measured=True)


def recipe(task: Task, space: Mapping[str, Any], *, budget: Budget | Mapping[str, Any] | None = None,
           dir: str | Path = "recipe", fixed: Mapping[str, Any] | None = None, seed: int = 0, workers: int = 2,
           final_models: int | None = None, distill: bool = False, retrain: bool = False, resume: bool = False,
           device: str = "auto", sampler: str = DEFAULT_SAMPLER, progress: Callable[[str], None] | None = None,
           progress_every: float = 10.0, repeat: str | Path | None = None) -> RecipeResult:
    """Returns the RecipeResult: preflight, a coarse-to-fine search within the budget, final trainings, evaluation.

    A failed preflight stops before any training (status "preflight_failed", with the advice). The
    recipe's result is the candidate (single, averaged, ensemble, distilled) best on validation; the
    test split is read once, at the end. retrain: the chosen configuration trained again on train+val.
    final_models: the final trainings and the ensemble's members (default: 3 rounds of the workers, or 5).
    repeat: a recipe.json (or recipe directory) whose recorded stages run again instead of a budget: with
    the same config and seed, the same numbers (a time budget's sizing depends on the machine's speed).
    """
    if (budget is None) == (repeat is None):
        raise ConfigError("give the recipe a budget (bs.Budget(minutes=10) or bs.Budget(epochs=400)) or an "
                          "earlier recipe to repeat (repeat='recipes/x/recipe.json'), one of the two")
    given = _recorded_plan(repeat) if repeat is not None else None
    budget = Budget.of(budget) if budget is not None else Budget(epochs=given.epochs)  # type: ignore[union-attr]
    if given is not None:
        final_models = given.stages[2].trials
    if final_models is None:  # whole rounds of the workers: 5 models on 2 workers leave one idle a third of the time
        final_models = 3 * workers if 1 < workers <= 3 else 5
    _check_args(workers, final_models)
    if budget.epochs is not None and given is None:  # bad input is refused before anything is written
        plan_stages(budget.epochs, final_models)
    root, fixed, space = Path(dir).resolve(), dict(fixed or {}), _sizes_bounded(space)
    if (root / RECORD).exists() and not resume:
        raise StoreError(f"{str(root)!r} already holds a recipe; pass resume=True (--resume) to continue it, or "
                         "choose another directory")
    say = progress or (lambda line: None)
    start = time.perf_counter()
    mid = _point(space, fixed, 0.5)
    say("preflight: gradient checks and sanity checks")
    with torch_threads(1 if workers else None):  # forked workers cannot reuse an OpenMP pool (launchers.local)
        pre = check_task(task, mid, seed=seed, threads=1 if workers else "auto")
    seconds: dict[str, float] = {"preflight": pre.seconds}
    root.mkdir(parents=True, exist_ok=True)  # only now: bad input (a key nothing reads) leaves nothing behind
    if not pre.ok:
        result = RecipeResult.stopped(root, pre, seconds, task.num_classes)
        _write(root, result.to_dict())
        result.write_html()
        return result
    old = json.loads((root / RECORD).read_text()) if (root / RECORD).exists() else {}
    if old.get("plan"):
        plan = Plan.from_dict(old["plan"])
    elif given is not None:
        plan = given
    else:
        say("calibration: timing epochs at three points of the space to turn the budget into epochs"
            if budget.minutes else "planning")
        with torch_threads(1 if workers else None):
            plan = _plan(task, space, fixed, budget, mid, root, seed, workers, final_models, device,
                         time.perf_counter() - start)
    _write(root, {"status": "running", "plan": plan.to_dict()})
    timed = plan.minutes is not None and not plan.final_measured
    say(f"plan: {plan.epochs} epochs in all: " + ", ".join(f"{s.trials} trials x {s.epochs} epochs" for s in
                                                           plan.stages[:2])
        + f", {plan.stages[2].trials} final trainings of " + ("epochs sized after the fine stage" if timed else
                                                              f"{plan.stages[2].epochs} epochs"))
    t = time.perf_counter()

    def run(p: Plan, stages: int, again: bool) -> Any:
        with torch_threads(1 if workers else None):
            return search(task, space, stages=list(p.stages[:stages]), study_dir=root / "study", fixed=fixed,
                          workers=workers, sampler=sampler, seed=seed, resume=again,
                          keep_checkpoints=max(10, final_models), device=device,
                          progress=_progress(say, root / "study", p, start, progress_every))

    again = resume
    if plan.minutes is not None and not plan.fine_measured:  # each stage sized from what the last one measured
        study = run(plan, 1, again)
        left = plan.minutes * 60.0 - (time.perf_counter() - start) - EVALUATION * final_models
        plan, again = _timed_fine(plan, study, left, workers), True
        _write(root, {"status": "running", "plan": plan.to_dict()})
        say(f"fine stage: {plan.stages[1].trials} trials of {plan.stages[1].epochs} epochs, from the coarse stage's "
            f"measured {plan.fine_seconds_per_epoch:.3f} s per epoch and {left / 60:.1f} min left")
    if plan.minutes is not None and not plan.final_measured:
        study = run(plan, 2, again)
        left = plan.minutes * 60.0 - (time.perf_counter() - start) - EVALUATION * final_models
        plan, again = _timed_final(plan, study, left, workers, DISTILL_ROUNDS * distill + retrain,
                                   _final_hp(task, fixed, space, mid)), True
        _write(root, {"status": "running", "plan": plan.to_dict()})
        say(f"final stage: {final_models} trainings of {plan.stages[2].epochs} epochs, from the fine stage's "
            f"measured {plan.final_seconds_per_epoch:.3f} s per epoch and {left / 60:.1f} min left")
    study = run(plan, 3, again)
    seconds["search"] = time.perf_counter() - t
    say("evaluation: single model, averaged weights, ensemble" + (", distillation" if distill else ""))
    t = time.perf_counter()
    ev = evaluate_final(task, study, root, seed=seed, distill=distill, retrain=retrain, device=device)
    seconds["evaluation"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    result = RecipeResult(status="completed", dir=root, plan=plan, preflight=pre.to_dict(), preflight_text=str(pre),
                          stages=stage_summaries(study, plan), candidates=ev.candidates, chosen=ev.chosen,
                          chance=1.0 / task.num_classes, seconds=seconds, findings=ev.findings, reports=ev.reports,
                          warnings=tuple(study.warnings), next_steps=next_steps(study, ev), test_examples=ev.examples,
                          retrained=retrain, study_dir=root / "study")
    _write(root, result.to_dict())
    study.html(root / "study" / "study.html")
    result.write_html()
    return result
