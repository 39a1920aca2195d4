"""The run directory: config.toml, run.sqlite (meta, scalars, histograms, arrays, findings), checkpoints.

records.py: the plain records (EpochRecord, Run, History); checkpoints.py: names, the background
writer, safe loads; files.py: atomic writes; sqlite.py: RunStore and its forward schema migrations; config.py: config.toml;
history.py: read_history, the frozen read-model of a run for diagnose and report.
"""

from __future__ import annotations

from .checkpoints import (Checkpoint, CheckpointWriter, best_of, checkpoint_name, list_checkpoints,
                          load_checkpoint, parse_checkpoint_name, save_checkpoint)
from .config import read_config, write_config
from .files import atomic_write
from .lock import LOCK_NAME, DirLock, holder
from .history import decode_array, encode_array, read_history
from .records import EPOCH_KEYS, ArraySnapshot, EpochRecord, Histogram, History, Run, Series
from .sqlite import MIGRATIONS, SCHEMA_VERSION, RunStore, now

__all__ = ["SCHEMA_VERSION", "EpochRecord", "Run", "RunStore", "Checkpoint", "checkpoint_name",
           "parse_checkpoint_name", "list_checkpoints", "save_checkpoint", "CheckpointWriter", "load_checkpoint",
           "write_config", "read_config", "EPOCH_KEYS", "best_of", "now", "atomic_write", "MIGRATIONS",
           "History", "Series", "Histogram", "ArraySnapshot", "read_history", "encode_array", "decode_array",
           "DirLock", "LOCK_NAME", "holder"]
