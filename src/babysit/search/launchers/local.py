"""The search's local launcher: workers forked from the master (babysit.workers), and the master's lock.

A resumed master re-queues what the workers of a killed one held.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Any

from ...errors import StoreError
from ...workers import fork_safe_threads, gpus, run_local, threads_per_worker

__all__ = ["MasterLock", "run_local", "threads_per_worker", "fork_safe_threads", "gpus"]


class MasterLock:
    """An exclusive lock on a study directory held by its one master; a second master is refused by pid."""

    def __init__(self, study_dir: str | Path) -> None:
        self.path = Path(study_dir) / "master.lock"
        self.fd: int | None = None

    def __enter__(self) -> "MasterLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreError(f"study {str(self.path.parent)!r} is already run by a master (pid {pid}); wait for it, "
                             f"stop it (kill {pid}), or watch it read-only with bs.load_study / 'babysit study'") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
