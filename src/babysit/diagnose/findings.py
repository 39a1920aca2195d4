"""Finding, the stable codes and severities, thresholds, and the settings that silence or retune rules."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from ..errors import ConfigError

__all__ = ["Finding", "Skip", "Findings", "CODES", "SEVERITIES", "THRESHOLDS", "Settings", "settings_from_mapping"]

CODES = ("diverged", "lr_too_high", "lr_too_low", "update_ratio_high", "update_ratio_low", "overfitting",
         "underfitting", "dead_units", "saturated_units", "bad_init_loss", "noisy_loss", "val_plateau",
         "frozen_params", "vanishing_gradients", "exploding_gradients", "inputs_not_normalised")
SEVERITIES = ("info", "warning", "error")

# The notes' rules of thumb and the anchors' measured thresholds (docs/diagnoses.md gives each source).
THRESHOLDS: dict[str, float] = {
    "init_loss_tol": 0.1,        # |L0 - chance| / chance
    "explode_factor": 4.0,       # a loss above 4x the initial loss has exploded (Lightning lr_find)
    "stuck_fraction": 0.9,       # the last epoch's loss still above 90% of the initial loss
    "flat_fraction": 0.98,       # the first epoch took less than 2% off the initial loss
    "rebound_factor": 2.0,       # last epoch's train loss more than 2x its minimum: plateau at a high level
    "ratio_high": 3e-2,          # update:weight; the notes' target is ~1e-3
    "ratio_low": 1e-4,
    "dead_warn": 0.5,            # fraction of a layer's units dead on every probe example
    "dead_info": 0.1,
    "saturated_warn": 0.1,       # fraction of a tanh/sigmoid layer's outputs within 3% of its bounds
    "overfit_gap": 0.1,          # train - val accuracy
    "stall_epochs": 3,           # epochs without a new best validation accuracy
    "underfit_gap": 0.05,        # |train - val| accuracy: "train about equal to val"
    "underfit_margin": 0.1,      # train accuracy below the reference's by this much
    "noisy_cv": 1.0,             # std / mean of the per-step loss over the last epoch
    "grad_ratio": 1e3,           # RMS gradient of the last weight layer vs the first
    "input_z": 3.0,              # |mean| / std of the inputs, overall or of one feature
    "input_std_low": 0.1,
    "input_std_high": 10.0,
}


@dataclass(frozen=True)
class Finding:
    """A diagnosis with its evidence (the numbers, the layer, the epoch) and advice with a number in it."""

    code: str
    severity: str
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    advice: str = ""

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"Finding code {self.code!r} is not one of {CODES}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"Finding severity {self.severity!r} is not one of {SEVERITIES}")

    def to_dict(self) -> dict[str, Any]:
        """Returns the finding as plain data."""
        d = asdict(self)
        d["evidence"] = dict(self.evidence)
        return d


@dataclass(frozen=True)
class Skip:
    """A rule that could not run on this history, and why (what would let it run)."""

    rule: str
    reason: str


class Findings(list):  # type: ignore[type-arg]
    """A list of Finding, worst first, that also carries the rules skipped (with their reasons)."""

    skipped: tuple[Skip, ...] = ()

    @property
    def worst(self) -> str | None:
        """Returns the highest severity present, or None."""
        return max((f.severity for f in self), key=SEVERITIES.index, default=None)

    def to_dict(self) -> dict[str, Any]:
        """Returns findings and skipped rules as plain data."""
        return {"findings": [f.to_dict() for f in self], "skipped": [asdict(s) for s in self.skipped]}


@dataclass(frozen=True)
class Settings:
    """Thresholds (THRESHOLDS with overrides) and the codes silenced for a run."""

    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(THRESHOLDS))
    silence: frozenset[str] = frozenset()

    def __getitem__(self, key: str) -> float:
        return self.thresholds[key]


def settings_from_mapping(table: Mapping[str, Any] | None = None, **overrides: Any) -> Settings:
    """Returns Settings from a [diagnose] table: {"silence": [codes], <threshold>: value, ...}."""
    merged = {**(table or {}), **overrides}
    silence = merged.pop("silence", ())
    if isinstance(silence, str) or not all(isinstance(c, str) for c in silence):
        raise ConfigError(f"[diagnose] silence={silence!r}: must be a list of codes, e.g. ['val_plateau']")
    bad = sorted(set(silence) - set(CODES))
    if bad:
        raise ConfigError(f"[diagnose] silence: unknown code(s) {bad}; valid: {', '.join(CODES)}")
    thresholds = dict(THRESHOLDS)
    for key, value in merged.items():
        if key not in THRESHOLDS:
            raise ConfigError(f"[diagnose] {key}={value!r}: unknown threshold; valid: {', '.join(sorted(THRESHOLDS))}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"[diagnose] {key}={value!r}: must be a number >= 0 (default {THRESHOLDS[key]})")
        thresholds[key] = float(value)
    return Settings(thresholds, frozenset(silence))
