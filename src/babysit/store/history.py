"""read_history(run_dir) -> History: the frozen read-model of a run directory that diagnose and report use."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import StoreError
from .config import read_config
from .records import History, Series
from .sqlite import RunStore

__all__ = ["read_history", "decode_array", "encode_array"]


def encode_array(values: np.ndarray) -> bytes:
    """Returns an array's values as float16 bytes, clipped to its range (first-layer weights need no more to be seen)."""
    finite = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=65504.0, neginf=-65504.0)
    return np.ascontiguousarray(np.clip(finite, -65504.0, 65504.0), dtype=np.float16).tobytes()


def decode_array(data: bytes) -> list[float]:
    """Returns the float values of bytes written by encode_array."""
    return np.frombuffer(data, dtype=np.float16).astype(np.float64).tolist()


def read_history(run_dir: str | Path) -> History:
    """Returns the History of a run directory (any schema version; older ones are migrated on open)."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.sqlite").is_file():
        raise StoreError(f"{str(run_dir)!r} is not a babysit run directory (no run.sqlite); "
                         "pass the directory train() or watch() wrote")
    config = read_config(run_dir) if (run_dir / "config.toml").is_file() else {}
    store = RunStore(run_dir)
    try:
        scalars = {k: Series(tuple(int(r[0]) for r in rows), tuple(float(r[1]) for r in rows),
                             tuple(float(r[2]) for r in rows)) for k, rows in store.all_scalars().items()}
        return History(meta=store.meta(), config=config, epochs=store.history(), scalars=scalars,
                       histograms=store.histograms(), arrays=store.arrays(decode_array), dir=run_dir)
    finally:
        store.close()
