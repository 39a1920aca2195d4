"""Tests for babysit.optim: every rule against a numpy transcription of the notes, schedules, bad input."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from babysit.errors import ConfigError
from babysit.optim import (
    DEFAULT_LR,
    RULES,
    SCHEDULES,
    Plateau,
    build_optimizer,
    build_schedule,
    has_momentum,
    is_full_batch,
    lr_factor,
    momentum_at,
    set_momentum,
)

# ---------------------------------------------------------------------------------------------
# A small non-quadratic test function: f(x) = sum(log cosh(A x - b)) + 0.1 * sum(x**4)

_RNG = np.random.default_rng(1234)
A = _RNG.standard_normal((8, 5))
B = _RNG.standard_normal(8)
X0 = _RNG.standard_normal(5)


def grad_np(x: np.ndarray, quartic: bool = True) -> np.ndarray:
    g = A.T @ np.tanh(A @ x - B)
    return g + 0.4 * x**3 if quartic else g


def f_torch(x: torch.Tensor, quartic: bool = True) -> torch.Tensor:
    r = torch.as_tensor(A) @ x - torch.as_tensor(B)
    f = torch.log(torch.cosh(r)).sum()
    return f + 0.1 * (x**4).sum() if quartic else f


def torch_trajectory(hp: dict, x0: np.ndarray, steps: int, lrs: list[float] | None = None, quartic: bool = True):
    """Positions x_0..x_steps of the torch optimizer built from hp; lrs[t], if given, is written before step t."""
    x = torch.nn.Parameter(torch.tensor(x0, dtype=torch.float64))
    opt = build_optimizer([x], hp)
    out = [x0.copy()]
    for t in range(steps):
        for group in opt.param_groups:
            group["lr"] = group["lr"] if lrs is None else lrs[t]
        opt.zero_grad()
        f_torch(x, quartic).backward()
        opt.step()
        out.append(x.detach().numpy().copy())
    return np.array(out)


# ---------------------------------------------------------------------------------------------
# The notes' update rules, transcribed to numpy (the oracle). Each returns x_0..x_n.


def notes_sgd(x, grad, lrs):
    xs = [x.copy()]
    for lr in lrs:
        dx = grad(x)
        x = x.copy()
        x += -lr * dx
        xs.append(x)
    return np.array(xs)


def notes_momentum(x, grad, lrs, mu):
    v = np.zeros_like(x)
    xs = [x.copy()]
    for lr in lrs:
        dx = grad(x)
        v = mu * v - lr * dx  # integrate velocity
        x = x + v  # integrate position
        xs.append(x)
    return np.array(xs)


def notes_nesterov(x, grad, lrs, mu):
    v = np.zeros_like(x)
    xs = [x.copy()]
    for lr in lrs:
        dx = grad(x)
        v_prev = v  # back this up
        v = mu * v - lr * dx  # velocity update stays the same
        x = x + -mu * v_prev + (1 + mu) * v  # position update changes form
        xs.append(x)
    return np.array(xs)


def notes_adagrad(x, grad, lrs, eps):
    cache = np.zeros_like(x)
    xs = [x.copy()]
    for lr in lrs:
        dx = grad(x)
        cache += dx**2
        x = x + -lr * dx / (np.sqrt(cache) + eps)
        xs.append(x)
    return np.array(xs)


def notes_rmsprop(x, grad, lrs, decay_rate, eps):
    cache = np.zeros_like(x)
    xs = [x.copy()]
    for lr in lrs:
        dx = grad(x)
        cache = decay_rate * cache + (1 - decay_rate) * dx**2
        x = x + -lr * dx / (np.sqrt(cache) + eps)
        xs.append(x)
    return np.array(xs)


def notes_adam(x, grad, lrs, beta1, beta2, eps):
    m = np.zeros_like(x)
    v = np.zeros_like(x)
    xs = [x.copy()]
    for t, lr in enumerate(lrs, start=1):  # t is your iteration counter going from 1 to infinity
        dx = grad(x)
        m = beta1 * m + (1 - beta1) * dx
        mt = m / (1 - beta1**t)
        v = beta2 * v + (1 - beta2) * (dx**2)
        vt = v / (1 - beta2**t)
        x = x + -lr * mt / (np.sqrt(vt) + eps)
        xs.append(x)
    return np.array(xs)


# One shared table (optax style): (rule, hp given to babysit, oracle, the oracle's lr and keywords).
# The first row of each rule passes no keys, so it pins the notes' defaults (e.g. Adagrad eps 1e-8, not 1e-10).
RULE_TABLE = [
    ("sgd", {}, notes_sgd, 1e-2, {}),
    ("sgd", {"lr": 0.05}, notes_sgd, 0.05, {}),
    ("momentum", {}, notes_momentum, 1e-2, {"mu": 0.9}),
    ("momentum", {"lr": 0.02, "momentum": 0.8}, notes_momentum, 0.02, {"mu": 0.8}),
    ("nesterov", {}, notes_nesterov, 1e-2, {"mu": 0.9}),
    ("nesterov", {"lr": 0.03, "momentum": 0.5}, notes_nesterov, 0.03, {"mu": 0.5}),
    ("adagrad", {}, notes_adagrad, 1e-2, {"eps": 1e-8}),
    ("adagrad", {"lr": 0.2, "eps": 1e-4}, notes_adagrad, 0.2, {"eps": 1e-4}),
    ("rmsprop", {}, notes_rmsprop, 1e-3, {"decay_rate": 0.99, "eps": 1e-8}),
    ("rmsprop", {"lr": 0.01, "decay_rate": 0.9, "eps": 1e-6}, notes_rmsprop, 0.01, {"decay_rate": 0.9, "eps": 1e-6}),
    ("adam", {}, notes_adam, 1e-3, {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}),
    (
        "adam",
        {"lr": 0.05, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6},
        notes_adam,
        0.05,
        {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6},
    ),
]


@pytest.mark.parametrize(
    "name, hp, oracle, lr, kw", RULE_TABLE, ids=[f"{r[0]}-{'defaults' if not r[1] else 'custom'}" for r in RULE_TABLE]
)
def test_rule_matches_notes_formula(name, hp, oracle, lr, kw):
    steps = 30
    lrs = [lr] * steps
    expected = oracle(X0.copy(), grad_np, lrs, **kw)
    got = torch_trajectory({"optimizer": name, **hp}, X0, steps)  # the optimizer keeps its own (default) lr
    assert np.abs(expected[-1] - X0).max() > 10 * lr * 1e-3, "the trajectory must actually move"
    for t in range(steps + 1):
        np.testing.assert_allclose(got[t], expected[t], rtol=1e-12, atol=1e-14, err_msg=f"{name}, step {t}")


def test_every_rule_is_in_the_table_and_has_a_default_lr():
    assert set(RULES) == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "lbfgs"}
    assert DEFAULT_LR == {
        "sgd": 1e-2, "momentum": 1e-2, "nesterov": 1e-2, "adagrad": 1e-2, "rmsprop": 1e-3, "adam": 1e-3, "lbfgs": 1.0
    }  # fmt: skip
    assert {row[0] for row in RULE_TABLE} == set(RULES) - {"lbfgs"}
    x = torch.nn.Parameter(torch.zeros(3))
    for name in RULES:
        opt = build_optimizer([x], {"optimizer": name})
        assert opt.param_groups[0]["lr"] == DEFAULT_LR[name]
        assert opt.param_groups[0].get("weight_decay", 0) == 0


def test_default_rule_is_sgd():
    x = torch.nn.Parameter(torch.zeros(3))
    opt = build_optimizer([x], {})
    assert type(opt) is torch.optim.SGD and opt.param_groups[0]["momentum"] == 0


def _lbfgs_error(tolerances: dict, calls: int) -> float:
    """|x - x*| after `calls` L-BFGS steps (20 iterations each) on 0.5 (x - x*)^T Q (x - x*), Q SPD 10x10."""
    rng = np.random.default_rng(7)
    m = rng.standard_normal((10, 10))
    q = torch.as_tensor(m @ m.T + np.eye(10))
    x_star = torch.as_tensor(rng.standard_normal(10))
    x = torch.nn.Parameter(torch.zeros(10, dtype=torch.float64))
    opt = build_optimizer([x], {"optimizer": "lbfgs"})
    opt.param_groups[0].update(tolerances)

    def closure():
        opt.zero_grad()
        e = x - x_star  # centred: the line search compares losses, and f* = 0 leaves no cancellation
        loss = 0.5 * e @ q @ e
        loss.backward()
        return loss

    for _ in range(calls):
        opt.step(closure)
    return float(torch.linalg.vector_norm(x.detach() - x_star))


def test_lbfgs_reaches_minimum_of_convex_quadratic():
    assert is_full_batch("lbfgs") and not is_full_batch("adam")
    # torch's stopping tests (loss change and g.d above -tolerance_change=1e-9) end near sqrt(2e-9 / lambda)
    assert 1e-6 < _lbfgs_error({}, calls=5) < 1e-4  # measured 1.5e-05
    assert _lbfgs_error({"tolerance_change": 0.0, "tolerance_grad": 0.0}, calls=5) < 1e-8  # measured 0.0 (exact)


# ---------------------------------------------------------------------------------------------
# Where torch's form differs from the notes: the learning rate inside vs outside the velocity.

DROP_STEP, AFTER_DROP, LR0, MU = 50, 50, 0.01, 0.9
X_FAR = np.full(5, 20.0) + 0.1 * np.arange(5)  # on the linear flank of log cosh: a near-constant slope


def _after_drop_gap(lrs):
    grad = lambda x: grad_np(x, quartic=False)
    notes = notes_momentum(X_FAR.copy(), grad, lrs, mu=MU)
    torch_ = torch_trajectory({"optimizer": "momentum", "momentum": MU, "lr": LR0}, X_FAR, len(lrs), lrs, quartic=False)
    return notes, torch_


def test_momentum_with_constant_rate_is_identical_to_notes():
    notes, torch_ = _after_drop_gap([LR0] * (DROP_STEP + AFTER_DROP))
    np.testing.assert_allclose(torch_, notes, rtol=1e-12, atol=1e-14)


def test_momentum_with_annealed_rate_differs_from_notes():
    """Notes: v = mu*v - lr*dx keeps the old rate inside v; torch: x -= lr*buf rescales the whole buffer."""
    lrs = [LR0] * DROP_STEP + [LR0 * 0.1] * AFTER_DROP
    notes, torch_ = _after_drop_gap(lrs)
    np.testing.assert_allclose(torch_[: DROP_STEP + 1], notes[: DROP_STEP + 1], rtol=1e-12, atol=1e-14)
    travelled = np.linalg.norm(notes[-1] - notes[DROP_STEP])
    gap = np.linalg.norm(notes[-1] - torch_[-1])
    ratio = gap / travelled
    # constant-gradient prediction: the notes keep coasting on mu/(1-mu) old-rate steps, torch on a tenth of them
    v_drop = (1 - MU**DROP_STEP) / (1 - MU)
    coast = v_drop * MU * (1 - MU**AFTER_DROP) / (1 - MU)
    fresh = 0.1 * sum((1 - MU**j) / (1 - MU) for j in range(1, AFTER_DROP + 1))
    predicted = 0.9 * coast / (coast + fresh)
    print(f"gap / distance travelled after the drop: measured {ratio:.4f}, constant-gradient {predicted:.4f}")
    assert 0.60 < ratio < 0.64  # measured 0.6140 (torch 2.13, numpy 2.4)
    assert abs(ratio - predicted) < 0.01  # predicted 0.6161
    assert np.linalg.norm(torch_[-1] - torch_[DROP_STEP]) < travelled  # torch brakes at once


# ---------------------------------------------------------------------------------------------
# Schedules


@pytest.mark.parametrize(
    "hp, epochs, expected",
    [
        ({"schedule": "constant"}, [0, 3.7, 100], [1.0, 1.0, 1.0]),
        ({}, [0, 50], [1.0, 1.0]),
        ({"schedule": "step", "step_every": 5, "step_factor": 0.5}, [0, 4.99, 5, 10, 12], [1, 1, 0.5, 0.25, 0.25]),
        ({"schedule": "step"}, [4.99, 5, 15], [1, 0.5, 0.125]),
        ({"schedule": "step", "step_every": 20, "step_factor": 0.1}, [19.9, 20, 40], [1, 0.1, 0.01]),
        ({"schedule": "exp", "exp_k": 0.1}, [0, 1, 2.5], [1, math.exp(-0.1), math.exp(-0.25)]),
        ({"schedule": "exp", "exp_k": 2.0}, [0.5], [math.exp(-1.0)]),
        ({"schedule": "inv_t", "inv_t_k": 0.1}, [0, 1, 10], [1, 1 / 1.1, 0.5]),
        ({"schedule": "inv_t", "inv_t_k": 1.0}, [3], [0.25]),
        ({"schedule": "plateau"}, [0, 40], [1, 1]),
    ],
)
def test_lr_factor_values(hp, epochs, expected):
    got = [lr_factor(hp, e) for e in epochs]
    np.testing.assert_allclose(got, expected, rtol=1e-15)


def test_fractional_epochs_from_steps_hit_step_boundaries():
    hp = {"schedule": "step", "step_every": 5, "step_factor": 0.5, "lr": 0.1}
    sched = build_schedule(hp)
    steps_per_epoch = 7
    assert sched.lr(34 / steps_per_epoch) == pytest.approx(0.1)
    assert sched.lr(35 / steps_per_epoch) == pytest.approx(0.05)
    assert sched.lr(0.0) == 0.1


def test_schedule_lr_uses_rule_default_when_lr_missing():
    assert build_schedule({"optimizer": "adam"}).lr(0) == DEFAULT_LR["adam"]
    assert build_schedule({"optimizer": "adam", "schedule": "exp"}).lr(1.0) == pytest.approx(1e-3 * math.exp(-0.1))


def _plateau_run(p: Plateau, accs: list[float]) -> list[tuple[bool, float]]:
    return [(p.update(a), p.scale) for a in accs]


def test_plateau_decays_after_patience_and_restarts_count():
    p = Plateau(factor=0.5, patience=2)
    accs = [0.5, 0.6, 0.6, 0.55, 0.59, 0.6, 0.7, 0.69, 0.71]
    got = _plateau_run(p, accs)
    assert [d for d, _ in got] == [False, False, False, True, False, True, False, False, False]
    assert [s for _, s in got] == [1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25]


def test_plateau_threshold_and_nan():
    p = Plateau(factor=0.1, patience=1, threshold=0.01)
    assert not p.update(0.5)
    assert p.update(0.505)  # below the threshold: no improvement
    assert p.scale == pytest.approx(0.1)
    assert not p.update(0.52)
    assert p.update(float("nan"))


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_plateau_state_dict_roundtrip_continues_identically():
    accs = [0.3, 0.4, 0.4, 0.4, 0.39, 0.5, 0.5, 0.45, 0.44, 0.43, 0.6, 0.6, 0.6]
    whole = Plateau(0.5, 2)
    expected = _plateau_run(whole, accs)
    first = Plateau(0.5, 2)
    head = _plateau_run(first, accs[:4])
    state = _roundtrip(first.state_dict())
    assert all(isinstance(v, (int, float)) for v in state.values())
    second = Plateau(0.5, 2)
    second.load_state_dict(state)
    assert head + _plateau_run(second, accs[4:]) == expected


def test_schedule_plateau_and_state_dict_roundtrip():
    hp = {"lr": 0.2, "schedule": "plateau", "plateau_factor": 0.5, "plateau_patience": 1}
    sched = build_schedule(hp)
    sched.end_epoch(0.5)
    sched.end_epoch(0.4)
    assert sched.lr(2.0) == pytest.approx(0.1)
    restored = build_schedule(hp)
    restored.load_state_dict(_roundtrip(sched.state_dict()))
    assert restored.lr(2.0) == sched.lr(2.0)
    for acc in [0.45, 0.6, 0.55]:
        sched.end_epoch(acc)
        restored.end_epoch(acc)
        assert restored.lr(3.0) == sched.lr(3.0)
    assert sched.lr(3.0) == pytest.approx(0.025)
    with pytest.raises(ConfigError, match="schedule"):
        build_schedule({"schedule": "step"}).load_state_dict(sched.state_dict())


def test_end_epoch_is_noop_without_plateau():
    sched = build_schedule({"schedule": "step", "lr": 0.1})
    for _ in range(10):
        sched.end_epoch(0.0)
    assert sched.lr(0) == 0.1
    assert _roundtrip(sched.state_dict()) == {"schedule": "step", "plateau": None}


MOM_HP = {"momentum_start": 0.5, "momentum_end": 0.9, "momentum_epochs": 4}


def test_momentum_schedule_values():
    hp = {"optimizer": "momentum", **MOM_HP}
    got = [momentum_at(hp, e) for e in (0, 1, 2, 4, 10)]
    np.testing.assert_allclose(got, [0.5, 0.6, 0.7, 0.9, 0.9], rtol=1e-15)
    assert momentum_at({"optimizer": "momentum"}, 3) is None
    assert build_schedule({"optimizer": "momentum"}).momentum(3) is None
    assert build_schedule(hp).momentum(2) == pytest.approx(0.7)


@pytest.mark.parametrize("rule", ["momentum", "nesterov", "adam"])
def test_apply_writes_lr_and_momentum(rule):
    hp = {"optimizer": rule, "lr": 0.1, "schedule": "exp", "exp_k": 0.5, **MOM_HP}
    x = torch.nn.Parameter(torch.zeros(3))
    opt = build_optimizer([x], hp)
    sched = build_schedule(hp)
    lr = sched.apply(opt, 2.0)
    assert lr == pytest.approx(0.1 * math.exp(-1.0))
    group = opt.param_groups[0]
    assert group["lr"] == lr
    if rule == "adam":
        assert group["betas"][0] == pytest.approx(0.7) and group["betas"][1] == 0.999
    else:
        assert group["momentum"] == pytest.approx(0.7)
    sched.apply(opt, 8.0)
    assert (group["betas"][0] if rule == "adam" else group["momentum"]) == pytest.approx(0.9)


def _two_sgd_steps(hp: dict) -> torch.Tensor:
    """x after two steps on the linear loss g @ x, with the schedule applied at epochs 0 and 1."""
    x = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = build_optimizer([x], hp)
    sched = build_schedule(hp)
    for epoch in (0.0, 1.0):
        sched.apply(opt, epoch)
        opt.zero_grad()
        (torch.tensor([1.0, -2.0], dtype=torch.float64) @ x).backward()
        opt.step()
    return x.detach()


def test_applied_momentum_is_what_torch_uses():
    g = torch.tensor([1.0, -2.0], dtype=torch.float64)
    hp = {"optimizer": "momentum", "lr": 0.1, "momentum": 0.2}
    # momentum 0.5 then 0.9 (not hp's 0.2): buffer g, then 0.9*g + g
    x = _two_sgd_steps({**hp, "momentum_start": 0.5, "momentum_end": 0.9, "momentum_epochs": 1})
    torch.testing.assert_close(x, -0.1 * g - 0.1 * 1.9 * g)
    # a schedule starting at 0 must not turn the 'momentum' rule into plain sgd; torch keeps no buffer while
    # momentum is 0, so its second step starts a fresh buffer (the notes' v would carry -lr*dx: -0.25*g)
    x = _two_sgd_steps({**hp, "momentum_start": 0.0, "momentum_end": 0.5, "momentum_epochs": 1})
    torch.testing.assert_close(x, -0.2 * g)


def test_set_momentum_and_has_momentum():
    x = torch.nn.Parameter(torch.zeros(3))
    for rule in RULES:
        assert has_momentum(rule) == (rule in {"momentum", "nesterov", "adam"})
    opt = build_optimizer([x], {"optimizer": "nesterov"})
    set_momentum(opt, 0.95)
    assert opt.param_groups[0]["momentum"] == 0.95
    for rule in ["sgd", "adagrad", "rmsprop", "lbfgs"]:
        with pytest.raises(ConfigError, match="has no momentum"):
            set_momentum(build_optimizer([x], {"optimizer": rule}), 0.9)
    with pytest.raises(ConfigError, match=r"hp\['momentum'\]=1.0"):
        set_momentum(opt, 1.0)
    assert opt.param_groups[0]["momentum"] == 0.95


@pytest.mark.parametrize("rule", ["momentum", "nesterov", "adam"])
def test_optimizer_state_survives_weights_only_checkpoint(rule):
    x = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer([x], {"optimizer": rule, "momentum": 0.0 if rule == "momentum" else 0.9})
    x.sum().backward()
    opt.step()
    fresh = build_optimizer([x], {"optimizer": rule})
    fresh.load_state_dict(_roundtrip(opt.state_dict()))
    set_momentum(fresh, 0.7)  # the rule is still known after loading, even with momentum 0
    group = fresh.param_groups[0]
    assert (group["betas"][0] if rule == "adam" else group["momentum"]) == 0.7


# ---------------------------------------------------------------------------------------------
# Bad input: every ConfigError names the field and the value, and unknown names list the valid ones.

_VALID_RULES = "adagrad, adam, lbfgs, momentum, nesterov, rmsprop, sgd"
_P = [torch.nn.Parameter(torch.zeros(2))]

BAD_OPTIMIZER = [
    ({"optimizer": "adamw"}, ["hp['optimizer']='adamw'", "unknown update rule", _VALID_RULES]),
    ({"optimizer": 3}, ["hp['optimizer']=3", _VALID_RULES]),
    ({"lr": -0.1}, ["hp['lr']=-0.1: must be a number > 0", "loguniform(1e-6, 1)"]),
    ({"lr": 0}, ["hp['lr']=0", "> 0"]),
    ({"lr": "0.1"}, ["hp['lr']='0.1'", "> 0"]),
    ({"lr": True}, ["hp['lr']=True"]),
    ({"lr": float("nan")}, ["hp['lr']=nan"]),
    ({"lr": float("inf"), "optimizer": "adam"}, ["hp['lr']=inf"]),
    ({"optimizer": "momentum", "momentum": 1.0}, ["hp['momentum']=1.0", "[0, 1)"]),
    ({"optimizer": "nesterov", "momentum": -0.1}, ["hp['momentum']=-0.1", "[0, 1)"]),
    ({"optimizer": "nesterov", "momentum": 0.0}, ["hp['momentum']=0.0", "nesterov needs momentum > 0"]),
    ({"optimizer": "rmsprop", "decay_rate": 1.0}, ["hp['decay_rate']=1.0", "[0, 1)"]),
    ({"optimizer": "adam", "beta1": 1.0}, ["hp['beta1']=1.0", "[0, 1)"]),
    ({"optimizer": "adam", "beta2": -0.5}, ["hp['beta2']=-0.5", "[0, 1)"]),
    ({"optimizer": "adam", "eps": 0}, ["hp['eps']=0", "> 0"]),
    ({"optimizer": "adagrad", "eps": -1e-8}, ["hp['eps']=-1e-08", "> 0"]),
    ({"optimizer": "rmsprop", "eps": 0.0}, ["hp['eps']=0.0"]),
    ({"optimizer": "lbfgs", "lbfgs_history": 0}, ["hp['lbfgs_history']=0", ">= 1"]),
    ({"optimizer": "lbfgs", "lbfgs_max_iter": 2.5}, ["hp['lbfgs_max_iter']=2.5", "integer"]),
]


@pytest.mark.parametrize("hp, fragments", BAD_OPTIMIZER)
def test_build_optimizer_rejects(hp, fragments):
    with pytest.raises(ConfigError) as err:
        build_optimizer(_P, hp)
    for fragment in fragments:
        assert fragment in str(err.value)


BAD_SCHEDULE = [
    ({"schedule": "cosine"}, ["hp['schedule']='cosine'", "unknown schedule", "constant, exp, inv_t, plateau, step"]),
    ({"step_every": 0}, ["hp['step_every']=0", ">= 1"]),
    ({"step_every": 2.5}, ["hp['step_every']=2.5", "integer"]),
    ({"step_every": True}, ["hp['step_every']=True"]),
    ({"step_factor": 1.0}, ["hp['step_factor']=1.0", "(0, 1)"]),
    ({"step_factor": 0}, ["hp['step_factor']=0", "(0, 1)"]),
    ({"exp_k": 0}, ["hp['exp_k']=0", "> 0"]),
    ({"exp_k": -1.0}, ["hp['exp_k']=-1.0", "> 0"]),
    ({"inv_t_k": 0.0}, ["hp['inv_t_k']=0.0", "> 0"]),
    ({"plateau_factor": 1.5}, ["hp['plateau_factor']=1.5", "(0, 1)"]),
    ({"plateau_patience": 0}, ["hp['plateau_patience']=0", ">= 1"]),
    ({"lr": -1.0}, ["hp['lr']=-1.0", "loguniform"]),
    ({"optimizer": "adamw"}, ["hp['optimizer']='adamw'", _VALID_RULES]),
    (
        {"optimizer": "momentum", "momentum_start": 0.5},
        ["hp['momentum_start']=0.5", "missing momentum_end, momentum_epochs", "all three or none"],
    ),
    ({"optimizer": "sgd", **MOM_HP}, ["momentum_start is set but optimizer 'sgd' has no momentum", "'nesterov'"]),
    ({**MOM_HP}, ["optimizer 'sgd' has no momentum"]),
    ({"optimizer": "adagrad", **MOM_HP}, ["optimizer 'adagrad' has no momentum"]),
    ({"optimizer": "adam", **MOM_HP, "momentum_start": 1.0}, ["hp['momentum_start']=1.0", "[0, 1)"]),
    ({"optimizer": "adam", **MOM_HP, "momentum_end": -0.1}, ["hp['momentum_end']=-0.1", "[0, 1)"]),
    ({"optimizer": "adam", **MOM_HP, "momentum_epochs": 0}, ["hp['momentum_epochs']=0", "> 0"]),
]


@pytest.mark.parametrize("hp, fragments", BAD_SCHEDULE)
def test_build_schedule_rejects(hp, fragments):
    with pytest.raises(ConfigError) as err:
        build_schedule(hp)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_pure_functions_and_name_queries_reject_bad_input():
    with pytest.raises(ConfigError, match="hp\\['schedule'\\]='warmup'"):
        lr_factor({"schedule": "warmup"}, 1.0)
    with pytest.raises(ConfigError, match="epoch=-1"):
        lr_factor({}, -1)
    with pytest.raises(ConfigError, match="has no momentum"):
        momentum_at(MOM_HP, 1.0)
    for query in (has_momentum, is_full_batch):
        with pytest.raises(ConfigError, match=_VALID_RULES):
            query("adamw")
    with pytest.raises(ConfigError, match="plateau_factor"):
        Plateau(2.0, 3)
    with pytest.raises(ConfigError, match="plateau_patience"):
        Plateau(0.5, 0)
    assert SCHEDULES == ("constant", "step", "exp", "inv_t", "plateau")
