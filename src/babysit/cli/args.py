"""The command line's arguments: flags derived from the key registry, and the RunConfig they build.

Light on purpose: nothing here imports torch, so `babysit --help` is instant and Ctrl-C during
start-up is a clean exit.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._version import __version__
from ..config import RunConfig, from_dict, load_config, parse_value, with_overrides
from ..errors import ConfigError
from ..hparams import KEYS
from ..status import STATUSES
from .ensemble import add_parsers as _add_ensemble_parsers

__all__ = ["build_config", "parser", "search_path"]

_CHECKS = ("chance_loss", "reg_raises_loss", "overfit_tiny", "learnable_signal", "batch_independence",
           "params_get_gradient")
_EPILOG = "exit codes: " + ", ".join(f"{code} {status}" for status, (_, code) in STATUSES.items()
                                     if code is not None) + ", 2 bad input"


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="a TOML file with [task], [hp] and [train] tables")
    g = p.add_argument_group("task")
    g.add_argument("--data", help="data set: mnist1d, digits, spiral, or package.module:function")
    g.add_argument("--model", help="model: mlp, cnn1d, or package.module:function (hp, input_shape, num_classes)")
    g.add_argument("--loss", help="loss: softmax, svm, or package.module:function (scores, y)")
    g.add_argument("--metric", help="validation metric: val_acc (default), val_loss, or package.module:function")
    g.add_argument("--data-seed", type=int, help="seed of the validation split")
    h = p.add_argument_group("hyperparameters (any other key: --set key=value)")
    for key in KEYS.values():
        h.add_argument(key.flag, dest=f"hp_{key.name}", metavar="V" if key.choices is None else "NAME",
                       help=key.describe())
    h.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any hyperparameter, e.g. --set width=256 (a value is a TOML literal, never code)")
    h.add_argument("--allow-unknown", action="store_true",
                   help="keep a key that nothing reads even when it looks like a typo of a known key")


def parser() -> argparse.ArgumentParser:
    """Returns the babysit argument parser (train, check)."""
    p = argparse.ArgumentParser(prog="babysit", description="Train neural networks the disciplined way.",
                                epilog=_EPILOG)
    p.add_argument("--version", action="version", version=f"babysit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model and keep the run in a run directory", epilog=_EPILOG)
    _add_run_options(t)
    r = t.add_argument_group("training")
    r.add_argument("--epochs", type=int, help="epochs to train (default 10)")
    r.add_argument("--seed", type=int, help="seed of the init and the batch order (default 0)")
    r.add_argument("--run-dir", help="where the run directory goes (default runs/<data>-<model>-<time>)")
    r.add_argument("--device", help="auto (CUDA when present), cpu or cuda[:N] (default auto)")
    r.add_argument("--threads", type=int, help="torch.set_num_threads (default: chosen for this machine)")
    r.add_argument("--checkpoint-interval", type=float, metavar="SECONDS",
                   help="at most one checkpoint write per this many seconds (default 5; 0: every epoch)")
    r.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    r.add_argument("--force", action="store_true", help="overwrite a run already in --run-dir")
    r.add_argument("--keep-last", type=int, metavar="K", help="checkpoints kept besides the best (default 2)")
    r.add_argument("--dry-run", action="store_true",
                   help="validate everything (config, data, model built once), print the plan, write nothing")
    r.add_argument("--test", action="store_true",
                   help="evaluate the best checkpoint on the test split at the end (the notes: once, at the end)")
    r.add_argument("--json", action="store_true", help="print the run as JSON instead of a summary")
    c = sub.add_parser("check", help="preflight: gradient checks and sanity checks; exit 0 when all pass, "
                       "1 when one fails, 3 when your code raises", epilog=_EPILOG)
    _add_run_options(c)
    c.add_argument("--seed", type=int, help="seed of the checks' models and samples")
    c.add_argument("--threads", type=int, help="torch.set_num_threads")
    c.add_argument("--only", action="append", metavar="CHECK",
                   help="run only these sanity checks (repeatable): " + ", ".join(_CHECKS))
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    from .look import add_parsers as add_look_parsers  # report, diagnose, export

    add_look_parsers(sub)
    from .search import add_parsers  # search, study, lr-find

    add_parsers(sub)
    from .cluster import add_parsers as add_cluster_parsers  # worker

    add_cluster_parsers(sub)
    _add_ensemble_parsers(sub)
    from .recipe import add_parsers as add_recipe_parsers

    add_recipe_parsers(sub)
    return p


def search_path(args: argparse.Namespace) -> tuple[str, ...]:
    """Returns the folders where a config's "module:function" names are looked up: its folder, then the cwd."""
    return tuple(str(p) for p in ([Path(args.config).resolve().parent] if args.config else []) + [Path.cwd()])


def _hp_overrides(args: argparse.Namespace) -> dict[str, Any]:
    hp: dict[str, Any] = {k: parse_value(getattr(args, f"hp_{k}")) for k in KEYS
                          if getattr(args, f"hp_{k}", None) is not None}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: write it as key=value, e.g. --set width=256")
        hp[key.strip()] = parse_value(value.strip())
    return hp


def build_config(args: argparse.Namespace) -> RunConfig:
    """Returns the RunConfig from a config file (if given) plus command-line overrides."""
    cfg = load_config(args.config) if args.config else from_dict({})
    task = {k: v for k, v in (("data", args.data), ("model", args.model), ("loss", args.loss),
                              ("metric", args.metric), ("data_seed", args.data_seed)) if v is not None}
    names = ("epochs", "seed", "run_dir", "device", "threads", "checkpoint_interval")
    train = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    return with_overrides(cfg, task=task, hp=_hp_overrides(args), train=train)
