"""Ensembles of trained models, their measured gain, and distillation of an ensemble into one model.

core.py: Ensemble (from_runs, from_checkpoints, from_run) and train_many; evaluation.py: the report
(accuracy and NLL of the ensemble and each member, gains with paired-bootstrap intervals, the size
curve); distillation.py: one student trained on the ensemble's softened probabilities.
"""

from __future__ import annotations

from .core import Ensemble, Member, train_many
from .distillation import DistillReport, distill, distill_objective, soft_targets
from .evaluation import (
           EnsembleReport,
           Gain,
           MemberScore,
           evaluate_ensemble,
           paired_interval,
)

__all__ = ["DistillReport", "Ensemble", "EnsembleReport", "Gain", "Member", "MemberScore", "distill",
           "distill_objective", "evaluate_ensemble", "paired_interval", "soft_targets", "train_many"]
