"""babysit.testing: every built-in update rule and schedule passes the shared table; broken extensions fail it."""

from __future__ import annotations

import math

import pytest
import torch

from babysit.errors import CheckFailed, ConfigError
from babysit.hparams import KEYS
from babysit.optim import RULES, SCHEDULES, build_schedule
from babysit.testing import SUITES, check_schedule, check_update_rule, register, run_suite


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_builtin_update_rule_passes_the_table(name):
    # torch's L-BFGS strong-Wolfe line search divides by the rate: lr=0 written by a schedule crashes it
    skip = ("zero_lr_leaves_params_unchanged",) if name == "lbfgs" else ()
    report = check_update_rule(RULES[name], name=name, skip=skip)
    assert report.ok and len(report.results) == len(SUITES["update_rule"]) - len(skip)


def test_lbfgs_at_lr_zero_is_a_known_torch_limitation():
    report = check_update_rule(RULES["lbfgs"], strict=False)
    assert [r.check for r in report.failures] == ["zero_lr_leaves_params_unchanged"]
    assert "ZeroDivisionError" in report.failures[0].detail


SCHEDULE_HPS = [{"optimizer": "sgd", "lr": 0.1, "schedule": s} for s in SCHEDULES] + [
    {"optimizer": "nesterov", "lr": 0.1, "schedule": "step", "momentum_start": 0.5, "momentum_end": 0.99,
     "momentum_epochs": 5}]


@pytest.mark.parametrize("hp", SCHEDULE_HPS, ids=lambda hp: hp["schedule"] + ("+momentum" if len(hp) > 3 else ""))
def test_every_builtin_schedule_passes_the_table(hp):
    report = check_schedule(build_schedule, hp)
    assert report.ok and len(report.results) == len(SUITES["schedule"])


def test_the_invalid_values_really_reach_the_rule():
    # the registry-derived table tries NaN, inf, strings and both bounds of every key the rule reads
    report = check_update_rule(RULES["adam"], strict=False)
    assert report.ok
    assert {"lr", "beta1", "beta2", "eps"} <= set(KEYS)


class CachedLr(torch.optim.Optimizer):
    """A broken extension: reads lr once, at construction, so a schedule cannot change it."""

    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})
        self.fixed = lr

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        with torch.no_grad():
            for g in self.param_groups:
                for p in g["params"]:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-self.fixed)
        return loss


def cached_lr(params, hp):
    return CachedLr(params, float(hp["lr"]))


def test_a_rule_that_caches_lr_and_accepts_nan_fails_with_the_checks_named():
    with pytest.raises(CheckFailed) as err:
        check_update_rule(cached_lr)
    text = str(err.value)
    assert "FAILED zero_lr_leaves_params_unchanged" in text and "FAILED refuses_invalid_hyperparameters" in text
    assert "hp['lr']=nan: accepted" in text
    assert "FAILED decreases_a_convex_quadratic" not in text


class Forgetful(torch.optim.SGD):
    """A broken extension: keeps its step count outside state_dict, so a resume is not exact."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.t = 0

    def step(self, closure=None):
        self.t += 1
        for g in self.param_groups:
            g["lr"] = g["initial"] / self.t
        return super().step(closure)


def forgetful(params, hp):
    lr = KEYS["lr"].check(hp.get("lr", 0.05))
    opt = Forgetful(params, lr)
    for g in opt.param_groups:
        g["initial"] = lr
    return opt


def test_a_rule_with_state_outside_its_state_dict_fails_the_resume_check():
    report = check_update_rule(forgetful, strict=False, skip=("zero_lr_leaves_params_unchanged",))
    assert [r.check for r in report.failures] == ["state_dict_resumes_exactly"]


class Warmup:
    """A warm-up schedule with hidden state in lr(): rises on purpose, but is also impure."""

    per_epoch = True

    def __init__(self, hp):
        self.base, self.calls = float(hp["lr"]), 0

    def lr(self, epoch):
        if not math.isfinite(epoch) or epoch < 0:
            raise ConfigError(f"epoch={epoch!r}: must be >= 0")
        self.calls += 1
        return self.base * min(1.0, (epoch + 1) / 5) * (1 + 1e-9 * self.calls)

    def apply(self, opt, epoch):
        lr = self.lr(epoch)
        for g in opt.param_groups:
            g["lr"] = lr
        return lr

    def end_epoch(self, metric):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, d):
        pass


def test_a_broken_schedule_fails_the_checks_it_breaks():
    report = check_schedule(Warmup, {"lr": 0.1}, strict=False)
    failed = {r.check for r in report.failures}
    assert {"never_increases", "starts_at_the_base_lr", "pure_in_the_epoch", "per_epoch_is_honest",
            "apply_writes_every_group"} <= failed
    assert "refuses_bad_epochs" not in failed and "finite_and_positive" not in failed
    # a warm-up rises on purpose: those two can be skipped, the rest still fail
    report = check_schedule(Warmup, {"lr": 0.1}, strict=False, skip=("never_increases", "starts_at_the_base_lr"))
    assert "never_increases" not in {r.check for r in report.results}


def test_new_kinds_of_suites_plug_into_the_same_table():
    @register("sampler_demo", "returns_in_bounds")
    def _in_bounds(subject):
        return None if 0 <= subject() <= 1 else f"{subject()} is out of [0, 1]"

    try:
        assert run_suite("sampler_demo", lambda: 0.5, label="half").ok
        with pytest.raises(CheckFailed, match="FAILED returns_in_bounds: 2 is out of"):
            run_suite("sampler_demo", lambda: 2, label="two")
        with pytest.raises(ConfigError, match="no such sampler_demo checks"):
            run_suite("sampler_demo", lambda: 0.5, label="x", skip=("nope",))
    finally:
        SUITES.pop("sampler_demo")
