"""Search spaces: loguniform, uniform, intuniform and choice, validated, with conditional keys.

The notes: search hyperparameters on a log scale when they act multiplicatively (learning rate,
regularisation strength), e.g. lr = 10 ** uniform(-6, 1). A `[search]` TOML table uses the same
words (``lr = {loguniform = [1e-6, 1.0]}``) and is parsed as data, never evaluated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from ..errors import ConfigError

__all__ = ["Param", "loguniform", "uniform", "intuniform", "choice", "parse_space", "check_space", "active",
           "from_unit", "space_to_dict", "with_limits", "KINDS"]

KINDS = ("loguniform", "uniform", "intuniform", "choice")


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: its kind, range (or choices), scale and the condition it needs.

    when: {"optimizer": ("momentum", "nesterov")} -- sampled only when optimizer is one of those.
    limits: hard bounds a border extension never crosses (e.g. (0, 1) for dropout).
    """

    kind: str
    lo: float | None = None
    hi: float | None = None
    values: tuple[Any, ...] = ()
    log: bool = False
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    limits: tuple[float | None, float | None] = (None, None)
    key: str = field(default="?", compare=False)

    def named(self, key: str) -> "Param":
        """Returns the same parameter carrying its key (for error messages)."""
        return replace(self, key=key)

    def position(self, value: Any) -> float:
        """Returns value in the parameter's own scale: log10 for log ranges, else the value itself."""
        return math.log10(float(value)) if self.log else float(value)

    def from_position(self, pos: float) -> Any:
        """Returns the value at a position of the parameter's own scale (rounded for integers)."""
        v = 10.0 ** pos if self.log else pos
        return int(round(v)) if self.kind == "intuniform" else float(v)

    @property
    def span(self) -> tuple[float, float]:
        """Returns (lo, hi) in the parameter's own scale."""
        assert self.lo is not None and self.hi is not None
        return self.position(self.lo), self.position(self.hi)

    def with_range(self, lo: float, hi: float) -> "Param":
        """Returns a copy with a new (lo, hi) given as values (not positions)."""
        if self.kind == "intuniform":
            lo, hi = int(math.floor(lo)), int(math.ceil(hi))
        return replace(self, lo=lo, hi=hi)

    def to_dict(self) -> dict[str, Any]:
        """Returns the TOML-table form, e.g. {"loguniform": [1e-6, 1.0]}."""
        d: dict[str, Any] = {self.kind: list(self.values) if self.kind == "choice" else [self.lo, self.hi]}
        if self.kind == "intuniform" and self.log:
            d["log"] = True
        if self.when:
            d["when"] = {k: list(v) for k, v in self.when}
        if self.limits != (None, None):
            d["limits"] = [x for x in self.limits]
        return d


def with_limits(p: Param, lo: float | None, hi: float | None) -> Param:
    """Returns p with hard bounds for border extensions, unless it has its own."""
    return p if p.limits != (None, None) else replace(p, limits=(lo, hi))


def _when(when: Mapping[str, Sequence[Any]] | None) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if when is None:
        return ()
    if not isinstance(when, Mapping):
        raise ConfigError(f"when={when!r}: must map a key to the values it must take, "
                          "e.g. when={'optimizer': ['momentum', 'nesterov']}")
    out = []
    for k, v in when.items():
        vals = (v,) if isinstance(v, (str, int, float, bool)) else tuple(v)
        out.append((str(k), vals))
    return tuple(sorted(out))


def _limits(limits: Sequence[float | None] | None) -> tuple[float | None, float | None]:
    if limits is None:
        return (None, None)
    lo, hi = limits
    return (None if lo is None else float(lo), None if hi is None else float(hi))


def loguniform(lo: float, hi: float, *, when: Mapping[str, Sequence[Any]] | None = None,
               limits: Sequence[float | None] | None = None) -> Param:
    """Returns a parameter uniform in log10 between lo and hi (lo > 0): lr = 10 ** uniform(log10 lo, log10 hi)."""
    return Param("loguniform", lo, hi, log=True, when=_when(when), limits=_limits(limits))


def uniform(lo: float, hi: float, *, when: Mapping[str, Sequence[Any]] | None = None,
            limits: Sequence[float | None] | None = None) -> Param:
    """Returns a parameter uniform between lo and hi (for additive knobs: dropout, momentum)."""
    return Param("uniform", lo, hi, when=_when(when), limits=_limits(limits))


def intuniform(lo: int, hi: int, log: bool = False, *, when: Mapping[str, Sequence[Any]] | None = None,
               limits: Sequence[float | None] | None = None) -> Param:
    """Returns an integer parameter between lo and hi inclusive, uniform in log10 when log=True (widths)."""
    return Param("intuniform", lo, hi, log=bool(log), when=_when(when), limits=_limits(limits))


