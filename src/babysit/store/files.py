"""Atomic file writes: a temporary name, fsync, then rename; a crash never leaves half a file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["atomic_write"]


def atomic_write(path: Path, write: Any) -> None:
    """Writes a file through write(f) on a temporary name, fsyncs it and renames it into place."""
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
