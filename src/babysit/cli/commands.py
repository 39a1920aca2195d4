"""`babysit train` and `babysit check`: config -> one public function -> render; the exit code from the status."""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from ..status import EXIT_FAILED, EXIT_OK, EXIT_USER_CODE, exit_code
from .args import build_config, search_path
from .output import key_values, progress_for

__all__ = ["cmd_check", "cmd_train", "quick_optimizers"]

_DYNAMO_WRAPPED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def quick_optimizers() -> None:
    """Spares a `babysit` process the 1.3 s import of torch._dynamo (and sympy) that torch.optim's first use costs.

    torch wraps these Optimizer methods in torch._disable_dynamo, which imports torch._dynamo on their
    first call only to mark them "not to be compiled". babysit's commands compile nothing, so each is
    marked with itself. Only the command line does this; the library leaves torch as it is.
    """
    import sys

    if "torch._dynamo" in sys.modules:
        return
    import torch

    for name in _DYNAMO_WRAPPED:
        original = getattr(getattr(torch.optim.Optimizer, name, None), "__wrapped__", None)
        if callable(original) and getattr(original, "__dynamo_disable", None) is None:
            original.__dynamo_disable = original  # type: ignore[attr-defined]


def _default_run_dir(cfg: Any) -> str:
    clean = lambda s: Path(str(s)).name.replace(":", ".")  # noqa: E731
    return f"runs/{clean(cfg.task.data)}-{clean(cfg.task.model)}-{time.strftime('%Y%m%d-%H%M%S')}"


def _summary(run: Any, test: Any, seconds: float) -> str:
    rows = [("run directory", str(run.dir)), ("status", run.status), ("epochs", str(len(run.history)))]
    if run.diverged_at is not None:
        rows.append(("diverged at step", str(run.diverged_at)))
    if run.history:
        last = run.history[-1]
        best = max(run.history, key=lambda r: run_score(run, r))
        rows += [("final train / val accuracy", f"{last.train_acc:.4f} / {last.val_acc:.4f}"),
                 (f"best {run.metric}", f"{best.metric:.4f} (epoch {best.epoch})")]
    if test is not None:
        rows.append(("test accuracy (best checkpoint)", f"{test.accuracy:.4f} on {test.examples} examples"))
    rows += [("best checkpoint", str(run.best_checkpoint or "-")), ("time", f"{seconds:.1f} s")]
    return key_values(f"babysit run: {run.status}", rows)


def run_score(run: Any, record: Any) -> float:
    """Returns the record's metric on a higher-is-better scale."""
    return record.metric if run.metric_mode == "max" else -record.metric


def _dry_run(plan: Any, as_json: bool) -> int:
    import tomli_w

    if as_json:
        print(json.dumps(plan.to_dict(), indent=2, default=str))
        return EXIT_OK
    what = f"resume from epoch {plan.resume_from}" if plan.resume_from is not None else "a new run"
    print(f"dry run: everything is valid; {what} in {plan.run_dir}; nothing was written")
    if plan.unused:
        print(f"keys nothing reads (they would be recorded with a warning): {', '.join(plan.unused)}")
    print(tomli_w.dumps(_plain(plan.config)))
    return EXIT_OK


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items() if v is not None}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def cmd_train(args: argparse.Namespace, console: Any) -> int:
    """Runs `babysit train`; returns the exit code of the run's status (DESIGN.md §3)."""
    cfg = build_config(args)
    quick_optimizers()
    from ..task import Task
    from ..train import prepare, train

    task = Task.from_config(cfg.task, search=search_path(args))
    kw = dict(epochs=cfg.train.epochs, run_dir=cfg.train.run_dir or _default_run_dir(cfg), seed=cfg.train.seed,
              device=cfg.train.device, resume=args.resume, force=args.force,
              checkpoint_interval=cfg.train.checkpoint_interval, allow_unknown=args.allow_unknown,
              diagnose=cfg.sections.get("diagnose"))
    if args.dry_run:
        return _dry_run(prepare(task, cfg.hp, **kw), args.json)  # type: ignore[arg-type]
    from ..report import ReportObserver

    progress = progress_for(console, cfg.train.epochs)
    live_report = ReportObserver(kw["run_dir"])
    start = time.perf_counter()
    try:
        with getattr(progress, "progress", nullcontext()):
            run = train(task, cfg.hp, observers=[progress, live_report], threads=cfg.train.threads or "auto",
                        keep_last=args.keep_last or 2, **kw)  # type: ignore[arg-type]
    finally:
        live_report.close()
    test = None
    if args.test and run.best_checkpoint is not None and task.splits.test is not None:
        from ..runs import evaluate

        test = evaluate(run.dir, task.splits.test, task=task)
    elif args.test and task.splits.test is None:
        print("note: --test: this data has no test split", file=sys.stderr)
    if args.json:
        print(json.dumps({**run.to_dict(), "test_acc": test.accuracy if test else None}, indent=2))
    else:
        console.print(_summary(run, test, time.perf_counter() - start), markup=False, highlight=False,
                      soft_wrap=True)
        console.print(f"report: {live_report.path}", markup=False, highlight=False, soft_wrap=True)
    return exit_code(run.status)


def _crashed(report: Any) -> list[str]:
    """Returns the errors of sanity checks that crashed in the user's code."""
    san = getattr(report, "sanity", None)
    return [c.error for c in (san.checks if san is not None else ()) if getattr(c, "error", None)]


def cmd_check(args: argparse.Namespace, console: Any) -> int:
    """Runs `babysit check`; returns 0 when every check passes, 1 when one fails, 3 when the user's code raised."""
    cfg = build_config(args)
    quick_optimizers()
    from ..preflight import check_task
    from ..task import Task

    task = Task.from_config(cfg.task, search=search_path(args))
    with console.status("gradient checks and sanity checks...") if console.is_terminal else nullcontext():
        report = check_task(task, cfg.hp, seed=cfg.train.seed, checks=args.only, allow_unknown=args.allow_unknown,
                            threads=cfg.train.threads or "auto")
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        console.print(str(report), highlight=False, markup=False, soft_wrap=True)
    crashed = _crashed(report)
    if crashed:
        print(f"error: {crashed[0]}", file=sys.stderr)
        return EXIT_USER_CODE
    return EXIT_OK if report.ok else EXIT_FAILED
