"""Task: a model factory, data splits and a loss; and the validation of hyperparameters."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from . import data as data_mod
from . import hparams, losses, models
from ._optional import import_ref
from .config import TaskConfig
from .data import Splits
from .errors import ConfigError, UserCodeError, describe_user_error
from .metrics import Metric, resolve_metric

__all__ = ["Task", "validate_hp"]

log = logging.getLogger(__name__)


def validate_hp(hp: Mapping[str, Any], model: str | None = None) -> dict[str, Any]:
    """Returns a copy of hp checked by the key registry, with the defaults of every key that applies filled in.

    model: a built-in model name ("mlp", "cnn1d") also fills that model's keys (width, depth, ...).
    """
    return hparams.resolve(hp, model if model in hparams.BUILTIN_MODELS else None)


def _build_name(fn: Callable[..., Any]) -> str | None:
    """Returns "module:qualname" when fn can be imported again by another process, else None."""
    mod, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not mod or mod == "__main__" or "<" in qual:
        return None
    return f"{mod}:{qual}"


@dataclass(frozen=True, eq=False)
class Task:
    """What to learn: build(hp) -> nn.Module, data splits, a loss and the validation metric that decides "better".

    build may also be a model name ("mlp", "cnn1d" or "package.module:function" taking
    (hp, input_shape, num_classes)); data may be a data-set name ("mnist1d", "digits", "spiral") or
    "package.module:function". hp_keys: keys the task reads outside build (a custom loss), so they count
    as used. metric: "val_acc" (default), "val_loss", "package.module:function" or fn(scores, y) -> float.
    """

    build: Callable[[Mapping[str, Any]], nn.Module] | str
    data: Splits | str
    loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "softmax"
    name: str | None = None
    hp_keys: Iterable[str] = ()
    metric: Any = "val_acc"
    metric_mode: str | None = None
    search_path: tuple[str, ...] = ()
    splits: Splits = field(init=False, repr=False)
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(init=False, repr=False)
    loss_kind: str = field(init=False)
    model_name: str | None = field(init=False)

    def __post_init__(self) -> None:
        splits = data_mod.load(self.data) if isinstance(self.data, str) else self.data
        if not isinstance(splits, Splits):
            raise ConfigError(f"Task(data=...) must be a babysit Splits or a data-set name, got {type(splits).__name__}")
        data_mod.validate_splits(splits)  # a bad label, NaN input or shape: a DataError now, not mid-training
        fn, kind = losses.resolve(self.loss)
        object.__setattr__(self, "splits", splits)
        object.__setattr__(self, "loss_fn", fn)
        object.__setattr__(self, "loss_kind", kind)
        keys = [self.hp_keys] if isinstance(self.hp_keys, str) else list(self.hp_keys)
        if not all(isinstance(k, str) for k in keys):
            raise ConfigError(f"Task(hp_keys={self.hp_keys!r}): must be a list of key names")
        object.__setattr__(self, "hp_keys", frozenset(keys))
        object.__setattr__(self, "metric", resolve_metric(self.metric, self.metric_mode, self.search_path))
        if isinstance(self.build, str):
            factory = models.resolve(self.build) if ":" not in self.build else \
                import_ref(self.build, what="model", signature="fn(hp, input_shape, num_classes) -> nn.Module",
                           search=self.search_path)
            object.__setattr__(self, "model_name", self.build)
            object.__setattr__(self, "_factory", factory)
        elif callable(self.build):
            object.__setattr__(self, "model_name", None)
        else:
            raise ConfigError(f"Task(build=...) must be a function hp -> nn.Module or a model name, got {self.build!r}")

    @classmethod
    def from_config(cls, cfg: TaskConfig, search: Iterable[str] = ()) -> "Task":
        """Returns the Task a [task] table names (data set, model, loss, metric); search: folders for module refs."""
        path = tuple(str(p) for p in search)
        splits = data_mod.load(cfg.data, seed=cfg.data_seed, val_fraction=cfg.val_fraction, search=path,
                               **dict(cfg.data_options))
        return cls(build=cfg.model, data=splits, loss=cfg.loss, hp_keys=tuple(cfg.hp_keys), metric=cfg.metric,
                   metric_mode=cfg.metric_mode, search_path=path)

    @property
    def num_classes(self) -> int:
        """Returns the number of classes of the data."""
        return self.splits.num_classes

    @property
    def builtin_model(self) -> str | None:
        """Returns the built-in model's name ("mlp", "cnn1d"), or None for a user's build."""
        return self.model_name if self.model_name in hparams.BUILTIN_MODELS else None

    def fingerprint(self, model: nn.Module | None = None) -> dict[str, Any]:
        """Returns what a resume must find unchanged: a content hash per split and the model's architecture.

        The architecture is its parameter and buffer names, shapes and dtypes (plus the class as
        module:qualname), so a run built by a lambda is recognised by a new process.
        """
        if "_digests" not in self.__dict__:
            digests = {name: data_mod.digest(ds) for name in ("train", "val", "test")
                       if (ds := getattr(self.splits, name)) is not None}
            object.__setattr__(self, "_digests", digests)
        out: dict[str, Any] = {f"data_{k}": v for k, v in self.__dict__["_digests"].items()}
        if model is not None:
            arch = [(n, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in model.state_dict().items()]
            out["model_class"] = f"{type(model).__module__}:{type(model).__qualname__}"
            out["model_arch"] = "sha256:" + hashlib.sha256(repr(arch).encode()).hexdigest()[:16]
            out["parameters"] = sum(p.numel() for p in model.parameters())
        return out

    def resolve_hp(self, hp: Mapping[str, Any]) -> dict[str, Any]:
        """Returns hp checked by the key registry with every default that applies to this task filled in."""
        return validate_hp(hp, self.builtin_model)

    def used_keys(self, hp: Mapping[str, Any], read: Iterable[str] = ()) -> set[str]:
        """Returns the keys something uses: the registry's for this rule/schedule/model, hp_keys, and `read`."""
        return hparams.applied(hp, self.builtin_model) | set(self.hp_keys) | set(read)

    def unused_keys(self, given: Mapping[str, Any], hp: Mapping[str, Any], read: Iterable[str] = (), *,
                    allow_unknown: bool = False) -> tuple[str, ...]:
        """Returns the given keys nothing uses, each logged once; a likely typo raises ConfigError ("did you mean").

        Used: the keys the registry applies to this rule/schedule/model, hp_keys, and those build read.
        """
        unused = hparams.unused_keys([k for k, v in given.items() if v is not None], self.used_keys(hp, read),
                                     allow_unknown=allow_unknown)
        for key in unused:
            log.warning("hp[%r]=%r has no effect: %s", key, given[key],
                        hparams.why_unused(key, hp, self.builtin_model))
        return tuple(unused)

    def build_model(self, hp: Mapping[str, Any], *, record: set[str] | None = None) -> nn.Module:
        """Returns a fresh model for hp, after checking it accepts one batch and has num_classes outputs.

        record: a set that receives the hp keys the build read. An exception in the build or the
        model's forward is a UserCodeError naming the file and line.
        """
        seen = hparams.RecordingHP(hp)
        try:
            if isinstance(self.build, str):
                model = self._factory(seen, tuple(self.splits.input_shape), self.num_classes)  # type: ignore[attr-defined]
            else:
                model = self.build(seen)
        except ConfigError:
            raise
        except Exception as exc:
            raise UserCodeError(describe_user_error(exc, "the model's build(hp)")) from exc
        if record is not None:
            record.update(seen.read)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"build(hp) must return a torch.nn.Module, got {type(model).__name__}")
        self.check_model(model)
        return model

    def check_model(self, model: nn.Module) -> None:
        """Raises ConfigError unless model maps a batch of inputs to (batch, num_classes) scores.

        A forward that raises is a UserCodeError naming the user's file and line.
        """
        x, _ = data_mod.tensors(self.splits.train, limit=2)
        x = x[:2]
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(x.to(device))
        except Exception as exc:
            raise UserCodeError(describe_user_error(
                exc, f"the model, on a batch of inputs of shape {tuple(x.shape)} "
                     f"(examples of shape {tuple(self.splits.input_shape)}),")) from exc
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
        metric: Metric = self.metric
        d["metric"] = metric.ref or (metric.name if metric.fn is None else repr(metric.fn))
        d["metric_mode"] = metric.mode
        if metric.fn is not None and metric.ref is None:
            why.append("the metric is a callable babysit cannot import again")
        if self.hp_keys:
            d["hp_keys"] = sorted(self.hp_keys)
        if self.search_path:
            d["search_path"] = list(self.search_path)
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
        path = tuple(d.get("search_path", ()))
        if data is None:
            if "data" not in d:
                raise ConfigError("this run's data were a user's own tensors: pass the data (or the task) explicitly")
            src = dict(d["data"])
            data = data_mod.load(src.pop("name"), search=path, **src)
        if "model" in d:
            build: Any = d["model"]
        else:
            ref = str(d.get("build", ""))
            if ":" not in ref:
                raise ConfigError(f"this run's model was built by {ref}, which babysit cannot rebuild; "
                                  "pass the task explicitly")
            build = import_ref(ref, what="build", signature="build(hp) -> nn.Module", search=path)
        metric = d.get("metric", "val_acc")
        if metric not in ("val_acc", "val_loss") and ":" not in str(metric):
            raise ConfigError(f"this run's metric was {metric}, which babysit cannot rebuild; pass the task explicitly")
        return cls(build=build, data=data, loss=d.get("loss", "softmax"), name=d.get("name"),
                   hp_keys=tuple(d.get("hp_keys", ())), metric=metric, metric_mode=d.get("metric_mode"),
                   search_path=path)
