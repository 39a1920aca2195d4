"""The worker: ask -> run the trial objective -> tell, against the study store, until every stage is done.

Workers are symmetric (the notes' workers): nothing central must stay alive. Stages are barriers;
the first worker to reach an uncreated stage wins the store's election (a study name is created
once) and queues that stage's trials, which are a pure function of the finished trials before it.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .samplers import is_adaptive, optuna_sampler, propose
from .space import Param, active, check_space, parse_space, space_to_dict
from .stages import Stage, refit
from optuna.exceptions import UpdateFinishedTrialError

from .storage import Popped, StudyStore, TrialState, _alive, final_trials, params_of, worker_record

__all__ = ["TrialContext", "Outcome", "Hopeless", "work", "ensure_stage", "stage_results", "Objective"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hopeless:
    """The hopeless-trial rule: NaN/inf loss, loss > 3x chance, or not off chance after epoch 1."""

    chance_loss: float
    num_classes: int
    n_val: int

    def verdict(self, epoch: int, train_loss: float | None, val_acc: float | None, first: bool) -> str | None:
        """Returns why a trial is hopeless at this epoch, or None."""
        if train_loss is None:
            return None
        if not math.isfinite(train_loss):
            return f"loss became {train_loss} at epoch {epoch}"
        if train_loss > 3 * self.chance_loss:
            return f"loss {train_loss:.4g} > 3x the chance loss {self.chance_loss:.4g} at epoch {epoch}"
        p = 1.0 / self.num_classes
        off_chance = p + 2 * math.sqrt(p * (1 - p) / max(self.n_val, 1))
        if first and train_loss >= 0.97 * self.chance_loss and (val_acc is None or val_acc <= off_chance):
            return (f"not off chance after epoch {epoch}: loss {train_loss:.4g} vs chance {self.chance_loss:.4g}, "
                    f"val acc {val_acc if val_acc is None else round(val_acc, 4)}")
        return None


@dataclass(frozen=True)
class Outcome:
    """What a trial objective hands back: its metric (higher is better), status and epochs trained."""

    metric: float | None
    status: str = "completed"
    epochs: int | None = None
    reason: str | None = None


@dataclass
class TrialContext:
    """What a trial objective gets: the hyperparameters, its epochs, run directory and a check to call each epoch.

    continue_from: the run directory of the trial this one continues (successive halving), or None.
    """

    id: int
    stage: int
    index: int
    attempt: int
    seed: int
    params: dict[str, Any]
    hp: dict[str, Any]
    epochs: int
    run_dir: Path
    continue_from: Path | None
    store: StudyStore = field(repr=False)
    trial_id: int = field(repr=False)
    hopeless: Hopeless | None = field(default=None, repr=False)
    monitor: bool = False
    stop_reason: str | None = None
    stop_status: str | None = None
    beat_every: float = field(default=0.0, repr=False)  # seconds between heartbeat writes (the pop is the first)
    _beat: float = field(default_factory=time.monotonic, repr=False)

    def check(self, epoch: int, train_loss: float | None = None, val_acc: float | None = None,
              first: bool = False) -> str | None:
        """Reads the kill flag, writes the heartbeat and applies the hopeless rule; returns why to stop, or None.

        Every call reads whether the trial was taken away or flagged (one light read); the heartbeat is
        written when `beat_every` seconds have passed since the last one (a tenth of the reaper's
        stale_after, at most 10 s): liveness needs no write per epoch.
        """
        taken, why = self.store.poll(self.trial_id, self.id)
        if not taken and time.monotonic() - self._beat >= self.beat_every:
            taken = not self.store.heartbeat(self.trial_id)
            self._beat = time.monotonic()
        if taken:
            self.stop_reason, self.stop_status = "taken away (re-queued by a reaper)", "reaped"
        elif why is not None:
            self.stop_reason, self.stop_status = why, "pruned"
        elif self.hopeless is not None and (why := self.hopeless.verdict(epoch, train_loss, val_acc, first)):
            self.stop_reason, self.stop_status = f"hopeless: {why}", "pruned"
        return self.stop_reason


Objective = Callable[[TrialContext], "Outcome | float"]


def stage_sampler(plan: Mapping[str, Any], s: int) -> str:
    """Returns the sampler of stage s: the stage's own, or the search's."""
    return str(plan["stages"][s].get("sampler") or plan["sampler"])


def _plan(store: StudyStore) -> tuple[dict[str, Any], list[Stage], dict[str, Param]]:
    plan = store.plan()
    return plan, [Stage(**d) for d in plan["stages"]], check_space(parse_space(plan["space"]), plan["fixed"])


def stage_results(store: StudyStore, stage: int) -> list[tuple[dict[str, Any], float, FrozenTrialT]]:
    """Returns (params, value, trial) of the stage's finished trials that have a value, in index order."""
    done = [t for t in final_trials(store.trials(stage)) if t.state == TrialState.COMPLETE and t.value is not None]
    done.sort(key=lambda t: (t.user_attrs["index"], t.number))
    return [(params_of(t), float(t.value), t) for t in done]  # type: ignore[arg-type]


