"""train(task, hp, ...) -> Run: the training loop, readable top to bottom.

The notes' babysitting starts here: the loss every iteration, train and validation accuracy every
epoch (x-axis in epochs), checkpoints named with their validation score. Observers watch; they
never steer.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import torch
from torch import nn

from ._check import check_number
from ._version import __version__
from . import averaging
from . import data as data_mod
from . import hparams
from .errors import BabysitError, ConfigError, StoreError, describe_user_error
from .losses import reg_params as weights_of
from .optim import build_optimizer, build_schedule, is_full_batch
from .status import Stop
from .step import Evaluation, Objective, StepRecord, closure_step, evaluate, train_step
from .store import (LOCK_NAME, SCHEMA_VERSION, CheckpointWriter, DirLock, EpochRecord, Run, RunStore, best_of,
                    holder, list_checkpoints, load_checkpoint, now, read_config, write_config)
from .store.lock import describe as describe_holder
from .task import Task
from .threads import resolve_threads, torch_threads
from .diagnose import LiveDiagnosis, settings_from_mapping
from .telemetry.runs import watch_training

__all__ = ["Observer", "Plan", "pick_device", "prepare", "resolve_hp", "train"]

log = logging.getLogger(__name__)
_RUN_FILES = ("config.toml", "run.sqlite", "run.sqlite-wal", "run.sqlite-shm", "report.html")
_RUN_DIRS = ("checkpoints", "images")


class Observer(Protocol):
    """Watches a run: any of on_step(StepRecord), on_epoch(EpochRecord), on_end(Run); never steers."""

    def on_step(self, record: StepRecord) -> None: ...
    def on_epoch(self, record: EpochRecord) -> None: ...
    def on_end(self, run: Run) -> None: ...


def resolve_hp(task: Task, hp: Mapping[str, Any], batch_size: int | None = None) -> dict[str, Any]:
    """Returns hp checked by the key registry, with every default that applies to the task filled in."""
    return task.resolve_hp({**hp, **({"batch_size": batch_size} if batch_size is not None else {})})


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """Returns CUDA when present and device is "auto", else the named device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={str(device)!r}: CUDA is not available on this machine; use 'auto' or 'cpu'")
    return dev


@dataclass
class _Loop:
    """The mutable state of one training run (what a checkpoint saves)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Any
    generator: torch.Generator
    epoch: int = 0
    step: int = 0
    best_val: float = -1.0
    stale: int = 0
    epoch_started: float = 0.0
    history: list[EpochRecord] = field(default_factory=list)
    objective: Objective | None = None  # train(objective=...): replaces the task's loss + L2
    carry: tuple[torch.Tensor, ...] = ()  # train(carry=...): tensors aligned with the training set
    ema: Any = None  # hp["ema"]: the AveragedModel of the weights, updated after every step
    keep_last: int = 2  # checkpoints kept besides the best
    keep_epochs: tuple[int, ...] = ()  # hp["snapshots"]: the cycle ends, always kept

    def state(self, value: float) -> dict[str, Any]:
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "data": self.generator.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"format": 1, "epoch": self.epoch, "step": self.step, "val_acc": value, "best_val": self.best_val,
                "stale": self.stale, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "rng": rng,
                **({"ema": self.ema.state_dict()} if self.ema is not None else {})}

    def restore(self, ckpt: Mapping[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        if self.ema is not None:
            if "ema" not in ckpt:
                raise StoreError("the checkpoint holds no running average of the weights (hp['ema']); resume "
                                 "with the hyperparameters the run was started with")
            self.ema.load_state_dict(ckpt["ema"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.generator.set_state(ckpt["rng"]["data"])
        if "cuda" in ckpt["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.best_val, self.stale = float(ckpt["best_val"]), int(ckpt["stale"])


_NOT_COMPARED = {"build", "data", "reproducible", "not_reproducible_because", "search_path", "name"}


def _fingerprint(config: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the parts of a config that must match for a resume (epochs and device may change).

    The model and the data are compared by their fingerprint (architecture, content hashes), not by how
    they were named: a lambda's repr changes with every process, shuffled labels keep their name.
    """
    flat: dict[str, Any] = {}

    def walk(prefix: str, x: Any) -> None:
        if isinstance(x, Mapping):
            for k, v in x.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = list(x) if isinstance(x, tuple) else x

    task = {k: v for k, v in config["task"].items() if k not in _NOT_COMPARED}
    walk("", {"task": task, "hp": config["hp"], "seed": config["train"]["seed"],
              "fingerprint": config.get("fingerprint", {})})
    return flat


