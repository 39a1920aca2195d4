"""The recipe: the notes' summary end to end (preflight -> coarse-to-fine search -> final runs -> ensemble).

Example:
    >>> space = {"lr": bs.loguniform(1e-4, 1e-1), "reg": bs.loguniform(1e-6, 1e-2)}
    >>> result = bs.recipe(task, space, budget=bs.Budget(minutes=10), dir="recipes/mnist1d")
    >>> print(result.table()); result.result.test_acc
"""

from __future__ import annotations

from .core import recipe
from .plan import Budget, Plan, plan_stages
from .result import Candidate, RecipeResult, StageSummary

__all__ = ["Budget", "Candidate", "Plan", "RecipeResult", "StageSummary", "plan_stages", "recipe"]
