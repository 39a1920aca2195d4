"""Local worker processes: forked from this one (lambdas and in-memory data work), dying with it.

Each worker gets its share of the cores (torch's default thread count with two busy processes on
2 cores made training 3-14x slower in the issue's measurement) and PR_SET_PDEATHSIG on Linux, so a
killed master leaves no orphans. The search's local launcher and `train_many` use them.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import time
from typing import Any, Callable

from .threads import WORKERS_ENV

__all__ = ["run_local", "threads_per_worker", "fork_safe_threads", "gpus"]

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1


def threads_per_worker(workers: int) -> int:
    """Returns each worker's share of the cores (at least one thread)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, workers))


def _probe_child(threads: int) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
        torch.ones(1 << 22).sum()  # one parallel region of threads
        (torch.ones(256, 256) @ torch.ones(256, 256)).sum()
    finally:
        os._exit(0)


def fork_safe_threads(threads: int, timeout: float = 2.0) -> int:
    """Returns threads, or 1 when a process forked from this one hangs with that many (OpenMP's pool).

    GNU OpenMP (torch's CPU builds) cannot run a parallel region in a forked child once the parent ran one
    with several threads: the child waits at a barrier for threads it does not have, for ever (measured:
    `babysit search --workers 1` hung in its first matmul). A probe child tries it first (80 ms when it works);
    where it hangs the workers train with one thread each, and a warning says why.
    """
    if threads <= 1:
        return threads
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_probe_child, args=(threads,), daemon=True)
    p.start()
    p.join(timeout)
    if p.exitcode == 0:
        return threads
    if p.is_alive():
        p.kill()
        p.join()
    log.warning("this process already ran torch on several threads (OpenMP), which a forked worker cannot use "
                "again: each worker trains with 1 thread instead of %d. Start the search before training in this "
                "process (or from the command line) to give workers their share of the cores", threads)
    return 1


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the master died before prctl took effect
        os._exit(1)


def gpus() -> list[int]:
    """Returns the CUDA devices to share among workers (none: CPU), without initialising CUDA here."""
    import torch

    if not torch.cuda.is_available() or torch.cuda.is_initialized():
        return []  # a master that initialised CUDA cannot hand it to forked workers: they train on what they get
    return list(range(torch.cuda.device_count()))


def _child(target: Callable[..., Any], parent: int, threads: int, lock_fd: int | None, w: int,
           devices: list[int], workers: int) -> None:
    _die_with_parent(parent)
    os.environ[WORKERS_ENV] = str(workers)  # train(threads="auto") takes this process's share of the cores
    if devices:  # one device per worker (round robin); set before the worker's first CUDA call
        os.environ["CUDA_VISIBLE_DEVICES"] = str(devices[w % len(devices)])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the master decides; a Ctrl-C reaches it
    if lock_fd is not None:
        os.close(lock_fd)
    import torch

    torch.set_num_threads(threads)
    target(w)


def run_local(target: Callable[[int], Any], workers: int, *, lock: Any = None,
              on_death: Callable[[int], None] | None = None, respawns: int = 3, poll: float = 0.1,
              on_poll: Callable[[], None] | None = None) -> int:
    """Forks `workers` processes running target(worker_index), waits for them; returns how many were respawned.

    A worker that dies abnormally is reported to on_death(pid) (which re-queues its trial) and replaced,
    at most `respawns` times. on_poll() is called while waiting (a live display).
    """
    ctx = multiprocessing.get_context("fork")
    threads, parent, devices = fork_safe_threads(threads_per_worker(workers)), os.getpid(), gpus()
    lock_fd = lock.fd if lock is not None else None

    def start(w: int) -> Any:
        p = ctx.Process(target=_child, args=(target, parent, threads, lock_fd, w, devices, workers), daemon=False)
        p.start()
        return p

    procs = {w: start(w) for w in range(workers)}
    respawned = 0
    try:
        while procs:
            for w, p in list(procs.items()):
                if p.is_alive():
                    continue
                p.join()
                del procs[w]
                if p.exitcode != 0:
                    log.warning("worker %d (pid %s) died with exit code %s", w, p.pid, p.exitcode)
                    if on_death is not None and p.pid is not None:
                        on_death(p.pid)
                    if respawned < respawns:
                        respawned += 1
                        procs[w] = start(w)
            if on_poll is not None:
                on_poll()
            time.sleep(poll)
    finally:
        for p in procs.values():
            if p.is_alive():
                p.kill()
                p.join()
    return respawned
