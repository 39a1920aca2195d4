"""Sanity checks before learning: is the set-up (model, loss, data) right, each with a verdict and advice.

    report = sanity_checks(task, hp)        # SanityReport(ok, checks); print(report) shows the table
    report.failed                           # the failed Checks, each with measured, expected and advice
    assert_sanity(task, hp)                 # one-line pytest test; raises CheckFailed
"""

from __future__ import annotations

from .core import CHECKS, SANITY_CHECKS, assert_sanity, sanity_checks
from .report import STATUSES, Check, SanityReport

__all__ = ["CHECKS", "SANITY_CHECKS", "STATUSES", "Check", "SanityReport", "assert_sanity", "sanity_checks"]
