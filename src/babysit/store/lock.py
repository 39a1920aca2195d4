"""Who holds a directory: one lock per run directory (or study), released by the kernel when its holder dies.

An advisory fcntl lock on ``<dir>/.babysit.lock``: a second writer is refused naming the holder's pid and
host; a SIGKILLed holder releases it at once, so a directory left "running" by a dead process is
recognised as such (status running, nobody holding the lock) and can be resumed or forced.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import StoreError

__all__ = ["LOCK_NAME", "DirLock", "holder"]

LOCK_NAME = ".babysit.lock"


def _read(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        info = json.loads(raw.decode() or "{}")
        return info if isinstance(info, dict) else {}
    except (ValueError, UnicodeDecodeError):
        return {}


def describe(info: dict[str, Any]) -> str:
    """Returns "pid 123 on host h since T (what)" for a holder record."""
    what = f" ({info['what']})" if info.get("what") else ""
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since {info.get('since', '?')}{what}"


def holder(directory: str | Path) -> dict[str, Any] | None:
    """Returns the live holder's record {pid, host, since, what} of a directory's lock, or None when free."""
    path = Path(directory) / LOCK_NAME
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or {"pid": "?", "host": "?"}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class DirLock:
    """An exclusive lock on a directory; `with DirLock(d, "training"):` or acquire()/release()."""

    def __init__(self, directory: str | Path, what: str = "") -> None:
        self.directory, self.what = Path(directory), what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Returns True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> "DirLock":
        """Takes the lock; raises StoreError naming the holder when another process (or object) holds it."""
        if self._fd is not None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read(fd)
            os.close(fd)
            raise StoreError(f"{str(self.directory)!r} is in use by {describe(info)}; wait for it to finish, "
                             "or use another directory") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                         time.gmtime()),
                "what": self.what}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Lets the lock go (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
