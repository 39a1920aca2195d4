"""Tests of babysit.gradcheck: the bug zoo must fail and be localised, correct kinked models must pass."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import statistics
import time

import bugzoo
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from babysit.errors import CheckFailed, ConfigError
from babysit.gradcheck import (
    KINK_OPS,
    SWEEP_STEPS,
    GradientReport,
    KinkRecorder,
    assert_gradients,
    check_function,
    check_gradients,
    verdict,
)
from babysit.gradcheck.kinks import same_branches
from babysit.gradcheck.probe import judge
from babysit.gradcheck.sampling import stratified_coordinates

# ------------------------------------------------------------------------------------------ bug zoo


def test_the_zoo_is_big_enough() -> None:
    assert len(bugzoo.BUG_NAMES) >= 15
    assert len(set(bugzoo.BUG_NAMES)) == len(bugzoo.BUG_NAMES)


@pytest.mark.parametrize("name", bugzoo.BUG_NAMES)
def test_every_bug_fails_and_the_report_names_the_broken_tensor(name: str) -> None:
    for seed in range(3):
        case = bugzoo.bug(name, seed)
        rep = check_gradients(case.model, case.loss_fn, case.batch, seed=seed, **case.kwargs)
        failing = {n for n, s in rep.by_tensor.items() if not s.ok}
        assert not rep.ok, f"{name} seed {seed} passed:\n{rep}"
        assert rep.worst is not None and rep.worst.name in case.broken, f"{name}: blamed {rep.worst}"
        assert not rep.worst.passed and not rep.worst.kink_crossed
        assert failing and failing <= case.broken, f"{name}: failing {failing}, broken {case.broken}"
        assert rep.by_tensor[rep.worst.name].verdict == "wrong"
        assert rep.worst.name in str(rep)


def test_a_zeroed_column_is_caught_by_directions_and_bisected_to_its_index() -> None:
    column = bugzoo.ZeroColumnBugFn.column
    for seed in range(3):
        case = bugzoo.bug("zeroed_column_large_layer", seed)
        coords_only = check_gradients(case.model, case.loss_fn, case.batch, seed=seed, directions=0)
        assert coords_only.ok  # 10 stratified coordinates of 200x300 miss column 137: the reason for directions
        rep = check_gradients(case.model, case.loss_fn, case.batch, seed=seed)
        assert not rep.ok
        assert any(e.kind == "direction" and not e.passed for e in rep.entries)
        assert rep.worst.kind == "coordinate" and rep.worst.index[1] == column
        assert rep.worst.analytic == 0.0 and rep.worst.numeric != 0.0


def test_a_stateful_backward_fails_the_double_backward_comparison() -> None:
    case = bugzoo.bug("stale_buffer")
    rep = check_gradients(case.model, case.loss_fn, case.batch)
    assert set(rep.backward_mismatch) == {"0.weight", "StaleBufferFn.w"}  # the model, and the Function alone
    assert not rep.by_tensor["0.weight"].ok and rep.by_tensor["0.bias"].ok
    assert any("two identical backward passes" in a and "0.weight" in a for a in rep.advice)


def test_dropout_backward_is_checked_only_when_seeded() -> None:
    case = bugzoo.bug("dropout_forgets_mask")
    assert check_gradients(case.model, case.loss_fn, case.batch).ok  # eval mode: the layer is the identity
    assert not check_gradients(case.model, case.loss_fn, case.batch, stochastic="seeded").ok


def test_correct_dropout_passes_seeded_and_eval_mode_says_so() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.5), nn.Tanh(), nn.Linear(16, 3))
    x, y = torch.randn(4, 6), torch.randint(0, 3, (4,))
    assert check_gradients(model, F.cross_entropy, (x, y), stochastic="seeded").ok
    rep = check_gradients(model, F.cross_entropy, (x, y))
    assert rep.ok and any("seeded" in a for a in rep.advice)


def test_localised_entries_name_tensor_index_and_relative_error() -> None:
    case = bugzoo.bug("last_row_zeroed")
    rep = check_gradients(case.model, case.loss_fn, case.batch)
    assert rep.worst.name == "0.weight" and rep.worst.index[0] == 4  # the last of 5 rows
    text = str(rep)
    assert len(text) < 1000
    assert "0.weight[4, " in text and f"{rep.worst.rel_error:.2e}" in text


# ----------------------------------------------------------------------------- correct models, kinks

EXPECTED_OPS = {
    "relu_mlp": {"relu.default"},
    "leaky_relu_mlp": {"leaky_relu.default"},
    "svm_linear": {"clamp.default"},
    "maxpool_convnet": {"relu.default", "max_pool2d_with_indices.default"},
    "clamp_abs_where": {"where.self", "abs.default", "clamp.default", "gt.Scalar"},
}


@pytest.mark.parametrize("name", bugzoo.CORRECT_NAMES)
def test_correct_kinked_models_pass_on_20_seeds(name: str) -> None:
    for seed in range(20):
        case = bugzoo.correct(name, seed)
        rep = check_gradients(case.model, case.loss_fn, case.batch, seed=seed)
        assert rep.ok, f"false failure on {name} seed {seed}:\n{rep}"
        assert EXPECTED_OPS[name] <= set(rep.kink_ops), rep.kink_ops


@pytest.mark.parametrize("name", bugzoo.CORRECT_NAMES)
def test_a_unit_sitting_on_a_kink_is_detected_and_excused(name: str) -> None:
    would_fail = 0
    for seed in range(5):
        case = bugzoo.correct(name, seed)
        bugzoo.place_kink(case, 0.0)
        rep = check_gradients(case.model, case.loss_fn, case.batch, seed=seed)
        assert rep.ok, f"{name} seed {seed}:\n{rep}"
        # every crossing is seen; a crossing whose difference still passes is kept, not excused
        assert rep.crossings > 0
        assert all(e.name in {n for n, _ in case.model.named_parameters()} for e in rep.excused)
        assert sum(s.kinks_crossed for s in rep.by_tensor.values()) == len(rep.excused)
        would_fail += sum(not e.passed for e in rep.excused)
    assert would_fail > 0  # without the detector these entries would have been false failures


@pytest.mark.parametrize("name", ["relu_mlp", "svm_linear"])
def test_a_kink_within_h_is_resolved_at_h_over_10_not_excused(name: str) -> None:
    case = bugzoo.correct(name, 0)
    bugzoo.place_kink(case, 0.0)
    b = bugzoo.first_bias(case.model).detach()
    j = 0 if name != "svm_linear" else (1 if int(case.batch[1][0]) == 0 else 0)
    step = 1e-5 * max(abs(float(b[j])), float(b.pow(2).mean().sqrt()))  # the relative step of that bias
    bugzoo.place_kink(case, 0.3 * step)  # crossed by h = 1e-5, not by h/10
    rep = check_gradients(case.model, case.loss_fn, case.batch)
    assert rep.ok and rep.crossings > 0
    assert any(e.h == pytest.approx(1e-6) and not e.kink_crossed for e in rep.entries)


def test_a_genuine_bug_at_a_kink_is_not_excused() -> None:
    case = bugzoo.bug("wrong_sign")
    bugzoo.place_kink(case, 0.0)
    rep = check_gradients(case.model, case.loss_fn, case.batch)
    assert rep.crossings > 0
    assert not rep.ok and rep.worst.name == "0.bias" and not rep.worst.kink_crossed


def test_the_recorder_sees_modules_functions_masks_and_in_place_ops() -> None:
    x = torch.tensor([[-1.3, 0.5, 2.0, -0.2]], dtype=torch.float64)
    forms = [lambda t: nn.ReLU()(t), lambda t: F.relu(t), lambda t: t * (t > 0), lambda t: t.clone().relu_(),
             lambda t: torch.maximum(t, torch.zeros_like(t)), lambda t: t.clamp(min=0),
             lambda t: torch.where(t > 0, t, 0 * t), lambda t: F.hardtanh(t), lambda t: t.abs(),
             lambda t: F.max_pool1d(t[None], 2), lambda t: t.max(1).values, lambda t: t.sort(1).values,
             lambda t: F.multi_margin_loss(t, torch.tensor([1]))]
    flip = x.clone()
    flip[0, 2] = -3.0  # every form changes a winner here
    recorder = KinkRecorder()
    for form in forms:
        with recorder:
            _, plus = recorder.record(lambda f=form: f(x + 1e-3))
            _, same = recorder.record(lambda f=form: f(x - 1e-3))
            _, flipped = recorder.record(lambda f=form: f(flip))
        assert plus, f"nothing recorded for form {forms.index(form)}"
        assert same_branches(plus, same) and not same_branches(plus, flipped)
    assert {"relu.default", "clamp_min.default", "max_pool2d_with_indices.default"} <= KINK_OPS


# ------------------------------------------------------------------------------------ check_function


def test_check_function_numpy_with_and_without_a_correct_gradient() -> None:
    x = np.random.default_rng(0).normal(size=(4, 5))
    rep = check_function(lambda a: np.sum(a ** 3 + np.tanh(a)), x, grad=lambda a: 3 * a ** 2 + 1 - np.tanh(a) ** 2)
    assert rep.ok and rep.by_tensor["x"].checked == 20 and rep.by_tensor["x"].verdict == "good"
    assert check_function(lambda a: (a ** 3).sum(), x).ok  # grad=None: autograd through torch ops
    with pytest.raises(ConfigError, match="grad"):
        check_function(lambda a: float(np.sum(np.asarray(a) ** 3)), x)  # numpy-only f needs grad=
    x_before = x.copy()
    check_function(lambda a: np.sum(a ** 2), x, grad=lambda a: 2 * a)
    assert np.array_equal(x, x_before)


def test_check_function_names_the_index_of_a_wrong_gradient() -> None:
    x = np.random.default_rng(1).normal(size=(4, 5))

    def grad(a: np.ndarray) -> np.ndarray:
        g = 2 * a
        g[2, 3] += 0.5
        return g

    rep = check_function(lambda a: np.sum(a ** 2), x, grad=grad)
    assert not rep.ok and rep.worst.index == (2, 3)
    assert [e.index for e in rep.entries if not e.passed] == [(2, 3)]
    assert "x[2, 3]" in str(rep)


def test_check_function_samples_large_arrays_and_uses_centered_differences() -> None:
    big = np.random.default_rng(2).normal(size=3000)
    rep = check_function(lambda a: np.sum(a ** 2), big, grad=lambda a: 2 * a)
    assert rep.ok and rep.by_tensor["x"].checked == 100 + 3
    cube = check_function(lambda a: a[0] ** 3, np.array([1.0]), grad=lambda a: 3 * a ** 2, h=1e-3)
    # centered: 3 + h^2 = 3.000001; one-sided would give 3 + 3h = 3.003
    assert cube.entries[0].numeric == pytest.approx(3.000001, abs=1e-9)


# ------------------------------------------------------------------------ options and the criterion


def _mlp_case(seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    return model, (torch.randn(4, 6), torch.randint(0, 3, (4,)))


def test_the_pass_criterion_has_a_round_off_floor_and_both_zero_passes() -> None:
    assert judge(0.0, 0.0, 1.0, 1e-5, 1e-5) == (0.0, True, False)
    rel, passed, tiny = judge(1e-9, 1.0001e-9, 2.3, 1e-5, 1e-5)  # rounding noise on a tiny true gradient
    assert passed and rel == pytest.approx(1e-4, rel=1e-3) and not tiny
    assert not judge(1e-3, 1.01e-3, 2.3, 1e-5, 1e-5)[1]
    assert judge(1.0, 1.0 + 5e-6, 2.3, 1e-5, 1e-5)[1] and not judge(1.0, 1.0 + 5e-5, 2.3, 1e-5, 1e-5)[1]
    assert [verdict(r) for r in (0.5, 1e-3, 1e-5, 1e-9)] == ["wrong", "uncomfortable", "acceptable with kinks",
                                                           "good"]


def test_tiny_gradients_are_flagged_with_the_advice_to_scale_the_loss() -> None:
    model, batch = _mlp_case()
    rep = check_gradients(model, lambda o, t: 1e-12 * F.cross_entropy(o, t), batch)
    assert rep.ok and sum(e.tiny for e in rep.entries) > 0.8 * len(rep.entries)
    assert any("scale the loss" in a for a in rep.advice)
    assert all(s.verdict == "tiny" for s in rep.by_tensor.values())


def test_h_sweep_reports_the_best_step() -> None:
    model, batch = _mlp_case()
    rep = check_gradients(model, F.cross_entropy, batch, h="sweep")
    assert [h for h, _ in rep.sweep] == list(SWEEP_STEPS)
    assert rep.h == min(rep.sweep, key=lambda r: r[1])[0] and rep.ok
    assert "best of sweep" in str(rep)
    assert rep.sweep[-1][1] > rep.sweep[2][1]  # 1e-8 loses precision against 1e-5


def test_check_inputs_reports_d_loss_d_x_as_input() -> None:
    class InputGradBug(bugzoo.LinearFn):
        @staticmethod
        def backward(ctx, g):  # grad_x = g W^T instead of g W: shapes agree on a square layer
            x, w = ctx.saved_tensors
            return g @ w.t(), g.t() @ x, g.sum(0)

    torch.manual_seed(0)
    model = nn.Sequential(bugzoo.FnLinear(6, 6, InputGradBug), nn.Tanh(), nn.Linear(6, 3))
    batch = (torch.randn(4, 6), torch.randint(0, 3, (4,)))
    assert check_gradients(model, F.cross_entropy, batch).ok
    rep = check_gradients(model, F.cross_entropy, batch, check_inputs=True)
    assert not rep.ok and rep.worst.name == "input" and set(rep.by_tensor) > {"input"}
    good, _ = _mlp_case()
    assert check_gradients(good, F.cross_entropy, batch, check_inputs=True).by_tensor["input"].ok


def test_penalty_checks_the_l2_term_alone() -> None:
    model, batch = _mlp_case()

    def l2(m: nn.Module) -> torch.Tensor:
        return 0.5 * 0.1 * sum((p ** 2).sum() for p in m.parameters() if p.ndim >= 2)

    rep = check_gradients(model, lambda o, t: o.sum() * 0, batch, penalty=l2)
    assert rep.ok and rep.by_tensor["0.weight"].verdict == "good"


def test_burn_in_moves_the_check_point_down_the_loss() -> None:
    model, batch = _mlp_case()
    before = check_gradients(model, F.cross_entropy, batch)
    after = check_gradients(model, F.cross_entropy, batch, burn_in=10)
    assert after.ok and after.loss < before.loss


def test_the_callers_model_is_untouched() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))
    x, y = torch.randn(4, 6), torch.randint(0, 3, (4,))
    F.cross_entropy(model(x), y).backward()
    state = copy.deepcopy(model.state_dict())
    grads = [p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    for kw in ({}, {"stochastic": "seeded", "burn_in": 3, "check_inputs": True}):
        check_gradients(model, F.cross_entropy, (x, y), **kw)
        assert model.training and all(p.dtype == torch.float32 for p in model.parameters())
        assert all(torch.equal(a, b) for a, b in zip(state.values(), model.state_dict().values()))
        assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
        assert torch.equal(rng, torch.get_rng_state())
        assert x.dtype == torch.float32 and not x.requires_grad


BAD_OPTIONS = [
    ({"per_tensor": 0}, "per_tensor=0"), ({"h": 0.0}, "h=0.0"), ({"h": -1e-5}, "h=-1e-05"),
    ({"h": "big"}, "h='big'"), ({"tol": 0}, "tol=0"), ({"burn_in": -1}, "burn_in=-1"),
    ({"stochastic": "sometimes"}, "stochastic='sometimes'"), ({"stochastic": "train"}, "stochastic='train'"),
    ({"directions": -2}, "directions=-2"),
]


@pytest.mark.parametrize("kw,needle", BAD_OPTIONS)
def test_invalid_options_raise_config_error_naming_argument_and_value(kw: dict, needle: str) -> None:
    model, batch = _mlp_case()
    with pytest.raises(ConfigError) as err:
        check_gradients(model, F.cross_entropy, batch, **kw)
    assert needle in str(err.value)
    if kw.get("stochastic") == "sometimes":
        assert "'eval'" in str(err.value) and "'seeded'" in str(err.value)


def test_invalid_batch_model_and_loss_raise_config_error() -> None:
    model, (x, y) = _mlp_case()
    for batch in [(x,), (x, y, y), x, [x, y, 1]]:
        with pytest.raises(ConfigError, match="batch="):
            check_gradients(model, F.cross_entropy, batch)
    frozen = copy.deepcopy(model).requires_grad_(False)
    with pytest.raises(ConfigError, match="model.*requires_grad"):
        check_gradients(frozen, F.cross_entropy, (x, y))
    with pytest.raises(ConfigError, match=r"loss_fn returned a tensor of shape \(4,\)"):
        check_gradients(model, lambda o, t: F.cross_entropy(o, t, reduction="none"), (x, y))
    with pytest.raises(ConfigError, match="per_tensor=0"):
        check_function(lambda a: np.sum(a), np.ones(3), grad=np.ones_like, per_tensor=0)


def test_failure_report_is_short_and_assert_gradients_raises_it() -> None:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(15):
        layers += [bugzoo.FnLinear(6, 6, bugzoo.SignBugFn), nn.Tanh()]
    deep = nn.Sequential(*layers, nn.Linear(6, 3))
    batch = (torch.randn(4, 6), torch.randint(0, 3, (4,)))
    rep = check_gradients(deep, F.cross_entropy, batch)
    text = str(rep)
    assert not rep.ok and len(text.encode()) < 1000
    assert rep.worst.where in text and f"{rep.worst.rel_error:.2e}" in text
    with pytest.raises(CheckFailed) as err:
        assert_gradients(deep, F.cross_entropy, batch)
    message = str(err.value)
    assert isinstance(err.value, AssertionError) and len(message) < 1000
    assert rep.worst.where in message and f"{rep.worst.rel_error:.2e}" in message
    model, batch = _mlp_case()
    assert assert_gradients(model, F.cross_entropy, batch) is None


def test_report_is_json_ready_and_readable() -> None:
    case = bugzoo.bug("wrong_sign")
    rep = check_gradients(case.model, case.loss_fn, case.batch)
    data = json.loads(json.dumps(rep.to_dict()))
    assert data["ok"] is False and data["worst"]["name"] == "0.bias" and len(data["entries"]) == len(rep.entries)
    assert set(data["by_tensor"]["0.bias"]) >= {"ok", "checked", "max_rel_error", "kinks_crossed", "verdict"}
    assert isinstance(rep, GradientReport) and "verdict" in str(rep) and "0.bias" in str(rep)
    for record in (rep, rep.worst, rep.by_tensor["0.bias"]):
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.ok = True  # type: ignore[misc]


def test_every_tensor_is_sampled_at_both_edges_of_every_axis() -> None:
    rng = np.random.default_rng(0)
    coords = stratified_coordinates((300, 200, 3), 10, rng)
    assert len(coords) == len(set(coords)) >= 10
    for axis, size in enumerate((300, 200, 3)):
        assert {0, size - 1} <= {c[axis] for c in coords}
    assert sorted(stratified_coordinates((2, 3), 10, rng)) == [(i, j) for i in range(2) for j in range(3)]
    model, batch = _mlp_case()
    rep = check_gradients(model, F.cross_entropy, batch, per_tensor=4)
    assert all(s.checked >= min(4, p.numel()) for (n, s), p in zip(rep.by_tensor.items(), model.parameters()))


# ---------------------------------------------------------------------------------------------- speed


def _median_time(model: nn.Module, batch: tuple, runs: int) -> float:
    check_gradients(model, F.cross_entropy, batch)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        check_gradients(model, F.cross_entropy, batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@pytest.mark.parametrize("sizes,target", [((40, 64, 32, 10), 0.1), ((784, 300, 200, 10), 1.0)])
def test_speed_with_the_defaults(sizes: tuple[int, ...], target: float) -> None:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    assert math.isclose(sum(p.numel() for p in model.parameters()), 5_000 if sizes[0] == 40 else 300_000,
                        rel_tol=0.05)
    batch = (torch.randn(4, sizes[0]), torch.randint(0, 10, (4,)))
    assert _median_time(model, batch, 5) < 3 * target  # generous margin for a shared machine; bench has the real


def _saturated_case() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """A ReLU MLP whose last layer is x1e4 (scores ~1e3: a saturated softmax), on a batch of 4."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    with torch.no_grad():
        model[2].weight.mul_(1e4)
    return model, (torch.randn(4, 6), torch.randint(0, 3, (4,)))