FrozenTrialT = Any


def _stage_space(store: StudyStore, plan: dict[str, Any], stages: list[Stage], space: dict[str, Param],
                 s: int) -> tuple[dict[str, Param], list[dict[str, Any]]]:
    if s == 0:
        return space, []
    prev = dict(check_space(parse_space(store.stage_attrs(s - 1)["space"]), plan["fixed"]))
    results = [(p, v) for p, v, _ in stage_results(store, s - 1)]
    if not results:
        return prev, []
    return refit(prev, results, stages[s - 1].top, s - 1)


def ensure_stage(store: StudyStore, s: int) -> None:
    """Creates stage s when this process wins the election (a no-op otherwise): its space and queued trials."""
    if store.stage_id(s) is not None or store.claim_stage(s) is None:
        return
    store.set_stage_attr(s, "claimed", worker_record())
    _fill_stage(store, s)


def _fill_stage(store: StudyStore, s: int) -> None:
    """Writes stage s's space and queues each of its trials not queued yet; then marks it ready."""
    plan, stages, space = _plan(store)
    st, study_dir = stages[s], Path(plan["study_dir"])
    new_space, findings = _stage_space(store, plan, stages, space, s)
    store.set_stage_attr(s, "space", space_to_dict(new_space))
    store.set_stage_attr(s, "findings", findings)
    offset = sum(x.trials for x in stages[:s])
    cont, again = [], []
    if st.continue_top:
        best = sorted(stage_results(store, s - 1), key=lambda r: -r[1])[: st.continue_top]
        cont = [(r[0], r[2].user_attrs["run_dir"], r[2].user_attrs["id"],
                 r[2].user_attrs.get("origin", r[2].user_attrs["id"])) for r in best]
    if st.retrain_top:
        best = sorted(stage_results(store, s - 1), key=lambda r: (-r[1], r[2].user_attrs["id"]))
        again = [(r[0], r[2].user_attrs["id"]) for r in best[: st.retrain_top]]
    queued = {int(t.user_attrs["index"]) for t in store.trials(s) if "index" in t.user_attrs}
    for i in range(st.trials):
        if i in queued:
            continue
        attrs: dict[str, Any] = {"stage": s, "index": i, "id": offset + i, "attempt": 0,
                                 "run_dir": str(study_dir / "trials" / f"{offset + i:05d}")}
        params: dict[str, Any] = {}
        if i < len(cont):
            attrs.update(params=cont[i][0], continue_from=cont[i][1], continues=cont[i][2], origin=cont[i][3])
        elif i < len(again):
            attrs.update(params=again[i][0], retrains=again[i][1])
        elif not is_adaptive(stage_sampler(plan, s)):
            params = propose(stage_sampler(plan, s), plan["seed"], s, i, new_space, st.trials, plan["fixed"])
        store.enqueue(s, params, attrs)
    store.set_stage_attr(s, "ready", True)


CLAIM_GRACE = 2.0  # seconds a stage may stay without its creator's record before its creator counts as dead


def repair_stages(store: StudyStore, stages: int, grace: float = CLAIM_GRACE) -> int:
    """Finishes creating the stages whose creator died half-way; returns how many.

    A creator died when its pid is gone on this host, or when the stage still has no creator's record
    `grace` seconds after it was seen (killed between winning the election and writing it). The master
    calls it on start (resume) and when a worker dies: the stage's plan is a pure function of the store,
    so what the creator would have queued is known.
    """
    host, unclaimed, orphans = socket.gethostname(), [], []
    for s in range(stages):
        if store.stage_id(s) is None:
            continue
        attrs = store.stage_attrs(s)
        claimed = attrs.get("claimed") or {}
        if attrs.get("ready"):
            continue
        if not claimed:
            unclaimed.append(s)
        elif claimed.get("host") == host and not _alive(claimed.get("pid"), claimed.get("started")):
            orphans.append(s)
    if unclaimed:
        time.sleep(grace)  # a live creator writes its record right after its election
        orphans += [s for s in unclaimed if not store.stage_attrs(s).get("claimed")]
    for s in sorted(orphans):
        take_over_stage(store, s)
    return len(orphans)


def take_over_stage(store: StudyStore, s: int) -> None:
    """Records this process as stage s's creator and queues what its dead creator did not (idempotent)."""
    store.set_stage_attr(s, "claimed", worker_record())
    _fill_stage(store, s)
    log.warning("stage %d: its creator died before queueing all its trials; %s finished it", s, os.getpid())


