"""The update-rule and schedule suites: the checks every rule in RULES and every schedule in SCHEDULES passes.

A rule is a factory (params, hp) -> torch.optim.Optimizer; a schedule is built by (hp) -> an object with
lr(epoch), apply(optimizer, epoch), end_epoch(metric), per_epoch, state_dict() and load_state_dict().
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch

from ..hparams import KEYS, RecordingHP
from ._core import Conformance, bad_values, refuses, register, run_suite

__all__ = ["check_update_rule", "check_schedule", "RuleSubject", "ScheduleSubject"]


@dataclass(frozen=True)
class RuleSubject:
    """An update rule under test: its factory, the hp it runs with, and the keys it must validate."""

    factory: Callable[[Iterable[Any], Mapping[str, Any]], torch.optim.Optimizer]
    hp: Mapping[str, Any] = field(default_factory=lambda: {"lr": 0.05})
    invalid: Mapping[str, tuple[Any, ...]] | None = None  # None: derived from the key registry


@dataclass(frozen=True)
class ScheduleSubject:
    """A schedule under test: its builder and the hp it is built from."""

    build: Callable[[Mapping[str, Any]], Any]
    hp: Mapping[str, Any]
    invalid: Mapping[str, tuple[Any, ...]] | None = None


def _round_trip(state: Any) -> Any:
    """Returns state after torch.save and torch.load(weights_only=True), as a checkpoint carries it."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _registry_invalid(read: Iterable[str]) -> dict[str, tuple[Any, ...]]:
    """Returns, for every registry key in read, values the key registry refuses."""
    out: dict[str, tuple[Any, ...]] = {}
    for name in sorted(set(read) & set(KEYS)):
        key = KEYS[name]
        out[name] = ("no-such-choice", 3) if key.choices else tuple(bad_values(key.low, key.high, key.kind))
    return out


def _refuses_all(build: Callable[[Mapping[str, Any]], Any], hp: Mapping[str, Any],
                 invalid: Mapping[str, tuple[Any, ...]]) -> str | None:
    """Returns None when every invalid value raises ConfigError naming its hp key, else the first that did not."""
    for name, values in invalid.items():
        for value in values:
            why = refuses(lambda: build({**hp, name: value}), f"hp[{name!r}]")
            if why is not None:
                return f"hp[{name!r}]={value!r}: {why}"
    return None


# ---- update rules -------------------------------------------------------------------------------------------

