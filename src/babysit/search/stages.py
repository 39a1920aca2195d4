"""Stages, coarse to fine: the next stage's ranges are a pure function of the finished trials.

The notes: first a coarse search with short trainings (a few epochs), then a finer search around
the best values with longer ones; and a warning when the best value sits on the border of its
range (the true optimum may lie beyond it). A border is extended only when the best trials sit near
it AND the metric still improves toward it: position alone misfires on a parameter with no effect.
"""

from __future__ import annotations

import math
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import ConfigError
from .space import Param

__all__ = ["Stage", "check_stages", "coarse_to_fine", "refit", "border_findings", "NEAR_EDGE", "TREND_P"]

NEAR_EDGE = 0.15   # the best trial within this fraction of the range from an edge is "near" it
TREND_P = 0.10     # two-sided p-value of Spearman's rho on the edge-side half of the range
EXTEND = 0.5       # an extension adds this fraction of the range width beyond the edge
MIN_PAD = 0.10     # a refitted range keeps at least this fraction of the old width on each side of the top


@dataclass(frozen=True)
class Stage:
    """One stage of a search: `trials` trainings of `epochs` epochs each.

    keep: how many top trials of this stage set the next stage's ranges (default a fifth, at least 2).
    continue_top: this stage's first trials are the top n of the previous stage continued from their
    checkpoints to `epochs` epochs in total (successive halving), instead of new proposals.
    retrain_top: this stage's first trials train the top n configurations of the previous stage again,
    from a new initialisation, for `epochs` epochs (the notes' final, longer trainings).
    fixed: hyperparameters this stage's trials get on top of the search's fixed ones (a final stage's
    learning-rate decay and running average of weights: {"schedule": "step", "ema": 0.999}).
    monitor: this stage's trials record the babysitting telemetry (histograms, update ratios) for
    diagnosis and reports; the others record scalars only.
    sampler: this stage's sampler (random, qmc, grid, tpe, gp) in place of the search's one, e.g. an
    adaptive sampler for the last stage inside the refitted ranges.
    """

    trials: int
    epochs: int
    keep: int | None = None
    continue_top: int = 0
    retrain_top: int = 0
    fixed: Mapping[str, Any] = field(default_factory=dict)
    monitor: bool = False
    sampler: str | None = None

    @property
    def top(self) -> int:
        """Returns the number of top trials that set the next stage's ranges."""
        return self.keep if self.keep is not None else max(2, round(self.trials / 5))

    def to_dict(self) -> dict[str, Any]:
        """Returns the stage as plain data (the newer fields only where set: older studies compare equal)."""
        d = asdict(self)
        d["fixed"] = dict(self.fixed)
        for k, empty in (("retrain_top", 0), ("fixed", {}), ("monitor", False), ("sampler", None)):
            if d[k] == empty:
                del d[k]
        return d


