"""Ray launcher: the workers are Ray tasks on an existing Ray cluster (or a local one); the only file importing ray.

Each task is `babysit worker` (search.cluster.join): it rebuilds the task from the plan on its node
and runs trials from the store until the study is done. The store stays the truth: a lost node
loses only its running trial (re-queued by the reaper: at once for a dead pid on the master's host,
after stale_after seconds elsewhere) and Ray retries the lost task on a node that is left.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from ...errors import ConfigError

__all__ = ["run_ray"]

log = logging.getLogger(__name__)


def _worker(spec: str, name: str, w: int, stale_after: float, max_attempts: int) -> int:
    from ..cluster import join

    return join(spec, name, worker=w, stale_after=stale_after, max_attempts=max_attempts)


def _connect(address: str | None) -> tuple[Any, bool]:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("launcher='ray' needs Ray: pip install 'babysit[ray]'") from exc
    if ray.is_initialized():
        return ray, False
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    return ray, True


def run_ray(spec: str, name: str, workers: int, *, address: str | None = None,
            on_poll: Callable[[], None] | None = None, reap: Callable[[], None] | None = None,
            stale_after: float = 300.0, max_attempts: int = 3, poll: float = 0.5, reap_every: float = 2.0,
            retries: int = 3) -> int:
    """Runs `workers` Ray tasks around the store until all return; returns how many trials they ran.

    address: a Ray cluster ("auto": the one this machine belongs to); None joins RAY_ADDRESS or starts
    a local one. Each task takes one CPU, and one GPU when the cluster has GPUs. reap() is called every
    reap_every seconds (the master re-queues the trials of workers that are gone).
    """
    if workers < 1:
        raise ConfigError(f"workers={workers}: the Ray launcher needs at least one worker")
    ray, started = _connect(address)
    try:
        gpu = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_cpus=1, num_gpus=gpu, max_retries=retries)(_worker)
        pending = [task.remote(spec, name, w, stale_after, max_attempts) for w in range(workers)]
        ran, last = 0, time.monotonic()
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=poll)
            for ref in done:
                try:
                    ran += int(ray.get(ref))
                except ray.exceptions.RayError as exc:  # retries spent: the others finish the study
                    log.warning("a Ray worker failed for good: %s", str(exc).splitlines()[0])
            if reap is not None and time.monotonic() - last > reap_every:
                reap()
                last = time.monotonic()
            if on_poll is not None:
                on_poll()
        return ran
    finally:
        if started:
            ray.shutdown()
