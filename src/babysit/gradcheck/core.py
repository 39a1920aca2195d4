"""check_gradients and assert_gradients: a model's analytic gradients against centered differences."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckFailed, ConfigError
from .advice import advise, failing
from .kinks import KinkRecorder
from .objective import Objective, build_objective, burn_in_steps, validate_options
from .probe import Prober, Target, roundoff_floor
from .report import Entry, GradientReport, TensorSummary, verdict
from .sampling import random_directions, stratified_coordinates

__all__ = [
    "SWEEP_STEPS",
    "assemble_report",
    "assert_gradients",
    "check_gradients",
    "few_threads",
    "measure",
    "measure_steps",
    "mismatched",
    "pick_worst",
    "summarise",
]

log = logging.getLogger(__name__)

SWEEP_STEPS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
SMALL_WORK = 10_000_000  # parameters x batch below which one intra-op thread is faster
Step = float | str


def _rel(e: Entry) -> float:
    """Returns the relative error with NaN ranked worst."""
    return e.rel_error if math.isfinite(e.rel_error) else math.inf


def _resolvable(entries: Sequence[Entry]) -> list[Entry]:
    """Returns the counted entries that carry signal: failing, or nonzero and above the tiny floor."""
    return [e for e in entries if not e.kink_crossed
            and (not e.passed or (not e.tiny and max(abs(e.analytic), abs(e.numeric)) > 0.0))]


def pick_worst(entries: Sequence[Entry]) -> Entry | None:
    """Returns the failing entry with the largest relative error, else the largest resolvable one.

    A failing coordinate beats a failing direction: it names an index to look at.
    """
    bad = failing(entries)
    pool = ([e for e in bad if e.index is not None] or bad or _resolvable(entries)
            or [e for e in entries if not e.kink_crossed] or list(entries))
    return max(pool, key=_rel) if pool else None


def summarise(name: str, entries: Sequence[Entry], backward_differs: bool) -> TensorSummary:
    """Returns one tensor's summary: ok, entries checked, worst relative error, kinks excused, verdict.

    Entries below the round-off floor carry no signal, so they do not set the verdict.
    """
    counted = [e for e in entries if not e.kink_crossed]
    resolvable = _resolvable(entries)
    ok = all(e.passed for e in counted) and not backward_differs
    worst = max((_rel(e) for e in resolvable or counted), default=0.0)
    if backward_differs:
        word = "wrong"
    elif resolvable:
        word = verdict(worst)
    else:
        word = "tiny" if any(e.tiny for e in counted) else "good"
    return TensorSummary(ok, len(entries), worst, len(entries) - len(counted), word, sum(e.tiny for e in counted))


def _targets(leaves: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor], per_tensor: int,
             directions: int, seed: int) -> list[Target]:
    """Returns one Target per tensor: stratified coordinates plus unit random directions."""
    out = []
    for k, (name, tensor) in enumerate(leaves.items()):
        rng = np.random.default_rng([seed, k])
        coords = stratified_coordinates(tuple(tensor.shape), per_tensor, rng)
        dirs = random_directions(tensor, directions, seed * 7919 + k) if tensor.numel() > 1 else []
        out.append(Target(name, tensor, grads[name], coords, dirs, rng))
    return out


def _repeat_entry(prober: Prober, leaf: Target, first: torch.Tensor, second: torch.Tensor, h: float) -> Entry:
    """Returns the second backward's value checked at the element where the two backwards differ most."""
    gap = torch.nan_to_num((first - second).abs(), nan=math.inf)
    idx = tuple(int(i) for i in np.unravel_index(int(gap.argmax()), tuple(first.shape)))
    again = Target(leaf.name, leaf.tensor, second, [idx], [], leaf.rng)
    return prober.entry(again, idx, h)


def _tensor_entries(prober: Prober, t: Target, h: float) -> list[Entry]:
    """Returns the entries of one tensor; a failing direction is bisected to a failing coordinate."""
    got = [prober.entry(t, c, h) for c in t.coords]
    coords_ok = all(e.passed or e.kink_crossed for e in got)
    for v in t.directions:
        e = prober.entry(t, v, h)
        got.append(e)
        if coords_ok and not (e.passed or e.kink_crossed):
            found = prober.localise(t, v, h)
            coords_ok = found is None
            got += [found] if found is not None else []
    return got


def measure(value: Callable[[], float], loss: float, targets: Iterable[Target], h: float, tol: float,
            repeats: Mapping[str, torch.Tensor]) -> tuple[list[Entry], int, set[str]]:
    """Returns (entries, kink crossings, kinked ops seen) for every target at step h.

    The dispatch mode that records kinks is installed only here, around the numerical evaluations.
    """
    recorder = KinkRecorder()
    prober = Prober(value, loss, tol, recorder)
    entries: list[Entry] = []
    with recorder:
        for t in targets:
            entries += _tensor_entries(prober, t, h)
            if t.name in repeats:
                entries.append(_repeat_entry(prober, t, t.grad, repeats[t.name], h))
    return entries, prober.crossings, recorder.seen


def _sweep_score(entries: Sequence[Entry]) -> float:
    """Returns the worst relative error of the counted entries (tiny ones included: noise shows here)."""
    return max((_rel(e) for e in entries if not e.kink_crossed), default=0.0)


