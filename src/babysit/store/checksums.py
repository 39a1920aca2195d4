"""Checkpoint checksums: a sha256 recorded in run.sqlite and beside the file (`<name>.sha256`), checked on load.

Both records are written before the checkpoint is renamed into place, so a file that is on disk under its
final name always has its checksum recorded; a truncated, zero-filled, bit-flipped or substituted file
no longer matches and is refused before torch reads a byte of it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..errors import StoreError
from .files import atomic_write
from .sqlite import recorded_sums

__all__ = ["sha256_of", "sidecar_of", "write_sidecar", "read_sidecar", "verify"]

_EPOCH = re.compile(r"^epoch-(\d+)_")
_LINE = re.compile(r"^([0-9a-f]{64})  (\S+)(?:  (\d+))?\s*$")


def sha256_of(data: bytes) -> str:
    """Returns the hex sha256 of data."""
    return hashlib.sha256(data).hexdigest()


def sidecar_of(path: Path) -> Path:
    """Returns the path of a checkpoint's checksum file: `<name>.sha256` beside it."""
    return path.with_name(path.name + ".sha256")


def write_sidecar(path: Path, sha256: str, size: int) -> None:
    """Writes `<name>.sha256` atomically, in sha256sum's format (`sha256sum -c` checks it) plus the size."""
    line = f"{sha256}  {path.name}  {size}\n".encode()
    atomic_write(sidecar_of(path), lambda f: f.write(line))


def read_sidecar(path: Path) -> tuple[str, int | None] | None:
    """Returns (sha256, size or None) from a checkpoint's `.sha256` file, or None when there is none.

    Raises StoreError when the file is there but is not a checksum line for this checkpoint.
    """
    side = sidecar_of(path)
    if not side.is_file():
        return None
    try:
        text = side.read_text(encoding="ascii", errors="strict").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"checksum file {str(side)!r} cannot be read ({exc.__class__.__name__}); "
                         "restore it or the checkpoint from a good copy") from exc
    m = _LINE.match(text)
    if not m or m.group(2) != path.name:
        raise StoreError(f"checksum file {str(side)!r} is damaged (not a sha256 line for {path.name!r}); "
                         "restore it or the checkpoint from a good copy")
    return m.group(1), (int(m.group(3)) if m.group(3) else None)


def verify(path: Path, data: bytes) -> bool:
    """Returns True when data (the file's bytes) match every checksum recorded for path, False when none is.

    Raises StoreError naming the file when a recorded size or sha256 does not match, or when the run
    records checksums from an epoch on but none for this file of a later epoch (it was not written by this
    run). A checkpoint older than checksums (babysit before schema 3) loads unverified, still weights_only.
    """
    found = recorded_sums(path.parent.parent) if path.parent.name == "checkpoints" else None
    run_sums, first = found if found is not None else ({}, None)
    records: list[tuple[str, str, int | None]] = []
    if path.name in run_sums:
        records.append(("run.sqlite", *run_sums[path.name]))
    side = read_sidecar(path)
    if side is not None:
        records.append((sidecar_of(path).name, *side))
    if not records:
        epoch = _EPOCH.match(path.name)
        if first is not None and (epoch is None or int(epoch.group(1)) >= first):
            # this run records every checkpoint it writes from epoch `first` on; a file it never wrote is not loaded
            raise StoreError(f"checkpoint {str(path)!r} was not written by this run: no checksum is recorded for "
                             "it in run.sqlite nor beside it; babysit does not load it (delete it, or restore the "
                             "run's own file)")
        return False
    digest = sha256_of(data)
    for where, sha, size in records:
        if size is not None and size != len(data):
            raise StoreError(f"checkpoint {str(path)!r} is damaged: {len(data)} bytes where {size} were written "
                             f"(recorded in {where}); it was truncated or overwritten after it was saved")
        if sha != digest:
            raise StoreError(f"checkpoint {str(path)!r} is damaged: its sha256 {digest[:12]}... differs from the "
                             f"{sha[:12]}... recorded in {where} when it was written; it was altered after it was "
                             "saved (a bad disk, a copy that went wrong, or tampering)")
    return True
