"""`babysit recipe CONFIG`: the notes' summary end to end; parse -> config -> bs.recipe -> render.

The config's [search] table is the space (the recipe plans its own stages from the budget); [recipe]
holds minutes or epochs, final_models, workers, dir, distill, retrain; flags override it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import load_config
from ..errors import ConfigError
from ..hparams import suggest

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["add_parsers", "COMMANDS"]

_KEYS = ("minutes", "epochs", "final_models", "workers", "dir", "distill", "retrain", "seed")


def add_parsers(sub: Any) -> None:
    """Adds the recipe subcommand to the `babysit` parser."""
    r = sub.add_parser("recipe", help="the whole discipline: preflight, coarse-to-fine search within a budget, "
                       "final runs with decay and averaged weights, ensemble; one recipe.html")
    r.add_argument("config", help="a TOML file with [task], [hp] (fixed values), [search] (the space) and [recipe]")
    b = r.add_mutually_exclusive_group()
    b.add_argument("--minutes", type=float, help="wall-clock budget (converted to epochs once, and recorded)")
    b.add_argument("--epochs", type=int, help="budget in training epochs, all stages together")
    b.add_argument("--repeat", metavar="RECIPE_JSON",
                   help="run the stages recorded by an earlier recipe again (same config and seed: same numbers)")
    r.add_argument("--workers", type=int, help="local worker processes (default 2)")
    r.add_argument("--final-models", type=int, help="final trainings, and members of the ensemble (default 6 with 2 workers)")
    r.add_argument("--dir", help="where the recipe goes (default [recipe] dir or recipes/<config name>)")
    r.add_argument("--distill", action="store_true", help="also distill the ensemble into one model")
    r.add_argument("--retrain", action="store_true",
                   help="retrain the chosen configuration on train+val for the epochs chosen on validation")
    r.add_argument("--resume", action="store_true", help="continue the recipe in --dir: finished trials stay")
    r.add_argument("--json", action="store_true", help="print the result as JSON")


def _table(cfg: Any, path: str) -> dict[str, Any]:
    table = dict(cfg.sections.get("recipe", {}))
    for key in table:
        if key not in _KEYS:
            guess = suggest(key, _KEYS)
            raise ConfigError(f"{path}: [recipe] {key!r} is not a recipe setting"
                              f"{f'; did you mean {guess!r}?' if guess else ''} (settings: {', '.join(_KEYS)})")
    return table


def _space(cfg: Any, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from ..search.api import settings_from_table

    table = cfg.sections.get("search")
    if not table:
        raise ConfigError(f"{path}: no [search] table; the recipe searches its ranges, e.g. "
                          "lr = {loguniform = [1e-4, 1e-1]} and reg = {loguniform = [1e-6, 1e-2]}")
    space, settings = settings_from_table(table)
    if "stages" in settings:
        raise ConfigError(f"{path}: [search] stages: the recipe plans its stages from the budget; remove "
                          "stages (or run `babysit search` for stages of your own)")
    return space, settings


def cmd_recipe(args: argparse.Namespace, console: "Console") -> int:
    """Runs `babysit recipe CONFIG`; returns 0 when it ran to the end, 1 when the preflight stopped it."""
    from .commands import quick_optimizers
    from ..recipe import Budget, recipe
    from ..search.samplers import DEFAULT_SAMPLER
    from ..task import Task

    cfg = load_config(args.config)
    table, (space, settings) = _table(cfg, args.config), _space(cfg, args.config)
    flag = args.minutes is not None or args.epochs is not None or args.repeat is not None
    minutes = args.minutes if args.minutes is not None else (None if flag else table.get("minutes"))
    epochs = args.epochs if args.epochs is not None else (None if flag else table.get("epochs"))
    if minutes is None and epochs is None and args.repeat is None:
        raise ConfigError("give the recipe a budget: --minutes 10 (or --epochs 400), or [recipe] minutes = 10")
    if minutes is not None and epochs is not None:
        raise ConfigError("[recipe] gives both minutes and epochs: keep one budget")
    budget = None if args.repeat is not None else Budget(minutes=minutes, epochs=epochs)
    task = Task.from_config(cfg.task, search=[str(Path(args.config).resolve().parent), str(Path.cwd())])
    out = args.dir or table.get("dir") or f"recipes/{Path(args.config).stem}"
    workers = args.workers if args.workers is not None else table.get("workers", settings.get("workers", 2))
    quick_optimizers()
    if args.json:  # stdout holds the JSON alone; progress goes to stderr
        from rich.console import Console

        console = Console(stderr=True)
    result = recipe(task, space, budget=budget, repeat=args.repeat, dir=out, fixed=dict(cfg.hp), workers=workers,
                    seed=int(table.get("seed", settings.get("seed", cfg.train.seed))),
                    final_models=args.final_models or table.get("final_models"),
                    distill=args.distill or bool(table.get("distill", False)),
                    retrain=args.retrain or bool(table.get("retrain", False)), resume=args.resume,
                    sampler=settings.get("sampler", DEFAULT_SAMPLER),
                    progress=lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str), flush=True)
    elif not result.ok:
        console.print(result.preflight_text, highlight=False, markup=False)
        console.print("recipe stopped at preflight:", highlight=False)
        for line in result.next_steps:
            console.print(f"  - {line}", highlight=False, markup=False)
    else:
        console.print(result.table(), highlight=False, markup=False, soft_wrap=True)
        for line in result.next_steps:
            console.print(f"next: {line}", highlight=False, markup=False, soft_wrap=True)
    console.print(f"report: {result.dir / 'recipe.html'}", highlight=False, markup=False, soft_wrap=True)
    return 0 if result.ok else 1


COMMANDS = {"recipe": cmd_recipe}
