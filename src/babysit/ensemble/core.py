"""Ensemble: members gathered from runs, checkpoints or one run's last checkpoints; averaged predictions."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import data as data_mod
from ..averaging import snapshot_epochs
from ..errors import BabysitError, ConfigError, StoreError, UserCodeError, describe_user_error
from ..runs import load_checkpoint_model, run_of, task_of
from ..store import Run, best_of, list_checkpoints, read_config
from ..task import Task
from ..threads import torch_threads
from ..train import train
from ..workers import run_local

__all__ = ["Ensemble", "Member", "train_many"]

_AVERAGES = ("prob", "score")


@dataclass(frozen=True)
class Member:
    """One model of an ensemble and where it came from (a run directory, a checkpoint file)."""

    name: str
    model: nn.Module


def _dir_of(run: Run | str | Path) -> Path:
    return Path(run.dir if isinstance(run, Run) else run)


def _load_members(sources: Sequence[tuple[str, Path, Path]], task: Task | None, weights: str) -> list[Member]:
    """Returns the members that load from (name, run_dir, checkpoint); the others are named in a warning.

    StoreError when none loads.
    """
    members, failed = [], []
    for name, run_dir, path in sources:
        try:
            members.append(Member(name, load_checkpoint_model(run_dir, path, task=task, weights=weights)))
        except StoreError as exc:
            failed.append(f"{name}: {exc}")
    if not members:
        raise StoreError("no member of the ensemble loads: " + "; ".join(failed) if failed else
                         "an ensemble needs at least one member; none was given")
    if failed:
        warnings.warn(f"skipping {len(failed)} member(s) that do not load: " + "; ".join(failed), stacklevel=3)
    return members


class Ensemble:
    """Models whose averaged predictions are the ensemble's: softmax probabilities (or scores) averaged.

    task: the data the members are evaluated on (the first run's task by default).
    """

    def __init__(self, members: Sequence[Member], task: Task, *, average: str = "prob") -> None:
        if average not in _AVERAGES:
            raise ConfigError(f"average={average!r}: use 'prob' (mean softmax probabilities) or 'score' "
                              "(softmax of the mean scores)")
        if not members:
            raise ConfigError("an ensemble needs at least one member; none was given")
        self.members, self.task, self.average = tuple(members), task, average
        self.num_classes = self._check_outputs()

    def _check_outputs(self) -> int:
        x, _ = data_mod.tensors(self.task.splits.val, limit=2)
        sizes = {}
        with torch.no_grad():
            for m in self.members:
                out = m.model.eval()(x)
                sizes[m.name] = int(out.shape[-1]) if out.ndim == 2 else -1
        if len(set(sizes.values())) > 1:
            shown = ", ".join(f"{name} gives {n} scores" for name, n in sizes.items())
            raise ConfigError(f"the members' outputs differ ({shown}); an ensemble needs members that score "
                              "the same classes")
        return next(iter(sizes.values()))

    @classmethod
    def from_runs(cls, runs: Sequence[Run | str | Path], *, task: Task | None = None, weights: str = "raw",
                  average: str = "prob") -> Ensemble:
        """Returns the ensemble of each run's best checkpoint (same model, different seeds or hyperparameters)."""
        sources = []
        for run in runs:
            d = _dir_of(run)
            best = best_of(list_checkpoints(d), str(read_config(d)["task"].get("metric_mode", "max")))
            if best is None:
                sources.append((d.name, d, d / "checkpoints" / "<none>"))
            else:
                sources.append((d.name, d, best.path))
        return cls._build(sources, task, weights, average)

    @classmethod
    def from_study(cls, study: Any, k: int = 5, *, task: Task | None = None, weights: str = "raw",
                   average: str = "prob") -> Ensemble:
        """Returns the ensemble of a search's top k trials (their best checkpoints): different hyperparameters,
        even different architectures. study: a babysit Study (`bs.load_study(dir)` or what `bs.search` returns).
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k={k!r}: the number of top trials, an integer >= 1, e.g. 5")
        if not callable(getattr(study, "top", None)):
            raise ConfigError(f"from_study needs a babysit Study (bs.load_study(dir)), got {type(study).__name__}")
        top = list(study.top(k))
        if not top:
            raise ConfigError("the study has no finished trial with a metric yet: nothing to ensemble")
        if len(top) < k:
            warnings.warn(f"the study has {len(top)} finished trial(s), fewer than k={k}: the ensemble has "
                          f"{len(top)} member(s)", stacklevel=2)
        return cls.from_runs([t.run_dir for t in top], task=task, weights=weights, average=average)

    @classmethod
    def from_checkpoints(cls, paths: Sequence[str | Path], *, task: Task | None = None, weights: str = "raw",
                         average: str = "prob") -> Ensemble:
        """Returns the ensemble of checkpoint files, each inside its run directory (run_dir/checkpoints/...)."""
        sources = [(f"{Path(p).parent.parent.name}/{Path(p).name}", Path(p).parent.parent, Path(p)) for p in paths]
        return cls._build(sources, task, weights, average)

    @classmethod
    def from_run(cls, run: Run | str | Path, last: int = 5, *, task: Task | None = None, weights: str = "raw",
                 average: str = "prob") -> Ensemble:
        """Returns the ensemble of one run's last `last` checkpoints (a snapshot run: its last cycle ends)."""
        d = _dir_of(run)
        if isinstance(last, bool) or not isinstance(last, int) or last < 1:
            raise ConfigError(f"last={last!r}: the number of checkpoints, an integer >= 1, e.g. 5")
        ckpts = list_checkpoints(d)
        cfg = read_config(d)
        k = cfg["hp"].get("snapshots")
        if k:
            ends = set(snapshot_epochs(int(cfg["train"]["epochs"]), int(k)))
            ckpts = [c for c in ckpts if c.epoch in ends]
        if len(ckpts) < last:
            warnings.warn(f"{str(d)!r} keeps {len(ckpts)} checkpoint(s), fewer than last={last}; train with "
                          f"keep_last={last} (--keep-last {last}) to keep them all", stacklevel=2)
        return cls.from_checkpoints([c.path for c in ckpts[-last:]], task=task, weights=weights, average=average)

    @classmethod
    def _build(cls, sources: Sequence[tuple[str, Path, Path]], task: Task | None, weights: str,
               average: str) -> Ensemble:
        if not sources:
            raise ConfigError("an ensemble needs at least one member; none was given")
        task = task if task is not None else task_of(sources[0][1])
        return cls(_load_members(sources, task, weights), task, average=average)

    @torch.no_grad()
    def member_log_probs(self, dataset: Any, batch_size: int = 1024) -> torch.Tensor:
        """Returns the members' log-softmax scores on a dataset, shape (members, examples, classes)."""
        out = []
        for m in self.members:
            m.model.eval()
            rows = [torch.log_softmax(m.model(x), dim=-1) for x, _ in
                    data_mod.batches(dataset, batch_size, shuffle=False)]
            out.append(torch.cat(rows))
        return torch.stack(out)

    def combine(self, log_probs: torch.Tensor) -> torch.Tensor:
        """Returns the ensemble's probabilities from members' log-probabilities (members on dim 0)."""
        if self.average == "score":  # log-softmax differs from the score by a constant per example
            return torch.softmax(log_probs.mean(0), dim=-1)
        return log_probs.exp().mean(0)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the ensemble's class probabilities for a batch of inputs."""
        return self.combine(torch.stack([torch.log_softmax(m.model.eval()(x), dim=-1) for m in self.members]))

    def evaluate(self, split: Any = "test", *, repeats: int = 1000, seed: int = 0) -> Any:
        """Returns the EnsembleReport on split: the ensemble, each member, the gains with their intervals."""
        from .evaluation import evaluate_ensemble

        return evaluate_ensemble(self, split, repeats=repeats, seed=seed)

    def __len__(self) -> int:
        return len(self.members)


def train_many(task: Task, hp: Mapping[str, Any], *, seeds: Sequence[int], epochs: int, run_dir: str | Path,
               workers: int = 1, **kwargs: Any) -> list[Run]:
    """Returns one Run per seed, in run_dir/seed-<s> (same model, other inits), in the order of seeds.

    workers > 1: that many local processes train the seeds side by side (forked, each with its share of
    the cores, dying with this one). kwargs go to train (device, checkpoint_interval, keep_last, ...).
    With workers, a seed whose training fails (the user's code raised) raises UserCodeError once every seed
    has run; one worker raises the error of train at once.
    """
    if not seeds:
        raise ConfigError("seeds=[]: give at least one seed, e.g. seeds=[0, 1, 2, 3, 4]")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r}: must be an integer >= 1 (1: one seed after the other here)")
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    jobs = [(int(s), root / f"seed-{s}") for s in seeds]
    n = min(workers, len(jobs))
    if n == 1:
        return [train(task, hp, epochs=epochs, run_dir=d, seed=s, **kwargs) for s, d in jobs]

    def target(w: int) -> None:
        for s, d in jobs[w::n]:
            try:
                train(task, hp, epochs=epochs, run_dir=d, seed=s, **kwargs)
            except Exception as exc:  # the worker goes on with its next seed; the master reports it
                why = str(exc) if isinstance(exc, BabysitError) else describe_user_error(exc)
                (root / f".seed-{s}.error").write_text(why)

    with torch_threads(1):  # this process trains nothing meanwhile, and starts no OpenMP pool the children lose
        run_local(target, n, respawns=0)
    errors = {s: _pop_error(root / f".seed-{s}.error") for s, _ in jobs}
    runs = [run_of(d) if (d / "config.toml").exists() else None for _, d in jobs]
    bad = [(s, errors[s] or (r.error if r else None)) for (s, _), r in zip(jobs, runs)
           if errors[s] or r is None or r.status == "failed"]
    if bad:
        s, why = bad[0]
        raise UserCodeError(f"train_many: seed {s} failed: {why or 'its worker died'} ({len(bad)} of {len(jobs)} "
                            f"seeds failed; the others are in {str(root)!r})")
    return [r for r in runs if r is not None]


def _pop_error(path: Path) -> str | None:
    if not path.exists():
        return None
    why = path.read_text()
    path.unlink()
    return why
