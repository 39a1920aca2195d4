"""diagnose: sick runs really trained on digits, each diagnosed with the right code and none pointing elsewhere."""

from __future__ import annotations

import math

import pytest
import torch

import babysit as bs
from babysit.diagnose import CODES, RULES, THRESHOLDS, Finding, run_rules, settings_from_mapping
from babysit.errors import ConfigError
from babysit.store import EpochRecord, History, Series

import sickbay

# Codes that point at another cause than the one planted (consequences of the same cause may appear).
EXPECT = {
    "lr_far_too_high": ("lr_too_high", {"lr_too_low", "overfitting", "underfitting", "bad_init_loss", "noisy_loss",
                                        "saturated_units", "frozen_params", "inputs_not_normalised",
                                        "update_ratio_low"}),
    "lr_far_too_low": ("lr_too_low", {"lr_too_high", "overfitting", "underfitting", "dead_units", "bad_init_loss",
                                      "noisy_loss", "update_ratio_high", "frozen_params", "saturated_units"}),
    "overfitting": ("overfitting", {"lr_too_high", "lr_too_low", "underfitting", "dead_units", "noisy_loss",
                                    "update_ratio_high", "update_ratio_low", "bad_init_loss", "diverged"}),
    "underfitting": ("underfitting", {"lr_too_high", "lr_too_low", "overfitting", "dead_units", "noisy_loss",
                                      "update_ratio_low", "update_ratio_high", "bad_init_loss"}),
    "dead_relu": ("dead_units", {"lr_too_high", "lr_too_low", "update_ratio_low", "frozen_params", "overfitting",
                                 "underfitting", "noisy_loss", "bad_init_loss"}),
    "saturated_tanh": ("saturated_units", {"lr_too_high", "lr_too_low", "update_ratio_low", "dead_units",
                                           "overfitting", "noisy_loss", "bad_init_loss", "frozen_params"}),
    "big_last_layer": ("bad_init_loss", {"lr_too_high", "lr_too_low", "overfitting", "dead_units",
                                         "saturated_units", "noisy_loss", "diverged"}),
    "batch_size_1": ("noisy_loss", {"lr_too_high", "lr_too_low", "overfitting", "underfitting", "dead_units",
                                    "update_ratio_high", "diverged", "bad_init_loss"}),
}


@pytest.fixture(scope="session")
def digits():
    return bs.data.load("digits", seed=0)


@pytest.fixture(scope="session")
def sick_runs(digits, tmp_path_factory):
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return sickbay.train_all(digits, tmp_path_factory.mktemp("sickbay"))
    finally:
        torch.set_num_threads(prev)


def _diagnoses(findings):
    return {f.code for f in findings if f.severity != "info"}


@pytest.mark.parametrize("case", sorted(EXPECT))
def test_each_sick_run_gets_the_right_code_and_no_wrong_one(sick_runs, case):
    code, wrong = EXPECT[case]
    ref = sick_runs["reference"].dir if case == "underfitting" else None
    findings = bs.diagnose(sick_runs[case].dir, reference=ref)
    got = _diagnoses(findings)
    assert code in got, [f.to_dict() for f in findings]
    assert not got & wrong, [f.to_dict() for f in findings if f.code in wrong]
    f = next(f for f in findings if f.code == code)
    assert f.evidence and any(ch.isdigit() for ch in f.advice + f.message)  # numbers, not just words


def test_a_healthy_run_has_no_warning(sick_runs):
    for name in ("healthy", "reference"):
        findings = bs.diagnose(sick_runs[name].dir)
        assert not _diagnoses(findings), [f.to_dict() for f in findings]
        assert sick_runs[name].history[-1].val_acc > 0.9


def test_underfitting_is_only_a_warning_against_a_reference(sick_runs):
    alone = bs.diagnose(sick_runs["underfitting"].dir)
    assert "underfitting" not in _diagnoses(alone)
    # measured, not assumed: the reference really is far better in the same epochs
    assert sick_runs["reference"].history[-1].train_acc - sick_runs["underfitting"].history[-1].train_acc > 0.3


def test_the_live_rules_stored_findings_during_training(sick_runs):
    stored = bs.store.RunStore(sick_runs["lr_far_too_high"].dir).findings()
    assert "lr_too_high" in {f["code"] for f in stored}
    assert not bs.store.RunStore(sick_runs["healthy"].dir).findings() or \
        all(f["severity"] == "info" for f in bs.store.RunStore(sick_runs["healthy"].dir).findings())


