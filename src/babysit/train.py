"""train(task, hp, ...) -> Run: the training loop, readable top to bottom.

The notes' babysitting starts here: the loss every iteration, train and validation accuracy every
epoch (x-axis in epochs), checkpoints named with their validation score. Observers watch; they
never steer.
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import torch
from torch import nn

from ._version import __version__
from . import data as data_mod
from .errors import ConfigError, StoreError
from .losses import reg_params as weights_of
from .optim import DEFAULT_LR, build_optimizer, build_schedule, check_rule, is_full_batch
from .step import StepRecord, closure_step, evaluate, train_step
from .store import (SCHEMA_VERSION, CheckpointWriter, EpochRecord, Run, RunStore, best_of, list_checkpoints, load_checkpoint, now,
                    read_config, write_config)
from .task import Task, validate_hp
from .diagnose import LiveDiagnosis
from .telemetry.runs import watch_training

__all__ = ["train", "Observer", "resolve_hp", "pick_device"]

log = logging.getLogger(__name__)
_RUN_FILES = ("config.toml", "run.sqlite", "run.sqlite-wal", "run.sqlite-shm", "report.html")
_RUN_DIRS = ("checkpoints", "images")


class Observer(Protocol):
    """Watches a run: any of on_step(StepRecord), on_epoch(EpochRecord), on_end(Run); never steers."""

    def on_step(self, record: StepRecord) -> None: ...
    def on_epoch(self, record: EpochRecord) -> None: ...
    def on_end(self, run: Run) -> None: ...


def resolve_hp(hp: Mapping[str, Any], batch_size: int | None = None) -> dict[str, Any]:
    """Returns hp validated, with babysit's defaults and the update rule's default lr filled in."""
    out = validate_hp({**hp, **({"batch_size": batch_size} if batch_size is not None else {})})
    out.setdefault("lr", DEFAULT_LR[check_rule(out["optimizer"])])
    return out


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

    def state(self, val_acc: float) -> dict[str, Any]:
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "data": self.generator.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"format": 1, "epoch": self.epoch, "step": self.step, "val_acc": val_acc, "best_val": self.best_val,
                "stale": self.stale, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "rng": rng}

    def restore(self, ckpt: Mapping[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.generator.set_state(ckpt["rng"]["data"])
        if "cuda" in ckpt["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.best_val, self.stale = float(ckpt["best_val"]), int(ckpt["stale"])


class _StopOnSigint:
    """Turns the first Ctrl-C into a request to stop after the current step; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupt: stopping after the current step (press Ctrl-C again to abort)")

    def __enter__(self) -> "_StopOnSigint":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _fingerprint(config: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the parts of a config that must match for a resume (epochs and device may change)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, x: Any) -> None:
        if isinstance(x, Mapping):
            for k, v in x.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = list(x) if isinstance(x, tuple) else x

    walk("", {"task": config["task"], "hp": config["hp"], "seed": config["train"]["seed"]})
    return flat


def _prepare_dir(run_dir: Path, config: Mapping[str, Any], resume: bool, force: bool) -> dict[str, Any] | None:
    """Returns the checkpoint to resume from (or None), after refusing a run directory that does not fit."""
    if (run_dir / "config.toml").is_file():
        if force:
            _wipe(run_dir)
        elif not resume:
            status = RunStore(run_dir).meta().get("status", "unknown") if (run_dir / "run.sqlite").exists() else "?"
            raise StoreError(f"{str(run_dir)!r} already holds a run (status {status}); pass resume=True "
                             "(--resume) to continue it, or force=True (--force) to start over")
        else:
            old, new = _fingerprint(read_config(run_dir)), _fingerprint(config)
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if diff:
                shown = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:5])
                raise StoreError(f"cannot resume {str(run_dir)!r} under a different configuration ({shown}); "
                                 "use another run_dir, or force=True to start over")
            return _latest_loadable(run_dir)
    elif run_dir.exists() and any(run_dir.iterdir()) and not force:
        raise StoreError(f"{str(run_dir)!r} is not empty and is not a babysit run directory; choose another run_dir")
    return None


def _latest_loadable(run_dir: Path) -> dict[str, Any] | None:
    """Returns the newest checkpoint that loads (a file damaged by a power cut is skipped), or None."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        try:
            return load_checkpoint(ckpt.path)
        except StoreError as exc:
            log.warning("skipping damaged checkpoint %s: %s", ckpt.path.name, exc)
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


def train(task: Task, hp: Mapping[str, Any], *, epochs: int, run_dir: str | Path, seed: int = 0,
          batch_size: int | None = None, resume: bool = False, force: bool = False,
          device: str | torch.device = "auto", observers: Sequence[Any] = (),
          checkpoint_interval: float = 5.0, monitor: bool = True) -> Run:
    """Returns the Run after training task's model with hp for `epochs` epochs, kept in run_dir.

    A NaN/inf loss ends the run as "diverged" (no exception); Ctrl-C ends it as "interrupted" after
    the current step; resume=True continues from the last checkpoint with the same numbers.
    checkpoint_interval: at most one checkpoint write per this many seconds (0: every epoch); the
    best and the last epoch are always on disk when train returns.
    monitor=True records the notes' instruments (babysit.telemetry.watch); False attaches nothing.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs={epochs!r}: must be an integer >= 1")
    if isinstance(checkpoint_interval, bool) or not isinstance(checkpoint_interval, (int, float)) \
            or checkpoint_interval < 0:
        raise ConfigError(f"checkpoint_interval={checkpoint_interval!r}: must be >= 0 seconds (0: every epoch)")
    hp = resolve_hp(hp, batch_size)
    dev = pick_device(device)
    run_dir = Path(run_dir)
    config = {"babysit": {"version": __version__, "torch": torch.__version__}, "task": task.describe(),
              "hp": hp, "train": {"epochs": epochs, "seed": seed, "device": str(device)}}
    loop = _setup(task, hp, seed, dev)  # validates model, update rule and schedule before touching the disk
    ckpt = _prepare_dir(run_dir, config, resume, force)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, config)
    store, writer = RunStore(run_dir), CheckpointWriter(run_dir, interval=checkpoint_interval)
    watcher = None
    try:
        if ckpt is not None:
            loop.restore(ckpt)
        if monitor:  # telemetry first: the observers after it see this epoch's probe
            watcher = watch_training(task, loop.model, loop.optimizer, store, start_step=loop.step,
                                     start_epoch=loop.epoch)
            observers = [watcher.observer, LiveDiagnosis(watcher.snapshot, run_dir, store=store), *observers]
        return _run(task, hp, epochs, run_dir, seed, dev, loop, store, writer, observers)
    finally:
        if watcher is not None:
            watcher.close()
        writer.close()
        store.close()


