"""Run configuration: typed dataclasses built from TOML plus `--key value` overrides.

Values are parsed as TOML literals, never evaluated as code.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from ._check import check_number
from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["TaskConfig", "TrainConfig", "RunConfig", "load_config", "from_dict", "parse_value", "with_overrides"]

_SECTIONS = ("task", "hp", "train")
_OTHER_SECTIONS = ("babysit", "diagnose", "search", "fingerprint", "recipe")  # read by the modules that own them


@dataclass(frozen=True)
class TaskConfig:
    """What to learn: a named data set, a named model and a loss."""

    data: str = "mnist1d"
    model: str = "mlp"
    loss: str = "softmax"
    data_seed: int = 0
    val_fraction: float = 0.2
    data_options: Mapping[str, Any] = field(default_factory=dict)
    hp_keys: tuple[str, ...] = ()
    metric: str = "val_acc"
    metric_mode: str | None = None

    def __post_init__(self) -> None:
        for name in ("data", "model", "loss", "metric"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"task.{name}={getattr(self, name)!r}: must be a name or 'package.module:function'")
        keys = self.hp_keys
        if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
            raise ConfigError(f"task.hp_keys={keys!r}: must be a list of key names, e.g. [\"temperature\"]")
        object.__setattr__(self, "hp_keys", tuple(keys))
        if not isinstance(self.data_options, Mapping):
            raise ConfigError(f"task.data_options={self.data_options!r}: must be a table")

    def to_dict(self) -> dict[str, Any]:
        """Returns the plain-data form written into config.toml (None values dropped)."""
        d = asdict(self)
        d["data_options"] = dict(self.data_options)
        d["hp_keys"] = list(self.hp_keys)
        return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True)
class TrainConfig:
    """How to train: epochs, seed, where the run directory goes, device and threads."""

    epochs: int = 10
    seed: int = 0
    run_dir: str | None = None
    device: str = "auto"
    threads: int | str | None = None  # None or "auto": chosen per run (babysit.threads); an int wins
    checkpoint_interval: float = 5.0

    def __post_init__(self) -> None:
        _require_int("train.epochs", self.epochs, minimum=1, maximum=10**6)
        _require_int("train.seed", self.seed, minimum=0)
        if self.threads is not None and self.threads != "auto":
            _require_int("train.threads", self.threads, minimum=1, maximum=4096)
        ci = self.checkpoint_interval
        if isinstance(ci, bool) or not isinstance(ci, (int, float)) or ci < 0:
            raise ConfigError(f"train.checkpoint_interval={ci!r}: must be >= 0 seconds (0: every epoch)")
        if self.device not in ("auto", "cpu") and not str(self.device).startswith("cuda"):
            raise ConfigError(f"train.device={self.device!r}: use 'auto', 'cpu' or 'cuda[:N]'")

    def to_dict(self) -> dict[str, Any]:
        """Returns the plain-data form (None values dropped: TOML has no null)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class RunConfig:
    """A whole run: task, hyperparameters (one flat dict) and training settings."""

    task: TaskConfig = field(default_factory=TaskConfig)
    hp: Mapping[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    sections: Mapping[str, Any] = field(default_factory=dict)  # [diagnose], [search]: read by their modules


def _require_int(name: str, value: Any, *, minimum: int, maximum: int = 2**31 - 1) -> None:
    if isinstance(value, float):  # TOML and flags give ints; 3.0 for epochs is a mistake worth naming
        raise ConfigError(f"{name}={value!r}: must be an integer >= {minimum}")
    check_number(name, value, kind=int, low=minimum, high=maximum)


def _section(d: Mapping[str, Any], name: str, cls: type) -> Any:
    raw = d.get(name, {})
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{name}] must be a table, got {raw!r}")
    known = set(getattr(cls, "__dataclass_fields__"))
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"[{name}] has unknown key(s) {unknown}; valid: {', '.join(sorted(known))}")
    try:
        return cls(**raw)
    except TypeError as exc:  # pragma: no cover - guarded by the key check above
        raise ConfigError(f"[{name}]: {exc}") from exc


_DESCRIBED = ("loss_kind", "num_classes", "input_shape", "reproducible", "search_path", "name")


def _from_run_description(task: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the [task] table of a config from a run directory's config.toml (which describes the task)."""
    if task.get("reproducible") is False:
        raise ConfigError(f"this run's config cannot be re-run: {task.get('not_reproducible_because', '?')}")
    data = dict(task["data"])
    out: dict[str, Any] = {"data": data.pop("name"), "data_seed": data.pop("seed", 0),
                           "val_fraction": data.pop("val_fraction", 0.2), "data_options": data}
    out["model"] = task.get("model", task.get("build"))
    for key in ("loss", "metric", "metric_mode", "hp_keys"):
        if key in task:
            out[key] = task[key]
    return out


def from_dict(d: Mapping[str, Any]) -> RunConfig:
    """Returns a validated RunConfig from a parsed TOML mapping ([task], [hp], [train]).

    A run directory's own config.toml (its [task] describes the data as a table) is read too, so
    re-running it reproduces the run.
    """
    if isinstance(d.get("task"), Mapping) and isinstance(d["task"].get("data"), Mapping):
        d = {**d, "task": _from_run_description(d["task"])}
    unknown = sorted(set(d) - set(_SECTIONS) - set(_OTHER_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; valid: [task], [hp], [train], [diagnose], [search]")
    hp = d.get("hp", {})
    if not isinstance(hp, Mapping):
        raise ConfigError(f"[hp] must be a table, got {hp!r}")
    other = {k: d[k] for k in _OTHER_SECTIONS if k in d and k not in ("babysit", "fingerprint")}
    for k, v in other.items():
        if not isinstance(v, Mapping):
            raise ConfigError(f"[{k}] must be a table, got {v!r}")
    return RunConfig(task=_section(d, "task", TaskConfig), hp=dict(hp), train=_section(d, "train", TrainConfig),
                     sections=other)


def load_config(path: str | Path) -> RunConfig:
    """Returns the RunConfig stored in a TOML file; errors name the file and the problem."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        d = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return from_dict(d)


def parse_value(text: str) -> Any:
    """Returns a command-line value as a TOML literal (number, bool, array), else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def with_overrides(cfg: RunConfig, *, task: Mapping[str, Any] | None = None, hp: Mapping[str, Any] | None = None,
                   train: Mapping[str, Any] | None = None) -> RunConfig:
    """Returns a copy of cfg with the given keys replaced (validated like the file)."""
    t = {**cfg.task.to_dict(), **(task or {})}
    tr = {**cfg.train.to_dict(), **(train or {})}
    return from_dict({"task": t, "hp": {**cfg.hp, **(hp or {})}, "train": tr, **cfg.sections})


def replace_train(cfg: RunConfig, **kw: Any) -> RunConfig:
    """Returns cfg with training settings replaced."""
    return replace(cfg, train=replace(cfg.train, **kw))
