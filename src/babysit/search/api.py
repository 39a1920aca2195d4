"""search(task, space, stages=...): the master. It creates the study store, forks the workers and waits.

The notes' recipe: random search on log scales, coarse to fine (short trainings first), a warning
when the best value sits on a border; workers around one store, a master that can kill trials.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import ConfigError, StoreError
from .launchers.local import MasterLock, run_local
from .samplers import DEFAULT_SAMPLER, check_sampler
from .space import Param, check_space, space_to_dict
from .stages import Stage, check_stages
from .storage import StudyStore
from .study import Study
from .worker import Hopeless, Objective, ensure_stage, repair_stages, work

__all__ = ["search", "run_study", "settings_from_table"]

log = logging.getLogger(__name__)
PLAN_KEYS = ("space", "stages", "sampler", "seed", "fixed")
SETTINGS = ("stages", "sampler", "seed", "workers", "study_dir", "keep_checkpoints", "stale_after", "max_attempts")


def settings_from_table(table: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns (space, settings) of a `[search]` TOML table: parameter entries, and the reserved settings
    stages = [{trials = 40, epochs = 1}, ...] (or {epochs = 9, budget = 243}: coarse_to_fine), sampler, seed,
    workers, study_dir, keep_checkpoints (data only)."""
    from .space import parse_space

    settings = {k: table[k] for k in SETTINGS if k in table}
    if isinstance(settings.get("stages"), Mapping):  # stages = {epochs = 9, budget = 243}: the default layout
        raw = dict(settings["stages"])
        if set(raw) != {"epochs", "budget"}:
            raise ConfigError(f"[search] stages = {raw!r}: write stages = {{epochs = 9, budget = 243}} (babysit's "
                              "coarse-to-fine layout) or a list of stages")
        from .stages import coarse_to_fine

        settings["stages"] = coarse_to_fine(raw["epochs"], raw["budget"])
    elif "stages" in settings:
        raw = settings["stages"]
        if not isinstance(raw, list) or not all(isinstance(x, Mapping) for x in raw):
            raise ConfigError(f"[search] stages = {raw!r}: write stages = [{{trials = 40, epochs = 1}}, ...]")
        try:
            settings["stages"] = [Stage(**dict(x)) for x in raw]
        except TypeError as exc:
            raise ConfigError(f"[search] stages: {exc}; each stage takes trials, epochs, keep, continue_top, retrain_top, fixed, monitor, sampler") from exc
    return parse_space({k: v for k, v in table.items() if k not in SETTINGS}), settings


def _jsonable(fixed: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(dict(fixed)))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"fixed={dict(fixed)!r}: values must be plain data (numbers, strings, lists); {exc}") from exc


def _open(spec: str, name: str, plan: dict[str, Any], resume: bool) -> StudyStore:
    store = StudyStore(spec, name)
    if not store.exists():
        store.create(plan)
        return store
    if not resume:
        raise StoreError(f"{plan['study_dir']!r} already holds study {name!r}; pass resume=True (--resume) to "
                         "continue it, or choose another study_dir")
    old = store.plan()
    diff = [k for k in PLAN_KEYS if json.dumps(old.get(k), sort_keys=True) != json.dumps(plan.get(k), sort_keys=True)]
    if diff == ["stages"] and _grows(old["stages"], plan["stages"]):
        store.set_plan({**old, "stages": plan["stages"]})  # new stages at the end: the finished ones stay as they are
        log.info("study %s: %d stage(s) added at its end", plan["study_dir"], len(plan["stages"]) - len(old["stages"]))
        return store
    if diff:
        raise StoreError(f"cannot resume study {plan['study_dir']!r} with a different {', '.join(diff)}; "
                         "use the same arguments, or another study_dir")
    return store


def _grows(old: list[Any], new: list[Any]) -> bool:
    """Returns True when `new` is `old` with stages added at its end."""
    return len(new) > len(old) and json.dumps(old, sort_keys=True) == json.dumps(new[:len(old)], sort_keys=True)


def _reap_all(store: StudyStore, stages: int, **kw: Any) -> None:
    repair_stages(store, stages)
    for s in range(stages):
        if store.stage_id(s) is not None:
            store.reap(s, dead_pids=True, **kw)


