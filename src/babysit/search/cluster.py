"""A worker that shares nothing with the master but the study store: `babysit worker`, Ray tasks.

The master records the task in the study's plan (named model and data, as `babysit search` writes
it), so any machine that can import babysit (and the user's module, for "module:function" models)
rebuilds the Task, joins the study and runs trials until every stage is done. The store stays the
truth: a worker that vanishes loses only its running trial, re-queued by the others' reaper.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError, StoreError
from .storage import StudyStore

__all__ = ["join", "task_of", "check_rebuildable"]


def check_rebuildable(described: Mapping[str, Any]) -> None:
    """Raises ConfigError when a task description cannot be rebuilt on another machine (lambda, own tensors)."""
    if not described.get("reproducible", False):
        why = described.get("not_reproducible_because", "the task was not recorded")
        raise ConfigError(f"a worker on another machine cannot rebuild this task: {why}; name the model and data "
                          "in [task] (model = \"module:function\", data = \"mnist1d\" or \"module:function\")")


def task_of(store: StudyStore, search: tuple[str, ...] = ()) -> Any:
    """Returns the Task recorded in the study's plan, rebuilt here; search: more folders for module refs."""
    from ..task import Task

    plan = store.plan()
    described = plan.get("task")
    if described is None:
        raise ConfigError(f"study {store.name!r} records no task (it was made by run_study with an objective); "
                          "start it with bs.search or `babysit search` to run workers elsewhere")
    check_rebuildable(described)
    d = dict(described)
    d["search_path"] = [*d.get("search_path", ()), *search, os.getcwd()]
    return Task.from_description(d)


def _when_created(spec: str, name: str, wait: float, poll: float) -> StudyStore:
    """Returns the store once the study exists (a scheduler may start workers before the master)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            store = StudyStore(spec, name)
            if store.exists() or time.monotonic() >= deadline:
                store.root_id()  # StoreError naming the study when it never came
                return store
        except StoreError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(poll)


def join(spec: str | Path, name: str = "babysit", *, worker: int = 0, device: str = "auto",
         stale_after: float = 300.0, max_attempts: int = 3, poll: float = 0.5,
         search: tuple[str, ...] = (), wait: float = 0.0) -> int:
    """Runs trials of the study at spec (URL or study directory) until it is done; returns how many ran here.

    wait: seconds to wait for the study to be created (workers queued before the master), then StoreError.
    """
    from .trial import hopeless_rule, keep_best_checkpoints, train_objective
    from .worker import work

    store = _when_created(str(spec), name, wait, poll)
    task = task_of(store, search)
    plan = store.plan()
    keep = int(plan.get("keep_checkpoints", 10))
    keep = max([keep] + [int(s.get("continue_top", 0)) for s in plan["stages"]])
    mode = task.metric.mode
    return work(str(spec), name, train_objective(task, device=device), worker=worker, poll=poll,
                stale_after=stale_after, max_attempts=max_attempts, hopeless=hopeless_rule(task),
                after_trial=lambda st: keep_best_checkpoints(st, keep, mode))
