"""Telemetry: the notes' babysitting instruments, attached to any training loop with removable hooks.

watch(model, optimizer, run_dir, ...) records per step the loss, every parameter's update:weight
ratio and gradient norm; on a fixed probe batch every epoch (and every hist_every steps) each
layer's activation mean/std, dead units, saturation and histograms; the first layer's weights.
"""

from __future__ import annotations

from .layers import Layer, watched_layers
from .stats import ProbeResult, probe_pass
from .watch import DEFAULTS, TrainObserver, Watch, watch

__all__ = ["watch", "Watch", "TrainObserver", "DEFAULTS", "Layer", "watched_layers", "probe_pass", "ProbeResult"]