def mismatched(first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Returns name -> second gradient for every tensor whose two backward passes differ."""
    return {n: second[n] for n in first
            if not torch.allclose(first[n], second[n], rtol=1e-10, atol=1e-300, equal_nan=True)}


def measure_steps(value: Callable[[], float], loss: float, targets: Sequence[Target], h: Step, tol: float,
                  repeats: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Returns the raw results at h, or at the best step of the sweep 1e-3 ... 1e-8 when h == "sweep".

    The notes: smaller h is not always better (round-off); the best step has the smallest worst error.
    """
    runs = []
    for step in (SWEEP_STEPS if h == "sweep" else (float(h),)):
        entries, crossings, seen = measure(value, loss, targets, step, tol, repeats)
        runs.append((_sweep_score(entries), step, entries, crossings, seen))
        log.debug("h=%.0e: worst relative error %.3g", step, runs[-1][0])
    best = min(runs, key=lambda r: r[0])
    sweep = tuple((r[1], r[0]) for r in runs) if h == "sweep" else ()
    return {"loss": loss, "h": best[1], "entries": best[2], "crossings": best[3], "seen": best[4],
            "sweep": sweep, "mismatch": tuple(repeats)}


def _run(obj: Objective, leaves: Mapping[str, torch.Tensor], h: Step, tol: float, per_tensor: int,
         directions: int, seed: int) -> dict[str, Any]:
    """Returns the raw results of checking every leaf of the objective."""
    loss, grads, again = obj.gradients(dict(leaves))
    if not math.isfinite(loss):
        raise ConfigError(f"loss_fn: the objective is {loss} at the check point; a gradient check needs a "
                          "finite loss (lower the init scale or check the loss)")
    targets = _targets(leaves, grads, per_tensor, directions, seed)
    return measure_steps(obj.value, loss, targets, h, tol, mismatched(grads, again))


def assemble_report(raw: dict[str, Any], names: Sequence[str], tol: float, seconds: float, has_dropout: bool,
                    stochastic: str, numpy_code: bool = False) -> GradientReport:
    """Returns the GradientReport assembled from the raw results."""
    entries: list[Entry] = raw["entries"]
    by_tensor = {n: summarise(n, [e for e in entries if e.name == n], n in raw["mismatch"]) for n in names}
    floor = roundoff_floor(raw["loss"], raw["h"])
    kink_ops = tuple(sorted(raw["seen"]))
    ok = all(s.ok for s in by_tensor.values())
    advice = advise(entries, raw["mismatch"], raw["loss"], floor, kink_ops, has_dropout, stochastic, numpy_code)
    return GradientReport(ok, pick_worst(entries), tuple(entries), by_tensor, raw["h"], seconds, tol, raw["loss"],
                          floor, raw["crossings"], kink_ops, raw["mismatch"], raw["sweep"], stochastic, advice)


@contextlib.contextmanager
def few_threads(work: int) -> Iterator[None]:
    """Runs the block with one intra-op thread when one evaluation is small (work <= SMALL_WORK).

    A check is hundreds of microsecond-sized forwards; on a busy machine thread hand-offs cost 10x the math.
    """
    before = torch.get_num_threads()
    shrink = work <= SMALL_WORK and before > 1
    if shrink:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if shrink:
            torch.set_num_threads(before)


def _work(model: nn.Module, x: torch.Tensor) -> int:
    """Returns parameters x batch size: a rough size of one forward pass."""
    batch = x.shape[0] if x.dim() > 0 else 1
    return sum(p.numel() for p in model.parameters()) * batch


def _devices(model: nn.Module) -> list[int]:
    """Returns the CUDA devices the model lives on (their RNG state is saved and restored too)."""
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def check_gradients(model: nn.Module, loss_fn: Callable[[Any, Any], torch.Tensor], batch: Sequence[Any], *,
                    per_tensor: int = 10, h: Step = 1e-5, tol: float = 1e-5, seed: int = 0, burn_in: int = 0,
                    stochastic: str = "eval", check_inputs: bool = False, directions: int = 3,
                    penalty: Callable[[nn.Module], torch.Tensor] | None = None) -> GradientReport:
    """Returns a GradientReport: per tensor, sampled coordinates and random directions, analytic vs numeric.

    Centered differences in float64 on a deep copy; "check a few dimensions for every separate parameter".
    """
    validate_options(per_tensor, h, tol, burn_in, stochastic, directions, seed)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=_devices(model) if isinstance(model, nn.Module) else []):
        obj = build_objective(model, loss_fn, batch, stochastic, seed, penalty, check_inputs)
        leaves = obj.leaves(check_inputs)
        with few_threads(_work(obj.model, obj.x)):
            if burn_in:
                burn_in_steps(obj, burn_in)
            raw = _run(obj, leaves, h, tol, per_tensor, directions, seed)
    has_dropout = any(isinstance(m, nn.modules.dropout._DropoutNd) for m in obj.model.modules())
    report = assemble_report(raw, list(leaves), tol, time.perf_counter() - start, has_dropout, stochastic)
    log.info("gradient check %s in %.3f s (worst %s)", "passed" if report.ok else "FAILED", report.seconds,
             report.worst.where if report.worst else None)
    return report


def assert_gradients(model: nn.Module, loss_fn: Callable[[Any, Any], torch.Tensor], batch: Sequence[Any],
                     **kw: Any) -> None:
    """Returns None when check_gradients passes; raises CheckFailed (an AssertionError) with the short report.

    One line in a pytest test: assert_gradients(model, loss_fn, (x, y)).
    """
    report = check_gradients(model, loss_fn, batch, **kw)
    if not report.ok:
        raise CheckFailed(str(report))
