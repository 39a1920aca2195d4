"""Finished runs: load(run_dir) gives back the trained model, evaluate(...) its accuracy and loss on a split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .averaging import ema_weights
from .errors import ConfigError, StoreError
from .losses import resolve as resolve_loss
from .step import Evaluation, evaluate as evaluate_model
from .store import Run, RunStore, best_of, list_checkpoints, load_checkpoint, read_config
from .task import Task

__all__ = ["load", "load_checkpoint_model", "evaluate", "run_of", "task_of"]

_SPLITS = ("train", "val", "test")


def run_of(run_dir: str | Path) -> Run:
    """Returns the Run record of a run directory (what train() returned there; also from another process)."""
    run_dir = Path(run_dir)
    cfg, meta = read_config(run_dir), RunStore(run_dir).meta()
    metric, mode = str(cfg["task"].get("metric", "val_acc")), str(cfg["task"].get("metric_mode", "max"))
    best = best_of(list_checkpoints(run_dir), mode)
    diverged = meta.get("diverged_at")
    return Run(dir=run_dir, status=str(meta.get("status", "unknown")),
               diverged_at=int(diverged) if diverged not in (None, "", "None") else None,
               history=RunStore(run_dir).history(), best_checkpoint=best.path if best else None, metric=metric,
               metric_mode=mode, error=meta.get("error") or None)


def task_of(run_dir: str | Path) -> Task:
    """Returns the Task a run directory's config.toml describes (named model, data and loss only)."""
    cfg = read_config(run_dir)
    try:
        return Task.from_description(cfg["task"])
    except Exception as exc:
        raise StoreError(f"cannot rebuild the task of {str(run_dir)!r}: {exc}") from exc


def load(run_dir: str | Path, last: bool = False, *, task: Task | None = None, weights: str = "raw") -> nn.Module:
    """Returns the run's model with its best (or last) checkpoint's weights, in eval mode on the CPU.

    The model is rebuilt from config.toml; pass task= when the run's model came from an unnamed function.
    weights="ema" gives the running average of the weights (hp["ema"]) kept in the same checkpoint.
    """
    run_dir = Path(run_dir)
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise StoreError(f"{str(run_dir)!r} has no checkpoint yet (no epoch finished)")
    chosen = ckpts[-1] if last else best_of(ckpts)
    return load_checkpoint_model(run_dir, chosen.path, task=task, weights=weights)  # type: ignore[union-attr]


def load_checkpoint_model(run_dir: str | Path, path: str | Path, *, task: Task | None = None,
                          weights: str = "raw") -> nn.Module:
    """Returns the run's model with one checkpoint's weights ("raw" or "ema"), in eval mode on the CPU.

    A checkpoint that does not load or does not fit the model raises StoreError naming it.
    """
    if weights not in ("raw", "ema"):
        raise ConfigError(f"weights={weights!r}: use 'raw' (the trained weights) or 'ema' (their running average)")
    cfg = read_config(run_dir)
    task = task if task is not None else task_of(run_dir)
    torch.manual_seed(int(cfg["train"].get("seed", 0)))
    model = task.build_model(cfg["hp"])
    ckpt = load_checkpoint(path)
    if weights == "ema" and "ema" not in ckpt:
        raise StoreError(f"checkpoint {str(path)!r} holds no running average of the weights: the run was "
                         "trained without hp['ema']; use weights='raw'")
    try:
        model.load_state_dict(ema_weights(ckpt["ema"]) if weights == "ema" else ckpt["model"])
    except (RuntimeError, KeyError) as exc:
        raise StoreError(f"checkpoint {str(path)!r} does not fit the run's model: {str(exc).splitlines()[0]}") \
            from exc
    return model.eval()


def evaluate(run_or_model: str | Path | nn.Module, split: Any, *, task: Task | None = None, loss: Any = None,
             last: bool = False, batch_size: int = 1024, weights: str = "raw") -> Evaluation:
    """Returns accuracy and mean data loss of a run's model (or any model) on a split.

    split is a Dataset, or "train" / "val" / "test" for the run's own data.
    """
    if isinstance(run_or_model, nn.Module):
        model, loss_fn = run_or_model, resolve_loss(loss or (task.loss if task else "softmax"))[0]
    else:
        task = task if task is not None else task_of(run_or_model)
        model, loss_fn = load(run_or_model, last, task=task, weights=weights), task.loss_fn
    if isinstance(split, str):
        if task is None or split not in _SPLITS:
            raise StoreError(f"split={split!r}: give a Dataset, or one of {_SPLITS} together with a run directory")
        split = getattr(task.splits, split)
        if split is None:
            raise StoreError("this run's data have no test split")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return evaluate_model(model, split, loss_fn, batch_size=batch_size, device=device)
