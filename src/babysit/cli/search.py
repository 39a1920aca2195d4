"""`babysit search`, `babysit study` and `babysit lr-find`: parse -> config -> one public function -> render.

args.parser() registers them with `add_parsers` (light: no torch); `COMMANDS` are the handlers,
which import the search package when they run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..config import load_config
from ..errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from ..search import Study

__all__ = ["add_parsers", "COMMANDS"]


def add_parsers(sub: Any) -> None:
    """Adds the search, study and lr-find subcommands to the `babysit` parser."""
    s = sub.add_parser("search", help="hyperparameter search: [search] table of CONFIG, workers around one study")
    s.add_argument("config", help="a TOML file with [task], [hp] (fixed values) and [search] tables")
    s.add_argument("--workers", type=int, help="local worker processes (default 2)")
    s.add_argument("--study-dir", help="where the study goes (default [search] study_dir or studies/<config name>)")
    s.add_argument("--storage", help="a database URL for the study store instead of the journal file")
    s.add_argument("--resume", action="store_true", help="continue the study: finished trials are not re-run")
    s.add_argument("--json", action="store_true", help="print the trials as JSON")
    s.add_argument("--study", default="babysit", help="the study's name in the storage (for `babysit worker`)")
    s.add_argument("--launcher", choices=("local", "ray"), default="local",
                   help="local: fork --workers here; ray: start them as Ray tasks (the ray extra)")
    s.add_argument("--address", help="the Ray cluster to join (--launcher ray; default: auto, else a local one)")
    st = sub.add_parser("study", help="look at a study (read-only, also while it runs); --kill flags a trial")
    st.add_argument("study_dir", nargs="?", help="the study directory (optional with --storage URL)")
    st.add_argument("--storage", help="a database URL holding the study")
    st.add_argument("--study", default="babysit", help="the study's name in the storage")
    st.add_argument("--top", type=int, default=10, help="rows of the leaderboard")
    st.add_argument("--kill", type=int, metavar="TRIAL", help="stop this trial at its next epoch (recorded as pruned)")
    st.add_argument("--json", action="store_true")
    lf = sub.add_parser("lr-find", help="learning-rate range test: a suggested value and a log range for a search")
    lf.add_argument("config", help="a TOML file with [task] and [hp] tables")
    lf.add_argument("--steps", type=int, default=300)
    lf.add_argument("--plot", help="write the loss and update:weight curves to this PNG")
    lf.add_argument("--json", action="store_true")


def _leaderboard(study: "Study", top: int) -> "Table":
    from rich.table import Table

    t = Table(title=f"study {study.dir}  ({len(study.trials)} trials)")
    keys = list(study.plan["space"])
    for col in ("trial", "stage", *keys, "status", study.plan.get("metric", "metric"), "epochs"):
        t.add_column(str(col))
    for tr in study.top(top):
        vals = [f"{tr.params[k]:.4g}" if isinstance(tr.params.get(k), float) else str(tr.params.get(k, "-"))
                for k in keys]
        t.add_row(str(tr.id), str(tr.stage), *vals, tr.status, f"{tr.metric:.4f}", str(tr.epochs))
    return t


def _show(study: "Study", console: "Console", top: int) -> None:
    for w in study.warnings:
        console.print(f"[bold yellow]border:[/] {w}", highlight=False)
    counts: dict[str, int] = {}
    for tr in study.trials:
        counts[tr.status] = counts.get(tr.status, 0) + 1
    console.print(", ".join(f"{k} {v}" for k, v in sorted(counts.items())), highlight=False)
    console.print(_leaderboard(study, top))


def _live(spec: Any, console: "Console") -> Callable[[], None]:
    from ..search import load_study

    last = [0.0]

    def poll() -> None:
        if not console.is_terminal or time.monotonic() - last[0] < 1.0:
            return
        last[0] = time.monotonic()
        try:
            study = load_study(spec["study_dir"], storage=spec.get("storage"), name=spec.get("name", "babysit"))
        except Exception:  # the store may be mid-write; the next poll shows it
            return
        ts, best = study.trials, study.best
        done = sum(t.status not in ("running", "queued") for t in ts)
        console.print(f"trials done {done}, running {sum(t.status == 'running' for t in ts)}, stopped "
                      f"{sum(t.status in ('pruned', 'diverged') for t in ts)}; best "
                      f"{'-' if best is None else f'{best.metric:.4f} (trial {best.id})'}", highlight=False)
    return poll


def cmd_search(args: argparse.Namespace, console: "Console") -> int:
    """Runs `babysit search CONFIG`; returns 0 when the study finished."""
    from ..threads import torch_threads
    from .commands import quick_optimizers
    from ..search import search
    from ..search.api import settings_from_table
    from ..task import Task

    cfg = load_config(args.config)
    table = cfg.sections.get("search")
    if not table:
        raise ConfigError(f"{args.config}: no [search] table; add e.g. lr = {{loguniform = [1e-6, 1.0]}} and "
                          "stages = [{trials = 20, epochs = 1}, {trials = 5, epochs = 5}]")
    space, settings = settings_from_table(table)
    if "stages" not in settings:
        raise ConfigError("[search] stages is missing: e.g. stages = [{trials = 20, epochs = 1}]")
    task = Task.from_config(cfg.task, search=[str(Path(args.config).resolve().parent), str(Path.cwd())])
    study_dir = args.study_dir or settings.pop("study_dir", None) or f"studies/{Path(args.config).stem}"
    settings.pop("study_dir", None)
    if args.workers is not None:
        settings["workers"] = args.workers
    quick_optimizers()
    # a master with workers trains nothing itself: on one thread it starts no OpenMP pool, which forked
    # workers could not use again (they would train on one thread each: launchers.local.fork_safe_threads)
    with torch_threads(1 if settings.get("workers", 2) else None):
        study = search(task, space, fixed=dict(cfg.hp), study_dir=study_dir, storage=args.storage,
                       resume=args.resume, name=args.study, launcher=args.launcher, address=args.address,
                       progress=_live({"study_dir": study_dir, "storage": args.storage, "name": args.study}, console),
                       **settings)
    if args.json:
        print(json.dumps([t.to_dict() for t in study.trials], indent=2))
    else:
        _show(study, console, 10)
    return 0 if study.done else 1


def cmd_study(args: argparse.Namespace, console: "Console") -> int:
    """Runs `babysit study DIR`: the leaderboard and border warnings; --kill TRIAL flags one trial."""
    from ..search import load_study

    if args.study_dir is None and args.storage is None:
        raise ConfigError("babysit study: give the study directory, or --storage URL (and --study NAME)")
    study = load_study(args.study_dir or ".", storage=args.storage, name=args.study)
    if args.kill is not None:
        if args.kill not in {t.id for t in study.trials if t.status in ("running", "queued")}:
            raise ConfigError(f"--kill {args.kill}: no running or queued trial with that id in "
                              f"{args.study_dir or args.storage}")
        study.kill(args.kill)
        console.print(f"trial {args.kill} flagged: its worker stops it at its next epoch")
        return 0
    if args.json:
        print(json.dumps({"trials": [t.to_dict() for t in study.trials], "warnings": study.warnings,
                          "findings": study.findings()}, indent=2, default=str))
    else:
        _show(study, console, args.top)
        here = None if study.dir.is_dir() else Path("study.html")  # a machine that does not mount the study dir
        console.print(f"report: {study.html(here)}", highlight=False, markup=False, soft_wrap=True)
    return 0


def cmd_lr_find(args: argparse.Namespace, console: "Console") -> int:
    """Runs `babysit lr-find CONFIG`: prints the suggested learning rate and log range."""
    from .commands import quick_optimizers
    from ..search import lr_find
    from ..task import Task

    cfg = load_config(args.config)
    task = Task.from_config(cfg.task, search=[str(Path(args.config).resolve().parent), str(Path.cwd())])
    quick_optimizers()
    found = lr_find(task, dict(cfg.hp), steps=args.steps)
    if args.plot:
        found.plot(args.plot)
    if args.json:
        print(json.dumps({"suggestion": found.suggestion, "range": list(found.range)}))
    else:
        lo, hi = found.range
        console.print(f"suggested lr {found.suggestion:.3g}; search range loguniform({lo:.3g}, {hi:.3g})",
                      highlight=False)
    return 0


COMMANDS = {"search": cmd_search, "study": cmd_study, "lr-find": cmd_lr_find}
