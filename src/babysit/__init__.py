"""babysit: train neural networks the disciplined way.

Check the gradients, run the sanity checks, train while watching the right numbers, and keep
every run in a run directory (the practices of the notes "Learning and Evaluation").
"""

from __future__ import annotations

from ._version import __version__
from . import config, data, errors, gradcheck, losses, models, optim, sanity, step, store
from .data import Splits
from .gradcheck import GradientReport, assert_gradients, check_function, check_gradients
from .preflight import PreflightReport, check_task
from .sanity import SanityReport, sanity_checks
from .errors import BabysitError, CheckFailed, ConfigError, DataError, MissingExtra, StoreError, UserCodeError
from .runs import evaluate, load
from .search import Stage, Study, Trial, choice, intuniform, load_study, loguniform, lr_find, search, uniform
from .step import Evaluation, StepRecord
from .store import EpochRecord, Run
from .task import Task
from .train import train

__all__ = sorted([
    "BabysitError", "CheckFailed", "ConfigError", "DataError", "EpochRecord", "Evaluation", "GradientReport",
    "MissingExtra", "PreflightReport", "Run", "SanityReport", "Splits", "StepRecord", "StoreError", "Task",
    "__version__", "assert_gradients", "check_function", "check_gradients", "check_task", "config", "data", "errors",
    "evaluate", "gradcheck", "load", "losses", "models", "optim", "sanity", "sanity_checks", "step", "store", "train",
    "Stage", "Study", "Trial", "choice", "intuniform", "load_study", "loguniform", "lr_find", "search", "uniform",
])