def _setup(task: Task, hp: Mapping[str, Any], seed: int, dev: torch.device) -> _Loop:
    torch.manual_seed(seed)
    model = task.build_model(hp).to(dev)
    return _Loop(model=model, optimizer=build_optimizer(model.parameters(), hp), schedule=build_schedule(hp),
                 generator=torch.Generator().manual_seed(seed))


def _run(task: Task, hp: dict[str, Any], epochs: int, run_dir: Path, seed: int, dev: torch.device,
         loop: _Loop, store: RunStore, writer: CheckpointWriter, observers: Sequence[Any]) -> Run:
    store.truncate_after(loop.step)
    loop.history = list(store.history())
    store.set_meta(schema_version=SCHEMA_VERSION, babysit_version=__version__, torch_version=torch.__version__,
                   status="running", started=now(), device=str(dev), seed=seed, diverged_at=None)
    train_set = data_mod.to_device(task.splits.train, dev)
    val_set = data_mod.to_device(task.splits.val, dev)
    train_eval = _train_subset(train_set, len(val_set), seed)  # type: ignore[arg-type]
    status, diverged_at = "completed", None
    with _StopOnSigint() as stop:
        while loop.epoch < epochs:
            outcome = _epoch(task, hp, loop, train_set, store, observers, stop)
            if outcome != "ok":
                status = "interrupted" if outcome == "interrupted" else "diverged"
                diverged_at = loop.step if outcome == "diverged" else None
                break
            if _end_epoch(task, hp, loop, val_set, train_eval, store, writer, observers):
                store.set_meta(early_stopped_at=loop.epoch)
                break
    writer.wait()
    store.flush()
    store.set_meta(status=status, diverged_at=diverged_at, finished=now())
    best = best_of(list_checkpoints(run_dir))
    run = Run(dir=run_dir, status=status, diverged_at=diverged_at, history=tuple(loop.history),
              best_checkpoint=best.path if best else None)
    _notify(observers, "on_end", run)
    return run


def _epoch(task: Task, hp: Mapping[str, Any], loop: _Loop, train_set: Any, store: RunStore,
           observers: Sequence[Any], stop: _StopOnSigint) -> str:
    """Runs one epoch of steps; returns "ok", "diverged" or "interrupted"."""
    loop.model.train()
    weights, reg, clip = weights_of(loop.model), float(hp["reg"]), hp.get("clip_norm")
    full_batch = is_full_batch(hp["optimizer"])
    bs = len(train_set) if full_batch else int(hp["batch_size"])
    nb = data_mod.num_batches(train_set, bs)
    step_fn = closure_step if full_batch else train_step
    loop.epoch_started = time.perf_counter()
    for i, (x, y) in enumerate(data_mod.batches(train_set, bs, shuffle=not full_batch, generator=loop.generator)):
        if i == 0 or not loop.schedule.per_epoch:
            lr = loop.schedule.apply(loop.optimizer, loop.epoch + i / nb)
        loss = step_fn(loop.model, x, y, task.loss_fn, weights, reg, loop.optimizer, clip)
        loop.step += 1
        at = loop.epoch + (i + 1) / nb
        store.log(loop.step, at, "loss", loss)
        if not math.isfinite(loss):
            log.warning("loss became %s at step %d (epoch %.2f): stopping as diverged", loss, loop.step, at)
            return "diverged"
        if observers:
            _notify(observers, "on_step", StepRecord(loop.step, at, loss, lr))
        if stop.requested:
            return "interrupted"
    return "ok"


def _end_epoch(task: Task, hp: Mapping[str, Any], loop: _Loop, val_set: Any, train_eval: Any, store: RunStore,
               writer: CheckpointWriter, observers: Sequence[Any]) -> bool:
    """Evaluates, records and checkpoints the finished epoch; returns True when early stopping fires."""
    loop.epoch += 1
    val = evaluate(loop.model, val_set, task.loss_fn)
    tr = evaluate(loop.model, train_eval, task.loss_fn)
    loop.schedule.end_epoch(val.accuracy)
    if val.accuracy > loop.best_val:
        loop.best_val, loop.stale = val.accuracy, 0
    else:
        loop.stale += 1
    lr = float(loop.optimizer.param_groups[0]["lr"])
    record = EpochRecord(loop.epoch, tr.loss, tr.accuracy, val.loss, val.accuracy, lr,
                         time.perf_counter() - loop.epoch_started)
    loop.history.append(record)
    store.log_epoch(loop.step, record)
    store.flush()
    writer.save(loop.epoch, val.accuracy, loop.state(val.accuracy))
    _notify(observers, "on_epoch", record)
    patience = hp.get("early_stop")
    return patience is not None and loop.stale >= int(patience)