def test_a_batch_fitted_with_saturated_scores_is_not_verified_rather_than_wrong() -> None:
    model, (x, _) = _saturated_case()
    y = model(x).argmax(1)  # every example right by a margin of ~1e3: the float64 loss is exactly 0
    rep = check_gradients(model, F.cross_entropy, (x, y))
    assert rep.loss == 0.0 and rep.ok
    assert all(s.verdict == "tiny" for s in rep.by_tensor.values())
    assert "not verified" in str(rep).splitlines()[0] and any("saturated" in a for a in rep.advice)


def test_the_burn_in_stops_short_of_fitting_the_batch_so_the_check_still_resolves() -> None:
    model, batch = _saturated_case()
    start = check_gradients(model, F.cross_entropy, batch).loss
    rep = check_gradients(model, F.cross_entropy, batch, burn_in=10)
    assert rep.ok and 0.25 * start <= rep.loss < start  # before the guard: 10 steps took it to 0
    assert any(s.verdict != "tiny" for s in rep.by_tensor.values())


def test_a_wrong_gradient_still_fails_after_the_guarded_burn_in() -> None:
    model, batch = _saturated_case()

    class Halved(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):  # type: ignore[override]
            return t.clone()

        @staticmethod
        def backward(ctx, g):  # type: ignore[override]
            return 0.5 * g

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = model

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.body[2](Halved.apply(self.body[1](self.body[0](t))))

    rep = check_gradients(Net(), F.cross_entropy, batch, burn_in=10)
    assert not rep.ok and not rep.by_tensor["body.0.weight"].ok


