"""The measuring engine every check shares: targets, entries at one step or a sweep, summaries, the report."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .advice import advise, failing
from .kinks import new_recorder
from .probe import EPS, TINY_ABS, Prober, Target, roundoff_floor
from .report import DtypeCheck, Entry, GradientReport, TensorSummary, verdict
from .sampling import Directions, stratified_coordinates

__all__ = ["SMALL_WORK", "SWEEP_STEPS", "Step", "assemble_report", "few_threads", "make_targets", "measure",
           "measure_steps", "mismatched", "pick_worst", "summarise"]

log = logging.getLogger(__name__)

SWEEP_STEPS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
SMALL_WORK = 10_000_000  # parameters x batch below which one intra-op thread is faster
Step = float | str


def _rel(e: Entry) -> float:
    """Returns the relative error with NaN ranked worst."""
    return e.rel_error if math.isfinite(e.rel_error) else math.inf


def _resolvable(entries: Sequence[Entry]) -> list[Entry]:
    """Returns the counted entries that carry signal: failing, or nonzero and above the tiny floor."""
    return [e for e in entries if not e.excused
            and (not e.passed or (not e.tiny and max(abs(e.analytic), abs(e.numeric)) > 0.0))]


def pick_worst(entries: Sequence[Entry]) -> Entry | None:
    """Returns the failing entry with the largest relative error, else the largest resolvable one.

    A failing coordinate beats a failing direction: it names an index to look at.
    """
    bad = failing(entries)
    pool = ([e for e in bad if e.index is not None] or bad or _resolvable(entries)
            or [e for e in entries if not e.excused] or list(entries))
    return max(pool, key=_rel) if pool else None


def summarise(name: str, entries: Sequence[Entry], backward_differs: bool, kinked: bool = True) -> TensorSummary:
    """Returns one tensor's summary: ok, entries checked, worst relative error, kinks excused, verdict.

    Entries below the round-off floor carry no signal, so they do not set the verdict; "acceptable with
    kinks" is said only where a kinked op ran (kinked) or an entry was excused.
    """
    counted = [e for e in entries if not e.excused]
    resolvable = _resolvable(entries)
    ok = all(e.passed for e in counted) and not backward_differs
    worst = max((_rel(e) for e in resolvable or counted), default=0.0)
    # an entry that passed only by the round-off floor says nothing about the band of the others
    judged = max((_rel(e) for e in resolvable if not e.by_floor), default=worst)
    crossed = sum(e.kink_crossed for e in entries)
    suspected = sum(e.kink_suspected and not e.kink_crossed for e in entries)
    if backward_differs:
        word = "wrong"
    elif resolvable:
        word = verdict(judged, kinked or crossed + suspected > 0)
    else:
        word = "tiny" if any(e.tiny for e in counted) else "good"
    floor = max((e.floor for e in counted if e.by_floor), default=0.0)
    return TensorSummary(ok, len(entries), worst, crossed, word, sum(e.tiny for e in counted), suspected, floor)


def make_targets(leaves: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor], per_tensor: int,
                 directions: int, seed: int,
                 values: Mapping[str, Callable[[], float]] | None = None,
                 floors: Mapping[str, float] | None = None) -> list[Target]:
    """Returns one Target per tensor: stratified coordinates plus unit random directions (and its own f).

    floors: name -> the least scale of its relative step (PARAM_SCALE for a model's parameters).
    """
    out = []
    for k, (name, tensor) in enumerate(leaves.items()):
        rng = np.random.default_rng([seed, k])
        coords = stratified_coordinates(tuple(tensor.shape), per_tensor, rng)
        dirs = Directions(tuple(tensor.shape), tensor.device, directions if tensor.numel() > 1 else 0,
                          seed * 7919 + k)
        out.append(Target(name, tensor, grads[name], coords, dirs, rng, value=(values or {}).get(name),
                          scale_floor=(floors or {}).get(name, 0.0)))
    return out


def _repeat_entry(prober: Prober, leaf: Target, first: torch.Tensor, second: torch.Tensor, h: float) -> Entry:
    """Returns the second backward's value checked at the element where the two backwards differ most."""
    gap = torch.nan_to_num((first - second).abs(), nan=math.inf)
    idx = tuple(int(i) for i in np.unravel_index(int(gap.argmax()), tuple(first.shape)))
    again = Target(leaf.name, leaf.tensor, second, [idx], [], leaf.rng, value=leaf.value,
                   scale_floor=leaf.scale_floor)
    return prober.entry(again, idx, h)


def _tensor_entries(prober: Prober, t: Target, h: float, bisect: bool = True) -> list[Entry]:
    """Returns the entries of one tensor; a failing direction is bisected to a failing coordinate."""
    got = [prober.entry(t, c, h) for c in t.coords]
    coords_ok = all(e.passed or e.excused for e in got)
    for v in t.directions:
        e = prober.entry(t, v, h)
        got.append(e)
        if bisect and coords_ok and not (e.passed or e.excused):
            found = prober.localise(t, v, h)
            coords_ok = found is None
            got += [found] if found is not None else []
    t.release()
    return got


def measure(value: Callable[[], float], loss: float, targets: Iterable[Target], h: float, tol: float,
            repeats: Mapping[str, torch.Tensor], onesided: bool = False, eps: float = EPS,
            bisect: bool = True) -> tuple[list[Entry], int, set[str]]:
    """Returns (entries, kink crossings, kinked ops seen) for every target at step h.

    The dispatch mode that records kinks is installed only here, around the numerical evaluations.
    """
    recorder = new_recorder()
    prober = Prober(value, loss, tol, recorder, onesided, eps)
    entries: list[Entry] = []
    with recorder:
        for t in targets:
            entries += _tensor_entries(prober, t, h, bisect)
            if t.name in repeats:
                entries.append(_repeat_entry(prober, t, t.grad, repeats[t.name], h))
    return entries, prober.crossings, recorder.seen


def _sweep_score(entries: Sequence[Entry]) -> float:
    """Returns the worst relative error of the counted entries (tiny ones included: noise shows here).

    Entries whose derivatives are both below 1e-10 are left out: a direction along which the gradient is
    structurally zero (both signs on a softmax's two biases) scores 1.0 at every step and hides the sweep.
    """
    return max((_rel(e) for e in entries if not e.excused and max(abs(e.analytic), abs(e.numeric)) > TINY_ABS),
               default=0.0)


def mismatched(first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Returns name -> second gradient for every tensor whose two backward passes differ."""
    return {n: second[n] for n in first if not torch.equal(first[n], second[n])  # the fast, common case
            and not torch.allclose(first[n], second[n], rtol=1e-10, atol=1e-300, equal_nan=True)}


def measure_steps(value: Callable[[], float], loss: float, targets: Sequence[Target], h: Step, tol: float,
                  repeats: Mapping[str, torch.Tensor], onesided: bool = False, eps: float = EPS,
                  bisect: bool = True) -> dict[str, Any]:
    """Returns the raw results at h, or at the best step of the sweep 1e-3 ... 1e-8 when h == "sweep".

    The notes: smaller h is not always better (round-off); the best step has the smallest worst error.
    """
    runs = []
    for step in (SWEEP_STEPS if h == "sweep" else (float(h),)):
        entries, crossings, seen = measure(value, loss, targets, step, tol, repeats, onesided, eps, bisect)
        runs.append((_sweep_score(entries), step, entries, crossings, seen))
        log.debug("h=%.0e: worst relative error %.3g", step, runs[-1][0])
    best = min(runs, key=lambda r: r[0])
    sweep = tuple((r[1], r[0]) for r in runs) if h == "sweep" else ()
    return {"loss": loss, "h": best[1], "entries": best[2], "crossings": best[3], "seen": best[4],
            "sweep": sweep, "mismatch": tuple(repeats), "eps": eps, "onesided": onesided}


def merge(raw: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Returns raw with another measurement's entries, crossings, kinked ops and mismatches added."""
    return {**raw, "entries": raw["entries"] + extra["entries"], "crossings": raw["crossings"] + extra["crossings"],
            "seen": raw["seen"] | extra["seen"], "mismatch": raw["mismatch"] + extra["mismatch"]}


def assemble_report(raw: dict[str, Any], names: Sequence[str], tol: float, seconds: float, has_dropout: bool,
                    stochastic: str, numpy_code: bool = False, functions: Sequence[str] = (),
                    own: DtypeCheck | None = None) -> GradientReport:
    """Returns the GradientReport assembled from the raw results (tensors `names`, Function inputs `functions`)."""
    entries: list[Entry] = raw["entries"]
    kinked = bool(raw["seen"]) or numpy_code
    summary = {n: summarise(n, [e for e in entries if e.name == n], n in raw["mismatch"], kinked)
               for n in [*names, *functions]}
    if own is not None:
        for n in own.nonfinite:
            if n in summary:
                summary[n] = TensorSummary(False, summary[n].checked, math.nan, summary[n].kinks_crossed, "wrong")
    floor = roundoff_floor(raw["loss"], raw["h"], raw.get("eps", EPS))
    kink_ops = tuple(sorted(raw["seen"]))
    ok = all(s.ok for s in summary.values())
    model_bad = failing([e for e in entries if e.name in set(names)])
    advice = advise(entries, raw["mismatch"], raw["loss"], floor, kink_ops, has_dropout, stochastic, numpy_code,
                    functions, own)
    return GradientReport(ok, pick_worst(model_bad or entries), tuple(entries), {n: summary[n] for n in names},
                          raw["h"], seconds, tol, raw["loss"], floor, raw["crossings"], kink_ops, raw["mismatch"],
                          raw["sweep"], stochastic, advice, {n: summary[n] for n in functions}, own)


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
