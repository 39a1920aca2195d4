"""The hyperparameter key registry: every key babysit reads, with its default, type, bounds, hint and search scale.

Validation, defaults, the CLI flags (and their --help), the "did you mean" check and search spaces all
derive from ``KEYS``; nothing else fills a default. hp is one flat dict: a key babysit does not know
goes to the user's build function untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._check import check_choice, check_number, describe_range
from .errors import ConfigError

__all__ = ["BUILTIN_MODELS", "DEFAULT_LR", "KEYS", "Key", "RecordingHP", "SCHEDULES", "UPDATE_RULES", "applied",
           "default_of", "resolve", "suggest", "unused_keys", "validate", "why_unused"]

UPDATE_RULES = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "lbfgs")
SCHEDULES = ("constant", "step", "exp", "inv_t", "plateau")
BUILTIN_MODELS = ("mlp", "cnn1d", "cnn1d_paper")
_LAYERED = ("mlp", "cnn1d")  # the models built from width x depth
ACTIVATIONS = ("leaky_relu", "relu", "tanh")
INITS = ("kaiming", "small", "xavier")
DEFAULT_LR: dict[str, float] = {"sgd": 1e-2, "momentum": 1e-2, "nesterov": 1e-2, "adagrad": 1e-2,
                                "rmsprop": 1e-3, "adam": 1e-3, "lbfgs": 1.0}
_MOMENTUM_RULES = ("momentum", "nesterov", "adam")


@dataclass(frozen=True)
class Key:
    """One hyperparameter: type, default (None: none), bounds or choices, where it applies, hint, search scale.

    rules/schedules/models: the update rules, schedules or built-in models it applies to (None: always).
    """

    name: str
    kind: type
    default: Any = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    hint: str = ""
    noun: str = ""  # "update rule", "schedule": the word for a choice in errors
    scale: str | None = None  # "log" | "linear" | None (not searched by default)
    search: tuple[Any, ...] | None = None
    rules: tuple[str, ...] | None = None
    schedules: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        """Returns the command-line flag, e.g. --batch-size."""
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """Returns the value validated (ints as int, numbers as float); ConfigError naming hp[key] otherwise."""
        field = f"hp[{self.name!r}]"
        if self.choices is not None:
            return check_choice(field, value, self.choices, hint=self.hint, noun=self.noun)
        return check_number(field, value, kind=self.kind, low=self.low, high=self.high, low_open=self.low_open,
                            high_open=self.high_open, hint=self.hint)

    def where(self) -> str:
        """Returns where the key applies, in words ("" when always)."""
        parts = [f"{what} {', '.join(names)}" for what, names in
                 (("optimizer", self.rules), ("schedule", self.schedules), ("built-in model", self.models)) if names]
        return " and ".join(parts)

    def describe(self) -> str:
        """Returns the help text: the allowed values and the default."""
        allowed = "{" + ",".join(self.choices) + "}" if self.choices else \
            describe_range(self.kind, self.low, self.high, self.low_open, self.high_open)
        default = "per rule: " + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) if self.name == "lr" else \
            ("none" if self.default is None else f"{self.default}")
        where = f"; only with {self.where()}" if self.where() else ""
        return f"{allowed} (default {default}{where})"


def _keys(*keys: Key) -> dict[str, Key]:
    return {k.name: k for k in keys}


_UNIT: dict[str, Any] = {"low": 0.0, "high": 1.0, "high_open": True}
_FRACTION: dict[str, Any] = {"low": 0.0, "high": 1.0, "low_open": True, "high_open": True}
KEYS: dict[str, Key] = _keys(
    Key("optimizer", str, "sgd", choices=UPDATE_RULES, noun="update rule", hint="the notes recommend nesterov or adam",
        search=UPDATE_RULES),
    Key("lr", float, None, low=0.0, high=1e12, low_open=True, scale="log", search=(1e-6, 1.0),
        hint="search it on a log scale, e.g. loguniform(1e-6, 1)"),
    Key("reg", float, 0.0, low=0.0, high=1e6, scale="log", search=(1e-6, 1e-1),
        hint="L2 strength, 0 turns it off; search it on a log scale, e.g. loguniform(1e-6, 1e-1)"),
    Key("batch_size", int, 64, low=1, high=2**24, scale="log", search=(16, 512), hint="e.g. 64"),
    Key("clip_norm", float, None, low=0.0, high=1e9, low_open=True, scale="log", search=(0.1, 100.0),
        hint="leave it out to disable clipping"),
    Key("early_stop", int, None, low=1, high=10**6, hint="patience in epochs without a better validation metric"),
    Key("momentum", float, 0.9, **_UNIT, scale="linear", search=(0.5, 0.99), rules=("momentum", "nesterov"),
        hint="typical values are 0.5, 0.9, 0.95, 0.99"),
    Key("beta1", float, 0.9, **_UNIT, scale="linear", search=(0.8, 0.99), rules=("adam",),
        hint="the Adam paper recommends 0.9"),
    Key("beta2", float, 0.999, **_UNIT, scale="linear", search=(0.99, 0.9999), rules=("adam",),
        hint="the Adam paper recommends 0.999"),
    Key("eps", float, 1e-8, low=0.0, high=0.1, low_open=True, scale="log", search=(1e-10, 1e-4),
        rules=("adagrad", "rmsprop", "adam"), hint="the notes use 1e-4 to 1e-8"),
    Key("decay_rate", float, 0.99, **_UNIT, scale="linear", search=(0.9, 0.999), rules=("rmsprop",),
        hint="typical values are 0.9, 0.99, 0.999"),
    Key("lbfgs_history", int, 10, low=1, high=10**4, rules=("lbfgs",), hint="e.g. 10"),
    Key("lbfgs_max_iter", int, 20, low=1, high=10**5, rules=("lbfgs",), hint="e.g. 20"),
    Key("momentum_start", float, None, **_UNIT, rules=_MOMENTUM_RULES, hint="the notes start around 0.5"),
    Key("momentum_end", float, None, **_UNIT, rules=_MOMENTUM_RULES, hint="the notes anneal to about 0.99"),
    Key("momentum_epochs", float, None, low=0.0, high=1e6, low_open=True, rules=_MOMENTUM_RULES,
        hint="the epochs over which momentum goes from start to end"),
    Key("schedule", str, "constant", choices=SCHEDULES, noun="schedule", search=SCHEDULES,
        hint="the notes prefer step decay"),
    Key("step_every", int, 5, low=1, high=10**6, schedules=("step",), hint="epochs between decays, e.g. 5"),
    Key("step_factor", float, 0.5, **_FRACTION, scale="linear", search=(0.1, 0.9), schedules=("step",),
        hint="e.g. 0.5 every 5 epochs or 0.1 every 20"),
    Key("exp_k", float, 0.1, low=0.0, high=1e3, low_open=True, scale="log", search=(1e-3, 1.0),
        schedules=("exp",), hint="lr = lr0 * exp(-k * epoch), e.g. 0.1"),
    Key("inv_t_k", float, 0.1, low=0.0, high=1e3, low_open=True, scale="log", search=(1e-3, 1.0),
        schedules=("inv_t",), hint="lr = lr0 / (1 + k * epoch), e.g. 0.1"),
    Key("plateau_factor", float, 0.5, **_FRACTION, scale="linear", search=(0.1, 0.9), schedules=("plateau",),
        hint="e.g. 0.5"),
    Key("plateau_patience", int, 3, low=1, high=10**6, schedules=("plateau",), hint="epochs, e.g. 3"),
    Key("width", int, 128, low=1, high=2**16, scale="log", search=(16, 1024), models=_LAYERED,
        hint="units per hidden layer (channels for cnn1d), e.g. 128"),
    Key("depth", int, 2, low=1, high=64, scale="linear", search=(1, 4), models=_LAYERED,
        hint="hidden layers, e.g. 2"),
    Key("dropout", float, 0.0, **_UNIT, scale="linear", search=(0.0, 0.7), models=BUILTIN_MODELS,
        hint="the probability of dropping a unit, e.g. 0.5"),
    Key("activation", str, "relu", choices=ACTIVATIONS, noun="activation", search=ACTIVATIONS, models=BUILTIN_MODELS),
    Key("init", str, "kaiming", choices=INITS, noun="init", search=INITS, models=BUILTIN_MODELS),
    Key("ema", float, None, low=0.0, high=1.0, low_open=True, high_open=True, scale="linear", search=(0.99, 0.9999),
        hint="keeps a running average of the weights with this decay (warmed up), e.g. 0.999"),
    Key("snapshots", int, None, low=1, high=10**4,
        hint="snapshot ensemble: this many cosine learning-rate cycles, the model kept at each cycle's end"),
    Key("channels", int, 25, low=1, high=2**16, scale="log", search=(8, 256), models=("cnn1d_paper",),
        hint="channels of each conv of the MNIST-1D paper's CNN (Greydanus 2020: 25)"),
    Key("kernel_size", int, 5, low=1, high=1024, models=("cnn1d",), hint="odd kernels keep the length, e.g. 5"),
)

# Names people bring from other tools; one that nothing reads is a typo of the babysit key.
ALIASES: dict[str, str] = {
    "learning_rate": "lr", "lr_rate": "lr", "weight_decay": "reg", "wd": "reg", "l2": "reg", "lambda": "reg",
    "bs": "batch_size", "batch": "batch_size", "batchsize": "batch_size", "optim": "optimizer", "opt": "optimizer",
    "mom": "momentum", "mu": "momentum", "dropout_rate": "dropout", "drop": "dropout", "hidden": "width",
    "hidden_size": "width", "num_layers": "depth", "n_layers": "depth", "layers": "depth", "scheduler": "schedule",
    "lr_schedule": "schedule", "gamma": "step_factor", "step_size": "step_every", "patience": "early_stop",
    "grad_clip": "clip_norm", "clip": "clip_norm", "epsilon": "eps", "beta_1": "beta1", "beta_2": "beta2",
    "rho": "decay_rate", "alpha": "decay_rate", "act": "activation", "nonlinearity": "activation",
    "epochs": "--epochs ([train] epochs)", "seed": "--seed ([train] seed)",
}


def default_of(key: str, hp: Mapping[str, Any]) -> Any:
    """Returns the default of a key for this hp (lr depends on the update rule), None when it has none."""
    if key == "lr":
        return DEFAULT_LR[KEYS["optimizer"].check(hp.get("optimizer", "sgd"))]
    return KEYS[key].default


def _applies(key: Key, hp: Mapping[str, Any], model: str | None) -> bool:
    return ((key.rules is None or hp.get("optimizer", "sgd") in key.rules)
            and (key.schedules is None or hp.get("schedule", "constant") in key.schedules)
            and (key.models is None or model in key.models))


def applied(hp: Mapping[str, Any], model: str | None) -> set[str]:
    """Returns the registry keys that act on this run: the chosen rule's, schedule's and built-in model's."""
    return {k.name for k in KEYS.values() if _applies(k, hp, model)}


