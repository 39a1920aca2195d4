"""How many intra-op threads a run gets: torch's default makes training 3-14x slower beside one busy process.

threads="auto" chooses from the cores this process may use (sched_getaffinity), the number of babysit
workers sharing the machine ($BABYSIT_WORKERS, set by a master for its workers), the size of one step
(multiply-adds of one forward, counted with hooks) and, to hold back, the machine's load. Small steps
get one thread: the hand-offs cost more than the math, and a busy neighbour turns them into waits.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ._check import check_number

__all__ = ["BIG_STEP", "WORKERS_ENV", "available_cores", "choose_threads", "forward_macs", "torch_threads"]

log = logging.getLogger(__name__)

WORKERS_ENV = "BABYSIT_WORKERS"
BIG_STEP = 2e8  # multiply-adds of one forward over a batch above which more threads pay for themselves


def available_cores() -> int:
    """Returns the cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _workers() -> int:
    try:
        return max(1, int(os.environ.get(WORKERS_ENV, "1")))
    except ValueError:
        return 1


def forward_macs(model: nn.Module, x: torch.Tensor) -> float:
    """Returns the multiply-adds of one forward of the batch x through the Linear and Conv layers.

    Run in eval mode under no_grad with torch's RNG forked, so nothing about the run changes.
    """
    total = [0.0]

    def hook(m: nn.Module, inputs: Any, out: Any) -> None:
        if isinstance(m, nn.Linear) and isinstance(out, torch.Tensor):
            total[0] += out.numel() * m.in_features
        elif isinstance(m, nn.modules.conv._ConvNd) and isinstance(out, torch.Tensor):
            total[0] += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear,
                                                                                       nn.modules.conv._ConvNd))]
    was = model.training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.eval()
            model(x)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return total[0]


def busy_cores(window: float = 0.1) -> float:
    """Returns how many cores other work keeps busy now: /proc/stat sampled over `window` seconds.

    The 1-minute load average lags: a run that just ended still counts there for a minute.
    """
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        t0, i0 = sample()
        time.sleep(window)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return os.getloadavg()[0]
    total = max(1, t1 - t0)
    return (os.cpu_count() or 1) * (1.0 - (i1 - i0) / total)


def choose_threads(macs: float, *, cores: int | None = None, workers: int | None = None,
                   load: float | None = None) -> int:
    """Returns the thread count for steps of `macs` multiply-adds: 1 for small steps, else this process's share.

    The share is cores // workers, lowered to the cores that other work leaves free right now.
    """
    cores = available_cores() if cores is None else cores
    workers = _workers() if workers is None else workers
    if macs < BIG_STEP:
        return 1
    share = max(1, cores // max(1, workers))
    if load is None:
        load = busy_cores()
    free = max(1, int(cores - load + 0.5))
    return max(1, min(share, free))


def resolve_threads(setting: Any, model: nn.Module | None = None, x: torch.Tensor | None = None) -> int | None:
    """Returns the thread count for a setting: an int as given, "auto" by the rule, None to leave torch alone."""
    if setting is None:
        return None
    if setting == "auto":
        if model is None or x is None:
            return 1
        return choose_threads(forward_macs(model, x))
    return int(check_number("threads", setting, kind=int, low=1, high=4096, hint='or "auto"'))


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Runs the block with torch.set_num_threads(n) (None: unchanged); torch's setting is restored after."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
