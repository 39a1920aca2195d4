"""babysit: train neural networks the disciplined way.

Check the gradients, run the sanity checks, train while watching the right numbers, and keep
every run in a run directory (the practices of the notes "Learning and Evaluation").

Names are imported on first use (PEP 562), so ``import babysit`` and the ``babysit`` command start
without importing torch until they need it (Ctrl-C during start-up is then a clean exit).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from ._version import __version__

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "BabysitError": "errors", "CheckFailed": "errors", "ConfigError": "errors", "DataError": "errors",
    "MissingExtra": "errors", "StoreError": "errors", "UserCodeError": "errors",
    "EpochRecord": "store", "Run": "store", "Evaluation": "step", "StepRecord": "step",
    "GradientReport": "gradcheck", "assert_gradients": "gradcheck", "check_autograd_function": "gradcheck",
    "check_function": "gradcheck", "check_layer": "gradcheck", "check_loss": "gradcheck",
    "check_gradients": "gradcheck", "PreflightReport": "preflight", "check_task": "preflight",
    "SanityReport": "sanity", "sanity_checks": "sanity", "Splits": "data", "Stop": "status", "Task": "task",
    "evaluate": "runs", "load": "runs", "train": "train",
    "Finding": "diagnose", "diagnose": "diagnose", "report": "report", "watch": "telemetry",
    "Stage": "search", "Study": "search", "Trial": "search", "choice": "search", "intuniform": "search",
    "load_study": "search", "loguniform": "search", "lr_find": "search", "search": "search", "uniform": "search",
    "Ensemble": "ensemble", "distill": "ensemble", "train_many": "ensemble",
    "Budget": "recipe", "RecipeResult": "recipe", "recipe": "recipe",
}
_SUBMODULES = ("config", "data", "ensemble", "errors", "gradcheck", "hparams", "losses", "models", "optim", "sanity",
               "status",
               "step", "store")

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'babysit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)


class _Package(types.ModuleType):
    """Keeps `babysit.train`, `babysit.diagnose`, `babysit.report` (and `babysit.search`) the functions after
    their submodules are imported (the import system sets the submodule as an attribute of the package)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from . import (config, data, ensemble, errors, gradcheck, hparams, losses, models, optim, sanity, status, step,
                   store)
    from .data import Splits
    from .ensemble import Ensemble, distill, train_many
    from .errors import BabysitError, CheckFailed, ConfigError, DataError, MissingExtra, StoreError, UserCodeError
    from .gradcheck import (GradientReport, assert_gradients, check_autograd_function, check_function,
                            check_gradients, check_layer, check_loss)
    from .preflight import PreflightReport, check_task
    from .recipe import Budget, RecipeResult, recipe
    from .runs import evaluate, load
    from .sanity import SanityReport, sanity_checks
    from .status import Stop
    from .step import Evaluation, StepRecord
    from .store import EpochRecord, Run
    from .task import Task
    from .train import train
    from .diagnose import Finding, diagnose
    from .report import report
    from .telemetry import watch
    from .search import Stage, Study, Trial, choice, intuniform, load_study, loguniform, lr_find, search, uniform
