"""The run directory: config.toml, run.sqlite (meta, scalars) and checkpoints named with their score.

Checkpoints are written to a temporary name and renamed (atomic), hold tensors and plain data
only, and are loaded with torch.load(weights_only=True): a run directory is never unpickled.
"""

from __future__ import annotations

import io
import math
import os
import re
import sqlite3
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
import tomli_w

from .errors import StoreError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["SCHEMA_VERSION", "EpochRecord", "Run", "RunStore", "Checkpoint", "checkpoint_name",
           "parse_checkpoint_name", "list_checkpoints", "save_checkpoint", "CheckpointWriter", "load_checkpoint",
           "write_config", "read_config", "EPOCH_KEYS"]

SCHEMA_VERSION = 1
EPOCH_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
_CKPT = re.compile(r"^epoch-(\d{3,})_([a-z][a-z0-9_]*)-(-?\d+\.\d{4})\.pt$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS scalars (step INTEGER NOT NULL, epoch REAL NOT NULL, key TEXT NOT NULL, value REAL);
CREATE INDEX IF NOT EXISTS scalars_key ON scalars (key, step);
CREATE TABLE IF NOT EXISTS histograms (step INTEGER, layer TEXT, kind TEXT, counts TEXT, edges TEXT);
CREATE TABLE IF NOT EXISTS findings (code TEXT, severity TEXT, message TEXT, evidence TEXT, advice TEXT);
"""


@dataclass(frozen=True)
class EpochRecord:
    """One epoch's numbers: losses are data losses (no L2) on a fixed train subset and on validation."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    metric: float = math.nan  # the task's validation metric (val_acc, val_loss or the user's own)

    def to_dict(self) -> dict[str, Any]:
        """Returns the record as a plain dict."""
        return asdict(self)


@dataclass(frozen=True)
class Run:
    """What train() hands back: where the run lives, how it ended and its per-epoch history."""

    dir: Path
    status: str
    diverged_at: int | None
    history: tuple[EpochRecord, ...]
    best_checkpoint: Path | None
    metric: str = "val_acc"
    metric_mode: str = "max"
    error: str | None = None  # the one-line cause when status is "failed"

    @property
    def best_val_acc(self) -> float | None:
        """Returns the best validation accuracy of the run, or None before the first epoch."""
        return max((r.val_acc for r in self.history), default=None)

    @property
    def best_metric(self) -> float | None:
        """Returns the best value of the run's validation metric, or None before the first epoch."""
        values = [r.metric for r in self.history if math.isfinite(r.metric)]
        if not values:
            return None
        return max(values) if self.metric_mode == "max" else min(values)

    def to_dict(self) -> dict[str, Any]:
        """Returns the run as plain data."""
        return {"dir": str(self.dir), "status": self.status, "diverged_at": self.diverged_at,
                "history": [r.to_dict() for r in self.history], "metric": self.metric,
                "metric_mode": self.metric_mode, "best_metric": self.best_metric, "error": self.error,
                "best_checkpoint": str(self.best_checkpoint) if self.best_checkpoint else None}


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


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(run_dir: str | Path, epoch: int, val_acc: float, payload: Mapping[str, Any],
                    *, keep_last: int = 2, metric: str = "val_acc", mode: str = "max") -> Path:
    """Returns the path of a new checkpoint, written atomically; keeps the best and the last keep_last."""
    return _write_checkpoint(Path(run_dir), epoch, val_acc, _serialise(payload), keep_last, metric, mode)


def _serialise(payload: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(dict(payload), buf)
    return buf.getvalue()


def _write_checkpoint(run_dir: Path, epoch: int, value: float, data: bytes, keep_last: int, metric: str = "val_acc",
                      mode: str = "max") -> Path:
    d = run_dir / "checkpoints"
    d.mkdir(parents=True, exist_ok=True)
    path = d / checkpoint_name(epoch, value, metric)
    _atomic_write(path, lambda f: f.write(data))
    ckpts = list_checkpoints(run_dir)
    keep = {c.path for c in ckpts[-keep_last:]} | {best_of(ckpts, mode).path}  # type: ignore[union-attr]
    for c in ckpts:
        if c.path not in keep:
            c.path.unlink(missing_ok=True)
    return path


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
    """

    def __init__(self, run_dir: str | Path, *, keep_last: int = 2, interval: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, metric: str = "val_acc", mode: str = "max") -> None:
        if interval < 0:
            raise StoreError(f"checkpoint interval={interval!r}: must be >= 0 seconds (0: every epoch)")
        self.run_dir, self.keep_last, self.interval, self._clock = Path(run_dir), keep_last, interval, clock
        self.metric, self.mode, self._sign = metric, mode, (1.0 if mode == "max" else -1.0)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="babysit-checkpoint")
        self._futures: list[Future[Path]] = []
        self._best_val = -math.inf
        self._best: tuple[int, float, Any] | None = None
        self._last: tuple[int, float, Any] | None = None
        self._written_at = -math.inf

    def save(self, epoch: int, val_acc: float, payload: Mapping[str, Any]) -> None:
        """Snapshots payload now; writes it (and an unwritten best) when the interval has passed."""
        checkpoint_name(epoch, val_acc, self.metric)  # refuse a bad score here, not in the worker
        snap = (epoch, val_acc, _snapshot(payload))
        if self._sign * val_acc > self._best_val:
            self._best_val, self._best = self._sign * val_acc, snap
        self._last = snap
        if self._clock() - self._written_at >= self.interval:
            self.flush()

    def flush(self) -> None:
        """Queues the writes of the snapshots not yet on disk (the best first, then the latest)."""
        for epoch, val, state in {id(s): s for s in (self._best, self._last) if s is not None}.values():
            self._futures.append(self._pool.submit(self._write, epoch, val, state))
        self._best = self._last = None
        self._written_at = self._clock()

    def _write(self, epoch: int, val: float, state: Any) -> Path:
        return _write_checkpoint(self.run_dir, epoch, val, _serialise(state), self.keep_last, self.metric, self.mode)

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
            self._pool.shutdown(wait=True)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Returns a checkpoint's contents, loaded with weights_only=True (no unpickling of code)."""
    try:
        return torch.load(Path(path), map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise StoreError(f"checkpoint {str(path)!r} does not exist") from exc
    except Exception as exc:
        raise StoreError(f"checkpoint {str(path)!r} cannot be loaded safely: {exc}") from exc


def write_config(run_dir: str | Path, config: Mapping[str, Any]) -> None:
    """Writes config.toml atomically (None values dropped: TOML has no null)."""
    text = tomli_w.dumps(_drop_none(config)).encode()
    _atomic_write(Path(run_dir) / "config.toml", lambda f: f.write(text))


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """Returns the parsed config.toml of a run directory."""
    p = Path(run_dir) / "config.toml"
    if not p.is_file():
        raise StoreError(f"{str(run_dir)!r} is not a babysit run directory (no config.toml)")
    return tomllib.loads(p.read_text())


def _drop_none(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _drop_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, (list, tuple)):
        return [_drop_none(v) for v in x]
    return x


class RunStore:
    """The run's SQLite database: meta (schema and versions, status) and scalars(step, epoch, key, value).

    Scalars are buffered and written in one transaction per flush (once an epoch), so logging
    the loss every iteration costs a list append.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / "run.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a killed process loses nothing committed; only a power cut may drop the last epoch
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._buffer: list[tuple[int, float, str, float]] = []
        version = self.meta().get("schema_version")
        if version is not None and int(version) != SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema version {version}; this babysit reads {SCHEMA_VERSION}")

    def set_meta(self, **values: Any) -> None:
        """Writes meta keys (values stored as text)."""
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 [(k, None if v is None else str(v)) for k, v in values.items()])

    def meta(self) -> dict[str, str]:
        """Returns the meta table as a dict."""
        return dict(self._db.execute("SELECT key, value FROM meta"))

    def log(self, step: int, epoch: float, key: str, value: float) -> None:
        """Buffers one scalar; flush() writes the buffer."""
        self._buffer.append((step, epoch, key, value))

    def flush(self) -> None:
        """Writes buffered scalars in one transaction."""
        if self._buffer:
            with self._db:
                self._db.executemany("INSERT INTO scalars VALUES (?, ?, ?, ?)", self._buffer)
            self._buffer.clear()

    def scalars(self, key: str) -> list[tuple[int, float, float]]:
        """Returns (step, epoch, value) rows of one key in step order."""
        self.flush()
        return list(self._db.execute("SELECT step, epoch, value FROM scalars WHERE key = ? ORDER BY step, rowid",
                                     (key,)))

    def truncate_after(self, step: int) -> None:
        """Deletes scalars logged after a step (a resumed run redoes them)."""
        self._buffer.clear()
        with self._db:
            self._db.execute("DELETE FROM scalars WHERE step > ?", (step,))

    def history(self) -> tuple[EpochRecord, ...]:
        """Returns the per-epoch records stored so far."""
        self.flush()
        rows = self._db.execute(
            "SELECT epoch, key, value FROM scalars WHERE key IN (%s) ORDER BY step" % ",".join("?" * (len(EPOCH_KEYS) + 1)),
            tuple(f"epoch/{k}" for k in (*EPOCH_KEYS, "metric")))
        by_epoch: dict[int, dict[str, float]] = {}
        for epoch, key, value in rows:
            by_epoch.setdefault(int(epoch), {})[key.split("/", 1)[1]] = value
        return tuple(EpochRecord(epoch=e, **{k: float(v) if v is not None else float("nan") for k, v in d.items()})
                     for e, d in sorted(by_epoch.items()) if set(EPOCH_KEYS) <= set(d))

    def log_epoch(self, step: int, record: EpochRecord) -> None:
        """Buffers an epoch record as scalars keyed "epoch/<field>"."""
        for k in (*EPOCH_KEYS, "metric"):
            self.log(step, float(record.epoch), f"epoch/{k}", getattr(record, k))

    def close(self) -> None:
        """Flushes and closes the database."""
        self.flush()
        self._db.close()


def now() -> str:
    """Returns the current UTC time in ISO 8601 (for meta)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
