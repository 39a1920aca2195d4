"""Sanity checks: healthy set-ups pass all six; each realistic bug is caught by the right check, with the right advice."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import babysit as bs
from babysit.errors import CheckFailed, ConfigError
from babysit.sanity import (
    SANITY_CHECKS,
    Check,
    SanityReport,
    assert_sanity,
    sanity_checks,
)

HP = {"width": 128, "depth": 2}


# --------------------------------------------------------------------------------------------- set-ups


@pytest.fixture(scope="module")
def mnist():
    return bs.data.load("mnist1d")


@pytest.fixture(scope="module")
def digits():
    return bs.data.load("digits")


def _xy(splits):
    """All labelled examples of train + val, to rebuild a (sick) data set with from_tensors."""
    (x1, y1), (x2, y2) = bs.data.tensors(splits.train), bs.data.tensors(splits.val)
    return torch.cat([x1, x2]), torch.cat([y1, y2])


def torch_mlp(d_in: int, last_scale: float = 1.0) -> nn.Sequential:
    """A user's own MLP with PyTorch's default init (no small last layer), last weights times last_scale."""
    model = nn.Sequential(nn.Linear(d_in, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    with torch.no_grad():
        model[-1].weight.mul_(last_scale)
    return model


class SwapAxes(nn.Module):
    """The bug: back from a (features, batch) layout with reshape instead of a transpose; rows mix examples."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.t().reshape(h.shape)


class BatchMean(nn.Module):
    """The bug: a mean over the batch added to every example (dim 0 where dim 1 was meant)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(40, 64), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.fc2(h - h.mean(0))


class Detached(nn.Module):
    """The bug: the second layer reads h.detach(), so fc1 learns from nothing but the regulariser."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(40, 64), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)).detach())


