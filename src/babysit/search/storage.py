"""The study store: Optuna's storage layer (a journal file in the study directory, or an RDB URL).

It is the only state workers share. One Optuna study per stage (named "<name>/stage-<s>") holds
that stage's trials; the root study ("<name>") holds the study's plan. babysit's own records are
trial and study user attributes: stage, index, id, attempt, run directory, status, metric, the
heartbeat written every epoch (liveness is babysit's, the same on every storage) and kill flags.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import optuna
from optuna.exceptions import DuplicatedStudyError, UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from ..errors import StoreError

__all__ = ["StudyStore", "open_storage", "JOURNAL", "TrialState", "final_trials", "params_of"]

JOURNAL = "study.journal"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_storage(spec: str | Path) -> Any:
    """Returns the Optuna storage a spec names: an RDB URL (sqlite:///, postgresql://) or a study directory."""
    s = str(spec)
    if "://" in s:
        return _rdb(rdb_url(s))
    from optuna.storages.journal import JournalFileBackend

    path = Path(s) / JOURNAL
    if not path.parent.is_dir():
        raise StoreError(f"study directory {s!r} does not exist; create the study first (bs.search)")
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _rdb(url: str, tries: int = 8) -> Any:
    """Returns Optuna's RDBStorage; retried while workers starting at once race to create its tables.

    On a fresh PostgreSQL database, two CREATE TABLEs of one name collide (a unique violation in
    pg_type): the loser retries and finds the tables made.
    """
    import sqlalchemy.exc

    for attempt in range(tries):
        try:
            return optuna.storages.RDBStorage(url)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == tries - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


def rdb_url(url: str) -> str:
    """Returns the SQLAlchemy URL to open: postgresql:// goes to whichever driver is installed (psycopg 3 or 2).

    Raises StoreError naming the extra to install when neither is.
    """
    if not url.startswith(("postgresql://", "postgres://")):
        return url
    import importlib.util

    rest = url.split("://", 1)[1]
    for module, dialect in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"{dialect}://{rest}"
    raise StoreError(f"storage {url.split('@')[-1]!r}: no PostgreSQL driver is installed; "
                     "pip install 'babysit[postgres]' (psycopg2-binary)")


UNMARKED = 10.0  # seconds a popped trial may stay without its worker's record before it counts as abandoned


def stage_name(name: str, stage: int) -> str:
    """Returns the Optuna study name of a stage."""
    return f"{name}/stage-{stage}"


class StudyStore:
    """A process's handle on the study store; open one per process (never share across a fork)."""

    def __init__(self, spec: str | Path, name: str = "babysit") -> None:
        self.spec, self.name = str(spec), name
        self.storage = open_storage(spec)
        self._ids: dict[int, int] = {}
        self._studies: dict[tuple[int, int], optuna.Study] = {}

    # -- the plan (root study) ------------------------------------------------------------
    def create(self, plan: Mapping[str, Any]) -> None:
        """Creates the root study holding the plan; raises StoreError when it exists already."""
        try:
            sid = self.storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], self.name)
        except DuplicatedStudyError as exc:
            raise StoreError(f"study {self.name!r} already exists in {self.spec!r}; pass resume=True") from exc
        self.storage.set_study_user_attr(sid, "plan", dict(plan))

    def set_plan(self, plan: Mapping[str, Any]) -> None:
        """Replaces the plan (the master, before its workers start: a study that grows stages at its end)."""
        self.storage.set_study_user_attr(self.root_id(), "plan", dict(plan))

    def exists(self) -> bool:
        """Returns True when the root study exists."""
        try:
            self.storage.get_study_id_from_name(self.name)
            return True
        except KeyError:
            return False

    def root_id(self) -> int:
        """Returns the Optuna id of the root study, or raises StoreError when the study does not exist."""
        if -1 not in self._ids:
            try:
                self._ids[-1] = self.storage.get_study_id_from_name(self.name)
            except KeyError as exc:
                raise StoreError(f"no study {self.name!r} in {self.spec!r}") from exc
        return self._ids[-1]

    def plan(self) -> dict[str, Any]:
        """Returns the plan: space, stages, sampler, seed, fixed."""
        return dict(self.storage.get_study_user_attrs(self.root_id())["plan"])

    def root_attrs(self) -> dict[str, Any]:
        """Returns the root study's user attributes (plan, kill flags)."""
        return dict(self.storage.get_study_user_attrs(self.root_id()))

    # -- stages ----------------------------------------------------------------------------
    def stage_id(self, stage: int) -> int | None:
        """Returns the Optuna id of a stage's study, or None when the stage is not created yet."""
        if stage not in self._ids:
            try:
                self._ids[stage] = self.storage.get_study_id_from_name(stage_name(self.name, stage))
            except KeyError:
                return None
        return self._ids[stage]

    def claim_stage(self, stage: int) -> int | None:
        """Returns the new stage study's id when this process won the election to create it, else None."""
        try:
            sid = self.storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], stage_name(self.name, stage))
        except DuplicatedStudyError:
            return None
        self._ids[stage] = sid
        return sid

    def stage_attrs(self, stage: int) -> dict[str, Any]:
        """Returns a stage study's user attributes (space, findings, ready, trials)."""
        sid = self.stage_id(stage)
        return {} if sid is None else dict(self.storage.get_study_user_attrs(sid))

    def set_stage_attr(self, stage: int, key: str, value: Any) -> None:
        """Sets one user attribute of a stage study."""
        sid = self.stage_id(stage)
        assert sid is not None
        self.storage.set_study_user_attr(sid, key, value)

    def study(self, stage: int, sampler: Any = None) -> optuna.Study:
        """Returns the Optuna study of a stage (cached per sampler)."""
        key = (stage, id(sampler))
        if key not in self._studies:
            self._studies[key] = optuna.load_study(study_name=stage_name(self.name, stage), storage=self.storage,
                                                   sampler=sampler or optuna.samplers.RandomSampler(seed=0))
        return self._studies[key]

    def enqueue(self, stage: int, params: Mapping[str, Any], attrs: Mapping[str, Any]) -> None:
        """Queues one trial of a stage (params fixed, or {} for an adaptive sampler to fill in)."""
        self.study(stage).enqueue_trial(dict(params), user_attrs=dict(attrs))

    def trials(self, stage: int, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        """Returns the Optuna trials of a stage (all states unless given)."""
        sid = self.stage_id(stage)
        if sid is None:
            return []
        return list(self.storage.get_all_trials(sid, deepcopy=False, states=states))

    # -- one trial -------------------------------------------------------------------------
    def set_attr(self, trial_id: int, key: str, value: Any) -> bool:
        """Sets a trial attribute; returns False when the trial is finished already (it was re-queued)."""
        try:
            self.storage.set_trial_user_attr(trial_id, key, value)
            return True
        except UpdateFinishedTrialError:
            return False

    def heartbeat(self, trial_id: int) -> bool:
        """Writes the trial's heartbeat (now); returns False when the trial was taken away from this worker."""
        return self.set_attr(trial_id, "heartbeat", time.time())

    def mark_running(self, trial_id: int) -> None:
        """Records who runs the trial (host, pid); its start time is the first heartbeat."""
        self.set_attr(trial_id, "worker", worker_record())

    def finish(self, trial_id: int, value: float | None, result: Mapping[str, Any]) -> bool:
        """Records a finished trial (COMPLETE with its value, or FAIL when value is None); False if taken away.

        result: babysit's record of it (status, metric, epochs, reason or error), one attribute.
        """
        if not self.set_attr(trial_id, "result", dict(result)):
            return False
        try:
            if value is None:
                self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
            else:
                self.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [float(value)])
            return True
        except UpdateFinishedTrialError:
            return False

    def kill(self, trial: int, reason: str = "killed from the study") -> None:
        """Flags a trial (its babysit id) to be stopped; its worker reads the flag at its next epoch."""
        self.storage.set_study_user_attr(self.root_id(), f"kill:{int(trial)}", reason)

    def kill_reason(self, trial: int) -> str | None:
        """Returns the reason a trial was flagged to be killed, or None."""
        return self.root_attrs().get(f"kill:{int(trial)}")

    # -- liveness --------------------------------------------------------------------------
    def requeue(self, t: FrozenTrial, reason: str, max_attempts: int) -> bool:
        """Fails a trial whose worker is gone and queues a copy (bounded attempts); True if this process did it."""
        attempt = int(t.user_attrs.get("attempt", 0))
        final = attempt + 1 >= max_attempts
        tid = t._trial_id
        if not final:
            self.set_attr(tid, "requeued", True)
        self.set_attr(tid, "reaped", f"{reason} (attempt {attempt + 1} of {max_attempts})")
        try:
            self.storage.set_trial_state_values(tid, TrialState.FAIL)
        except UpdateFinishedTrialError:
            return False  # finished meanwhile, or another process re-queued it first
        if not final:
            keep = ("stage", "index", "id", "run_dir", "continue_from", "continues", "origin", "params")
            attrs = {k: t.user_attrs[k] for k in keep if k in t.user_attrs}
            if params_of(t):  # the copy runs the same hyperparameters, whatever sampled them
                attrs["params"] = params_of(t)
            fixed = t.system_attrs.get("fixed_params", {})
            self.enqueue(int(t.user_attrs["stage"]), fixed, {**attrs, "attempt": attempt + 1})
        return True

    def reap(self, stage: int, stale_after: float, max_attempts: int, *, dead_pids: bool = False) -> int:
        """Re-queues the stage's running trials whose heartbeat is older than stale_after seconds.

        dead_pids: also those run on this host by a process that no longer exists (a resumed master).
        Returns the number of trials this process re-queued.
        """
        n, now, host = 0, time.time(), socket.gethostname()
        for t in self.trials(stage, (TrialState.RUNNING,)):
            start = t.datetime_start.timestamp() if t.datetime_start else now
            beat = float(t.user_attrs.get("heartbeat", start))
            who = t.user_attrs.get("worker") or {}  # {}: popped a moment ago, not yet marked running
            dead = dead_pids and bool(who) and who.get("host") == host and not _alive(who.get("pid"),
                                                                                       who.get("started"))
            # a worker writes its record right after the pop; none after UNMARKED s: it died in between
            # (a master SIGKILLed then, its workers with it), and no heartbeat will ever come
            unmarked = not who and now - start > min(stale_after, UNMARKED)
            if now - beat > stale_after or dead or unmarked:
                why = "its worker is gone" if dead else \
                    f"popped {now - start:.1f} s ago and never marked running" if unmarked else \
                    f"no heartbeat for {now - beat:.1f} s"
                n += self.requeue(t, why, max_attempts)
        return n


