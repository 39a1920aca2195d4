"""Gradient checks on real-style code: custom Functions, the model's own dtype, CS231n numpy layers, numpy kinks."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import realzoo as rz
import torch
import torch.nn.functional as F
from torch import nn

import babysit as bs
from babysit.errors import CheckFailed, ConfigError

SEEDS = range(30)

# ------------------------------------------------------------------------------ custom autograd Functions


def test_a_function_ignoring_grad_output_is_caught_through_sum_and_named() -> None:
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    rep = bs.check_function(lambda t: rz.isrlu_broken(t).sum(), x)  # the alias, as tutorials write it
    assert rep.by_tensor["x"].ok  # through .sum() the upstream gradient is all ones: the old check passed
    assert not rep.ok and not rep.functions["ISRLUIgnoresGradOutput.x"].ok
    assert rep.worst.name == "ISRLUIgnoresGradOutput.x"
    text = str(rep)
    assert "ISRLUIgnoresGradOutput.x" in text and "(Function)" in text and "grad_output" in text
    good = bs.check_function(lambda t: rz.ISRLU.apply(t).sum(), x)
    assert good.ok and good.functions["ISRLU.x"].ok


def test_functions_inside_a_model_are_checked_alone() -> None:
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self, fn: type) -> None:
            super().__init__()
            self.a, self.b, self.fn = nn.Linear(6, 5), nn.Linear(5, 3), fn

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.fn.apply(self.a(x)))

    batch = (torch.randn(4, 6), torch.randint(0, 3, (4,)))
    bad = bs.check_gradients(Net(rz.ISRLUIgnoresGradOutput), F.cross_entropy, batch)
    assert not bad.ok and not bad.functions["ISRLUIgnoresGradOutput.x"].ok
    good = bs.check_gradients(Net(rz.ISRLU), F.cross_entropy, batch)
    assert good.ok and set(good.functions) == {"ISRLU.x"}
    assert rz.ISRLU.forward is rz.ISRLU.__dict__["forward"].__func__  # the class is left as it was
    assert "forward" not in rz.ISRLUIgnoresGradOutput.__dict__


def test_check_autograd_function_checks_every_tensor_input_and_passes_the_rest() -> None:
    gen = torch.Generator().manual_seed(1)
    x, w = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
    rep = bs.check_autograd_function(rz.Scaled, x, w, 0.7)
    assert rep.ok and set(rep.by_tensor) == {"Scaled.x", "Scaled.w"}
    assert set(bs.check_autograd_function(rz.Scaled, x, w, 0.7, names=["inp", "wt"]).by_tensor) == {
        "Scaled.inp", "Scaled.wt"}
    bad = bs.check_autograd_function(rz.ISRLUIgnoresGradOutput, x)
    assert not bad.ok and bad.worst.name == "ISRLUIgnoresGradOutput.x"
    assert bs.check_autograd_function(rz.ISRLU, x).ok
    with pytest.raises(ConfigError, match="Function subclass"):
        bs.check_autograd_function(rz.ISRLU.apply, x)


# ------------------------------------------------------------------------------------ the user's dtype


def test_a_float32_only_overflow_in_a_surrogate_gradient_fails_in_the_models_dtype() -> None:
    torch.manual_seed(0)
    batch = (10 * torch.randn(4, 6), torch.randint(0, 3, (4,)))
    model = rz.Spiking(rz.SigmoidSurrogate)
    F.cross_entropy(model(batch[0]), batch[1]).backward()
    assert not torch.isfinite(model.lin.weight.grad).all()  # what the user's own training sees
    model.zero_grad(set_to_none=True)
    rep = bs.check_gradients(model, F.cross_entropy, batch)
    assert rep.functions["SigmoidSurrogate.x"].ok  # the float64 check alone passes it
    assert not rep.ok and rep.own_dtype.dtype == "float32" and "lin.weight" in rep.own_dtype.nonfinite
    assert not rep.by_tensor["lin.weight"].ok and "NaN/inf in float32" in str(rep)
    fixed = rz.Spiking(rz.StableSurrogate)
    fixed.load_state_dict(model.state_dict())
    good = bs.check_gradients(fixed, F.cross_entropy, batch)
    assert good.ok and not good.own_dtype.nonfinite


def test_a_float32_gradient_far_from_the_float64_one_is_its_own_finding() -> None:
    torch.manual_seed(0)
    batch = (torch.randn(4, 6), torch.randint(0, 3, (4,)))
    rep = bs.check_gradients(rz.Spiking(rz.SquareCancels), F.cross_entropy, batch)
    assert rep.ok and not rep.own_dtype.nonfinite  # right in float64, finite in float32: not a failure
    assert {n for n, _ in rep.own_dtype.differs} >= {"lin.weight"}
    assert all(r > 1e-2 for _, r in rep.own_dtype.differs)
    assert any("lin.weight: the float32 gradient differs" in a for a in rep.advice)
    plain = bs.check_gradients(rz.Spiking(rz.StableSurrogate), F.cross_entropy, batch)
    assert plain.own_dtype.differs == ()


def test_a_float64_copy_dtype_clash_is_explained_and_checked_in_float32() -> None:
    torch.manual_seed(0)
    batch = (torch.randn(4, 6), torch.randint(0, 3, (4,)))
    with pytest.raises(RuntimeError, match="dtype"):
        rz.Binarised().double()(batch[0].double())  # what the float64 copy runs into
    rep = bs.check_gradients(rz.Binarised(), F.cross_entropy, batch)
    assert rep.ok, str(rep)
    assert rep.own_dtype.fallback and rep.tol >= 1e-2 and rep.h >= 1e-2
    text = str(rep)
    assert "checked in float32" in text and ".to(x.dtype)" in text and "float64 copy" in text
    broken = rz.Binarised(__import__("bugzoo").FnLinear(6, 8, __import__("bugzoo").SignBugFn))
    bad = bs.check_gradients(broken, F.cross_entropy, batch)
    assert not bad.ok and bad.worst.name in {"lin.bias", "SignBugFn.b"} and bad.own_dtype.fallback


def test_a_model_without_parameters_has_its_inputs_checked() -> None:
    x, y = torch.randn(4, 5, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 1, 2, 3])
    rep = bs.check_gradients(nn.Sequential(nn.Tanh(), nn.Softplus()), F.cross_entropy, (x, y))
    assert rep.ok and list(rep.by_tensor) == ["input"]
    bad = bs.check_gradients(__import__("bugzoo").Act(__import__("bugzoo").TanhOneMinusX), F.cross_entropy, (x, y))
    assert not bad.ok and bad.worst.name == "input"


def test_a_network_returning_its_own_loss_is_checked_with_loss_fn_none() -> None:
    torch.manual_seed(3)
    batch = (torch.randn(4, 6), torch.randint(0, 3, (4,)))
    rep = bs.check_gradients(rz.TwoLayerNet(), None, batch)
    assert rep.ok and set(rep.by_tensor) == {"w1", "w2"}
    bad = bs.check_gradients(rz.TwoLayerNet(act=rz.isrlu_broken), None, batch)
    assert not bad.ok and not bad.functions["ISRLUIgnoresGradOutput.x"].ok


# ----------------------------------------------------------------------- CS231n layers, losses, kinks


@pytest.mark.parametrize("name", rz.LAYERS)
def test_correct_numpy_layers_pass_on_30_seeds_including_their_kinks(name: str) -> None:
    for seed in SEEDS:
        case = rz.layer_case(name, seed, kink=seed % 2 == 1)
        rep = bs.check_layer(case["forward"], case["backward"], case["inputs"], params=case["params"], seed=seed)
        assert rep.ok, f"{name} seed {seed}:\n{rep}"
        if name in ("relu", "maxpool") and seed % 2:
            assert any(e.kink_suspected for e in rep.entries), f"{name} seed {seed}: no kink seen\n{rep}"


@pytest.mark.parametrize("name", rz.LAYERS)
def test_broken_numpy_layers_fail_naming_the_gradient(name: str) -> None:
    for seed in range(3):
        case = rz.layer_case(name, seed, kink=True)
        rep = bs.check_layer(case["forward"], case["broken"], case["inputs"], params=case["params"], seed=seed)
        failing = {n for n, s in rep.by_tensor.items() if not s.ok}
        assert not rep.ok and rep.worst.name == case["breaks"] and failing == {case["breaks"]}, str(rep)
        assert "kinks inside numpy" not in str(rep)


def test_check_layer_names_gradients_from_the_signature_and_passes_params_through() -> None:
    case = rz.layer_case("batchnorm", 0)
    rep = bs.check_layer(case["forward"], case["backward"], case["inputs"], params=case["params"])
    assert list(rep.by_tensor) == ["x", "gamma", "beta"]
    conv = rz.layer_case("conv", 0)
    mine = bs.check_layer(conv["forward"], conv["backward"], conv["inputs"], params=conv["params"],
                          names=["img", "kernel", "bias"], dout=np.ones((2, 2, 3, 3)))
    assert mine.ok and list(mine.by_tensor) == ["img", "kernel", "bias"]


def test_a_keepdims_bias_gradient_is_refused_with_both_shapes() -> None:
    case = rz.layer_case("affine", 0)
    with pytest.raises(ConfigError, match=r"gradient of b has shape \(1, 5\) but its input has shape \(5,\)"):
        bs.check_layer(rz.affine_forward, rz.keepdims_affine_backward, case["inputs"])
    with pytest.raises(ConfigError, match="returned 2 gradient"):
        bs.check_layer(rz.affine_forward, lambda d, c: rz.affine_backward(d, c)[:2], case["inputs"])


@pytest.mark.parametrize("name", ["svm", "softmax"])
def test_losses_pass_on_30_seeds_on_their_hinge_and_broken_ones_fail(name: str) -> None:
    for seed in SEEDS:
        loss, broken, x, y = rz.loss_case(name, seed, kink=name == "svm" and seed % 2 == 1)
        rep = bs.check_loss(loss, x, y)
        assert rep.ok, f"{name} seed {seed}:\n{rep}"
        if name == "svm" and seed % 2:
            assert any(e.kink_suspected for e in rep.entries) and "kink suspected" in str(rep)
        bad = bs.check_loss(broken, x, y)
        assert not bad.ok and bad.worst.name == "x" and not bad.worst.excused


def test_one_sided_differences_tell_a_hinge_from_a_bug() -> None:
    loss, _, x, y = rz.loss_case("svm", 1, kink=True)
    rep = bs.check_loss(loss, x, y)
    hinge = [e for e in rep.entries if e.kink_suspected]
    assert hinge and all(not e.passed for e in hinge)  # the centered difference alone would have failed
    case = rz.layer_case("maxpool", 0)
    bad = bs.check_layer(case["forward"], case["broken"], case["inputs"], params=case["params"])
    assert not bad.ok and not any(e.kink_suspected for e in bad.entries if e.name == "x" and not e.passed)


def test_batchnorm_at_input_scale_0_01_has_no_false_alarm() -> None:
    for seed in SEEDS:
        case = rz.layer_case("batchnorm", seed)
        rep = bs.check_layer(case["forward"], case["backward"], case["inputs"], params=case["params"], seed=seed)
        assert rep.ok, f"seed {seed}:\n{rep}"
        assert rep.entries[0].step < 1e-6  # the step follows the scale of x, not a fixed 1e-5


def test_check_function_takes_several_arrays_and_a_tuple_gradient() -> None:
    rng = np.random.default_rng(0)
    a, w = rng.normal(size=(3, 4)), rng.normal(size=4)
    f = lambda x, w: np.sum(np.tanh(x @ w))
    grad = lambda x, w: (np.outer(1 - np.tanh(x @ w) ** 2, w), x.T @ (1 - np.tanh(x @ w) ** 2))
    rep = bs.check_function(f, a, w, grad=grad)
    assert rep.ok and list(rep.by_tensor) == ["x", "w"]
    bad = bs.check_function(f, a, w, grad=lambda x, w: (grad(x, w)[0], 2 * grad(x, w)[1]), names=["inp", "wt"])
    assert not bad.ok and bad.worst.name == "wt" and bad.by_tensor["inp"].ok
    assert bs.check_function(lambda x, w: (x @ w).tanh().sum(), torch.tensor(a), torch.tensor(w)).ok


# ------------------------------------------------------------------------------------- report and advice


def test_the_table_says_kinks_only_where_they_were_and_shows_the_deciding_floor() -> None:
    rep = bs.check_function(lambda a: 1e3 + 1e-6 * np.sum(a ** 2), np.linspace(-1, 1, 6),
                            grad=lambda a: 2e-6 * a)
    assert rep.ok and rep.by_tensor["x"].floor > 0
    assert f"within round-off floor {rep.by_tensor['x'].floor:.1e}" in str(rep)
    torch.manual_seed(0)
    smooth = bs.check_gradients(nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)), F.cross_entropy,
                                (torch.randn(4, 6), torch.randint(0, 3, (4,))))
    assert "with kinks" not in str(smooth) and all(s.verdict != "acceptable with kinks"
                                                    for s in smooth.by_tensor.values())


def test_ratios_close_to_one_are_called_truncation_not_a_constant_factor() -> None:
    x = np.linspace(0.5, 1.5, 5)
    rep = bs.check_function(lambda a: np.sum(a ** 3), x, grad=lambda a: 1.002 * 3 * a ** 2)
    assert not rep.ok
    assert any("truncation or round-off" in a and "h='sweep'" in a for a in rep.advice)
    assert not any("constant factor" in a for a in rep.advice)


def test_assert_gradients_hides_babysits_frames_from_pytest() -> None:
    import bugzoo

    case = bugzoo.bug("wrong_sign")
    with pytest.raises(CheckFailed) as err:
        bs.assert_gradients(case.model, case.loss_fn, case.batch)
    shown = err.traceback.filter(err)
    assert shown and not any("babysit" in str(entry.path) for entry in shown)
    assert any("babysit" in str(entry.path) for entry in err.traceback)


def test_a_process_that_loaded_dynamo_gets_the_dynamo_safe_recorder() -> None:
    import torch._dynamo  # noqa: F401  (a user of torch.compile has it loaded)

    from babysit.gradcheck.kinks import KinkRecorder, new_recorder

    rec = new_recorder()
    assert type(rec) is not KinkRecorder and type(rec)._should_skip_dynamo()
    assert not KinkRecorder._should_skip_dynamo()
    case = __import__("bugzoo").bug("wrong_sign")
    rep = bs.check_gradients(case.model, case.loss_fn, case.batch)
    assert not rep.ok and rep.worst.name == "0.bias" and "relu.default" in rep.kink_ops  # it records all the same


def test_the_first_check_in_a_process_imports_neither_sympy_nor_dynamo() -> None:
    code = ("import sys, time, torch; torch.set_num_threads(1); import babysit as bs; from torch import nn; "
            "import torch.nn.functional as F; import bugzoo; "
            "m = nn.Sequential(bugzoo.FnLinear(6, 8), nn.ReLU(), nn.Linear(8, 3)); "  # a custom Function too
            "t = time.perf_counter(); bs.check_gradients(m, F.cross_entropy, (torch.randn(4, 6), "
            "torch.tensor([0, 1, 2, 0]))); print(time.perf_counter() - t, 'sympy' in sys.modules, "
            "'torch._dynamo' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=env).stdout.split()
    assert out[1:] == ["False", "False"] and float(out[0]) < 0.5
