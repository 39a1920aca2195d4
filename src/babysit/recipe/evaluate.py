"""The recipe's last step: candidates chosen on validation, then the test split read once for all of them.

Candidates: the best final model, its running average of weights, the ensemble of the final models (raw
and averaged weights), optionally a distilled student and a retraining on train+val. The gains over the
single model carry paired-bootstrap intervals over the test examples; accuracies a binomial interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import TensorDataset

from .. import data as data_mod
from ..data import Splits
from ..errors import StoreError
from ..diagnose import diagnose
from ..ensemble import Ensemble
from ..ensemble import distill as distill_ensemble
from ..ensemble.evaluation import paired_interval
from ..report import report
from ..runs import load
from ..store import RunStore, read_config
from ..task import Task
from ..train import train
from .plan import Plan
from .result import Candidate, StageSummary

__all__ = ["Final", "evaluate_final", "stage_summaries", "next_steps"]

_NAMES = ("coarse", "fine", "final")
TEMPERATURE = 4.0
_SIMPLER = ("single", "averaged", "ensemble", "ensemble (averaged)", "distilled")  # ties go to the simpler


@dataclass(frozen=True)
class Final:
    """What evaluate_final found: the candidates, the one chosen, the final runs' findings and reports."""

    candidates: tuple[Candidate, ...]
    chosen: str
    findings: dict[str, list[dict[str, Any]]]
    reports: dict[str, str]
    examples: int
    final_runs: tuple[str, ...]
    still_improving: bool