def choice(values: Sequence[Any], *, when: Mapping[str, Sequence[Any]] | None = None) -> Param:
    """Returns a parameter taking one of `values` (an update rule, an activation, a few widths)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigError(f"choice({values!r}): give a list of values, e.g. choice(['sgd', 'adam'])")
    return Param("choice", values=tuple(values), when=_when(when))


def _check_param(key: str, p: Param) -> Param:
    if not isinstance(p, Param):
        raise ConfigError(f"space[{key!r}]={p!r}: use bs.loguniform(lo, hi), bs.uniform(lo, hi), "
                          "bs.intuniform(lo, hi) or bs.choice([...])")
    p = p.named(key)
    if p.kind == "choice":
        if not p.values:
            raise ConfigError(f"space[{key!r}]: choice() needs at least one value")
        return p
    lo, hi = p.lo, p.hi
    for name, v in (("lo", lo), ("hi", hi)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"space[{key!r}]: {p.kind} {name}={v!r} must be a finite number")
        if p.kind == "intuniform" and int(v) != v:
            raise ConfigError(f"space[{key!r}]: intuniform {name}={v!r} must be an integer")
    assert lo is not None and hi is not None
    if not lo < hi:
        raise ConfigError(f"space[{key!r}]: {p.kind}({lo!r}, {hi!r}) needs lo < hi; swap them or widen the range")
    if p.log and lo <= 0:
        raise ConfigError(f"space[{key!r}]: {p.kind}({lo!r}, {hi!r}) is a log scale and needs lo > 0; "
                          f"e.g. {p.kind}({hi / 1e4:g}, {hi!r}), or uniform() if 0 must be included")
    return p


def check_space(space: Mapping[str, Any], fixed: Mapping[str, Any] | None = None) -> dict[str, Param]:
    """Returns the space with every entry validated and named; raises ConfigError naming a bad key and the fix."""
    if not isinstance(space, Mapping) or not space:
        raise ConfigError("space must be a non-empty dict key -> bs.loguniform(...) | bs.uniform(...) | "
                          "bs.intuniform(...) | bs.choice([...])")
    fixed = dict(fixed or {})
    out = {str(k): _check_param(str(k), p) for k, p in space.items()}
    for k in out:
        if k in fixed:
            raise ConfigError(f"{k!r} is both searched and fixed; remove it from fixed= or from the space")
    for k, p in out.items():
        for dep, vals in p.when:
            if dep == k or (dep not in out and dep not in fixed):
                raise ConfigError(f"space[{k!r}]: when={{{dep!r}: ...}} names a key that is neither searched nor "
                                  f"fixed; add {dep!r} to the space or to fixed=")
            if dep in out and out[dep].when:
                raise ConfigError(f"space[{k!r}]: depends on {dep!r}, which is itself conditional; "
                                  "conditions may be one level deep")
    return dict(sorted(out.items(), key=lambda kv: (bool(kv[1].when), kv[0])))


def active(p: Param, chosen: Mapping[str, Any]) -> bool:
    """Returns True when p's condition holds for the values chosen so far (and fixed ones)."""
    return all(chosen.get(dep) in vals for dep, vals in p.when)


def from_unit(p: Param, u: float) -> Any:
    """Returns the value at u in [0, 1) of p's range in its own scale (choices: equal cells)."""
    u = min(max(float(u), 0.0), math.nextafter(1.0, 0.0))
    if p.kind == "choice":
        return p.values[int(u * len(p.values))]
    assert p.lo is not None and p.hi is not None
    if p.kind == "intuniform":
        lo, hi = (p.lo - 0.5, p.hi + 0.5)
        if p.log:
            lo = max(lo, p.lo * 0.5)
            v = 10 ** (math.log10(lo) + u * (math.log10(hi) - math.log10(lo)))
        else:
            v = lo + u * (hi - lo)
        return int(min(max(round(v), p.lo), p.hi))
    a, b = p.span
    return p.from_position(a + u * (b - a))


def space_to_dict(space: Mapping[str, Param]) -> dict[str, Any]:
    """Returns the space as plain data (the `[search]` table form)."""
    return {k: p.to_dict() for k, p in space.items()}


def parse_space(table: Mapping[str, Any]) -> dict[str, Param]:
    """Returns the space a `[search]` TOML table describes (data only: nothing is evaluated).

    Each entry: {loguniform = [lo, hi]}, {uniform = [lo, hi]}, {intuniform = [lo, hi], log = true},
    {choice = [...]}, optionally with when = {optimizer = ["momentum"]} and limits = [lo, hi]; or "auto" for lr.
    """
    out: dict[str, Any] = {}
    for key, entry in table.items():
        if entry == "auto":
            out[key] = "auto"
            continue
        if not isinstance(entry, Mapping):
            raise ConfigError(f"[search] {key} = {entry!r}: write e.g. {key} = {{loguniform = [1e-6, 1.0]}}")
        kinds = [k for k in entry if k in KINDS]
        extra = sorted(set(entry) - set(KINDS) - {"log", "when", "limits"})
        if len(kinds) != 1 or extra:
            raise ConfigError(f"[search] {key} = {dict(entry)!r}: give exactly one of {', '.join(KINDS)} "
                              f"(optional: log, when, limits){'; unknown: ' + ', '.join(extra) if extra else ''}")
        kind, arg = kinds[0], entry[kinds[0]]
        if not isinstance(arg, list) or (kind != "choice" and len(arg) != 2):
            raise ConfigError(f"[search] {key}: {kind} takes a list{' [lo, hi]' if kind != 'choice' else ''}, "
                              f"got {arg!r}")
        when, limits = entry.get("when"), entry.get("limits")
        if kind == "choice":
            out[key] = choice(arg, when=when)
        elif kind == "intuniform":
            out[key] = intuniform(arg[0], arg[1], bool(entry.get("log", False)), when=when, limits=limits)
        else:
            out[key] = (loguniform if kind == "loguniform" else uniform)(arg[0], arg[1], when=when, limits=limits)
    return out
