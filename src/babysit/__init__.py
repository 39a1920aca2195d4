"""babysit: train neural networks the disciplined way.

Check the gradients, run the sanity checks, train while watching the right numbers, and keep
every run in a run directory (the practices of the notes "Learning and Evaluation").
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import config, data, errors, losses, models, optim, step, store
from .data import Splits
from .errors import BabysitError, CheckFailed, ConfigError, DataError, MissingExtra, StoreError
from .runs import evaluate, load
from .step import Evaluation, StepRecord
from .store import EpochRecord, Run
from .task import Task
from .train import train

__all__ = sorted([
    "BabysitError", "CheckFailed", "ConfigError", "DataError", "EpochRecord", "Evaluation", "MissingExtra", "Run",
    "Splits", "StepRecord", "StoreError", "Task", "__version__", "config", "data", "errors", "evaluate", "load",
    "losses", "models", "optim", "step", "store", "train",
])