def test_the_same_diagnoses_on_a_hand_written_loop(digits, tmp_path):
    x, y = bs.data.tensors(digits.train)
    xv, yv = bs.data.tensors(digits.val)

    def hand(lr, run_dir, opt_name="sgd"):
        torch.manual_seed(0)
        model = bs.models.mlp((64,), 10, hidden=(64, 64))
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9) if opt_name == "sgd" \
            else torch.optim.Adam(model.parameters(), lr=lr)
        with bs.watch(model, opt, run_dir, num_classes=10, probe=(xv, yv)) as w:
            for _ in range(4):
                perm = torch.randperm(len(x))
                for i in range(0, len(x), 32):
                    idx = perm[i:i + 32]
                    loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    w.step(loss)
                with torch.no_grad():
                    w.epoch(train_acc=(model(x).argmax(1) == y).float().mean().item(),
                            val_acc=(model(xv).argmax(1) == yv).float().mean().item())
        return bs.diagnose(run_dir)

    assert _diagnoses(hand(3e-3, tmp_path / "ok", "adam")) == set()
    high = _diagnoses(hand(3.0, tmp_path / "high"))
    assert "lr_too_high" in high and not high & EXPECT["lr_far_too_high"][1]
    low = _diagnoses(hand(1e-5, tmp_path / "low"))
    assert "lr_too_low" in low and not low & EXPECT["lr_far_too_low"][1]


def test_a_run_without_telemetry_lists_the_skipped_rules(spiral_task, tmp_path):
    run = bs.train(spiral_task, {"optimizer": "adam", "lr": 0.01, "width": 16}, epochs=2, run_dir=tmp_path / "r",
                   monitor=False)
    findings = bs.diagnose(run.dir)
    skipped = {s.rule: s.reason for s in findings.skipped}
    assert {"lr_too_low", "update_ratio_high", "dead_units", "frozen_params"} <= set(skipped)
    assert "watched run" in skipped["lr_too_low"]
    assert set(skipped) | {f.code for f in findings} <= set(CODES)


def test_an_old_schema_1_run_is_diagnosed_with_skips(tmp_path):
    import shutil

    from test_store_schema import V1_RUN

    shutil.copytree(V1_RUN, tmp_path / "old")
    findings = bs.diagnose(tmp_path / "old")
    assert "dead_units" in {s.rule for s in findings.skipped} and "bad_init_loss" not in {s.rule for s in findings.skipped}


def test_silence_and_thresholds_per_call_and_from_a_config_table(sick_runs):
    d = sick_runs["overfitting"].dir
    assert "overfitting" in {f.code for f in bs.diagnose(d)}
    assert "overfitting" not in {f.code for f in bs.diagnose(d, silence=["overfitting"])}
    assert "overfitting" not in {f.code for f in bs.diagnose(d, overfit_gap=0.5)}
    assert "overfitting" not in {f.code for f in bs.diagnose(d, config={"silence": ["overfitting"]})}
    with pytest.raises(ConfigError, match="unknown threshold.*overfit_gap"):
        settings_from_mapping({"overfit_gapp": 0.2})
    with pytest.raises(ConfigError, match="unknown code"):
        settings_from_mapping({"silence": ["overfit"]})
    with pytest.raises(ConfigError, match="must be a number"):
        settings_from_mapping({"noisy_cv": "high"})


def _history(**series) -> History:
    """A History built by hand: key -> list of (step, value); epochs given as EpochRecords."""
    epochs = series.pop("epochs", ())
    meta = series.pop("meta", {})
    scalars = {k: Series(tuple(s for s, _ in v), tuple(float(s) for s, _ in v), tuple(x for _, x in v))
               for k, v in series.items()}
    return History(meta=meta, epochs=tuple(epochs), scalars=scalars)


def _run(h):
    return {f.code: f for f in run_rules(h, settings_from_mapping())}


def test_gradient_spread_rules_on_a_hand_built_history():
    meta = {"params": '{"fc1.weight": 10000, "fc2.weight": 100}'}
    vanishing = _history(meta=meta, **{"grad_norm/fc1.weight": [(1, 1e-4)], "grad_norm/fc2.weight": [(1, 10.0)]})
    f = _run(vanishing)["vanishing_gradients"]
    assert f.evidence["first"] == "fc1.weight" and f.evidence["ratio_last_to_first"] == pytest.approx(1e6)
    exploding = _history(meta=meta, **{"grad_norm/fc1.weight": [(1, 1e3)], "grad_norm/fc2.weight": [(1, 1e-3)]})
    assert "exploding_gradients" in _run(exploding) and "vanishing_gradients" not in _run(exploding)
    fine = _history(meta=meta, **{"grad_norm/fc1.weight": [(1, 1.0)], "grad_norm/fc2.weight": [(1, 0.1)]})
    assert not {"exploding_gradients", "vanishing_gradients"} & set(_run(fine))