def _problem(seed: int = 0) -> tuple[list[torch.nn.Parameter], Callable[[], torch.Tensor]]:
    """Returns the parameters and the loss of a convex quadratic in two tensors (a vector and a matrix)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.Parameter(torch.randn(5, generator=g))
    w = torch.nn.Parameter(torch.randn(3, 4, generator=g))
    a = torch.linspace(1.0, 2.0, 5)
    return [x, w], lambda: 0.5 * (a * x ** 2).sum() + 0.5 * (w ** 2).sum()


def _steps(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], loss: Callable[[], torch.Tensor],
           n: int) -> float:
    """Returns the loss after n steps (every rule takes a closure; L-BFGS needs one)."""
    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = loss()
        value.backward()
        return value
    for _ in range(n):
        opt.step(closure)  # type: ignore[arg-type]
    return float(loss().detach())


def _params_after(s: RuleSubject, n: int, seed: int = 0) -> list[torch.Tensor]:
    params, loss = _problem(seed)
    _steps(s.factory(params, s.hp), params, loss, n)
    return [p.detach().clone() for p in params]


@register("update_rule", "builds_an_optimizer")
def _builds(s: RuleSubject) -> str | None:
    opt = s.factory(_problem()[0], s.hp)
    return None if isinstance(opt, torch.optim.Optimizer) else f"returned {type(opt).__name__}, not an Optimizer"


@register("update_rule", "decreases_a_convex_quadratic")
def _decreases(s: RuleSubject) -> str | None:
    params, loss = _problem()
    before = float(loss().detach())
    after = _steps(s.factory(params, s.hp), params, loss, 5)
    return None if math.isfinite(after) and after < before else f"loss {before:.4g} -> {after:.4g} after 5 steps"


@register("update_rule", "zero_lr_leaves_params_unchanged")
def _zero_lr(s: RuleSubject) -> str | None:
    """Schedules write the rate into param_groups: a rule must read it there, every step."""
    params, loss = _problem()
    start = [p.detach().clone() for p in params]
    opt = s.factory(params, s.hp)
    for group in opt.param_groups:
        group["lr"] = 0.0
    _steps(opt, params, loss, 3)
    moved = [i for i, (p, q) in enumerate(zip(params, start)) if not torch.equal(p.detach(), q)]
    return None if not moved else f"param_groups lr=0 but tensors {moved} moved (is lr cached outside the groups?)"


@register("update_rule", "deterministic")
def _deterministic(s: RuleSubject) -> str | None:
    a, b = _params_after(s, 4), _params_after(s, 4)
    return None if all(torch.equal(x, y) for x, y in zip(a, b)) else "two runs from the same start differ"


@register("update_rule", "state_dict_resumes_exactly")
def _resumes(s: RuleSubject) -> str | None:
    """3 steps, save (through torch.load(weights_only=True)), rebuild, load, 3 more: identical to 6 in one go."""
    params, loss = _problem()
    opt = s.factory(params, s.hp)
    _steps(opt, params, loss, 3)
    saved = _round_trip(opt.state_dict())
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    resumed = s.factory(copies, s.hp)
    resumed.load_state_dict(saved)
    _steps(opt, params, loss, 3)
    a = torch.linspace(1.0, 2.0, 5)
    _steps(resumed, copies, lambda: 0.5 * (a * copies[0] ** 2).sum() + 0.5 * (copies[1] ** 2).sum(), 3)
    same = all(torch.equal(p.detach(), q.detach()) for p, q in zip(params, copies))
    return None if same else "a rule rebuilt from its state_dict does not continue exactly"


@register("update_rule", "refuses_invalid_hyperparameters")
def _rule_invalid(s: RuleSubject) -> str | None:
    rec = RecordingHP(s.hp)
    s.factory(_problem()[0], rec)
    invalid = s.invalid if s.invalid is not None else _registry_invalid(rec.read | {"lr"})
    return _refuses_all(lambda hp: s.factory(_problem()[0], hp), s.hp, invalid)


def check_update_rule(factory: Callable[[Iterable[Any], Mapping[str, Any]], torch.optim.Optimizer], *,
                      hp: Mapping[str, Any] | None = None, invalid: Mapping[str, tuple[Any, ...]] | None = None,
                      name: str | None = None, skip: Iterable[str] = (), strict: bool = True) -> Conformance:
    """Returns the Conformance of an update rule (params, hp) -> Optimizer; CheckFailed on a failure when strict.

    hp: what it runs with (default {"lr": 0.05}); invalid: {key: values it must refuse with ConfigError
    naming hp[key]} (default: for each key it reads that the key registry knows, values the registry refuses).
    """
    subject = RuleSubject(factory, dict(hp) if hp is not None else {"lr": 0.05}, invalid)
    return run_suite("update_rule", subject, label=str(name or getattr(factory, "__name__", repr(factory))),
                     skip=skip, strict=strict)


# ---- schedules ----------------------------------------------------------------------------------------------

_EPOCHS = [i / 4 for i in range(0, 201)]  # 0 to 50 epochs, four points an epoch


def _base_lr(s: ScheduleSubject) -> float:
    return float(s.build(s.hp).lr(0.0))


@register("schedule", "finite_and_positive")
def _positive(s: ScheduleSubject) -> str | None:
    sched = s.build(s.hp)
    bad = [(e, lr) for e in _EPOCHS if not (math.isfinite(lr := float(sched.lr(e))) and lr > 0)]
    return None if not bad else f"lr({bad[0][0]}) = {bad[0][1]!r}"


@register("schedule", "starts_at_the_base_lr")
def _starts(s: ScheduleSubject) -> str | None:
    want = s.hp.get("lr")
    got = _base_lr(s)
    return None if want is None or got == float(want) else f"lr(0) = {got!r}, not hp['lr'] = {want!r}"


@register("schedule", "never_increases")
def _anneals(s: ScheduleSubject) -> str | None:
    """The notes' schedules anneal: over time and over epochs without improvement (plateau)."""
    sched = s.build(s.hp)
    rates = []
    for i, e in enumerate(_EPOCHS):
        if i % 4 == 0 and i:
            sched.end_epoch(0.5)  # a metric that never improves
        rates.append(float(sched.lr(e)))
    up = [i for i in range(1, len(rates)) if rates[i] > rates[i - 1]]
    return None if not up else f"lr rose at epoch {_EPOCHS[up[0]]}: {rates[up[0] - 1]!r} -> {rates[up[0]]!r}"