_TASK_DEFAULTS = {"metric": "val_acc", "metric_mode": "max"}  # task fields older configs lack


def _prepare_dir(run_dir: Path, config: Mapping[str, Any], resume: bool, force: bool,
                 task: Task, locked: bool = False) -> dict[str, Any] | None:
    """Returns the checkpoint to resume from (or None), after refusing a run directory that does not fit.

    Nothing is written here: a refusal leaves the directory as it was.
    """
    live = holder(run_dir) if run_dir.is_dir() and not locked else None
    if live is not None:
        raise StoreError(f"{str(run_dir)!r} is being written by {describe_holder(live)}; wait for it to finish, "
                         "or use another run_dir")
    if (run_dir / "config.toml").is_file():
        if not resume and not force:
            meta = _meta(run_dir)
            status = meta.get("status", "unknown")
            if status == "running":
                raise StoreError(f"{str(run_dir)!r} was left running by pid {meta.get('pid', '?')} on host "
                                 f"{meta.get('host', '?')}, which no longer holds it (killed?); pass resume=True "
                                 "(--resume) to continue it, or force=True (--force) to start over")
            raise StoreError(f"{str(run_dir)!r} already holds a run (status {status}); pass resume=True "
                             "(--resume) to continue it, or force=True (--force) to start over")
        if resume:
            old = dict(read_config(run_dir))
            old["hp"] = task.resolve_hp(old.get("hp", {}))  # old configs are filled the same way first
            old["task"] = {**_TASK_DEFAULTS, **old.get("task", {})}
            old_fp, new_fp = _fingerprint(old), _fingerprint(config)
            # keys an older babysit did not record are not held against the run
            diff = sorted(k for k in set(old_fp) | set(new_fp) if k in old_fp and old_fp.get(k) != new_fp.get(k))
            if diff:
                shown = "; ".join(f"{k}: {old_fp.get(k)!r} -> {new_fp.get(k)!r}" for k in diff[:5])
                raise StoreError(f"cannot resume {str(run_dir)!r} under a different configuration ({shown}); "
                                 "use another run_dir, or force=True to start over")
            return _latest_loadable(run_dir)
    elif resume:
        raise StoreError(f"nothing to resume in {str(run_dir)!r}: no run there yet; drop resume=True (--resume) "
                         "to start one")
    elif run_dir.exists() and not run_dir.is_dir():
        raise StoreError(f"{str(run_dir)!r} is a file, not a directory; choose another run_dir")
    elif run_dir.exists() and any(p.name != LOCK_NAME for p in run_dir.iterdir()) and not force:
        raise StoreError(f"{str(run_dir)!r} is not empty and is not a babysit run directory; choose another run_dir")
    return None


def _meta(run_dir: Path) -> dict[str, str]:
    if not (run_dir / "run.sqlite").exists():
        return {}
    store = RunStore(run_dir)
    try:
        return store.meta()
    finally:
        store.close()