def stage_done(store: StudyStore, s: int, trials: int) -> bool:
    """Returns True when every index of stage s has a final trial."""
    return len(store.final_indexes(s)) >= trials


def current_stage(store: StudyStore, stages: list[Stage], done: set[int] | None = None,
                  drained: set[int] | None = None) -> tuple[str, int]:
    """Returns ("run", s) for the stage to work on, ("wait", s) while s is being created, or ("done", -1).

    done: stages known to be done (a done stage stays done), skipped and added to: fewer store reads.
    drained: when given, only these stages (a pop found nothing) are read for being done; another ready
    stage is "run" at once (a pop answers whether it has work, cheaper than reading the stage).
    """
    for s, st in enumerate(stages):
        if done is not None and s in done:
            continue
        ensure_stage(store, s)
        if not store.stage_attrs(s).get("ready"):
            return "wait", s
        if drained is not None and s not in drained:
            return "run", s
        if not stage_done(store, s, st.trials):
            return "run", s
        if done is not None:
            done.add(s)
    return "done", -1


def _ask(store: StudyStore, s: int, plan: dict[str, Any], sampler: Any,
         popped: Popped | None = None) -> tuple[int, dict[str, Any]] | None:
    """Pops a queued trial of stage s (unless given, popped) and fills in its hyperparameters; returns (id, attrs).

    Two store writes per trial where plain Optuna's ask and tell make three: the hyperparameters with
    who runs it, and the result with its state and the next trial's pop (`StudyStore.finish_and_pop`).
    """
    got = store.pop(s) if popped is None else popped  # atomic: exactly one worker moves a queued trial to RUNNING
    if got is None:
        return None
    tid, user, system = got
    attrs = dict(user)
    try:
        if "params" in attrs:  # given (continued, re-queued): nothing to suggest
            # the worker record, at once (a popped trial left unmarked is reaped)
            return (tid, attrs) if store.write(tid, []) else None
        space = check_space(parse_space(store.stage_space(s)), plan["fixed"])
        ops = None if is_adaptive(stage_sampler(plan, s)) else _given(space, plan["fixed"], system.get("fixed_params", {}))
        if ops is None:  # the sampler chooses: Optuna's trial, its writes buffered into one
            ops, params = _suggest(store, s, sampler, tid, space, plan["fixed"])
        else:
            params = {op[1]: op[4] for op in ops}
        if not store.write(tid, [op[:4] for op in ops]):
            return None
        return tid, {**attrs, "params": params}
    except UpdateFinishedTrialError:  # finished by another process meanwhile (a storage without atomic pops)
        return None


def _distribution(p: Param) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.kind == "choice":
        return CategoricalDistribution(list(p.values))
    if p.kind == "intuniform":
        return IntDistribution(int(p.lo or 0), int(p.hi or 0), log=p.log)
    return FloatDistribution(float(p.lo or 0), float(p.hi or 0), log=p.log)


def _given(space: dict[str, Param], fixed: Mapping[str, Any], given: Mapping[str, Any]) -> list[tuple] | None:
    """Returns the param writes of hyperparameters queued with the trial, or None when one is missing or off its range."""
    chosen, ops = dict(fixed), []
    for key, p in space.items():
        if not active(p, chosen):
            continue
        if key not in given:
            return None
        dist, v = _distribution(p), given[key]
        internal = dist.to_internal_repr(v)
        if not dist._contains(internal):
            return None
        ops.append(("param", key, internal, dist, v))
        chosen[key] = v
    return ops


