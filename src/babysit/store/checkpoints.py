"""Checkpoints: names that carry the validation score, atomic writes, a background writer, safe loads.

Checkpoints are written to a temporary name and renamed (atomic), hold tensors and plain data
only, carry a sha256 (run.sqlite and `<name>.sha256`, see checksums.py) that every load checks, and
are loaded with torch.load(weights_only=True): a run directory is never unpickled.
"""

from __future__ import annotations

import errno
import io
import math
import os
import pickle
import re
import sqlite3
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from ..errors import StoreError
from .checksums import sha256_of, sidecar_of, verify, write_sidecar
from .files import atomic_write
from .sqlite import RunStore

__all__ = ["Checkpoint", "checkpoint_name", "parse_checkpoint_name", "list_checkpoints", "best_of",
           "save_checkpoint", "CheckpointWriter", "load_checkpoint"]

_CKPT = re.compile(r"^epoch-(\d{3,})_([a-z][a-z0-9_]*)-(-?\d+\.\d{4})\.pt$")


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file and the epoch and validation metric its name carries."""

    path: Path
    epoch: int
    val: float
    metric: str = "val_acc"


def checkpoint_name(epoch: int, value: float, metric: str = "val_acc") -> str:
    """Returns e.g. "epoch-007_val-0.8125.pt" (val_acc) or "epoch-007_val_loss-0.4321.pt": the score in the name."""
    if metric == "val_acc" and not 0.0 <= value <= 1.0:
        raise StoreError(f"validation accuracy {value!r} is not in [0, 1]")
    if not math.isfinite(value):
        raise StoreError(f"validation {metric} {value!r} is not finite")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", metric):
        raise StoreError(f"metric name {metric!r}: lower-case letters, digits and _ only")
    return f"epoch-{epoch:03d}_{'val' if metric == 'val_acc' else metric}-{value:.4f}.pt"


def parse_checkpoint_name(name: str) -> tuple[int, float] | None:
    """Returns (epoch, value) parsed from a checkpoint file name, or None for other files."""
    m = _CKPT.match(name)
    return (int(m.group(1)), float(m.group(3))) if m else None


def list_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """Returns the run's complete checkpoints sorted by epoch (temporary files are ignored)."""
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _CKPT.match(p.name)
        if m:
            metric = "val_acc" if m.group(2) == "val" else m.group(2)
            out.append(Checkpoint(p, int(m.group(1)), float(m.group(3)), metric))
    return sorted(out, key=lambda c: c.epoch)


def best_of(checkpoints: Iterable[Checkpoint], mode: str = "max") -> Checkpoint | None:
    """Returns the checkpoint with the best validation metric (highest, or lowest for mode="min"; earliest on a tie)."""
    sign = 1.0 if mode == "max" else -1.0
    return max(checkpoints, key=lambda c: (sign * c.val, -c.epoch), default=None)


def save_checkpoint(run_dir: str | Path, epoch: int, val_acc: float, payload: Mapping[str, Any],
                    *, keep_last: int = 2, metric: str = "val_acc", mode: str = "max",
                    keep_epochs: Iterable[int] = ()) -> Path:
    """Returns the path of a new checkpoint, written atomically; keeps the best, the last keep_last and keep_epochs."""
    store = RunStore(run_dir)
    try:
        return _write_checkpoint(Path(run_dir), epoch, val_acc, _serialise(payload), keep_last, metric, mode,
                                 frozenset(keep_epochs), store)
    finally:
        store.close()


