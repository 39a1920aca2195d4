"""The `babysit` command: parse -> config -> one public function -> render."""

from __future__ import annotations

import argparse
from contextlib import nullcontext
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

from . import __version__, cli_search
from .config import RunConfig, from_dict, load_config, parse_value, with_overrides
from .errors import BabysitError
from .preflight import check_task
from .runs import evaluate
from .store import EpochRecord, Run
from .task import Task
from .train import train

__all__ = ["main"]

# Hyperparameters with their own flag (any other key: --set key=value).
HP_FLAGS = ("optimizer", "lr", "momentum", "reg", "batch_size", "schedule", "step_every", "step_factor", "exp_k",
            "inv_t_k", "plateau_factor", "plateau_patience", "momentum_start", "momentum_end", "momentum_epochs",
            "clip_norm", "early_stop", "width", "depth", "dropout", "activation", "init", "beta1", "beta2", "eps",
            "decay_rate")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="a TOML file with [task], [hp] and [train] tables")
    g = p.add_argument_group("task")
    g.add_argument("--data", help="data set: mnist1d, digits, spiral")
    g.add_argument("--model", help="model: mlp, cnn1d, or package.module:function")
    g.add_argument("--loss", help="loss: softmax or svm")
    g.add_argument("--data-seed", type=int, help="seed of the validation split")
    h = p.add_argument_group("hyperparameters (any other key: --set key=value)")
    for key in HP_FLAGS:
        h.add_argument(f"--{key.replace('_', '-')}", dest=f"hp_{key}", metavar="V")
    h.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any hyperparameter")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="babysit", description="Train neural networks the disciplined way.")
    p.add_argument("--version", action="version", version=f"babysit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model and keep the run in a run directory")
    _add_run_options(t)
    r = t.add_argument_group("training")
    r.add_argument("--epochs", type=int)
    r.add_argument("--seed", type=int)
    r.add_argument("--run-dir", help="where the run directory goes (default runs/<data>-<model>-<time>)")
    r.add_argument("--device", help="auto (CUDA when present), cpu or cuda")
    r.add_argument("--threads", type=int, help="torch.set_num_threads")
    r.add_argument("--checkpoint-interval", type=float, metavar="SECONDS",
                   help="at most one checkpoint write per this many seconds (default 5; 0: every epoch)")
    r.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    r.add_argument("--force", action="store_true", help="overwrite a run already in --run-dir")
    r.add_argument("--json", action="store_true", help="print the run as JSON instead of a table")
    c = sub.add_parser("check", help="preflight: gradient checks and sanity checks; exit 0 when all pass, 1 otherwise")
    _add_run_options(c)
    c.add_argument("--seed", type=int, help="seed of the checks' models and samples")
    c.add_argument("--threads", type=int, help="torch.set_num_threads")
    c.add_argument("--only", action="append", metavar="CHECK",
                   help="run only these sanity checks (repeatable): chance_loss, reg_raises_loss, overfit_tiny, "
                        "learnable_signal, batch_independence, params_get_gradient")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    cli_search.add_parsers(sub)
    return p


def build_config(args: argparse.Namespace) -> RunConfig:
    """Returns the RunConfig from a config file (if given) plus command-line overrides."""
    cfg = load_config(args.config) if args.config else from_dict({})
    if args.config:  # a custom model named "module:function" may sit beside its config
        sys.path.insert(0, str(Path(args.config).resolve().parent))
    task = {k: v for k, v in (("data", args.data), ("model", args.model), ("loss", args.loss),
                              ("data_seed", args.data_seed)) if v is not None}
    hp: dict[str, Any] = {k: parse_value(getattr(args, f"hp_{k}")) for k in HP_FLAGS
                          if getattr(args, f"hp_{k}") is not None}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BabysitError(f"--set {item!r}: write it as key=value, e.g. --set width=256")
        hp[key.strip()] = parse_value(value.strip())
    train_over = {k: v for k, v in (("epochs", getattr(args, "epochs", None)), ("seed", getattr(args, "seed", None)),
                                    ("run_dir", getattr(args, "run_dir", None)),
                                    ("device", getattr(args, "device", None)),
                                    ("threads", getattr(args, "threads", None)),
                                    ("checkpoint_interval", getattr(args, "checkpoint_interval", None)))
                  if v is not None}
    return with_overrides(cfg, task=task, hp=hp, train=train_over)