@torch.no_grad()
def _probs(models: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Returns the mean softmax probabilities of the models on x (one model: its own)."""
    return torch.stack([torch.softmax(m.eval()(x), dim=-1) for m in models]).mean(0)


def _accuracy(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor) -> float:
    return float((_probs(models, x).argmax(-1) == y).float().mean())


def _merged(task: Task) -> Task:
    """Returns the task with train+val as its training split (validation kept only for the loop's numbers)."""
    xt, yt = data_mod.tensors(task.splits.train)
    xv, yv = data_mod.tensors(task.splits.val)
    s = task.splits
    splits = Splits(TensorDataset(torch.cat([xt, xv]), torch.cat([yt, yv])), s.val, None, s.num_classes,
                    s.input_shape, None, s.image_shape)
    return Task(build=task.build, data=splits, loss=task.loss, hp_keys=tuple(task.hp_keys), metric="val_acc",
                search_path=task.search_path)


def _best_epoch(run_dir: Path) -> tuple[int, int]:
    """Returns (the epoch of the best validation metric, the epochs trained) of a run."""
    hist = RunStore(run_dir).history()
    best = max(hist, key=lambda r: (r.metric if math.isfinite(r.metric) else -math.inf, -r.epoch))
    return int(best.epoch), len(hist)


def _candidates(task: Task, runs: Sequence[Path], root: Path, seed: int, distill: bool,
                device: str) -> dict[str, tuple[str, list[nn.Module], list[str]]]:
    """Returns name -> (description, models, run directories), built and never shown the test split."""
    best, hp = runs[0], read_config(runs[0])["hp"]
    out: dict[str, tuple[str, list[nn.Module], list[str]]] = {
        "single": ("the best final model (by validation)", [load(best, task=task)], [str(best)])}
    ema = hp.get("ema") is not None
    if ema:
        out["averaged"] = (f"its running average of weights (ema {hp['ema']})", [load(best, task=task, weights="ema")],
                           [str(best)])
    if len(runs) > 1:
        ens = Ensemble.from_runs(list(runs), task=task)
        out["ensemble"] = (f"ensemble of the {len(runs)} final models", [m.model for m in ens.members],
                           [str(r) for r in runs])
        if ema:
            avg = Ensemble.from_runs(list(runs), task=task, weights="ema")
            out["ensemble (averaged)"] = (f"ensemble of the {len(runs)} final models' averaged weights",
                                          [m.model for m in avg.members], [str(r) for r in runs])
        if distill:
            cfg = read_config(best)
            # the soft targets' gradient is T (p_T - q_T): up to T times the labels' (Hinton's T^2 factor), so
            # the best model's rate diverged the student (digits: 17% against 95%); divided by T it does not
            hp = {**cfg["hp"], "lr": float(cfg["hp"]["lr"]) / TEMPERATURE} if "lr" in cfg["hp"] else cfg["hp"]
            rep = distill_ensemble(ens, task, hp, TEMPERATURE, epochs=int(cfg["train"]["epochs"]),
                                   run_dir=root / "distill", seed=seed, split="val", device=device, monitor=False)
            out["distilled"] = (f"one model distilled from the ensemble (T = {TEMPERATURE:g}, rate / T)",
                                [load(rep.student_dir, task=task)], [str(rep.student_dir)])
    return out


def _retrained(task: Task, best: Path, epochs: int, root: Path, seed: int, device: str, weights: str) -> nn.Module:
    cfg = read_config(best)
    merged = _merged(task)
    run = train(merged, cfg["hp"], epochs=epochs, run_dir=root / "retrained", seed=seed, force=True,
                device=device, monitor=False)
    return load(run.dir, last=True, task=merged, weights=weights)


def _interval(acc: float, n: int) -> tuple[float, float]:
    """Returns the Wilson 95% interval of an accuracy measured on n examples."""
    z = 1.959964
    centre = (acc + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _test_pass(test: Any, cands: Mapping[str, list[nn.Module]]) -> tuple[int, dict[str, torch.Tensor]]:
    """Returns (examples, name -> per-example correctness): the one read of the test split."""
    x, y = data_mod.tensors(test)
    return len(y), {name: (_probs(models, x).argmax(-1) == y).float() for name, models in cands.items()}


def evaluate_final(task: Task, study: Any, root: Path, *, seed: int = 0, distill: bool = False,
                   retrain: bool = False, device: str = "auto") -> Final:
    """Returns the Final: candidates chosen on validation, their test numbers (one pass), findings and reports."""
    last = len(study.stages) - 1
    final = sorted((t for t in study.trials if t.stage == last and t.metric is not None
                    and t.status in ("completed", "early_stopped")), key=lambda t: (-float(t.metric), t.id))
    if not final:
        raise StoreError(f"no final training of {str(study.dir)!r} finished with a validation score: see "
                         "`babysit study` for why (diverged, failed or pruned trials)")
    runs = [Path(t.run_dir) for t in final]
    built = _candidates(task, runs, root, seed, distill, device)
    xv, yv = data_mod.tensors(task.splits.val)
    val = {name: _accuracy(models, xv, yv) for name, (_, models, _) in built.items()}
    val["single"] = float(final[0].metric) if task.metric.name == "val_acc" else val["single"]
    chosen = max(val, key=lambda n: (round(val[n], 6), -_SIMPLER.index(n)))
    best_epoch, trained = _best_epoch(runs[0])
    if retrain:
        weights = "ema" if chosen in ("averaged", "ensemble (averaged)") else "raw"
        built["retrained"] = (f"the chosen configuration trained again on train+val for {best_epoch} epochs "
                              f"({weights} weights)", [_retrained(task, runs[0], best_epoch, root, seed, device,
                                                                  weights)], [str(root / "retrained")])
        if chosen in ("single", "averaged"):
            chosen = "retrained"
    models = {n: m for n, (_, m, _) in built.items()}
    findings, reports = {}, {}
    for r in runs:
        findings[str(r)] = [f.to_dict() for f in diagnose(r)]
        reports[str(r)] = str(report(r))
    n, correct = (0, {}) if task.splits.test is None else _test_pass(task.splits.test, models)
    cands = []
    for name in models:
        acc = float(correct[name].mean()) if name in correct else None
        low, high = _interval(acc, n) if acc is not None else (None, None)
        gain = paired_interval(correct[name] - correct["single"]) if name in correct and name != "single" else None
        cands.append(Candidate(name, built[name][0], tuple(built[name][2]), val.get(name), acc, low, high, gain))
    improving = trained > 0 and best_epoch >= trained - max(1, trained // 10)
    return Final(tuple(cands), chosen, findings, reports, n, tuple(str(r) for r in runs), improving)


def stage_summaries(study: Any, plan: Plan) -> tuple[StageSummary, ...]:
    """Returns one row per stage: trials, epochs, how many finished or were stopped, its best, training time."""
    out = []
    for s, st in enumerate(plan.stages):
        ts = [t for t in study.trials if t.stage == s]
        scored = [t for t in ts if t.metric is not None and t.status != "failed"]
        best = max(scored, key=lambda t: (float(t.metric), -t.id)) if scored else None
        secs = 0.0
        for t in ts:
            try:
                secs += sum(r.seconds for r in RunStore(t.run_dir).history())
            except Exception:  # a trial that never started has no run directory
                continue
        out.append(StageSummary(s, _NAMES[s] if s < 3 else f"stage {s}", st.trials, st.epochs,
                                sum(t.status in ("completed", "early_stopped") for t in ts),
                                sum(t.status in ("pruned", "diverged", "failed") for t in ts),
                                None if best is None else float(best.metric), None if best is None else best.id,
                                secs, dict(best.params) if best is not None else {}))
    return tuple(out)


def next_steps(study: Any, ev: Final) -> tuple[str, ...]:
    """Returns what to try next: border warnings, the final runs' advice, a budget still paying."""
    out = [f"widen the range: {w}" for w in study.warnings]
    seen: set[str] = set()
    for run, fs in ev.findings.items():
        for f in fs:
            if f["severity"] in ("warning", "error") and f["code"] not in seen:
                seen.add(f["code"])
                out.append(f"{f['code']} ({Path(run).name}): {f['advice'] or f['message']}")
    if ev.still_improving:
        out.append("the best final model was still improving at the end of its training: a larger budget "
                   "(longer final trainings) should pay")
    by = {c.name: c for c in ev.candidates}
    single, ens = by.get("single"), by.get("ensemble")
    if single and ens and single.val_acc is not None and ens.val_acc is not None and ens.val_acc > single.val_acc:
        out.append(f"the ensemble adds {100 * (ens.val_acc - single.val_acc):.1f} points on validation: more final "
                   "models (final_models) may add more")
    if not out:
        out.append("nothing stands out: a larger budget is the next lever")
    return tuple(out)