def run_study(objective: Objective, space: Mapping[str, Param], *, stages: Sequence[Stage], study_dir: str | Path,
              fixed: Mapping[str, Any] | None = None, workers: int = 2, sampler: str = DEFAULT_SAMPLER, seed: int = 0,
              resume: bool = False, storage: str | None = None, name: str = "babysit", stale_after: float = 300.0,
              max_attempts: int = 3, hopeless: Hopeless | None = None, extra: Mapping[str, Any] | None = None,
              after_trial: Callable[[StudyStore], None] | None = None, poll: float = 0.1,
              progress: Callable[[], None] | None = None, worst: float = 0.0, launcher: str = "local",
              address: str | None = None) -> Study:
    """Returns the Study after running a generic trial objective(ctx) -> Outcome | float over the stages.

    workers=0 runs the trials in this process (no fork); the store is created before any worker starts.
    worst: the value told to the sampler for a trial that ended without a metric (higher is better).
    """
    space, st = check_space(space, fixed), check_stages(stages)
    check_sampler(sampler)
    if launcher not in ("local", "ray"):
        raise ConfigError(f"launcher={launcher!r}: must be 'local' (fork workers here) or 'ray' (Ray tasks)")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"workers={workers!r}: must be an integer >= 0 (0: run the trials in this process)")
    study_dir = Path(study_dir).resolve()
    plan = {"version": 1, "space": space_to_dict(space), "stages": [s.to_dict() for s in st], "sampler": sampler,
            "seed": int(seed), "fixed": _jsonable(fixed or {}), "study_dir": str(study_dir), "worst": float(worst),
            **dict(extra or {})}
    spec = storage or str(study_dir)
    kw: dict[str, Any] = {"stale_after": stale_after, "max_attempts": max_attempts}
    with MasterLock(study_dir) as lock:
        store = _open(spec, name, plan, resume)
        ensure_stage(store, 0)
        _reap_all(store, len(st), **kw)  # a resumed master: trials its dead workers held go back in the queue

        def target(w: int) -> None:
            work(spec, name, objective, worker=w, hopeless=hopeless, after_trial=after_trial, poll=poll, **kw)

        if launcher == "ray":  # workers rebuild the task from the plan on their nodes (search.cluster.join)
            from .launchers.ray import run_ray

            run_ray(spec, name, workers, address=address, on_poll=progress,
                    reap=lambda: _reap_all(store, len(st), **kw), **kw)
        elif workers == 0:
            target(0)
        else:
            run_local(target, workers, lock=lock, on_death=lambda pid: _reap_all(store, len(st), **kw),
                      on_poll=progress)
    return Study(spec, name)


def search(task: Any, space: Mapping[str, Any], *, stages: Sequence[Stage], study_dir: str | Path,
           fixed: Mapping[str, Any] | None = None, workers: int = 2, sampler: str = DEFAULT_SAMPLER, seed: int = 0,
           resume: bool = False, storage: str | None = None, keep_checkpoints: int = 10, device: str = "auto",
           stale_after: float = 300.0, max_attempts: int = 3, progress: Callable[[], None] | None = None,
           name: str = "babysit", launcher: str = "local", address: str | None = None) -> Study:
    """Returns the Study of a hyperparameter search: each trial a `train` call on its own run directory.

    space: key -> bs.loguniform/uniform/intuniform/choice, or "auto" for lr (from bs.lr_find);
    fixed: hyperparameters that are not searched. Hopeless trials (NaN/inf, loss > 3x chance, not
    off chance after epoch 1) are stopped and told to the samplers as bad results.
    """
    from .trial import check_keys, hopeless_rule, keep_best_checkpoints, registry_limits, train_objective, worst_value

    space = registry_limits(check_space(_auto_ranges(task, dict(space), dict(fixed or {}), device), fixed))
    check_keys(task, space, dict(fixed or {}), Path(study_dir))
    keep = max([int(keep_checkpoints)] + [s.continue_top for s in check_stages(stages)])
    mode = task.metric.mode
    if launcher == "ray":
        from .cluster import check_rebuildable

        check_rebuildable(task.describe())
    return run_study(train_objective(task, device=device), space, stages=stages, study_dir=study_dir, fixed=fixed,
                     workers=workers, sampler=sampler, seed=seed, resume=resume, storage=storage,
                     stale_after=stale_after, max_attempts=max_attempts, hopeless=hopeless_rule(task),
                     extra={"task": task.describe(), "keep_checkpoints": int(keep_checkpoints),
                            "metric": task.metric.name},
                     after_trial=lambda store: keep_best_checkpoints(store, keep, mode), progress=progress,
                     worst=worst_value(task), name=name, launcher=launcher, address=address)


def _auto_ranges(task: Any, space: dict[str, Any], fixed: dict[str, Any], device: str) -> dict[str, Any]:
    for key, p in space.items():
        if isinstance(p, str) and p == "auto":
            if key != "lr":
                raise ConfigError(f"space[{key!r}]='auto': only 'lr' can be 'auto' (from bs.lr_find)")
            from .range_test import lr_find
            from .space import loguniform

            found = lr_find(task, fixed, device=device)
            space[key] = loguniform(*found.range)
            log.info("lr range from lr_find: %s", found.range)
    return space