class _Buffer:
    """Optuna's storage for one trial, its param writes kept in a list (written by StudyStore.write as one)."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        self.ops: list[tuple[Any, ...]] = []

    def set_trial_param(self, trial_id: int, name: str, internal: float, distribution: Any) -> None:
        self.ops.append(("param", name, internal, distribution))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


def _suggest(store: StudyStore, s: int, sampler: Any, tid: int, space: dict[str, Param],
             fixed: Mapping[str, Any]) -> tuple[list[tuple], dict[str, Any]]:
    import optuna

    study = store.study(s, sampler)
    study._thread_local.cached_all_trials = None
    trial = optuna.Trial(study, tid)
    buffer = _Buffer(trial.storage)
    trial.storage = buffer  # type: ignore[assignment]
    chosen, params = dict(fixed), {}
    for key, p in space.items():
        if not active(p, chosen):
            continue
        if p.kind == "choice":
            v = trial.suggest_categorical(key, list(p.values))
        elif p.kind == "intuniform":
            v = trial.suggest_int(key, int(p.lo or 0), int(p.hi or 0), log=p.log)
        else:
            v = trial.suggest_float(key, float(p.lo or 0), float(p.hi or 0), log=p.log)
        params[key] = chosen[key] = v
    return buffer.ops, params


def _run(store: StudyStore, objective: Objective, tid: int, attrs: dict[str, Any], plan: dict[str, Any],
         stages: list[Stage], hopeless: Hopeless | None, beat_every: float = 0.0) -> Popped | None:
    """Runs one trial and tells its result; returns the stage's next trial, popped with the tell (or None)."""
    s = int(attrs["stage"])
    cont = attrs.get("continue_from")
    origin = int(attrs.get("origin", attrs["id"]))  # a continued trial keeps its seed (exact resume)
    ctx = TrialContext(id=int(attrs["id"]), stage=s, index=int(attrs["index"]), attempt=int(attrs.get("attempt", 0)),
                       seed=int(plan["seed"]) * 100_003 + origin,
                       params=dict(attrs["params"]), hp={**plan["fixed"], **stages[s].fixed, **attrs["params"]},
                       epochs=stages[s].epochs, monitor=stages[s].monitor,
                       run_dir=Path(attrs["run_dir"]), continue_from=Path(cont) if cont else None, store=store,
                       trial_id=tid, hopeless=hopeless, beat_every=beat_every)
    try:
        out = objective(ctx)
    except Exception as exc:  # the user's code failed: recorded, the study goes on
        log.warning("trial %d failed: %s: %s", ctx.id, type(exc).__name__, exc)
        return store.finish_and_pop(tid, None, {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}, s)[1]
    if not isinstance(out, Outcome):
        out = Outcome(metric=float(out))
    if ctx.stop_status == "reaped":
        return None
    status = ctx.stop_status if ctx.stop_status and out.status in ("completed", "interrupted") else out.status
    metric = out.metric if out.metric is not None and math.isfinite(out.metric) else None
    value = metric if metric is not None else float(plan.get("worst", 0.0))  # a bad result samplers learn from
    return store.finish_and_pop(tid, value, {"status": status, "metric": metric, "epochs": out.epochs,
                                             "reason": ctx.stop_reason or out.reason}, s)[1]


def work(spec: "str | StudyStore", name: str, objective: Objective, *, worker: int = 0, poll: float = 0.1,
         stale_after: float = 300.0, max_attempts: int = 3, hopeless: Hopeless | None = None,
         after_trial: Callable[[StudyStore], None] | None = None) -> int:
    """Runs trials from the store until every stage is done; returns the number of trials this worker ran.

    spec: the store's spec (a study directory or an RDB URL), or a StudyStore this process opened.
    """
    store = spec if isinstance(spec, StudyStore) else StudyStore(spec, name)
    plan, stages, _ = _plan(store)
    samplers: dict[int, Any] = {}
    done: set[int] = set()
    # the first reap after one interval, not at once: eight workers starting together read the stage once, not 8x
    ran, popped, last_reap = 0, False, time.monotonic()
    drained: set[int] = set()  # stages whose last pop found nothing queued
    nxt: Popped | None = None  # the stage's next trial, popped with the last tell
    waiting: dict[int, float] = {}  # stage -> when this worker began waiting for it to be created
    # jittered per process (forked workers share the global RNG's state): one taker, not all at once
    patience = min(stale_after, 60.0) + random.Random(os.getpid()).uniform(0.0, 5.0)
    while True:
        what = "run"
        if not popped:  # after a popped trial, pop the next one of the stage before reading the whole stage
            what, s = current_stage(store, stages, done, drained)
            if what == "done":
                return ran
        if time.monotonic() - last_reap > min(5.0, stale_after / 4):  # each read scans the running trials
            store.reap(s, stale_after, max_attempts)
            last_reap = time.monotonic()
        if what == "wait":
            since = waiting.setdefault(s, time.monotonic())
            if time.monotonic() - since > patience:  # its creator (on any host) died before marking it ready
                take_over_stage(store, s)
                waiting.pop(s)
            time.sleep(poll)
            continue
        if s not in samplers:
            name = stage_sampler(plan, s)
            samplers[s] = optuna_sampler(name, hash((plan["seed"], s, worker)) % 2**31) if is_adaptive(name) else None
        got, nxt = _ask(store, s, plan, samplers[s], nxt), None
        popped = got is not None
        if got is None:
            if s not in drained:  # read whether the stage is done before waiting
                drained.add(s)
                continue
            time.sleep(poll)
            continue
        drained.discard(s)
        nxt = _run(store, objective, got[0], got[1], plan, stages, hopeless, beat_every=min(stale_after / 10, 10.0))
        ran += 1
        if after_trial is not None:
            after_trial(store)