def test_a_plain_linear_coordinate_moves_one_output_column_instead_of_a_matmul(monkeypatch) -> None:
    from babysit.gradcheck.objective import Suffix

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))
    batch = (torch.randn(5, 6), torch.randint(0, 3, (5,)))
    calls = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: calls.append(m))
    try:
        fast = check_gradients(model, F.cross_entropy, batch, directions=0)
        shortcut_calls = len(calls)
        calls.clear()
        monkeypatch.setattr(Suffix, "at", lambda self, index, step: None)
        slow = check_gradients(model, F.cross_entropy, batch, directions=0)
    finally:
        handle.remove()
    assert fast.ok and slow.ok and shortcut_calls < 0.8 * len(calls)  # the perturbed Linear is not rerun
    for a, b in zip(fast.entries, slow.entries):
        assert (a.name, a.index) == (b.name, b.index)
        assert a.numeric == pytest.approx(b.numeric, rel=1e-7, abs=1e-12)


def test_the_shortcut_still_measures_the_true_function_below_a_broken_layer() -> None:
    class LeakyTwice(torch.autograd.Function):  # forward leaky relu, backward twice the slope on the negative side
        @staticmethod
        def forward(ctx, t):  # type: ignore[override]
            ctx.save_for_backward(t)
            return torch.where(t > 0, t, 0.1 * t)

        @staticmethod
        def backward(ctx, g):  # type: ignore[override]
            (t,) = ctx.saved_tensors
            return torch.where(t > 0, g, 0.2 * g)

    class Leaky(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return LeakyTwice.apply(t)

    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(6, 16), Leaky(), nn.Linear(16, 3))
    rep = check_gradients(model, F.cross_entropy, (torch.randn(5, 6), torch.randint(0, 3, (5,))))
    assert not rep.ok and not rep.by_tensor["0.weight"].ok and not rep.by_tensor["0.bias"].ok
    assert rep.by_tensor["2.weight"].ok  # nothing below the broken layer
