"""diagnose(run_dir) -> Findings: the notes' rules of thumb as small pure functions over a run's History.

RULES maps each stable code to its rule (History, Context) -> Finding | Skip | None. Rules
combine signals, because single ones misfire; thresholds live in THRESHOLDS and can be changed,
and codes silenced, per call or in a run's [diagnose] config table. docs/diagnoses.md is the catalogue.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..store import History, RunStore, read_history
from .facts import Context
from .findings import CODES, SEVERITIES, THRESHOLDS, Finding, Findings, Settings, Skip, settings_from_mapping
from .rules_fit import overfitting, underfitting, val_plateau
from .rules_layers import (dead_units_rule, exploding_gradients, frozen_params, inputs_not_normalised,
                           saturated_units, update_ratio_high, update_ratio_low, vanishing_gradients)
from .rules_loss import bad_init_loss, diverged, lr_too_high, lr_too_low, noisy_loss

__all__ = ["diagnose", "Finding", "Findings", "Skip", "Settings", "RULES", "CODES", "SEVERITIES", "THRESHOLDS",
           "settings_from_mapping", "LiveDiagnosis", "run_rules"]

log = logging.getLogger(__name__)

Rule = Callable[[History, Context], "Finding | Skip | None"]
RULES: dict[str, Rule] = {
    "diverged": diverged, "lr_too_high": lr_too_high, "lr_too_low": lr_too_low,
    "update_ratio_high": update_ratio_high, "update_ratio_low": update_ratio_low, "overfitting": overfitting,
    "underfitting": underfitting, "dead_units": dead_units_rule, "saturated_units": saturated_units,
    "bad_init_loss": bad_init_loss, "noisy_loss": noisy_loss, "val_plateau": val_plateau,
    "frozen_params": frozen_params, "vanishing_gradients": vanishing_gradients,
    "exploding_gradients": exploding_gradients, "inputs_not_normalised": inputs_not_normalised,
}


def _as_history(run: str | Path | History) -> History:
    return run if isinstance(run, History) else read_history(run)


def run_rules(h: History, settings: Settings, reference: History | None = None) -> Findings:
    """Returns the findings of every rule not silenced, worst first, with the skipped rules and their reasons."""
    ctx = Context(settings, reference)
    found, skipped = [], []
    for code, rule in RULES.items():
        if code in settings.silence:
            continue
        result = rule(h, ctx)
        if isinstance(result, Skip):
            skipped.append(result)
        elif result is not None:
            found.append(result)
    out = Findings(sorted(found, key=lambda f: -SEVERITIES.index(f.severity)))
    out.skipped = tuple(skipped)
    return out


def diagnose(run: str | Path | History, *, reference: str | Path | History | None = None,
             config: Mapping[str, Any] | None = None, silence: Sequence[str] = (), **thresholds: float) -> Findings:
    """Returns the findings of a run (a list of Finding, worst first; .skipped lists the rules that could not run).

    reference: a run of a bigger model on the same data (the yardstick of underfitting). config: a
    [diagnose] table ({"silence": [...], threshold: value}); the run's own [diagnose] table applies first.
    """
    h = _as_history(run)
    own = h.config.get("diagnose", {}) if isinstance(h.config.get("diagnose"), Mapping) else {}
    table = {**own, **(config or {})}
    table["silence"] = list(table.get("silence", [])) + list(silence)
    settings = settings_from_mapping(table, **thresholds)
    return run_rules(h, settings, _as_history(reference) if reference is not None else None)


class LiveDiagnosis:
    """An observer that runs the rules at the end of every epoch on a watch's in-memory snapshot.

    A new warning or error is logged (the terminal shows it under the progress bar) and stored in
    run.sqlite for the live report; at the end the full diagnosis of the run directory replaces them.
    """

    def __init__(self, snapshot: Callable[[], History], run_dir: str | Path,
                 settings: Settings | None = None, store: RunStore | None = None) -> None:
        self.snapshot, self.dir, self.store = snapshot, Path(run_dir), store
        self.settings = settings
        self.seen: set[str] = set()
        self.rows: list[dict[str, Any]] = []

    def on_epoch(self, record: Any) -> None:
        h = self.snapshot()
        if self.settings is None:
            self.settings = settings_from_mapping(h.config.get("diagnose") or None)
        epoch = getattr(record, "epoch", None)
        new = [f for f in run_rules(h, self.settings) if f.severity != "info" and f.code not in self.seen]
        for f in new:
            self.seen.add(f.code)
            self.rows.append({**f.to_dict(), "epoch": epoch})
            log.warning("epoch %s: %s: %s -> %s", epoch, f.code, f.message, f.advice)
        if new:
            self._store(self.rows)

    def on_end(self, run: Any) -> None:
        findings = diagnose(self.dir) if self.settings is None else run_rules(read_history(self.dir), self.settings)
        self._store([f.to_dict() for f in findings])

    def _store(self, rows: list[dict[str, Any]]) -> None:
        store = self.store if self.store is not None else RunStore(self.dir)
        try:
            store.set_findings(rows)
        finally:
            if store is not self.store:
                store.close()