class _Progress:
    """A rich progress bar over steps; silent when stdout is not a terminal."""

    def __init__(self, console: Console, epochs: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.enabled = console.is_terminal
        self.progress = Progress(TextColumn("epoch"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[info]}"),
                                 TimeRemainingColumn(), console=console, disable=not self.enabled, transient=True)
        self.task = self.progress.add_task("train", total=epochs, info="")

    def on_step(self, record: Any) -> None:
        self.progress.update(self.task, completed=record.epoch, info=f"loss {record.loss:.4f}")

    def on_epoch(self, record: EpochRecord) -> None:
        self.progress.update(self.task, completed=record.epoch,
                             info=f"train {record.train_acc:.3f}  val {record.val_acc:.3f}")


def _summary(run: Run, test_acc: float | None, seconds: float) -> Table:
    t = Table(title=f"babysit run: {run.status}", show_header=False)
    t.add_column("what", no_wrap=True)
    t.add_column("value", overflow="fold")
    last = run.history[-1] if run.history else None
    best = max(run.history, key=lambda r: r.val_acc) if run.history else None
    rows = [("run directory", str(run.dir)), ("status", run.status), ("epochs", str(len(run.history)))]
    if run.diverged_at is not None:
        rows.append(("diverged at step", str(run.diverged_at)))
    if last and best:
        rows += [("final train / val accuracy", f"{last.train_acc:.4f} / {last.val_acc:.4f}"),
                 ("best val accuracy", f"{best.val_acc:.4f} (epoch {best.epoch})")]
    if test_acc is not None:
        rows.append(("test accuracy (best checkpoint)", f"{test_acc:.4f}"))
    rows += [("best checkpoint", str(run.best_checkpoint or "-")), ("time", f"{seconds:.1f} s")]
    for k, v in rows:
        t.add_row(k, v)
    return t


def cmd_train(args: argparse.Namespace, console: Console) -> int:
    """Runs `babysit train`; returns the exit code (0 completed, 1 diverged, 130 interrupted)."""
    cfg = build_config(args)
    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)
    task = Task.from_config(cfg.task)
    run_dir = cfg.train.run_dir or f"runs/{cfg.task.data}-{Path(cfg.task.model).name.replace(':', '.')}-" \
                                    f"{time.strftime('%Y%m%d-%H%M%S')}"
    progress = _Progress(console, cfg.train.epochs)
    start = time.perf_counter()
    with progress.progress:
        run = train(task, cfg.hp, epochs=cfg.train.epochs, run_dir=run_dir, seed=cfg.train.seed,
                    device=cfg.train.device, resume=args.resume, force=args.force,
                    observers=[progress] if progress.enabled else [],
                    checkpoint_interval=cfg.train.checkpoint_interval)
    test_acc = None
    if run.best_checkpoint is not None and task.splits.test is not None:
        test_acc = evaluate(run.dir, task.splits.test, task=task).accuracy
    if args.json:
        print(json.dumps({**run.to_dict(), "test_acc": test_acc}, indent=2))
    else:
        console.print(_summary(run, test_acc, time.perf_counter() - start))
    return {"completed": EXIT_OK, "interrupted": EXIT_INTERRUPTED}.get(run.status, EXIT_FAILED)


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    """Runs `babysit check`; returns 0 when every check passes, 1 otherwise."""
    cfg = build_config(args)
    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)
    task = Task.from_config(cfg.task)
    with console.status("gradient checks and sanity checks...") if console.is_terminal else nullcontext():
        report = check_task(task, cfg.hp, seed=cfg.train.seed, checks=args.only)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        console.print(str(report), highlight=False, markup=False, soft_wrap=True)
    return EXIT_OK if report.ok else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the babysit command line; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = Console()
    try:
        return {"train": cmd_train, "check": cmd_check, **cli_search.COMMANDS}[args.command](args, console)
    except BabysitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
