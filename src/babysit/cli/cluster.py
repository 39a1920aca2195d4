"""`babysit worker --study NAME --storage URL`: one worker for any scheduler (sbatch --array, a Kubernetes Job).

It joins a study made by `babysit search` (the task is recorded in the study), runs trials until
every stage is done, and exits 0. Any number of them may run at once, on machines sharing nothing
but the store (and, for checkpoints, the study directory's path). Each trial's threads are train's
"auto" rule on the cores this process may run on (a SLURM task's --cpus-per-task).
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["add_parsers", "COMMANDS"]


def add_parsers(sub: Any) -> None:
    """Adds the worker subcommand to the `babysit` parser."""
    w = sub.add_parser("worker", help="join a study in a shared store and run its trials until it is done "
                       "(start as many as the scheduler allows)")
    w.add_argument("--storage", required=True,
                   help="the study store: postgresql://user@host/db, or a study directory on a shared filesystem")
    w.add_argument("--study", default="babysit", help="the study's name in the storage (default babysit)")
    w.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    w.add_argument("--stale-after", type=float, default=300.0, metavar="SECONDS",
                   help="re-queue a running trial whose heartbeat is older than this (default 300)")
    w.add_argument("--max-attempts", type=int, default=3, help="attempts of a trial whose workers vanished")
    w.add_argument("--wait", type=float, default=600.0, metavar="SECONDS",
                   help="wait this long for the study to be created by `babysit search` (default 600)")
    w.add_argument("--path", action="append", default=[], metavar="DIR",
                   help="a folder to import the task's model/data modules from (repeatable; cwd is searched)")


def cmd_worker(args: argparse.Namespace, console: "Console") -> int:
    """Runs `babysit worker`; returns 0 when the study is done."""
    from ..search.cluster import join
    from .commands import quick_optimizers

    quick_optimizers()
    worker = int(os.environ.get("SLURM_ARRAY_TASK_ID") or os.environ.get("JOB_COMPLETION_INDEX") or 0)
    ran = join(args.storage, args.study, worker=worker, device=args.device, stale_after=args.stale_after,
               max_attempts=args.max_attempts, search=tuple(args.path), wait=args.wait)
    console.print(f"study {args.study!r} is done; this worker ran {ran} trials", highlight=False)
    return 0


COMMANDS = {"worker": cmd_worker}
