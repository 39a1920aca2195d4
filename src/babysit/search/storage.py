"""The study store: Optuna's storage layer (a journal file in the study directory, or an RDB URL).

It is the only state workers share. One Optuna study per stage (named "<name>/stage-<s>") holds
that stage's trials; the root study ("<name>") holds the study's plan. babysit's own records are
trial and study user attributes: stage, index, id, attempt, run directory, status, metric, the
heartbeat written every epoch (liveness is babysit's, the same on every storage) and kill flags.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from datetime import datetime, timezone
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
    return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=_journal_lock(str(path))))


def _journal_lock(path: str) -> Any:
    """Returns the lock that serialises appends to the journal: a kernel lock (flock), where there is one.

    Optuna's default lock is a symlink: one left by a process killed holding it stalls every other
    process for its 30 s grace period, then is broken by age (unsafe with a slow writer). The kernel
    releases an flock the moment its holder dies. Without fcntl (Windows), Optuna's default.
    """
    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover - not on Linux
        from optuna.storages.journal import JournalFileSymlinkLock

        return JournalFileSymlinkLock(path)
    return FlockLock(path + ".flock")


class FlockLock:
    """An exclusive advisory lock on a file (fcntl.flock), taken per append; released by the kernel on death.

    The file is opened on each acquire: a lock object copied across a fork never shares a held lock.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor of the open file releases the flock


def _journal_internals(storage: Any) -> bool:
    """True for Optuna's JournalStorage with the internals a batched append uses (else: one call per write)."""
    return isinstance(storage, optuna.storages.JournalStorage) and all(
        hasattr(storage, a) for a in ("_backend", "_replay_result", "_thread_lock", "_sync_with_backend"))


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


Popped = tuple[int, dict[str, Any], dict[str, Any]]  # a popped trial: its id, user and system attributes


