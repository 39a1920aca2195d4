"""Task: a model factory, data splits and a loss; and the validation of hyperparameters."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from . import data as data_mod
from ._optional import import_ref
from . import losses, models
from .config import TaskConfig
from .data import Splits
from .errors import ConfigError

__all__ = ["Task", "HP_DEFAULTS", "validate_hp"]

HP_DEFAULTS: dict[str, Any] = {"optimizer": "sgd", "reg": 0.0, "batch_size": 64, "schedule": "constant"}


def _number(hp: Mapping[str, Any], key: str) -> float | None:
    v = hp.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"hp[{key!r}]={v!r}: must be a finite number")
    return float(v)


def _integer(hp: Mapping[str, Any], key: str, minimum: int) -> None:
    v = hp.get(key)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < minimum):
        raise ConfigError(f"hp[{key!r}]={v!r}: must be an integer >= {minimum}")


def validate_hp(hp: Mapping[str, Any]) -> dict[str, Any]:
    """Returns a copy of hp with babysit's defaults filled in; raises ConfigError naming a bad field.

    Names (optimizer, schedule) are checked by their registries; numbers are checked here.
    """
    if not isinstance(hp, Mapping):
        raise ConfigError(f"hp must be a dict of hyperparameters, got {type(hp).__name__}")
    out = {**HP_DEFAULTS, **{k: v for k, v in hp.items() if v is not None}}
    lr = _number(out, "lr")
    if lr is not None and lr <= 0:
        raise ConfigError(f"hp['lr']={out['lr']!r}: learning rate must be > 0; "
                          "search it on a log scale, e.g. loguniform(1e-6, 1)")
    reg = _number(out, "reg")
    if reg is not None and reg < 0:
        raise ConfigError(f"hp['reg']={out['reg']!r}: regularisation strength must be >= 0 (0 turns L2 off)")
    _integer(out, "batch_size", 1)
    _integer(out, "early_stop", 1)
    clip = _number(out, "clip_norm")
    if clip is not None and clip <= 0:
        raise ConfigError(f"hp['clip_norm']={out['clip_norm']!r}: must be > 0 (leave it out to disable clipping)")
    return out


def _build_name(fn: Callable[..., Any]) -> str | None:
    """Returns "module:qualname" when fn can be imported again by another process, else None."""
    mod, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not mod or mod == "__main__" or "<" in qual:
        return None
    return f"{mod}:{qual}"


@dataclass(frozen=True, eq=False)
class Task:
    """What to learn: build(hp) -> nn.Module, data splits and a loss ("softmax", "svm" or a callable).

    build may also be a model name ("mlp", "cnn1d" or "package.module:function" taking
    (hp, input_shape, num_classes)); data may be a data-set name ("mnist1d", "digits", "spiral").
    """

    build: Callable[[Mapping[str, Any]], nn.Module] | str
    data: Splits | str
    loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "softmax"
    name: str | None = None
    splits: Splits = field(init=False, repr=False)
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(init=False, repr=False)
    loss_kind: str = field(init=False)
    model_name: str | None = field(init=False)

    def __post_init__(self) -> None:
        splits = data_mod.load(self.data) if isinstance(self.data, str) else self.data
        if not isinstance(splits, Splits):
            raise ConfigError(f"Task(data=...) must be a babysit Splits or a data-set name, got {type(splits).__name__}")
        fn, kind = losses.resolve(self.loss)
        object.__setattr__(self, "splits", splits)
        object.__setattr__(self, "loss_fn", fn)
        object.__setattr__(self, "loss_kind", kind)
        if isinstance(self.build, str):
            factory = models.resolve(self.build)
            object.__setattr__(self, "model_name", self.build)
            object.__setattr__(self, "_factory", factory)
        elif callable(self.build):
            object.__setattr__(self, "model_name", None)
        else:
            raise ConfigError(f"Task(build=...) must be a function hp -> nn.Module or a model name, got {self.build!r}")

    @classmethod
    def from_config(cls, cfg: TaskConfig) -> "Task":
        """Returns the Task a [task] table names (data set, model, loss), fully reproducible."""
        splits = data_mod.load(cfg.data, seed=cfg.data_seed, val_fraction=cfg.val_fraction, **dict(cfg.data_options))
        return cls(build=cfg.model, data=splits, loss=cfg.loss)

    @property
    def num_classes(self) -> int:
        """Returns the number of classes of the data."""
        return self.splits.num_classes

    def build_model(self, hp: Mapping[str, Any]) -> nn.Module:
        """Returns a fresh model for hp, after checking it accepts one batch and has num_classes outputs."""
        if isinstance(self.build, str):
            model = self._factory(hp, tuple(self.splits.input_shape), self.num_classes)  # type: ignore[attr-defined]
        else:
            model = self.build(hp)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"build(hp) must return a torch.nn.Module, got {type(model).__name__}")
        self.check_model(model)
        return model

    def check_model(self, model: nn.Module) -> None:
        """Raises ConfigError unless model maps a batch of inputs to (batch, num_classes) scores."""
        x, _ = data_mod.tensors(self.splits.train)
        x = x[:2]
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(x.to(device))
        except Exception as exc:
            raise ConfigError(f"the model fails on a batch of inputs of shape {tuple(x.shape)} "
                              f"(examples of shape {tuple(self.splits.input_shape)}): {exc}") from exc
        finally:
            model.train(was_training)
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(f"the model must return scores of shape (batch, {self.num_classes}); "
                              f"for a batch of {x.shape[0]} it returned {shape}")
        if out.shape[1] != self.num_classes:
            raise ConfigError(f"the model's output has {out.shape[1]} columns but the data has "
                              f"{self.num_classes} classes; make the last layer produce {self.num_classes} scores")

    def describe(self) -> dict[str, Any]:
        """Returns the plain-data description of the task written into config.toml.

        It says whether re-running the config reproduces the run (named model, data and loss) and why not.
        """
        why: list[str] = []
        d: dict[str, Any] = {}
        if self.model_name is not None:
            d["model"] = self.model_name
        else:
            ref = _build_name(self.build)  # type: ignore[arg-type]
            d["build"] = ref or repr(self.build)
            if ref is None:
                why.append("the model comes from a function babysit cannot import again (a lambda, "
                           "a nested function or one defined in __main__)")
        loss_ref = self.loss if isinstance(self.loss, str) else _build_name(self.loss)
        d["loss"] = loss_ref or repr(self.loss)
        if loss_ref is None:
            why.append("the loss is a callable babysit cannot import again")
        if self.splits.source:
            d["data"] = dict(self.splits.source)
        else:
            why.append("the data are a user's own tensors (from_tensors), not a named data set")
        d.update(loss_kind=self.loss_kind, num_classes=self.num_classes,
                 input_shape=list(self.splits.input_shape), reproducible=not why)
        if why:
            d["not_reproducible_because"] = "; ".join(why)
        if self.name:
            d["name"] = self.name
        return d

    @classmethod
    def from_description(cls, d: Mapping[str, Any], *, data: Splits | None = None) -> "Task":
        """Returns the Task a config.toml [task] table describes; raises ConfigError when it cannot be rebuilt."""
        if data is None:
            if "data" not in d:
                raise ConfigError("this run's data were a user's own tensors: pass the data (or the task) explicitly")
            src = dict(d["data"])
            data = data_mod.load(src.pop("name"), **src)
        if "model" in d:
            build: Any = d["model"]
        else:
            ref = str(d.get("build", ""))
            if ":" not in ref:
                raise ConfigError(f"this run's model was built by {ref}, which babysit cannot rebuild; "
                                  "pass the task explicitly")
            build = import_ref(ref, what="build", signature="build(hp) -> nn.Module")
        loss: Any = d.get("loss", "softmax")
        return cls(build=build, data=data, loss=loss, name=d.get("name"))
