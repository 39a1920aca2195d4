"""Telemetry: watch() on hand-written loops and inside train(); the numbers checked against independent oracles."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
import torch.nn.functional as F

import babysit as bs
from babysit.errors import ConfigError
from babysit.store import RunStore, read_history
from babysit.telemetry import probe_pass, watch, watched_layers


def _loop(model, opt, w, x, y, steps, bs_=32, autocast=False):
    for i in range(steps):
        j = (i * bs_) % (len(x) - bs_)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(model(x[j:j + bs_]), y[j:j + bs_])
        opt.zero_grad()
        loss.backward()
        opt.step()
        w.step(loss)


@pytest.fixture(scope="module")
def digits():
    return bs.data.load("digits", seed=0)


def test_update_ratio_is_the_actual_change_for_adam(tmp_path, digits):
    torch.manual_seed(0)
    x, y = bs.data.tensors(digits.train)
    model = bs.models.mlp((64,), 10, hidden=(16,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    w = watch(model, opt, tmp_path, num_classes=10, every=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = F.cross_entropy(model(x[:32]), y[:32])
    opt.zero_grad()
    loss.backward()
    grads = {n: p.grad.norm().item() for n, p in model.named_parameters()}
    opt.step()
    w.step(loss)
    w.close()
    h = read_history(tmp_path)
    for n, p in model.named_parameters():  # oracle: the change measured by hand, not lr * grad
        want = (p.detach() - before[n]).norm().item() / p.detach().norm().item()
        assert h.series(f"update_ratio/{n}").values[0] == pytest.approx(want, rel=1e-4)
        assert h.series(f"grad_norm/{n}").values[0] == pytest.approx(grads[n], rel=1e-5)
    assert h.loss.values[0] == pytest.approx(loss.item()) and h.meta["status"] == "completed"


def test_dead_units_are_counted_per_unit_not_per_element():
    lin = nn.Linear(4, 6)
    model = nn.Sequential(lin, nn.ReLU())
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[:, 0] = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])  # units 0-3 follow x0: ~half the elements > 0
        lin.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, -1.0, -1.0]))  # units 4-5: dead for every example
    x = torch.randn(2000, 4)
    res = probe_pass(model, watched_layers(model), x, None, None)
    assert res.scalars["act_dead/1"] == pytest.approx(2 / 6)
    zero_elements = (model(x) <= 0).float().mean().item()
    assert zero_elements > 0.6  # the element count would have said "most units dead"


def test_an_invisible_functional_relu_is_read_at_the_next_layer_input():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(3, 8), nn.Linear(8, 2)
            with torch.no_grad():
                self.fc1.bias[:4] = -100.0  # four of eight units dead

        def forward(self, x):
            return self.fc2(F.relu(self.fc1(x)))

    model = Net()
    res = probe_pass(model, watched_layers(model), torch.randn(500, 3), None, None)
    assert res.scalars["act_dead/fc2:input"] == pytest.approx(0.5)
    assert "act_dead/fc1:input" not in res.scalars  # the model's own input is never called dead


def test_hand_loop_records_every_instrument(tmp_path, digits):
    torch.manual_seed(0)
    x, y = bs.data.tensors(digits.train)
    xv, yv = bs.data.tensors(digits.val)
    model = bs.models.mlp((64,), 10, hidden=(32, 32))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with watch(model, opt, tmp_path, num_classes=10, probe=(xv, yv), every=1, hist_every=10, act_every=5,
               hist_keep=6) as w:
        for _ in range(2):
            _loop(model, opt, w, x, y, 40)
            w.epoch(val_acc=0.5)
    h = read_history(tmp_path)
    assert [e.epoch for e in h.epochs] == [1, 2] and h.epochs[0].val_acc == 0.5
    assert len(h.loss) == 80 and h.loss.epochs[39] == pytest.approx(1.0) and h.loss.epochs[0] == pytest.approx(1 / 40)
    assert set(h.group("update_ratio")) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight",
                                            "fc3.bias"}
    assert len(h.series("update_ratio/fc1.weight")) == 80
    assert h.series("probe/loss").values[0] == pytest.approx(2.3026, abs=0.05)  # small last layer: ln 10
    assert set(h.group("act_dead")) == {"act1", "act2"} and len(h.series("batch_act_mean/act1")) == 16
    assert 0.5 < h.series("input/std").values[0] < 2.0  # digits are standardised
    acts, grads = h.hist("act"), h.hist("grad")
    assert set(acts) == set(grads) == {"fc1", "act1", "fc2", "act2", "fc3"}
    assert 2 <= len(acts["fc1"]) <= 6 and sum(acts["fc1"][-1].counts) == len(xv) * 32
    assert h.arrays[0].shape == (32, 64) and h.arrays[0].step == 0 and len(h.arrays) == 3


def test_no_hookable_layers_shared_and_frozen_params_are_reported(tmp_path):
    class Custom(nn.Module):  # parameters, but no standard layer
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 3) * 0.1)
            self.frozen = nn.Parameter(torch.ones(3), requires_grad=False)

        def forward(self, x):
            return x @ self.w + self.frozen

    model = Custom()
    opt = torch.optim.SGD([model.w], lr=0.1)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    with watch(model, opt, tmp_path / "a", num_classes=3, every=1) as w:
        _loop(model, opt, w, x, y, 5, bs_=16)
    h = read_history(tmp_path / "a")
    assert json.loads(h.meta["frozen"]) == ["frozen"] and "no Linear" in json.loads(h.meta["unseen"])[0]
    assert len(h.series("update_ratio/w")) == 5 and not h.hist("act")

    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(4, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, opt, tmp_path / "b", probe=x, hist_every=2) as w:
        _loop(model, opt, w, x, y, 4, bs_=16)
    h = read_history(tmp_path / "b")
    assert json.loads(h.meta["shared"]) == {"0.weight": ["2.weight"], "0.bias": ["2.bias"]}
    assert "0#2" in h.group("act_mean")  # the second call of the shared layer is its own row


def test_an_optimizer_that_does_not_own_the_model_is_a_clear_error(tmp_path):
    model, other = nn.Linear(3, 2), nn.Linear(3, 2)
    with pytest.raises(ConfigError, match="owns none of the model's 2 trainable parameters"):
        watch(model, torch.optim.SGD(other.parameters(), lr=0.1), tmp_path)
    with pytest.raises(ConfigError, match="act_every=-1"):
        watch(model, torch.optim.SGD(model.parameters(), lr=0.1), tmp_path, act_every=-1)
    with pytest.raises(ConfigError, match="unknown option"):
        watch(model, torch.optim.SGD(model.parameters(), lr=0.1), tmp_path, hist_evry=3)


def test_close_removes_every_hook(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = watch(model, opt, tmp_path, act_every=1)
    assert opt._optimizer_step_pre_hooks and any(m._forward_hooks for m in model.modules())
    w.close()
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_bf16_autocast_on_cpu(tmp_path, digits):
    torch.manual_seed(0)
    x, y = bs.data.tensors(digits.train)
    model = bs.models.mlp((64,), 10, hidden=(32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, opt, tmp_path, num_classes=10, every=1, act_every=1, hist_every=5) as w:
        _loop(model, opt, w, x, y, 10, autocast=True)
        w.epoch()
    h = read_history(tmp_path)
    assert len(h.series("batch_act_mean/act1")) == 10 and len(h.series("update_ratio/fc1.weight")) == 10
    assert all(v == v and v > 0 for v in h.series("update_ratio/fc1.weight").values)
    assert h.hist("grad")["fc1"] and h.series("act_dead/act1").values


def test_torch_compiled_model_is_watched_or_says_what_it_cannot_see(tmp_path, digits):
    torch.manual_seed(0)
    x, y = bs.data.tensors(digits.train)
    eager = bs.models.mlp((64,), 10, hidden=(16,))
    model = torch.compile(eager, backend="eager")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, opt, tmp_path, num_classes=10, probe=x[:200], every=1, act_every=1) as w:
        _loop(model, opt, w, x, y, 6)
        w.epoch()
    h = read_history(tmp_path)
    assert "torch.compile'd model" in json.loads(h.meta["unseen"])[0]
    assert len(h.series("update_ratio/fc1.weight")) == 6  # optimizer hooks see everything
    assert h.series("act_dead/act1").values and not h.group("batch_act_mean")


def test_train_monitor_true_records_and_monitor_false_attaches_nothing(spiral_task, tmp_path):
    hp = {"optimizer": "adam", "lr": 0.01, "width": 16, "batch_size": 32}
    on = bs.train(spiral_task, hp, epochs=2, run_dir=tmp_path / "on")
    off = bs.train(spiral_task, hp, epochs=2, run_dir=tmp_path / "off", monitor=False)
    assert [r.val_acc for r in on.history] == [r.val_acc for r in off.history]  # watching never steers
    h_on, h_off = read_history(on.dir), read_history(off.dir)
    assert h_on.has_telemetry and not h_off.has_telemetry
    assert set(h_off.scalars) == {"loss"} | {f"epoch/{k}" for k in bs.store.EPOCH_KEYS}
    steps = len(h_on.loss)
    assert h_on.series("update_ratio/fc1.weight").steps == tuple(range(10, steps + 1, 10))  # every=10 by default
    assert len(h_on.series("act_dead/act1")) == 3  # init + two epochs, on the validation split
    assert h_on.series("probe/loss").values[0] == pytest.approx(1.0986, abs=0.02)  # ln 3
    assert RunStore(on.dir).meta()["probe"] == "given"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_on_cuda(tmp_path, digits):
    torch.manual_seed(0)
    x, y = (t.cuda() for t in bs.data.tensors(digits.train))
    model = bs.models.mlp((64,), 10, hidden=(32,)).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with watch(model, opt, tmp_path, num_classes=10, probe=(x[:500], y[:500]), every=1, act_every=1,
               hist_every=5) as w:
        before = model.fc1.weight.detach().clone()
        _loop(model, opt, w, x, y, 1)
        want = ((model.fc1.weight - before).norm() / model.fc1.weight.norm()).item()
        _loop(model, opt, w, x, y, 9)
        w.epoch()
    h = read_history(tmp_path)
    assert h.series("update_ratio/fc1.weight").values[0] == pytest.approx(want, rel=1e-4)
    assert len(h.series("batch_act_dead/act1")) == 10 and h.hist("grad") and h.series("act_dead/act1").values


def test_the_plain_loop_example_is_babysat_in_four_lines(tmp_path, monkeypatch, capsys):
    import runpy
    from pathlib import Path

    example = Path(__file__).parents[1] / "examples" / "plain_loop.py"
    code = [line for line in example.read_text().splitlines() if line.rstrip().endswith("# babysit")]
    assert len(code) == 4
    monkeypatch.setattr("sys.argv", [str(example), str(tmp_path / "plain")])
    runpy.run_path(str(example), run_name="__main__")
    assert capsys.readouterr().out.strip() == str(tmp_path / "plain" / "report.html")
    h = read_history(tmp_path / "plain")
    assert len(h.epochs) == 10 and h.epochs[-1].val_acc > 0.9 and h.has_telemetry
    assert not {f.code for f in bs.diagnose(tmp_path / "plain") if f.severity != "info"}