def _finish_ops(value: float | None, result: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """The writes that finish a trial: babysit's result record, then COMPLETE with its value (FAIL without one)."""
    state = TrialState.FAIL if value is None else TrialState.COMPLETE
    return [("attr", "result", dict(result)), ("state", state, None if value is None else [float(value)])]


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
        self._unmarked: set[int] = set()  # popped here, worker record not yet written (goes with the next write)
        self._spaces: dict[int, dict[str, Any]] = {}
        self._cursor: dict[int, int] = {}  # stage -> position before which no trial is WAITING (journal pop)
        self._window, self._rng = 1, random.Random(os.getpid())
        self._studies: dict[tuple[int, int], optuna.Study] = {}

    # -- the plan (root study) ------------------------------------------------------------
    def create(self, plan: Mapping[str, Any]) -> None:
        """Creates the root study holding the plan; raises StoreError when it exists already.

        A root study without its plan (its creator was killed between the two writes) is finished here.
        """
        try:
            sid = self.storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], self.name)
        except DuplicatedStudyError as exc:
            if self.exists():
                raise StoreError(f"study {self.name!r} already exists in {self.spec!r}; pass resume=True") from exc
            sid = self.root_id()
        self.storage.set_study_user_attr(sid, "plan", dict(plan))

    def set_plan(self, plan: Mapping[str, Any]) -> None:
        """Replaces the plan (the master, before its workers start: a study that grows stages at its end)."""
        self.storage.set_study_user_attr(self.root_id(), "plan", dict(plan))

    def exists(self) -> bool:
        """Returns True when the root study exists with its plan (one without was never finished: see create)."""
        try:
            sid = self.storage.get_study_id_from_name(self.name)
        except KeyError:
            return False
        return "plan" in self.storage.get_study_user_attrs(sid)

    def root_id(self) -> int:
        """Returns the Optuna id of the root study, or raises StoreError when the study does not exist."""
        if -1 not in self._ids:
            try:
                self._ids[-1] = self.storage.get_study_id_from_name(self.name)
            except KeyError as exc:
                raise StoreError(f"no study {self.name!r} in {self.spec!r}") from exc
        return self._ids[-1]

    def plan(self) -> dict[str, Any]:
        """Returns the plan: space, stages, sampler, seed, fixed; StoreError when the study has none (unfinished)."""
        attrs = self.storage.get_study_user_attrs(self.root_id())
        if "plan" not in attrs:
            raise StoreError(f"study {self.name!r} in {self.spec!r} holds no plan: the process creating it was "
                             "stopped before writing it; start the search again (it finishes the study)")
        return dict(attrs["plan"])

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

    def stage_space(self, stage: int) -> dict[str, Any]:
        """Returns a stage's space as written (read once per process: it is set before any trial is queued)."""
        if stage not in self._spaces:
            self._spaces[stage] = self.stage_attrs(stage)["space"]
        return self._spaces[stage]

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

    def final_indexes(self, stage: int) -> set[int]:
        """Returns the indexes of the stage that have a final trial (see final_trials), in one light read.

        On an RDB one SELECT of states and two attributes, not the whole trials (a worker waiting for a stage's
        last trials asks this every poll).
        """
        sid = self.stage_id(stage)
        if sid is None:
            return set()
        if not self._rdb_fast():
            return {int(t.user_attrs["index"]) for t in final_trials(self.trials(stage))}
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        T, A = models.TrialModel, models.TrialUserAttributeModel
        with _create_scoped_session(self.storage.scoped_session) as session:
            rows = (session.query(T.trial_id, T.state, A.key, A.value_json)
                    .join(A, A.trial_id == T.trial_id)
                    .filter(T.study_id == sid, T.state.in_([TrialState.COMPLETE, TrialState.FAIL]),
                            A.key.in_(["index", "requeued"])).all())
        seen: dict[int, dict[str, Any]] = {}
        for tid, state, key, value in rows:
            seen.setdefault(tid, {"state": state})[key] = json.loads(value)
        return {int(r["index"]) for r in seen.values() if "index" in r and _counts(r["state"], r.get("requeued"))}

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

    def finish(self, trial_id: int, value: float | None, result: Mapping[str, Any]) -> bool:
        """Records a finished trial (COMPLETE with its value, or FAIL when value is None); False if taken away.

        result: babysit's record of it (status, metric, epochs, reason or error), one attribute. The
        attribute and the state are one write (one journal append, one transaction).
        """
        return self.write(trial_id, _finish_ops(value, result))

    # -- batched writes and the atomic pop (babysit's bookkeeping costs no round trips of its own) ------
    def pop(self, stage: int) -> Popped | None:
        """Moves one queued trial of the stage to RUNNING for this process; returns (id, user attrs, system attrs).

        On PostgreSQL one transaction pops (SELECT ... FOR UPDATE SKIP LOCKED: workers never wait on each
        other) and records who runs it. On the journal Optuna's pop (the first RUNNING appended wins), and
        the record goes with this process's next `write` of the trial, which the caller makes at once.
        """
        if self._rdb_fast("postgresql"):
            from optuna.storages._rdb.storage import _create_scoped_session

            with _create_scoped_session(self.storage.scoped_session) as session:
                return self._rdb_pop(session, stage)
        if _journal_internals(self.storage):
            with self.storage._thread_lock:
                self.storage._sync_with_backend()
            while (candidates := self._waiting(stage)):
                tid = candidates[self._rng.randrange(len(candidates))]
                try:
                    if self.storage.set_trial_state_values(tid, TrialState.RUNNING):  # synced: next loop sees it
                        return self._popped(tid)
                except UpdateFinishedTrialError:
                    pass
                self._window = min(2 * self._window, 64)
            return None
        study = self.study(stage)
        study._thread_local.cached_all_trials = None
        popped = study._pop_waiting_trial_id()
        return None if popped is None else self._popped(popped)

    def finish_and_pop(self, trial_id: int, value: float | None, result: Mapping[str, Any],
                       stage: int) -> tuple[bool, Popped | None]:
        """`finish`, and `pop` of the stage's next queued trial in the same write; returns (finished, popped).

        A worker's tell and its next ask are one journal append or one transaction: with the hyperparameters'
        write, two writes per trial where plain Optuna makes three.
        """
        ops = _finish_ops(value, result)
        if self._rdb_fast("postgresql"):
            from optuna.storages._rdb.storage import _create_scoped_session

            with _create_scoped_session(self.storage.scoped_session) as session:
                ok = self._rdb_apply(session, trial_id, ops)
                return ok, self._rdb_pop(session, stage)
        if not _journal_internals(self.storage):
            return self.finish(trial_id, value, result), self.pop(stage)
        candidates = self._waiting(stage)  # as of the last read: a stale one only loses the race below
        if not candidates:
            return self.write(trial_id, ops), None
        nxt = candidates[self._rng.randrange(len(candidates))]
        ok = self.write(trial_id, [*ops, ("claim", nxt)])
        if self.storage._replay_result.owned_trial_id == nxt:
            return ok, self._popped(nxt)
        self._window = min(2 * self._window, 64)
        return ok, self.pop(stage)

    def _waiting(self, stage: int) -> list[int]:
        """Returns up to `_window` queued trials of the stage, first ones first, as this process's journal replay has them.

        Workers that all append RUNNING for the same first queued trial waste an append each (the first
        appended wins): after a lost race this process picks at random among the first `_window` queued
        trials, a window that doubles with each lost race (up to 64). A lone worker keeps index order.
        The cursor skips what left WAITING, which never returns to it.
        """
        rr = self.storage._replay_result
        ids, trials = rr._study_id_to_trial_ids.get(self.stage_id(stage), []), rr._trials
        i = self._cursor.get(stage, 0)
        while i < len(ids) and trials[ids[i]].state != TrialState.WAITING:
            i += 1
        self._cursor[stage] = i
        out: list[int] = []
        for tid in ids[i:]:
            if trials[tid].state == TrialState.WAITING:
                out.append(tid)
                if len(out) >= self._window:
                    break
        return out

    def _popped(self, tid: int) -> Popped:
        """A trial this process popped on the journal (or elsewhere): its record goes with its next write."""
        self._unmarked.add(tid)
        st = self.storage  # the pop synced the journal: read it as replayed, without another read of the file
        t = st._replay_result.get_trial(tid) if _journal_internals(st) else st.get_trial(tid)
        return tid, dict(t.user_attrs), dict(t.system_attrs)

    def write(self, trial_id: int, ops: list[tuple[Any, ...]]) -> bool:
        """Applies writes to one running trial as one journal append or one transaction; False if it is finished.

        ops: ("attr", key, value), ("param", name, internal value, distribution), ("state", state, values),
        ("claim", other trial id) (journal only: its RUNNING, appended with the rest; see finish_and_pop).
        A trial popped by `pop` and not yet marked gets its worker record in the same write.
        """
        if trial_id in self._unmarked:
            self._unmarked.discard(trial_id)
            ops = [("attr", "worker", worker_record()), *ops]
        if not ops:
            return True
        try:
            if _journal_internals(self.storage):
                return self._write_journal(trial_id, ops)
            if self._rdb_fast():
                from optuna.storages._rdb.storage import _create_scoped_session

                with _create_scoped_session(self.storage.scoped_session) as session:
                    return self._rdb_apply(session, trial_id, ops)
            for op in ops:  # any other storage: one call each
                if op[0] == "attr":
                    self.storage.set_trial_user_attr(trial_id, op[1], op[2])
                elif op[0] == "param":
                    self.storage.set_trial_param(trial_id, op[1], op[2], op[3])
                else:
                    self.storage.set_trial_state_values(trial_id, op[1], op[2])
            return True
        except UpdateFinishedTrialError:
            return False

    def poll(self, trial_id: int, babysit_id: int) -> tuple[bool, str | None]:
        """Returns (taken away, kill reason) of a running trial: one light read (one SELECT on an RDB)."""
        st = self.storage
        if self._rdb_fast():
            from optuna.storages._rdb import models
            from optuna.storages._rdb.storage import _create_scoped_session

            with _create_scoped_session(st.scoped_session) as session:
                state = session.query(models.TrialModel.state).filter(
                    models.TrialModel.trial_id == trial_id).scalar()
                kill = session.query(models.StudyUserAttributeModel.value_json).filter(
                    models.StudyUserAttributeModel.study_id == self.root_id(),
                    models.StudyUserAttributeModel.key == f"kill:{int(babysit_id)}").scalar()
            return state is None or TrialState(state).is_finished(), None if kill is None else json.loads(kill)
        if _journal_internals(st):  # one read of the file's new lines, then both from the replay
            with st._thread_lock:
                st._sync_with_backend()
                state = st._replay_result.get_trial(trial_id).state
                kill = st._replay_result.get_study(self.root_id()).user_attrs.get(f"kill:{int(babysit_id)}")
            return state.is_finished(), kill
        return st.get_trial(trial_id).state.is_finished(), self.kill_reason(babysit_id)

    def _rdb_fast(self, engine: str | None = None) -> bool:
        """True for Optuna's RDBStorage with the internals the fast paths use (on the named engine, if given)."""
        st = self.storage
        if not (isinstance(st, optuna.storages.RDBStorage) and hasattr(st, "_set_trial_attr_without_commit")
                and hasattr(st, "_set_trial_param_without_commit") and hasattr(st, "_set_trial_value_without_commit")):
            return False
        return engine is None or st.engine.name == engine

    def _rdb_pop(self, session: Any, stage: int) -> Popped | None:
        """In an open transaction: moves the stage's first queued trial nobody holds to RUNNING, records this worker."""
        from optuna.storages._rdb import models

        t = (session.query(models.TrialModel)
             .filter(models.TrialModel.study_id == self.stage_id(stage), models.TrialModel.state == TrialState.WAITING)
             .order_by(models.TrialModel.trial_id).limit(1).with_for_update(skip_locked=True).one_or_none())
        if t is None:
            return None
        tid = t.trial_id
        t.state, t.datetime_start = TrialState.RUNNING, datetime.now()  # as Optuna: local naive time
        user = {a.key: json.loads(a.value_json) for a in t.user_attributes}
        system = {a.key: json.loads(a.value_json) for a in t.system_attributes}
        self.storage._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, tid, "worker",
                                                    worker_record())
        return tid, user, system

    def _rdb_apply(self, session: Any, trial_id: int, ops: list[tuple[Any, ...]]) -> bool:
        """In an open transaction: applies ops to a trial (locked for update); False when it is finished."""
        from optuna.storages._rdb import models

        st = self.storage
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
        if trial.state.is_finished():
            return False
        for op in ops:
            if op[0] == "attr":
                st._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, trial_id, op[1], op[2])
            elif op[0] == "param":
                st._set_trial_param_without_commit(session, trial_id, op[1], op[2], op[3])
            else:
                for objective, v in enumerate(op[2] or []):
                    st._set_trial_value_without_commit(session, trial, objective, v)
                trial.state = op[1]
                if op[1].is_finished():
                    trial.datetime_complete = datetime.now()
        return True

    def _write_journal(self, trial_id: int, ops: list[tuple[Any, ...]]) -> bool:
        from optuna.distributions import distribution_to_json
        from optuna.storages.journal._storage import JournalOperation

        st = self.storage
        logs: list[dict[str, Any]] = []
        now = datetime.now(tz=timezone.utc).isoformat(timespec="microseconds")
        for op in ops:
            log: dict[str, Any] = {"worker_id": st._replay_result.worker_id, "trial_id": trial_id}
            if op[0] == "attr":
                log.update(op_code=JournalOperation.SET_TRIAL_USER_ATTR, user_attr={op[1]: op[2]})
            elif op[0] == "param":
                log.update(op_code=JournalOperation.SET_TRIAL_PARAM, param_name=op[1], param_value_internal=op[2],
                           distribution=distribution_to_json(op[3]))
            elif op[0] == "claim":
                log.update(op_code=JournalOperation.SET_TRIAL_STATE_VALUES, trial_id=op[1], state=TrialState.RUNNING,
                           values=None, datetime_start=now)
            else:
                log.update(op_code=JournalOperation.SET_TRIAL_STATE_VALUES, state=op[1], values=op[2])
                if op[1].is_finished():
                    log["datetime_complete"] = now
            logs.append(log)
        with st._thread_lock:
            st._backend.append_logs(logs)  # one append: one lock, one fsync
            ok, error = True, None
            while True:  # replay what was appended; an op on a finished trial raises, the rest still apply
                try:
                    st._sync_with_backend()
                    break
                except UpdateFinishedTrialError:
                    ok = False
                except Exception as exc:  # noqa: BLE001 - re-raised once the replay has caught up
                    error = error or exc
        if error is not None:
            raise error
        return ok

    def kill(self, trial: int, reason: str = "killed from the study") -> None:
        """Flags a trial (its babysit id) to be stopped; its worker reads the flag at its next epoch."""
        self.storage.set_study_user_attr(self.root_id(), f"kill:{int(trial)}", reason)

    def kill_reason(self, trial: int) -> str | None:
        """Returns the reason a trial was flagged to be killed, or None."""
        return self.root_attrs().get(f"kill:{int(trial)}")

    # -- liveness --------------------------------------------------------------------------
    def requeue(self, t: FrozenTrial, reason: str, max_attempts: int) -> bool:
        """Fails a trial whose worker is gone and queues a copy (bounded attempts); True if this process did it.

        A process killed between the FAIL and the copy leaves an orphan: `repair_requeues` queues its copy.
        """
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
            self._enqueue_copy(t)
        return True

    def _enqueue_copy(self, t: FrozenTrial) -> None:
        """Queues the next attempt of a re-queued trial: the same index, id, run directory and hyperparameters."""
        keep = ("stage", "index", "id", "run_dir", "continue_from", "continues", "origin", "params", "retrains")
        attrs = {k: t.user_attrs[k] for k in keep if k in t.user_attrs}
        if params_of(t):  # the copy runs the same hyperparameters, whatever sampled them
            attrs["params"] = params_of(t)
        fixed = t.system_attrs.get("fixed_params", {})
        self.enqueue(int(t.user_attrs["stage"]), fixed, {**attrs, "attempt": int(t.user_attrs.get("attempt", 0)) + 1})

    def repair_requeues(self, stage: int, grace: float = UNMARKED, trials: list[FrozenTrial] | None = None) -> int:
        """Queues the missing copy of each re-queued trial whose re-queuer died between its FAIL and the copy.

        An orphan is a FAIL marked requeued, more than `grace` seconds old, with no trial of its index at
        the next attempt; without its copy its index never gets a final trial and the stage never ends.
        Returns the number of copies queued.
        """
        ts = self.trials(stage) if trials is None else trials
        have = {(t.user_attrs.get("index"), int(t.user_attrs.get("attempt", 0))) for t in ts}
        now, n = time.time(), 0
        for t in ts:
            if t.state != TrialState.FAIL or not t.user_attrs.get("requeued") or "index" not in t.user_attrs:
                continue
            nxt = (t.user_attrs["index"], int(t.user_attrs.get("attempt", 0)) + 1)
            failed = t.datetime_complete.timestamp() if t.datetime_complete else now
            if nxt not in have and now - failed > grace:
                self._enqueue_copy(t)
                have.add(nxt)
                n += 1
        return n

    def reap(self, stage: int, stale_after: float, max_attempts: int, *, dead_pids: bool = False) -> int:
        """Re-queues the stage's running trials whose heartbeat is older than stale_after seconds.

        dead_pids: also those run on this host by a process that no longer exists (a resumed master).
        Also queues the copies of orphaned re-queues (repair_requeues). Returns the number of trials queued.
        """
        n, now, host = 0, time.time(), socket.gethostname()
        every = self.trials(stage)
        n += self.repair_requeues(stage, min(stale_after, UNMARKED), every)
        for t in (t for t in every if t.state == TrialState.RUNNING):
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


def _counts(state: TrialState, requeued: Any) -> bool:
    """The final-trial rule: a COMPLETE trial counts, and a FAIL one that was not re-queued."""
    return state == TrialState.COMPLETE or (state == TrialState.FAIL and not requeued)


def final_trials(trials: list[FrozenTrial]) -> Iterator[FrozenTrial]:
    """Yields the trials that count, one per (stage, index): COMPLETE ones, and FAIL ones not re-queued.

    Two final trials of one index (a repaired re-queue racing its re-queuer, a stage filled twice) count
    once: the COMPLETE one, else the first.
    """
    best: dict[tuple[Any, Any], FrozenTrial] = {}
    for t in trials:
        if "index" not in t.user_attrs:  # not one of babysit's trials
            continue
        if _counts(t.state, t.user_attrs.get("requeued")):
            key = (t.user_attrs.get("stage"), t.user_attrs["index"])
            old = best.get(key)
            if old is None or (old.state != TrialState.COMPLETE and t.state == TrialState.COMPLETE):
                best[key] = t
    yield from best.values()