def test_frozen_inputs_and_divergence_on_hand_built_histories():
    meta = {"params": '{"w": 6}', "not_in_optimizer": '["w"]', "frozen": "[]"}
    h = _history(meta=meta, **{"update_ratio/w": [(1, 0.0), (2, 0.0)], "grad_norm/w": [(1, 1.0), (2, 1.0)]})
    assert _run(h)["frozen_params"].severity == "warning"
    raw = _history(**{"input/mean": [(0, 4.9)], "input/std": [(0, 6.0)], "input/feature_z_max": [(0, 12.0)]})
    assert "feature" in _run(raw)["inputs_not_normalised"].message
    ok = _history(**{"input/mean": [(0, 0.0)], "input/std": [(0, 1.0)], "input/feature_z_max": [(0, 0.3)]})
    assert "inputs_not_normalised" not in _run(ok)
    nan = _history(loss=[(1, 2.3), (2, 50.0), (3, math.nan)])
    found = _run(nan)
    assert found["diverged"].severity == "error" and found["diverged"].evidence["step"] == 3
    assert "lr_too_high" in found


def test_every_code_has_a_rule_a_docstring_and_a_catalogue_entry():
    from pathlib import Path

    catalogue = (Path(__file__).parents[1] / "docs" / "diagnoses.md").read_text()
    assert set(RULES) == set(CODES)
    for code, rule in RULES.items():
        assert rule.__doc__ and rule.__doc__.startswith("Returns"), code
        assert f"`{code}`" in catalogue, code
    for key in THRESHOLDS:
        assert f"`{key}`" in catalogue, key
    with pytest.raises(ValueError):
        Finding("not_a_code", "warning", "m")
    assert EpochRecord  # the History's epochs are the store's records


def test_live_rules_warn_and_store_findings_while_the_run_goes_on(digits, tmp_path, caplog):
    seen = []

    class Peek:  # a user observer runs after the live rules: it sees what the live report would show
        def on_epoch(self, record):
            seen.append((record.epoch, {f["code"] for f in bs.store.RunStore(tmp_path / "r").findings()}))

    task = bs.Task(build="mlp", data=digits)
    with caplog.at_level("WARNING", logger="babysit.diagnose"):
        bs.train(task, {"optimizer": "momentum", "lr": 3.0, "width": 32, "batch_size": 64}, epochs=2,
                 run_dir=tmp_path / "r", observers=[Peek()])
    assert seen[0][0] == 1 and "lr_too_high" in seen[0][1]  # after the first epoch, not only at the end
    warned = [r.getMessage() for r in caplog.records if "lr_too_high" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("epoch 1:")  # said once, when it first appears


def _hand_loop(task, hp, epochs, run_dir):
    """The case of the sickbay trained by a plain PyTorch loop (torch.optim, tensor slicing) with bs.watch."""
    torch.manual_seed(0)
    model = task.build_model(task.resolve_hp(hp))
    params = model.parameters()
    opt = {"adam": lambda: torch.optim.Adam(params, lr=hp["lr"]),
           "momentum": lambda: torch.optim.SGD(params, lr=hp["lr"], momentum=0.9),
           "sgd": lambda: torch.optim.SGD(params, lr=hp["lr"])}[hp["optimizer"]]()
    x, y = bs.data.tensors(task.splits.train)
    xv, yv = bs.data.tensors(task.splits.val)
    bsz = hp["batch_size"]
    with bs.watch(model, opt, run_dir, num_classes=task.num_classes, probe=(xv, yv)) as w:
        for _ in range(epochs):
            model.train()
            perm = torch.randperm(len(x))
            for i in range(0, len(x), bsz):
                idx = perm[i:i + bsz]
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                w.step(loss)
            model.eval()
            with torch.no_grad():
                w.epoch(train_acc=(model(x).argmax(1) == y).float().mean().item(),
                        val_acc=(model(xv).argmax(1) == yv).float().mean().item())
    return run_dir


@pytest.fixture(scope="session")
def hand_runs(digits, tmp_path_factory):
    root = tmp_path_factory.mktemp("hand_sickbay")
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {name: _hand_loop(task, hp, epochs, root / name)
                for name, (task, hp, epochs) in sickbay.cases(digits).items()}
    finally:
        torch.set_num_threads(prev)


@pytest.mark.parametrize("case", sorted(EXPECT))
def test_every_sick_case_is_diagnosed_the_same_on_a_hand_written_loop(hand_runs, case):
    code, wrong = EXPECT[case]
    findings = bs.diagnose(hand_runs[case], reference=hand_runs["reference"] if case == "underfitting" else None)
    got = _diagnoses(findings)
    assert code in got, [f.to_dict() for f in findings]
    assert not got & wrong, [f.to_dict() for f in findings if f.code in wrong]


def test_a_healthy_hand_written_loop_has_no_warning(hand_runs):
    for name in ("healthy", "reference"):
        findings = bs.diagnose(hand_runs[name])
        assert not _diagnoses(findings), [f.to_dict() for f in findings]