def coarse_to_fine(epochs: int, budget: int) -> list[Stage]:
    """Returns babysit's default stages for `budget` epochs in all whose last stage trains `epochs` epochs each.

    A fifth of the budget in 1-epoch trials (the notes: many settings do not learn at all, and one epoch
    shows it; the top tenth, at least 3, set the next ranges), a fifth in trials of a third of `epochs`
    (top fifth, at least 3), the rest in trials of `epochs`. For 243 epochs of 9: Stage(48, 1, keep=5),
    Stage(16, 3, keep=3), Stage(16, 9). Why: on MNIST-1D (MLP: lr, reg, width; 20 seeds) the older
    two-stage default Stage(48, 2), Stage(16, 9) kept the top fifth of 2-epoch trials, whose spread
    covered almost the whole width and reg ranges, so its last stage was close to a random search
    (mean test accuracy of its trials 0.46); three narrowing stages raised that mean to 0.60 and the
    selected configuration's median from 0.621 to 0.641, within the noise of Optuna's GP sampler at the
    same epochs but not above it (GP 0.645 over 20 seeds; bench/RESULTS.md, "Search quality").
    """
    _int("epochs", epochs, 1)
    _int("budget", budget, 1)
    e1 = max(2, round(epochs / 3))
    n0 = max(8, budget // 5)
    if epochs == 1 or budget < n0 + 2 * epochs:
        return [Stage(max(1, budget // epochs), epochs)]
    n1 = max(4, budget // 5 // e1) if e1 < epochs else 0
    n2 = (budget - n0 - n1 * e1) // epochs
    if n1 and n2 < 2:  # too small for three stages: coarse, then the last
        n1, n2 = 0, (budget - n0) // epochs
    out = [Stage(n0, 1, keep=max(3, round(n0 / 10)))]
    if n1:
        out.append(Stage(n1, e1, keep=max(3, round(n1 / 5))))
    return out + [Stage(n2, epochs)]


def _int(name: str, v: Any, minimum: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"{name}={v!r}: must be an integer >= {minimum}")


def check_stages(stages: Sequence[Stage]) -> list[Stage]:
    """Returns the stages validated; raises ConfigError naming the stage, the field and the fix."""
    if isinstance(stages, Stage):
        stages = [stages]
    if not stages:
        raise ConfigError("stages=[]: give at least one bs.Stage(trials=..., epochs=...)")
    out = list(stages)
    for i, st in enumerate(out):
        if not isinstance(st, Stage):
            raise ConfigError(f"stages[{i}]={st!r}: use bs.Stage(trials=..., epochs=...)")
        _int(f"stages[{i}].trials", st.trials, 1)
        _int(f"stages[{i}].epochs", st.epochs, 1)
        _int(f"stages[{i}].continue_top", st.continue_top, 0)
        _int(f"stages[{i}].retrain_top", st.retrain_top, 0)
        if st.keep is not None:
            _int(f"stages[{i}].keep", st.keep, 1)
        _check_fixed(i, st)
        if st.sampler is not None:
            from .samplers import SAMPLERS

            if st.sampler not in SAMPLERS:
                raise ConfigError(f"stages[{i}].sampler={st.sampler!r}: unknown; use one of {', '.join(SAMPLERS)}, "
                                  "or leave it out for the search's sampler")
        if st.retrain_top and (i == 0 or st.continue_top):
            raise ConfigError(f"stages[{i}].retrain_top={st.retrain_top}: needs a previous stage and excludes "
                              "continue_top (a trial is either continued or trained again)")
        if st.retrain_top > st.trials:
            raise ConfigError(f"stages[{i}].retrain_top={st.retrain_top}: must be <= the stage's trials ({st.trials})")
        if st.continue_top:
            if i == 0:
                raise ConfigError("stages[0].continue_top: the first stage has no trials to continue; set it to 0")
            prev = out[i - 1]
            if st.continue_top > min(st.trials, prev.trials) or st.epochs <= prev.epochs:
                raise ConfigError(f"stages[{i}].continue_top={st.continue_top}: must be <= trials of this and the "
                                  f"previous stage, and epochs ({st.epochs}) must exceed the previous stage's "
                                  f"({prev.epochs}): a continued trial's epochs is its total")
    return out


def _check_fixed(i: int, st: Stage) -> None:
    if not isinstance(st.fixed, Mapping) or not all(isinstance(k, str) for k in st.fixed):
        raise ConfigError(f"stages[{i}].fixed={st.fixed!r}: a dict of hyperparameters, e.g. {{'schedule': 'step'}}")
    if not isinstance(st.monitor, bool):
        raise ConfigError(f"stages[{i}].monitor={st.monitor!r}: must be true or false")
    try:
        json.dumps(dict(st.fixed))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"stages[{i}].fixed: values must be plain data (numbers, strings); {exc}") from exc
    if st.fixed:
        from ..hparams import validate

        validate(st.fixed)


Result = tuple[Mapping[str, Any], float]  # (params, metric) of one finished trial; higher metric is better


def _spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    from scipy.stats import spearmanr

    if len(x) < 5 or len(set(x)) < 3 or len(set(y)) < 2:
        return 0.0, 1.0
    rho, p = spearmanr(x, y)
    if not (math.isfinite(rho) and math.isfinite(p)):
        return 0.0, 1.0
    return float(rho), float(p)


def _edge_trend(p: Param, results: Sequence[Result], key: str, edge: str) -> tuple[float, float]:
    """Returns (rho, p): Spearman's rho of the metric against closeness to `edge`, on the edge-side half."""
    a, b = p.span
    mid = (a + b) / 2
    pts = [(p.position(r[0][key]), m) for r, m in ((r, r[1]) for r in results) if key in r[0]]
    side = [(x, m) for x, m in pts if (x <= mid if edge == "low" else x >= mid)]
    xs = [(-x if edge == "low" else x) for x, _ in side]
    return _spearman(xs, [m for _, m in side])


def border_findings(space: Mapping[str, Param], results: Sequence[Result], stage: int) -> list[dict[str, Any]]:
    """Returns the border findings of a stage: for each numeric key whose best trial sits near an edge,
    whether the metric still improves toward that edge ("extend": a warning) or not ("no_trend": info)."""
    ranked = sorted(results, key=lambda r: -r[1])
    out: list[dict[str, Any]] = []
    for key, p in space.items():
        if p.kind == "choice":
            continue
        best = next((r for r in ranked if key in r[0]), None)
        if best is None:
            continue
        a, b = p.span
        x = p.position(best[0][key])
        for edge, dist in (("low", x - a), ("high", b - x)):
            if dist > NEAR_EDGE * (b - a):
                continue
            rho, pv = _edge_trend(p, results, key, edge)
            improving = rho > 0 and pv < TREND_P
            out.append({"stage": stage, "key": key, "edge": edge, "best": best[0][key], "range": [p.lo, p.hi],
                        "rho": round(rho, 3), "p": round(pv, 4), "kind": "extend" if improving else "no_trend",
                        "message": (f"stage {stage}: best {key}={best[0][key]:.4g} sits at the {edge} edge of "
                                    f"[{p.lo:.4g}, {p.hi:.4g}] and the metric still improves toward it "
                                    f"(Spearman rho={rho:.2f}, p={pv:.3f}): the optimum may lie beyond the range"
                                    if improving else
                                    f"stage {stage}: best {key}={best[0][key]:.4g} sits at the {edge} edge of "
                                    f"[{p.lo:.4g}, {p.hi:.4g}] but the metric shows no trend toward it "
                                    f"(rho={rho:.2f}, p={pv:.3f}): not extended")})
    return out


def _extend(p: Param, edge: str) -> float:
    """Returns the new position of `edge` after an extension, clipped to the parameter's limits."""
    a, b = p.span
    lo_lim, hi_lim = p.limits
    if edge == "low":
        pos = a - EXTEND * (b - a)
        if lo_lim is not None:
            pos = max(pos, p.position(lo_lim) if not (p.log and lo_lim <= 0) else pos)
        return pos
    pos = b + EXTEND * (b - a)
    return min(pos, p.position(hi_lim)) if hi_lim is not None else pos


def _fit(p: Param, top: Sequence[Any], extended: set[str]) -> Param:
    if p.kind == "choice":
        kept = tuple(v for v in p.values if v in set(top))
        return p if not kept else Param(p.kind, values=kept, when=p.when, key=p.key)
    a, b = p.span
    xs = [p.position(v) for v in top]
    pad = max(0.25 * (max(xs) - min(xs)), MIN_PAD * (b - a))
    lo = _extend(p, "low") if "low" in extended else max(a, min(xs) - pad)
    hi = _extend(p, "high") if "high" in extended else min(b, max(xs) + pad)
    new = p.with_range(p.from_position(lo), p.from_position(hi))
    if p.kind == "intuniform" and new.lo is not None and new.hi is not None and new.lo >= new.hi:
        new = p.with_range(max(p.lo or 0, new.lo - 1), min(p.hi or 0, new.hi + 1)) if p.lo != p.hi else p
    return new


def refit(space: Mapping[str, Param], results: Sequence[Result], keep: int,
          stage: int) -> tuple[dict[str, Param], list[dict[str, Any]]]:
    """Returns (next stage's space, border findings): ranges fitted around the top `keep` trials in each
    parameter's own scale with a margin, extended past an edge only where the border rule fires.

    A pure function of the finished trials, so every worker computes the same next stage.
    """
    ranked = sorted(results, key=lambda r: -r[1])[:max(1, keep)]
    findings = border_findings(space, results, stage)
    out: dict[str, Param] = {}
    for key, p in space.items():
        top = [r[0][key] for r in ranked if key in r[0]]
        if not top:
            out[key] = p
            continue
        ext = {f["edge"] for f in findings if f["key"] == key and f["kind"] == "extend"}
        out[key] = _fit(p, top, ext)
    for f in findings:
        if f["kind"] == "extend":
            f["new_range"] = [out[f["key"]].lo, out[f["key"]].hi]
    return out, findings
