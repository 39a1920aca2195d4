"""Hyperparameter search the notes' way: random on log scales, coarse to fine, border warnings, workers
around one study store (Optuna's storage layer), each trial a `train` call.

Example:
    >>> space = {"lr": bs.loguniform(1e-4, 1.0), "reg": bs.loguniform(1e-6, 1e-1)}
    >>> study = bs.search(task, space, stages=[bs.Stage(40, 1), bs.Stage(10, 5)], study_dir="runs/s1")
    >>> study.best, study.top(5), study.warnings
"""

from __future__ import annotations

from .api import run_study, search
from .range_test import LRFind, lr_find
from .samplers import DEFAULT_SAMPLER, SAMPLERS, propose
from .space import Param, choice, intuniform, loguniform, parse_space, uniform
from .stages import Stage, border_findings, coarse_to_fine, refit
from .study import Study, Trial, load_study
from .worker import Hopeless, Outcome, TrialContext

__all__ = ["DEFAULT_SAMPLER", "LRFind", "SAMPLERS", "Hopeless", "Outcome", "Param", "Stage", "Study", "Trial", "TrialContext",
           "border_findings", "choice", "coarse_to_fine", "intuniform", "load_study", "loguniform", "lr_find", "parse_space", "propose", "refit",
           "run_study", "search", "uniform"]