def _serialise(payload: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(dict(payload), buf)
    return buf.getvalue()


def _write_checkpoint(run_dir: Path, epoch: int, value: float, data: bytes, keep_last: int, metric: str,
                      mode: str, keep_epochs: frozenset[int], store: RunStore) -> Path:
    """Records the checksum (run.sqlite, then `<name>.sha256`), writes the file atomically, then prunes.

    keep_epochs: epochs never pruned (the cycle ends of a snapshot ensemble). store: the run's database,
    one connection for every write of a writer (opening and closing one per checkpoint cost more than
    the write of a small model).
    """
    digest = sha256_of(data)
    _put_record(run_dir, epoch, value, data, metric, store, digest)
    path = _put(run_dir, epoch, value, data, metric, digest)
    _prune(run_dir, keep_last, mode, keep_epochs, store)
    return path


def _put(run_dir: Path, epoch: int, value: float, data: bytes, metric: str, digest: str) -> Path:
    """Returns the path of one checkpoint file written with its sidecar checksum (recorded in run.sqlite first)."""
    d = run_dir / "checkpoints"
    path = d / checkpoint_name(epoch, value, metric)
    try:
        d.mkdir(parents=True, exist_ok=True)
        write_sidecar(path, digest, len(data))
        atomic_write(path, lambda f: f.write(data))
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(_write_failed(run_dir, path, exc)) from exc
    return path


def _put_record(run_dir: Path, epoch: int, value: float, data: bytes, metric: str, store: RunStore,
                digest: str) -> None:
    """Records a checkpoint's checksum in run.sqlite before its file is written (StoreError in babysit's words)."""
    path = run_dir / "checkpoints" / checkpoint_name(epoch, value, metric)
    try:
        store.record_checkpoint(path.name, epoch, digest, len(data))
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(_write_failed(run_dir, path, exc)) from exc


def _write_failed(run_dir: Path, path: Path, exc: BaseException) -> str:
    """Returns babysit's words for a failed checkpoint write: what failed, why, and what is still good."""
    errno_ = getattr(exc, "errno", None)
    why = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file is larger than this process may write "
           "(a file-size limit, ulimit -f)", errno.EDQUOT: "the disk quota is used up",
           errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied"}.get(errno_ or -1)
    d = run_dir / "checkpoints"
    if why is None and d.exists() and not d.is_dir():
        why = f"{str(d)!r} is a file, not a directory"
    why = why or f"{exc.__class__.__name__}: {exc}"
    good = [c for c in list_checkpoints(run_dir) if c.path != path]
    kept = f"the last good checkpoint, {good[-1].path.name}, is intact" if good else "no earlier checkpoint exists"
    return (f"cannot write checkpoint {path.name} in {str(d)!r}: {why}; {kept}. Free space or fix the directory, "
            "then resume (--resume)")


def _prune(run_dir: Path, keep_last: int, mode: str, keep_epochs: frozenset[int], store: RunStore) -> None:
    """Deletes checkpoints that are neither the best, among the last keep_last nor kept epochs, with their checksums."""
    ckpts = list_checkpoints(run_dir)
    keep = {c.path for c in ckpts[-keep_last:]} | {best_of(ckpts, mode).path}  # type: ignore[union-attr]
    keep |= {c.path for c in ckpts if c.epoch in keep_epochs}
    gone = [c.path for c in ckpts if c.path not in keep]
    # a checksum whose checkpoint never arrived (the process was killed mid-write) goes too
    gone += [p.with_name(p.name[: -len(".sha256")]) for p in (run_dir / "checkpoints").glob("*.pt.sha256")
             if not p.with_name(p.name[: -len(".sha256")]).exists()]
    for p in gone:
        p.unlink(missing_ok=True)
        sidecar_of(p).unlink(missing_ok=True)
    for tmp in (run_dir / "checkpoints").glob(".*.tmp"):  # left by a killed writer (the run lock admits one)
        if not tmp.name.endswith(f".{os.getpid()}.tmp"):
            tmp.unlink(missing_ok=True)
    if gone:
        store.forget_checkpoints(p.name for p in gone)


def _snapshot(x: Any) -> Any:
    """Returns x with every tensor copied (a memcpy), so training can go on while the copy is written."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, Mapping):
        return {k: _snapshot(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_snapshot(v) for v in x)
    return x


class CheckpointWriter:
    """Writes checkpoints from a background thread, at most one batch of writes per `interval` seconds.

    Every epoch's state is snapshotted (tensors copied), so the best and the latest are never lost;
    they are written when `interval` has passed since the last write, and always by wait()/close().
    A killed run loses at most `interval` seconds of work, and resumes exactly from what is on disk.
    Writing, fsync, rename and pruning happen in order on one worker; wait() raises any write error.
    keep_epochs: epochs always written at once and never pruned (a snapshot ensemble's cycle ends).
    """

    def __init__(self, run_dir: str | Path, *, keep_last: int = 2, interval: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, metric: str = "val_acc", mode: str = "max",
                 keep_epochs: Iterable[int] = ()) -> None:
        if interval < 0:
            raise StoreError(f"checkpoint interval={interval!r}: must be >= 0 seconds (0: every epoch)")
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
            raise StoreError(f"keep_last={keep_last!r}: must be an integer >= 1 (the last checkpoints kept)")
        self.keep_epochs = frozenset(keep_epochs)
        self.run_dir, self.keep_last, self.interval, self._clock = Path(run_dir), keep_last, interval, clock
        self.metric, self.mode, self._sign = metric, mode, (1.0 if mode == "max" else -1.0)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="babysit-checkpoint")
        self._futures: list[Future[list[Path]]] = []
        self._best_val = -math.inf
        self._best: tuple[int, float, Any] | None = None
        self._last: tuple[int, float, Any] | None = None
        self._written_at = -math.inf
        self._store: RunStore | None = None  # opened and used by the worker thread only
        self._side: ThreadPoolExecutor | None = None  # writes the second file of a pair

    def save(self, epoch: int, val_acc: float, payload: Mapping[str, Any]) -> None:
        """Snapshots payload now; writes it (and an unwritten best) when the interval has passed."""
        checkpoint_name(epoch, val_acc, self.metric)  # refuse a bad score here, not in the worker
        self._raise_failed()
        snap = (epoch, val_acc, _snapshot(payload))
        if self._sign * val_acc > self._best_val:
            self._best_val, self._best = self._sign * val_acc, snap
        self._last = snap
        if self.due(epoch):
            self.flush()

    def due(self, epoch: int) -> bool:
        """Returns True when save(epoch, ...) writes at once (a kept epoch, or the interval has passed)."""
        return epoch in self.keep_epochs or self._clock() - self._written_at >= self.interval

    def flush(self) -> None:
        """Queues the writes of the snapshots not yet on disk (the best and the latest, one task)."""
        snaps = list({id(s): s for s in (self._best, self._last) if s is not None}.values())
        if snaps:
            self._futures.append(self._pool.submit(self._write, snaps))
        self._best = self._last = None
        self._written_at = self._clock()

    def _write(self, snaps: list[tuple[int, float, Any]]) -> list[Path]:
        """Writes the best and the latest together: checksums recorded, both files written at once, one prune.

        The two files' fsyncs overlap (one on a helper thread): the end of a run waits for one, not two.
        """
        if self._store is None:
            try:
                self._store = RunStore(self.run_dir)
            except (OSError, sqlite3.Error) as exc:
                path = self.run_dir / "checkpoints" / checkpoint_name(snaps[0][0], snaps[0][1], self.metric)
                raise StoreError(_write_failed(self.run_dir, path, exc)) from exc
        datas = [(epoch, val, _serialise(state)) for epoch, val, state in snaps]
        digests = [sha256_of(data) for _, _, data in datas]
        for (epoch, val, data), digest in zip(datas, digests):  # every record before any file
            _put_record(self.run_dir, epoch, val, data, self.metric, self._store, digest)
        side = None
        if len(datas) > 1:
            if self._side is None:
                self._side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="babysit-checkpoint-side")
            side = self._side.submit(_put, self.run_dir, *datas[1], self.metric, digests[1])
        paths = [_put(self.run_dir, *datas[0], self.metric, digests[0])]
        paths += [side.result()] if side is not None else []
        _prune(self.run_dir, self.keep_last, self.mode, self.keep_epochs, self._store)
        return paths

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def _raise_failed(self) -> None:
        """Raises the error of a write that already failed, so a run stops at the next epoch, not at the end."""
        for f in self._futures:
            if f.done() and f.exception() is not None:
                self._futures = [g for g in self._futures if not g.done()]
                raise f.exception()  # type: ignore[misc]
        self._futures = [f for f in self._futures if not f.done()]

    def wait(self) -> None:
        """Returns when every snapshot is on disk; raises the first write error."""
        self.flush()
        futures, self._futures = self._futures, []
        for f in futures:
            f.result()

    def close(self) -> None:
        """Writes what is pending and stops the worker."""
        try:
            self.wait()
        finally:
            self._pool.submit(self._close_store)
            self._pool.shutdown(wait=True)
            if self._side is not None:
                self._side.shutdown(wait=True)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Returns a checkpoint's contents after checking its sha256; loaded with weights_only=True (no code runs).

    Raises StoreError, in babysit's words, for a missing, truncated, altered or hostile file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise StoreError(f"checkpoint {str(path)!r} does not exist") from exc
    except OSError as exc:
        raise StoreError(f"checkpoint {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    verified = verify(path, data)
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not the user's business
            warnings.simplefilter("ignore", UserWarning)
            out = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise StoreError(f"checkpoint {str(path)!r} is refused: it holds {_culprit(exc)}, not only tensors and plain "
                         "data, so loading it could run code; babysit never unpickles such a file (it was not "
                         "written by babysit, or was tampered with)") from None
    except Exception as exc:
        state = "passed its checksum but" if verified else "has no recorded checksum and"
        raise StoreError(f"checkpoint {str(path)!r} {state} is not a readable checkpoint ({_first_line(exc)}); "
                         "it is damaged or not a babysit checkpoint") from None
    if not isinstance(out, dict):
        raise StoreError(f"checkpoint {str(path)!r} holds a {type(out).__name__}, not a babysit checkpoint (a dict)")
    return out


def _culprit(exc: BaseException) -> str:
    """Returns what the refused pickle asked for, e.g. "a reference to posix.system", taken from torch's text."""
    m = re.search(r"GLOBAL ([\w.]+)|global[: ]+([\w.]+)", str(exc))
    name = next((g for g in (m.groups() if m else ()) if g), None)
    return f"a reference to {name}" if name else "Python objects"


def _first_line(exc: BaseException) -> str:
    """Returns the first line of an error, without torch's advice to turn weights_only off."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and "weights_only" not in ln]
    return f"{exc.__class__.__name__}: {lines[0][:200]}" if lines else exc.__class__.__name__
