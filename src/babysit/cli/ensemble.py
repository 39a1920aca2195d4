"""`babysit ensemble` and `babysit distill`: members from run directories -> the gain table.

Nothing here imports torch at module level (the parser stays light); the commands import it when they run.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import ConfigError
from ..status import EXIT_OK

__all__ = ["add_parsers", "cmd_distill", "cmd_ensemble"]


def _add_members(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("members (one of)")
    g.add_argument("--from-runs", nargs="+", metavar="DIR", help="run directories: each run's best checkpoint")
    g.add_argument("--from-run", metavar="DIR", help="one run directory: its last checkpoints (see --last)")
    g.add_argument("--from-study", metavar="DIR", help="a study directory: its top trials' best checkpoints "
                   "(see --top)")
    g.add_argument("--top", type=int, default=5, metavar="K", help="with --from-study: the top K trials (default 5)")
    g.add_argument("--last", type=int, default=5, metavar="K",
                   help="with --from-run: the last K checkpoints, or a snapshot run's last K cycle ends (default 5)")
    g.add_argument("--weights", choices=("raw", "ema"), default="raw",
                   help="the trained weights or their running average (hp ema) (default raw)")
    g.add_argument("--average", choices=("prob", "score"), default="prob",
                   help="average the members' softmax probabilities or their scores (default prob)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def add_parsers(sub: Any) -> None:
    """Adds the ensemble and distill subcommands to the babysit parser."""
    e = sub.add_parser("ensemble", help="evaluate an ensemble of runs or checkpoints: the gain over the best member "
                       "(chosen by validation) with its paired-bootstrap interval")
    _add_members(e)
    e.add_argument("--split", choices=("val", "test"), default="test", help="the split reported (default test)")
    d = sub.add_parser("distill", help="train one student on an ensemble's softened probabilities and compare it "
                       "with the ensemble and a label-only student")
    _add_members(d)
    d.add_argument("--epochs", type=int, required=True, help="epochs of each student")
    d.add_argument("--run-dir", required=True, help="where the students go (DIR/student, DIR/labels)")
    d.add_argument("--temperature", type=float, default=4.0, help="softening temperature T (default 4)")
    d.add_argument("--alpha", type=float, default=0.9, help="weight of the soft targets (default 0.9)")
    d.add_argument("--transfer", default="mixup", choices=("mixup", "munge", "none"),
                   help="unlabelled inputs the student also matches the ensemble on, built from the training inputs: "
                   "mixup (pairs interpolated), munge (features redrawn near a neighbour) or none (default mixup)")
    d.add_argument("--transfer-size", type=float, default=None, metavar="X",
                   help="with mixup or munge: rows generated per training example (default 3); each student then "
                   "takes 1 + X times the steps per epoch, the label-only one too")
    d.add_argument("--seed", type=int, default=0, help="seed of both students (default 0)")
    d.add_argument("--force", action="store_true", help="overwrite students already in --run-dir")


def _ensemble(args: argparse.Namespace) -> Any:
    if sum(map(bool, (args.from_runs, args.from_run, args.from_study))) != 1:
        raise ConfigError("give exactly one of --from-runs DIR..., --from-run DIR (with --last K) or "
                          "--from-study DIR (with --top K)")
    from ..ensemble import Ensemble

    if args.from_study:
        from ..search import load_study

        return Ensemble.from_study(load_study(args.from_study), args.top, weights=args.weights,
                                   average=args.average)
    if args.from_runs:
        return Ensemble.from_runs(args.from_runs, weights=args.weights, average=args.average)
    return Ensemble.from_run(args.from_run, last=args.last, weights=args.weights, average=args.average)


def cmd_ensemble(args: argparse.Namespace, console: Any) -> int:
    """Runs `babysit ensemble`: prints the gain table (or JSON); returns 0."""
    report = _ensemble(args).evaluate(args.split)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.table())
    return EXIT_OK


def cmd_distill(args: argparse.Namespace, console: Any) -> int:
    """Runs `babysit distill`: trains the students, prints the comparison (or JSON); returns 0."""
    from ..ensemble import distill
    from ..store import read_config
    from .commands import quick_optimizers

    quick_optimizers()
    ens = _ensemble(args)
    if args.from_study:
        from ..search import load_study

        best = load_study(args.from_study).best
        first = best.run_dir if best is not None else args.from_study
    else:
        first = args.from_runs[0] if args.from_runs else args.from_run
    hp = {k: v for k, v in read_config(first)["hp"].items() if k != "snapshots"}
    print(f"distilling {len(ens)} member(s) into a student with the hyperparameters of {first}", file=sys.stderr)
    report = distill(ens, ens.task, hp, temperature=args.temperature, alpha=args.alpha, transfer=args.transfer,
                     transfer_size=args.transfer_size, epochs=args.epochs, run_dir=args.run_dir, seed=args.seed,
                     force=args.force)
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else report.table())
    return EXIT_OK