def _latest_loadable(run_dir: Path) -> dict[str, Any] | None:
    """Returns the newest checkpoint that loads and matches its checksum (a damaged one is skipped), or None.

    Raises StoreError when there are checkpoints but none is good: nothing is resumed, nothing overwritten.
    """
    ckpts, bad = list_checkpoints(run_dir), []
    for ckpt in reversed(ckpts):
        try:
            return load_checkpoint(ckpt.path)
        except StoreError as exc:
            log.warning("skipping checkpoint %s: %s", ckpt.path.name, exc)
            bad.append(str(exc))
    if ckpts:
        raise StoreError(f"cannot resume {str(run_dir)!r}: none of its {len(ckpts)} checkpoints is good, so nothing "
                         f"was changed ({'; '.join(bad[:3])}); restore a good copy, or force=True (--force) to start "
                         "over")
    return None


def _wipe(run_dir: Path) -> None:
    for name in _RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for name in _RUN_DIRS:
        shutil.rmtree(run_dir / name, ignore_errors=True)


def _train_subset(dataset: Any, size: int, seed: int) -> Any:
    """Returns a fixed subset of the training set the size of the validation set (train accuracy)."""
    n = len(dataset)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))[: min(size, n)]
    if isinstance(dataset, torch.utils.data.TensorDataset):
        x, y = data_mod.tensors(dataset)
        return torch.utils.data.TensorDataset(x[idx.to(x.device)], y[idx.to(y.device)])
    return torch.utils.data.Subset(dataset, idx.tolist())


def _notify(observers: Sequence[Any], method: str, record: Any) -> None:
    for obs in observers:
        fn = getattr(obs, method, None)
        if fn is not None:
            fn(record)


@dataclass(frozen=True)
class Plan:
    """A validated run, before anything is written: what `train` will do (and what --dry-run prints)."""

    config: Mapping[str, Any]
    hp: Mapping[str, Any]
    unused: tuple[str, ...]
    run_dir: Path
    resume_from: int | None  # the epoch of the checkpoint a resume continues from

    def to_dict(self) -> dict[str, Any]:
        """Returns the plan as plain data."""
        return {"config": dict(self.config), "unused_keys": list(self.unused), "run_dir": str(self.run_dir),
                "resume_from": self.resume_from}


def _check_args(epochs: Any, checkpoint_interval: Any, resume: bool, force: bool) -> None:
    check_number("epochs", epochs, kind=int, low=1, high=10**6)
    if isinstance(epochs, float):
        raise ConfigError(f"epochs={epochs!r}: must be an integer >= 1")
    check_number("checkpoint_interval", checkpoint_interval, low=0.0, hint="seconds; 0 writes every epoch")
    if resume and force:
        raise ConfigError("resume=True and force=True together: resume continues the run, force starts over; "
                          "choose one (--resume or --force)")