@register("schedule", "pure_in_the_epoch")
def _pure(s: ScheduleSubject) -> str | None:
    sched = s.build(s.hp)
    first = [float(sched.lr(e)) for e in _EPOCHS[::-1]]
    again = [float(sched.lr(e)) for e in _EPOCHS[::-1]]
    return None if first == again else "lr(epoch) changed between two calls with the same epoch"


@register("schedule", "per_epoch_is_honest")
def _per_epoch(s: ScheduleSubject) -> str | None:
    """A schedule that says it changes only between epochs (the loop then sets lr once an epoch) must not vary."""
    sched = s.build(s.hp)
    if not getattr(sched, "per_epoch", False):
        return None
    varies = [e for e in range(50) if sched.lr(e) != sched.lr(e + 0.5)]
    return None if not varies else f"per_epoch is True but lr({varies[0]}) != lr({varies[0] + 0.5})"


@register("schedule", "apply_writes_every_group")
def _apply(s: ScheduleSubject) -> str | None:
    params = _problem()[0]
    opt = torch.optim.SGD([{"params": [params[0]]}, {"params": [params[1]]}],
                          lr=1.0, momentum=0.9 if s.hp.get("optimizer") in ("momentum", "nesterov") else 0.0)
    sched = s.build(s.hp)
    lr = sched.apply(opt, 2.5)
    rates = [g["lr"] for g in opt.param_groups]
    return None if rates == [lr, lr] and lr == sched.lr(2.5) else f"apply returned {lr!r}, groups hold {rates!r}"


@register("schedule", "state_dict_resumes_exactly")
def _sched_resumes(s: ScheduleSubject) -> str | None:
    metrics = [0.5, 0.6, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7]
    a = s.build(s.hp)
    for m in metrics[:5]:
        a.end_epoch(m)
    b = s.build(s.hp)
    b.load_state_dict(_round_trip(a.state_dict()))
    for m in metrics[5:]:
        a.end_epoch(m)
        b.end_epoch(m)
    diff = [e for e in _EPOCHS if a.lr(e) != b.lr(e)]
    return None if not diff else f"a schedule rebuilt from its state_dict differs at epoch {diff[0]}"


@register("schedule", "refuses_bad_epochs")
def _bad_epoch(s: ScheduleSubject) -> str | None:
    sched = s.build(s.hp)
    for e in (-1.0, math.nan, math.inf):
        why = refuses(lambda: sched.lr(e), "epoch")
        if why is not None:
            return f"lr({e!r}): {why}"
    return None


@register("schedule", "refuses_invalid_hyperparameters")
def _sched_invalid(s: ScheduleSubject) -> str | None:
    rec = RecordingHP(s.hp)
    s.build(rec)
    invalid = s.invalid if s.invalid is not None else _registry_invalid(rec.read)
    return _refuses_all(s.build, s.hp, invalid)


def check_schedule(build: Callable[[Mapping[str, Any]], Any], hp: Mapping[str, Any], *,
                   invalid: Mapping[str, tuple[Any, ...]] | None = None, name: str | None = None,
                   skip: Iterable[str] = (), strict: bool = True) -> Conformance:
    """Returns the Conformance of a schedule built by build(hp); CheckFailed on a failure when strict.

    A warm-up schedule rises on purpose: skip=("never_increases", "starts_at_the_base_lr").
    """
    label = name or str(hp.get("schedule", getattr(build, "__name__", "schedule")))
    return run_suite("schedule", ScheduleSubject(build, dict(hp), invalid), label=label, skip=skip, strict=strict)