def validate(hp: Mapping[str, Any]) -> dict[str, Any]:
    """Returns hp with every known key's value checked (None values dropped); unknown keys pass through."""
    if not isinstance(hp, Mapping):
        raise ConfigError(f"hp must be a dict of hyperparameters, got {type(hp).__name__}")
    out: dict[str, Any] = {}
    for k, v in hp.items():
        if not isinstance(k, str):
            raise ConfigError(f"hp key {k!r}: keys must be strings")
        if v is not None:
            out[k] = KEYS[k].check(v) if k in KEYS else v
    return out


def resolve(hp: Mapping[str, Any], model: str | None = None) -> dict[str, Any]:
    """Returns hp validated, with the defaults of every key that applies filled in (the one place they are).

    model: a built-in model name fills its keys (width, depth, ...); a user's build gets none invented.
    """
    out = validate(hp)
    for key in (k for k in KEYS.values() if k.name not in out and _applies(k, {**out}, model)):
        value = default_of(key.name, out)
        if value is not None:
            out[key.name] = value
    return out


def _distance(a: str, b: str) -> int:
    """Returns the optimal-string-alignment edit distance (a swap of neighbours counts 1)."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def suggest(key: str, candidates: Iterable[str]) -> str | None:
    """Returns the known or used key that `key` is most likely a typo of, or None.

    Aliases first (learning_rate -> lr), then edit distance <= 1 (short names) or 2 (from 5 letters on).
    """
    low = key.lower()
    if low in ALIASES:
        return ALIASES[low]
    pool = sorted(set(candidates) - {key})
    limit = 1 if len(key) <= 4 else 2
    scored = sorted((_distance(low, c.lower()), c) for c in pool)
    return scored[0][1] if scored and scored[0][0] <= limit else None


def unused_keys(given: Iterable[str], used: Iterable[str], *, allow_unknown: bool = False) -> list[str]:
    """Returns the given keys that nothing uses; raises ConfigError for one that looks like a typo.

    used: the keys the registry applies, the task declares and the user's build read. A key close to a
    known or used key (or a common alias) is refused with "did you mean"; others are returned for a warning.
    """
    used = set(used)
    out = []
    for key in sorted(set(given) - used):
        guess = None if allow_unknown else suggest(key, used | set(KEYS))
        if guess is not None:
            hint = f"did you mean {guess}?" if guess.startswith("--") else f"did you mean {guess!r}?"
            raise ConfigError(f"hp[{key!r}]: nothing reads this key; {hint} (pass allow_unknown=True / "
                              "--allow-unknown to keep it as it is)")
        out.append(key)
    return out


def why_unused(key: str, hp: Mapping[str, Any], model: str | None) -> str:
    """Returns a short reason a key has no effect: the rule/schedule/model it needs, or "nothing reads it"."""
    k = KEYS.get(key)
    if k is None:
        return "nothing reads it (not a babysit key, not read by the model's build, not in hp_keys)"
    return f"it applies only with {k.where()}"


class RecordingHP(dict):  # type: ignore[type-arg]
    """The hp dict handed to a user's build: it records which keys the build read.

    Iterating over it (dict(hp), {**hp}, hp.items()) counts as reading every key.
    """

    def __init__(self, hp: Mapping[str, Any]) -> None:
        super().__init__(hp)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        self.read.update(super().keys())
        return super().__iter__()

    def keys(self) -> Any:
        self.read.update(super().keys())
        return super().keys()

    def items(self) -> Any:
        self.read.update(super().keys())
        return super().items()

    def values(self) -> Any:
        self.read.update(super().keys())
        return super().values()

    def copy(self) -> dict[str, Any]:
        self.read.update(super().keys())
        return dict(super().items())