def prepare(task: Task, hp: Mapping[str, Any], *, epochs: int, run_dir: str | Path, seed: int = 0,
            batch_size: int | None = None, resume: bool = False, force: bool = False,
            device: str | torch.device = "auto", checkpoint_interval: float = 5.0,
            allow_unknown: bool = False, diagnose: Mapping[str, Any] | None = None) -> Plan:
    """Returns the Plan of a run after validating everything (config, keys, data, model built once); writes nothing.

    `babysit train --dry-run` prints it; `train` runs it. torch's global RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        return _plan(task, hp, epochs, run_dir, seed, batch_size, resume, force, device, checkpoint_interval,
                     allow_unknown, diagnose)[0]


def _plan(task: Task, hp: Mapping[str, Any], epochs: int, run_dir: str | Path, seed: int, batch_size: int | None,
          resume: bool, force: bool, device: str | torch.device, checkpoint_interval: float,
          allow_unknown: bool, diagnose: Mapping[str, Any] | None = None) -> tuple[Plan, nn.Module]:
    """Returns the Plan and the model built for it from torch.manual_seed(seed)."""
    _check_args(epochs, checkpoint_interval, resume, force)
    if diagnose is not None:
        settings_from_mapping(diagnose)  # a bad threshold or code is refused before anything is written
    check_number("seed", seed, kind=int, low=0, high=2**63 - 1)
    given = dict(hp) if isinstance(hp, Mapping) else hp
    hp = resolve_hp(task, given, batch_size)
    pick_device(device)
    read: set[str] = set()
    torch.manual_seed(seed)
    model = task.build_model(hp, record=read)
    unused = task.unused_keys({**given, **({"batch_size": batch_size} if batch_size else {})}, hp, read,
                              allow_unknown=allow_unknown)
    build_optimizer(model.parameters(), hp)
    build_schedule(hp)
    averaging.check_snapshots(hp, epochs)
    config = {"babysit": {"version": __version__, "torch": torch.__version__}, "task": task.describe(),
              "hp": hp, "train": {"epochs": epochs, "seed": seed, "device": str(device)},
              "fingerprint": task.fingerprint(model), "diagnose": dict(diagnose or {}) or None}
    run_dir = Path(run_dir)
    ckpt = _prepare_dir(run_dir, config, resume, force, task)
    at = int(ckpt["epoch"]) if ckpt is not None else None
    if at is not None and at >= epochs:
        raise ConfigError(f"{str(run_dir)!r} is already at epoch {at} (asked for {epochs}); nothing to resume: "
                          f"ask for more epochs (--epochs {at + 1} or more)")
    return Plan(config, hp, unused, run_dir, at), model


def train(task: Task, hp: Mapping[str, Any], *, epochs: int, run_dir: str | Path, seed: int = 0,
          batch_size: int | None = None, resume: bool = False, force: bool = False,
          device: str | torch.device = "auto", observers: Sequence[Observer] = (),
          checkpoint_interval: float = 5.0, stop: Stop | None = None, allow_unknown: bool = False,
          threads: int | str | None = "auto", monitor: bool = True, objective: Objective | None = None,
          carry: Sequence[torch.Tensor] = (), keep_last: int = 2,
          diagnose: Mapping[str, Any] | None = None) -> Run:
    """Returns the Run after training task's model with hp for `epochs` epochs, kept in run_dir.

    Ends as "completed", "early_stopped", "diverged" (a NaN/inf loss; no exception), "interrupted"
    (Ctrl-C, after the current step), "pruned" (stop set by a search) or "failed" (the user's code
    raised: recorded in the run, then re-raised). resume=True continues from the last checkpoint with
    the same numbers. checkpoint_interval: at most one write per this many seconds (0: every epoch).
    threads: "auto" (1 for small steps, this process's share of the cores for big ones; a resume keeps
    the count it started with), an int, or None to leave torch's setting alone; restored after the call.
    monitor=True records the notes' instruments (babysit.telemetry.watch) and diagnoses each epoch;
    False attaches nothing.
    objective(model, x, y) -> loss tensor replaces the task's loss + L2 in every step (DESIGN.md §6.5);
    carry: tensors with one row per training example, handed to it beside the labels, y = (labels, *carry).
    keep_last: checkpoints kept besides the best (hp["snapshots"] also keeps every cycle's end).
    diagnose: a [diagnose] table (thresholds, silence = [codes]) kept in config.toml for the run's diagnoses.
    hp["ema"] keeps a running average of the weights, evaluated every epoch (epoch/val_acc_ema) and
    checkpointed beside them (load(run_dir, weights="ema")).
    """
    plan, model = _plan(task, hp, epochs, run_dir, seed, batch_size, resume, force, device, checkpoint_interval,
                        allow_unknown, diagnose)
    hp, run_dir, dev = dict(plan.hp), plan.run_dir, pick_device(device)
    lock = DirLock(run_dir, "babysit train").acquire()
    try:
        _prepare_dir(run_dir, plan.config, resume, force, task, locked=True)  # again: nobody else writes now
        ckpt = _latest_loadable(run_dir) if plan.resume_from is not None else None
        loop = _setup(task, model, hp, seed, dev)
        loop.objective, loop.carry = objective, _check_carry(task, carry)
        _averaging(loop, hp, epochs, keep_last)
        n = _threads(threads, run_dir, ckpt, loop.model, task, dev, hp)
        if force:
            _wipe(run_dir)
        write_config(run_dir, plan.config)
        with torch_threads(n):
            return _train_locked(task, hp, epochs, run_dir, seed, dev, loop, ckpt, plan, checkpoint_interval,
                                 observers, stop, n, monitor)
    finally:
        lock.release()


def _train_locked(task: Task, hp: dict[str, Any], epochs: int, run_dir: Path, seed: int, dev: torch.device,
                  loop: _Loop, ckpt: Mapping[str, Any] | None, plan: Plan, checkpoint_interval: float,
                  observers: Sequence[Any], stop: Stop | None, threads: int | None, monitor: bool) -> Run:
    store = RunStore(run_dir)
    writer = CheckpointWriter(run_dir, interval=checkpoint_interval, metric=task.metric.name, mode=task.metric.mode,
                              keep_last=loop.keep_last, keep_epochs=loop.keep_epochs)
    watcher = None
    try:
        if ckpt is not None:
            loop.restore(ckpt)
        store.set_meta(unused_keys=json.dumps(list(plan.unused)), threads=threads or torch.get_num_threads())
        stop = stop if stop is not None else Stop()
        if monitor:  # telemetry first: the observers after it see this epoch's probe
            watcher = watch_training(task, loop.model, loop.optimizer, store, start_step=loop.step,
                                     start_epoch=loop.epoch)
            observers = [watcher.observer, LiveDiagnosis(watcher.snapshot, run_dir, store=store), *observers]
        return _run(task, hp, epochs, run_dir, seed, dev, loop, store, writer, observers, stop)
    finally:
        if watcher is not None:
            watcher.close()
        writer.close()
        store.close()


def _threads(setting: Any, run_dir: Path, ckpt: Any, model: nn.Module, task: Task, dev: torch.device,
             hp: Mapping[str, Any]) -> int | None:
    """Returns the run's thread count: a resume under "auto" keeps the count the run started with."""
    if setting == "auto" and ckpt is not None:
        recorded = _meta(run_dir).get("threads")
        if recorded and recorded.isdigit():
            return int(recorded)
    if setting == "auto":
        x, _ = data_mod.tensors(task.splits.train, limit=int(hp.get("batch_size", 64)))
        return resolve_threads("auto", model, x.to(dev))
    return resolve_threads(setting)


def _averaging(loop: _Loop, hp: Mapping[str, Any], epochs: int, keep_last: int) -> None:
    """Sets up the running average of the weights (hp["ema"]) and the snapshot cycles (hp["snapshots"])."""
    check_number("keep_last", keep_last, kind=int, low=1, high=10**6, hint="checkpoints kept besides the best")
    loop.keep_last = int(keep_last)
    if hp.get("ema") is not None:
        loop.ema = averaging.make_ema(loop.model, float(hp["ema"]))
    k = averaging.check_snapshots(hp, epochs)
    if k is not None:
        loop.schedule = averaging.SnapshotSchedule(loop.schedule, epochs, k)
        loop.keep_epochs = averaging.snapshot_epochs(epochs, k)


def _check_carry(task: Task, carry: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Returns carry as a tuple after checking each tensor has one row per training example."""
    n = len(task.splits.train)  # type: ignore[arg-type]
    for i, t in enumerate(carry):
        if not isinstance(t, torch.Tensor) or t.ndim == 0 or len(t) != n:
            got = f"{len(t)} rows" if isinstance(t, torch.Tensor) and t.ndim else type(t).__name__
            raise ConfigError(f"carry[{i}]: needs a tensor with one row per training example ({n}), got {got}")
    return tuple(carry)


def _batches(train_set: Any, carry: tuple[torch.Tensor, ...], bs: int, shuffle: bool,
             generator: torch.Generator) -> Any:
    """Returns the epoch's batches: (x, y), or (x, (y, *carried rows)) when tensors are carried."""
    if not carry:
        return data_mod.batches(train_set, bs, shuffle=shuffle, generator=generator)
    x, y = data_mod.tensors(train_set)
    n = len(x)
    idx = torch.randperm(n, generator=generator, device=generator.device).to(x.device) if shuffle else \
        torch.arange(n, device=x.device)
    return ((x[j], (y[j], *(c[j.to(c.device)] for c in carry))) for j in idx.split(bs))


def _setup(task: Task, model: nn.Module, hp: Mapping[str, Any], seed: int, dev: torch.device) -> _Loop:
    model = model.to(dev)
    return _Loop(model=model, optimizer=build_optimizer(model.parameters(), hp), schedule=build_schedule(hp),
                 generator=torch.Generator().manual_seed(seed), best_val=task.metric.worst)


def _start_meta(store: RunStore, dev: torch.device, seed: int, resumed: bool) -> None:
    """Records the start: the first start's time is kept on resume, each resume is listed."""
    meta = store.meta()
    resumes = json.loads(meta.get("resumes") or "[]")
    if resumed or "started" in meta:
        resumes.append(now())
    store.set_meta(schema_version=SCHEMA_VERSION, babysit_version=__version__, torch_version=torch.__version__,
                   status="running", started=meta.get("started") or now(), resumes=json.dumps(resumes),
                   device=str(dev), seed=seed, diverged_at=None, error=None, pid=os.getpid(),
                   host=socket.gethostname())


def _run(task: Task, hp: dict[str, Any], epochs: int, run_dir: Path, seed: int, dev: torch.device,
         loop: _Loop, store: RunStore, writer: CheckpointWriter, observers: Sequence[Any], stop: Stop) -> Run:
    store.truncate_after(loop.step)
    loop.history = list(store.history())
    _start_meta(store, dev, seed, loop.step > 0)
    train_set = data_mod.to_device(task.splits.train, dev)
    loop.carry = tuple(c.to(dev) for c in loop.carry)
    val_set = data_mod.to_device(task.splits.val, dev)
    train_eval = _train_subset(train_set, len(val_set), seed)  # type: ignore[arg-type]
    status, diverged_at, error = "completed", None, None
    try:
        with stop.on_sigint():
            while loop.epoch < epochs and not stop:
                if not _epoch(task, hp, loop, train_set, store, observers, stop):
                    status, diverged_at = "diverged", loop.step
                    break
                if not stop:
                    _end_epoch(task, hp, loop, val_set, train_eval, store, writer, observers, stop)
        status = stop.reason or status
    except Exception as exc:
        status, error = "failed", str(exc) if isinstance(exc, BabysitError) else describe_user_error(exc)
        log.error("the run failed: %s", error)
        raise
    finally:
        _finish(store, writer, status, diverged_at, error, stop, loop)
    best = best_of(list_checkpoints(run_dir), task.metric.mode)
    run = Run(dir=run_dir, status=status, diverged_at=diverged_at, history=tuple(loop.history),
              best_checkpoint=best.path if best else None, metric=task.metric.name, metric_mode=task.metric.mode)
    _notify(observers, "on_end", run)
    return run


def _finish(store: RunStore, writer: CheckpointWriter, status: str, diverged_at: int | None, error: str | None,
            stop: Stop, loop: _Loop) -> None:
    """Writes what is pending and the run's final status (also when the user's code raised)."""
    try:
        store.flush()  # every epoch a checkpoint holds is in the store before the checkpoint is
        writer.wait()
    except Exception as exc:  # the last checkpoint could not be written: the run did not finish well
        status, error = "failed", error or str(exc)
        raise
    finally:
        store.flush()
        extra = {"early_stopped_at": loop.epoch} if status == "early_stopped" else {}
        store.set_meta(status=status, diverged_at=diverged_at, finished=now(), error=error,
                       stop_reason=stop.why or None, **extra)


def _epoch(task: Task, hp: Mapping[str, Any], loop: _Loop, train_set: Any, store: RunStore,
           observers: Sequence[Any], stop: Stop) -> bool:
    """Runs one epoch of steps (fewer when stop is set); returns False when the loss became NaN/inf."""
    loop.model.train()
    weights, reg, clip = weights_of(loop.model), float(hp["reg"]), hp.get("clip_norm")
    full_batch = is_full_batch(hp["optimizer"])
    bs = len(train_set) if full_batch else int(hp["batch_size"])
    nb = data_mod.num_batches(train_set, bs)
    step_fn = closure_step if full_batch else train_step
    loop.epoch_started = time.perf_counter()
    checking = bool(stop.conditions)
    for i, (x, y) in enumerate(_batches(train_set, loop.carry, bs, not full_batch, loop.generator)):
        if i == 0 or not loop.schedule.per_epoch:
            lr = loop.schedule.apply(loop.optimizer, loop.epoch + i / nb)
        loss = step_fn(loop.model, x, y, task.loss_fn, weights, reg, loop.optimizer, clip, loop.objective)
        loop.step += 1
        at = loop.epoch + (i + 1) / nb
        store.log(loop.step, at, "loss", loss)
        if not math.isfinite(loss):
            log.warning("loss became %s at step %d (epoch %.2f): stopping as diverged", loss, loop.step, at)
            return False
        if loop.ema is not None:
            loop.ema.update_parameters(loop.model)
        if observers or checking:
            record = StepRecord(loop.step, at, loss, lr)
            _notify(observers, "on_step", record)
            if checking:
                stop.check(record)
        if stop:
            break
    return True


def _validate(task: Task, model: nn.Module, val_set: Any) -> tuple[Evaluation, float]:
    """Returns the validation evaluation and the task's metric on it."""
    val = evaluate(model, val_set, task.loss_fn, metric_fn=task.metric.fn)
    value = {"val_acc": val.accuracy, "val_loss": val.loss}.get(task.metric.name) if task.metric.fn is None \
        else val.metric
    return val, float(value if value is not None else math.nan)


def _end_epoch(task: Task, hp: Mapping[str, Any], loop: _Loop, val_set: Any, train_eval: Any, store: RunStore,
               writer: CheckpointWriter, observers: Sequence[Any], stop: Stop) -> None:
    """Evaluates, records and checkpoints the finished epoch; sets the stop when early stopping fires."""
    loop.epoch += 1
    loop.model.eval()  # both evaluations in one switch of mode (each walks every module); _epoch switches back
    val, value = _validate(task, loop.model, val_set)
    tr = evaluate(loop.model, train_eval, task.loss_fn)
    metric = task.metric
    loop.schedule.end_epoch(metric.score(value))
    if metric.better(value, loop.best_val):
        loop.best_val, loop.stale = value, 0
    else:
        loop.stale += 1
    lr = float(loop.optimizer.param_groups[0]["lr"])
    record = EpochRecord(loop.epoch, tr.loss, tr.accuracy, val.loss, val.accuracy, lr,
                         time.perf_counter() - loop.epoch_started, value)
    loop.history.append(record)
    store.log_epoch(loop.step, record)
    if loop.ema is not None:
        ema = evaluate(loop.ema.module, val_set, task.loss_fn)
        store.log(loop.step, float(loop.epoch), "epoch/val_acc_ema", ema.accuracy)
        store.log(loop.step, float(loop.epoch), "epoch/val_loss_ema", ema.loss)
    if writer.due(loop.epoch):  # a checkpoint about to be written finds its epochs in the store
        store.flush()
    if math.isfinite(value):
        writer.save(loop.epoch, value, loop.state(value))
    _notify(observers, "on_epoch", record)
    patience = hp.get("early_stop")
    if patience is not None and loop.stale >= int(patience):
        stop.set("early_stopped", f"no better {metric.name} for {patience} epochs (best {loop.best_val:.4g})")
    stop.check(record)