def _stat(pid: int) -> tuple[str, int] | None:
    """Returns (state, start time in clock ticks after boot) of a process from /proc/<pid>/stat, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """Returns the start time of a process (clock ticks after boot, /proc/<pid>/stat), or None off Linux."""
    got = _stat(pid)
    return None if got is None else got[1]


def worker_record() -> dict[str, Any]:
    """Returns who this process is: host, pid and start time (a pid alone is reused, 32768 of them here)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": start_time(os.getpid())}


def _alive(pid: Any, started: Any = None) -> bool:
    """Returns True when the process with this pid (and, when recorded, this start time) exists on this host."""
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    got = _stat(pid)
    if got is not None and got[0] in ("Z", "X"):  # a zombie: dead, never reaped (an orphan where pid 1 reaps none)
        return False
    return started is None or got is None or got[1] == started


def params_of(t: FrozenTrial) -> dict[str, Any]:
    """Returns a trial's hyperparameters: those it was given (continued, re-queued) or those it suggested."""
    return dict(t.user_attrs["params"]) if "params" in t.user_attrs else dict(t.params)


def final_trials(trials: list[FrozenTrial]) -> Iterator[FrozenTrial]:
    """Yields the trials that count: COMPLETE ones, and FAIL ones that were not re-queued."""
    for t in trials:
        if "index" not in t.user_attrs:  # not one of babysit's trials
            continue
        if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and not t.user_attrs.get("requeued")):
            yield t