class ScaleShift(nn.Module):
    """A model with no weight matrix at all: per-class scale and shift of the first 10 features."""

    def __init__(self) -> None:
        super().__init__()
        self.scale, self.shift = nn.Parameter(torch.ones(10)), nn.Parameter(torch.zeros(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :10] * self.scale + self.shift


def by_name(report: SanityReport) -> dict[str, Check]:
    return {c.name: c for c in report.checks}


# --------------------------------------------------------------------------------------------- healthy


@pytest.fixture(scope="module")
def mnist_report(mnist):
    return sanity_checks(bs.Task(build="mlp", data=mnist), HP)


def test_healthy_mnist1d_mlp_passes_all_six(mnist_report):
    r = mnist_report
    assert r.ok and not r.failed, str(r)
    assert [c.name for c in r.checks] == list(SANITY_CHECKS) == [
        "chance_loss", "reg_raises_loss", "overfit_tiny", "learnable_signal", "batch_independence",
        "params_get_gradient"]
    assert all(c.status == "passed" and c.passed and c.advice == "" for c in r.checks)
    assert all(c.seconds > 0 for c in r.checks) and r.seconds == pytest.approx(sum(c.seconds for c in r.checks))
    chance = r["chance_loss"].values
    assert chance["chance"] == pytest.approx(math.log(10))
    assert chance["loss_init"] == pytest.approx(math.log(10), rel=0.25)
    assert chance["loss_scaled_down"] == pytest.approx(math.log(10), rel=0.05)
    reg = r["reg_raises_loss"].values
    assert reg["rise"] >= 0.1 * reg["data_loss"] * 0.9 and reg["rise"] == pytest.approx(reg["expected_rise"], rel=1e-3)
    assert r["overfit_tiny"].values["final_loss"] < 0.01 * r["overfit_tiny"].values["start_loss"]
    sig = r["learnable_signal"].values
    assert sig["accuracy"] > sig["chance"] + 0.05 and sig["accuracy"] > sig["baseline"] + 0.05


def test_report_reads_as_a_table_and_serialises(mnist_report):
    text = str(mnist_report)
    assert text.splitlines()[0].startswith("sanity checks passed (6 passed, 0 failed, 0 skipped)")
    for c in mnist_report.checks:
        assert any(line.startswith(c.name) and "passed" in line for line in text.splitlines())
    d = json.loads(json.dumps(mnist_report.to_dict()))
    assert d["ok"] is True and [c["name"] for c in d["checks"]] == list(SANITY_CHECKS)
    assert d["checks"][0]["values"]["chance"] == pytest.approx(math.log(10))


def test_healthy_digits_passes_all_six(digits):
    r = sanity_checks(bs.Task(build="mlp", data=digits), HP)
    assert r.ok and all(c.passed for c in r.checks), str(r)


def test_svm_loss_is_checked_against_c_minus_1(mnist):
    r = sanity_checks(bs.Task(build="mlp", data=mnist, loss="svm"), HP, checks=["chance_loss"])
    c = r["chance_loss"]
    assert c.passed and c.values["chance"] == 9.0, str(r)
    assert c.values["loss_scaled_down"] == pytest.approx(9.0, rel=0.05) and "C-1 = 9" in c.expected


# --------------------------------------------------------------------------------------------- sick set-ups


def test_last_layer_initialised_100x_too_large_fails_chance_at_init_only(mnist):
    healthy = sanity_checks(bs.Task(build=lambda hp: torch_mlp(40), data=mnist), HP, checks="chance_loss")
    assert healthy.ok, str(healthy)
    r = sanity_checks(bs.Task(build=lambda hp: torch_mlp(40, 100.0), data=mnist), HP, checks="chance_loss")
    c = r["chance_loss"]
    assert c.status == "failed" and not r.ok and r.failed == (c,)
    assert c.values["loss_init"] > 1.25 * math.log(10)
    assert c.values["loss_scaled_down"] == pytest.approx(math.log(10), rel=0.05)
    assert "last layer's init scale is too large" in c.advice and "inputs are not normalised" not in c.advice


def _raw_digits_0_255() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as 0-255 pixels (its raw 0-16 times 16): images nobody divided by 255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return torch.tensor(bunch.data * 16, dtype=torch.float32), torch.tensor(bunch.target)


@pytest.mark.parametrize("case", ["digits 0-255 pixels", "mnist1d x100+50"])
def test_unnormalised_inputs_fail_chance_with_advice_to_normalise(case, mnist):
    if case.startswith("digits"):
        x, y = _raw_digits_0_255()
    else:
        x, y = _xy(mnist)
        x = x * 100 + 50
    task = bs.Task(build=lambda hp: torch_mlp(x.shape[1]), data=bs.data.from_tensors(x, y, num_classes=10))
    c = sanity_checks(task, HP, checks=["chance_loss"])["chance_loss"]
    assert c.status == "failed" and c.values["loss_init"] > 1.25 * math.log(10), c
    assert c.values["loss_scaled_down"] == pytest.approx(math.log(10), rel=0.05)
    assert "inputs are not normalised" in c.advice and "(x - mean) / std" in c.advice
    assert c.values["input_abs_mean"] > 3


@pytest.mark.parametrize("bug", ["negated", "zero"])
def test_unwired_reg_term_fails_reg_raises_loss(bug, mnist, monkeypatch):
    real = bs.losses.l2_term
    broken = {"negated": lambda params, reg: -real(params, reg), "zero": lambda params, reg: 0.0 * real(params, reg)}
    monkeypatch.setattr(bs.step, "l2_term", broken[bug])  # the term step.objective (training) adds
    c = sanity_checks(bs.Task(build="mlp", data=mnist), HP, checks=["reg_raises_loss"])["reg_raises_loss"]
    assert c.status == "failed" and c.values["rise"] < 0.9 * c.values["expected_rise"], c
    assert "not wired into the training objective" in c.advice


def test_reg_term_on_detached_weights_fails_on_its_gradient(mnist, monkeypatch):
    real = bs.losses.l2_term
    monkeypatch.setattr(bs.step, "l2_term", lambda params, reg: real([p.detach() for p in params], reg))
    c = sanity_checks(bs.Task(build="mlp", data=mnist), HP, checks=["reg_raises_loss"])["reg_raises_loss"]
    assert c.status == "failed" and c.values["rise"] == pytest.approx(c.values["expected_rise"], rel=1e-3), c
    assert c.values["gradient_error"] > 0.5 and "detached weights" in c.advice


def test_model_without_weight_matrices_skips_reg_raises_loss(mnist):
    r = sanity_checks(bs.Task(build=lambda hp: ScaleShift(), data=mnist), HP, checks=["reg_raises_loss"])
    c = r["reg_raises_loss"]
    assert c.status == "skipped" and not c.passed and "no weight tensors to regularise" in c.reason
    assert r.ok and "skipped: no weight tensors" in str(r)


def test_double_softmax_fails_overfit_tiny(mnist):
    task = bs.Task(build=lambda hp: nn.Sequential(torch_mlp(40), nn.Softmax(dim=1)), data=mnist)
    r = sanity_checks(task, HP, checks=["overfit_tiny"])
    c = r["overfit_tiny"]
    assert c.status == "failed" and not r.ok, str(r)
    assert c.values["steps"] == 1000 and c.values["final_loss"] > 1.4  # the floor ln(e + 9) - 1 = 1.46
    assert "softmax applied twice" in c.advice


def test_shuffled_labels_overfit_but_fail_learnable_signal(mnist):
    x, y = _xy(mnist)
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
    r = sanity_checks(bs.Task(build="mlp", data=bs.data.from_tensors(x, y)), HP,
                      checks=["overfit_tiny", "learnable_signal"])
    assert r["overfit_tiny"].passed, str(r)
    c = r["learnable_signal"]
    assert c.status == "failed" and c.values["accuracy"] <= c.values["chance"] + c.values["margin"]
    assert "labels misaligned" in c.advice and "features may be garbage" in c.advice


def test_noise_features_fail_learnable_signal(mnist):
    x, y = _xy(mnist)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    c = sanity_checks(bs.Task(build="mlp", data=bs.data.from_tensors(noise, y)), HP,
                      checks="learnable_signal")["learnable_signal"]
    assert c.status == "failed" and "features may be garbage" in c.advice, c


def test_reshape_instead_of_transpose_fails_batch_independence_and_is_located(mnist):
    build = lambda hp: nn.Sequential(nn.Linear(40, 64), nn.ReLU(), SwapAxes(), nn.Linear(64, 10))
    r = sanity_checks(bs.Task(build=build, data=mnist), HP, checks=["batch_independence"])
    c = r["batch_independence"]
    assert c.status == "failed" and c.values["cross_gradient"] > 0, str(r)
    assert "2 (SwapAxes)" in c.measured and "mixes the examples" in c.advice
    assert "batch_independence  FAILED" in str(r)


def test_mean_over_the_batch_fails_batch_independence(mnist):
    c = sanity_checks(bs.Task(build=lambda hp: BatchMean(), data=mnist), HP,
                      checks=["batch_independence"])["batch_independence"]
    assert c.status == "failed" and c.values["pairs"] == 12, c


def test_batchnorm_model_passes_batch_independence_in_eval_mode(mnist):
    build = lambda hp: nn.Sequential(nn.Linear(40, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))
    c = sanity_checks(bs.Task(build=build, data=mnist), HP, checks=["batch_independence"])["batch_independence"]
    assert c.passed and c.values["cross_gradient"] == 0.0, c
    assert "checked in eval mode (BatchNorm)" in c.measured


def test_detached_layer_fails_params_get_gradient_naming_it(mnist):
    r = sanity_checks(bs.Task(build=lambda hp: Detached(), data=mnist), HP, checks=["params_get_gradient"])
    c = r["params_get_gradient"]
    assert c.status == "failed" and c.values["without_gradient"] == 2, str(r)
    assert "fc1.weight" in c.measured and "fc1.bias" in c.measured and "fc2" not in c.measured
    assert ".detach()" in c.advice
    with pytest.raises(CheckFailed, match="params_get_gradient"):
        assert_sanity(bs.Task(build=lambda hp: Detached(), data=mnist), HP, checks=["params_get_gradient"])


def test_custom_loss_skips_chance_loss_with_reason(mnist):
    task = bs.Task(build="mlp", data=mnist, loss=lambda s, y: torch.nn.functional.cross_entropy(s, y))
    r = sanity_checks(task, HP, checks=["chance_loss", "params_get_gradient"])
    c = r["chance_loss"]
    assert c.status == "skipped" and not c.passed and "custom loss" in c.reason and "unknown" in c.reason
    assert r.ok and r["params_get_gradient"].passed


def test_checks_use_their_own_optimizer_which_can_be_overridden(mnist):
    task = bs.Task(build="mlp", data=mnist)
    lr_hp = {**HP, "optimizer": "sgd", "lr": 1e-9}  # the user's lr does not matter to the checks
    assert sanity_checks(task, lr_hp, checks=["overfit_tiny"]).ok
    c = sanity_checks(task, HP, checks=["overfit_tiny"], optimizer={"optimizer": "sgd", "lr": 1e-9})["overfit_tiny"]
    assert c.status == "failed" and "barely moved" in c.advice, c
    with pytest.raises(ConfigError, match="lr"):
        sanity_checks(task, HP, optimizer={"optimizer": "adam", "lr": -1.0})


# --------------------------------------------------------------------------------------------- contract


def test_callers_objects_untouched_rng_restored_and_same_seed_same_numbers(mnist):
    torch.manual_seed(0)
    own = bs.models.mlp(40, 10, hidden=(32,), dropout=0.5)  # a build that hands back the caller's model
    own.eval()
    before = {k: v.clone() for k, v in own.state_dict().items()}
    x_train = bs.data.tensors(mnist.train)[0].clone()
    hp = {"width": 32, "depth": 1, "reg": 1e-4}
    hp_before = dict(hp)
    task = bs.Task(build=lambda hp: own, data=mnist)
    rng = torch.get_rng_state()
    first = sanity_checks(task, hp, seed=3)
    assert first.ok, str(first)
    assert "checked in eval mode (Dropout)" in first["batch_independence"].measured
    assert torch.equal(torch.get_rng_state(), rng)
    assert hp == hp_before and not own.training
    assert all(torch.equal(v, before[k]) for k, v in own.state_dict().items())
    assert torch.equal(bs.data.tensors(mnist.train)[0], x_train)
    again = sanity_checks(task, hp, seed=3)
    assert [c.values for c in first.checks] == [c.values for c in again.checks]
    assert [c.measured for c in first.checks] == [c.measured for c in again.checks]


def test_checks_subset_and_unknown_names(mnist):
    task = bs.Task(build="mlp", data=mnist)
    r = sanity_checks(task, HP, checks=["params_get_gradient", "chance_loss"])
    assert [c.name for c in r.checks] == ["chance_loss", "params_get_gradient"]
    with pytest.raises(ConfigError) as err:
        sanity_checks(task, HP, checks=["chance_loss", "overfit_small"])
    assert "overfit_small" in str(err.value) and all(name in str(err.value) for name in SANITY_CHECKS)
    with pytest.raises(ConfigError, match="at least one"):
        sanity_checks(task, HP, checks=[])
    with pytest.raises(ConfigError, match="Task"):
        sanity_checks("mnist1d", HP)  # type: ignore[arg-type]


def test_check_records_are_frozen_and_consistent():
    c = Check("chance_loss", "passed", True, "2.30", "2.30", "")
    with pytest.raises(AttributeError):
        c.status = "failed"  # type: ignore[misc]
    with pytest.raises(ValueError, match="contradicts"):
        Check("chance_loss", "failed", True, "x", "y", "fix it")
    with pytest.raises(ValueError, match="status"):
        Check("chance_loss", "ok", False, "x", "y", "")
    r = SanityReport(ok=True, checks=(c,))
    assert r.failed == () and r.to_dict()["checks"][0]["passed"] is True
    with pytest.raises(KeyError, match="chance_loss"):
        r["overfit_tiny"]


class BreaksOnBigBatches(nn.Module):
    """Passes the Task's two-example shape check, then raises on any larger batch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(40, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > 2:
            raise RuntimeError("boom: shapes do not line up")
        return self.fc(x)


def test_a_check_the_set_up_crashes_is_reported_failed_and_the_rest_still_run(mnist):
    r = sanity_checks(bs.Task(build=lambda hp: BreaksOnBigBatches(), data=mnist), HP,
                      checks=["chance_loss", "overfit_tiny"])
    assert not r.ok and [c.status for c in r.checks] == ["failed", "failed"], str(r)
    assert all("RuntimeError: boom" in c.measured and "fix the error" in c.advice for c in r.checks)


def test_the_table_wraps_to_the_terminal_width_without_breaking_words(spiral_task):
    from babysit.sanity.report import render

    report = bs.sanity_checks(spiral_task, {"width": 8}, checks=["chance_loss", "overfit_tiny"])
    failing = bs.sanity.SanityReport(False, tuple(
        bs.sanity.Check(c.name, "failed", False, c.measured, c.expected, "word " * 40 + "0.123456789 /a/long/path")
        for c in report.checks))
    text = render(failing, width=80)
    assert all(len(line) <= 80 for line in text.splitlines()[1:] if "/a/long/path" not in line)
    assert "0.123456789" in text and "/a/long/path" in text  # numbers and paths are never split
