"""The running average of the weights: hand-computed EMA with warm-up, BatchNorm buffers, the loop, resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import babysit as bs
from babysit.averaging import ema_decay, make_ema
from babysit.errors import ConfigError, StoreError
from babysit.store import RunStore, list_checkpoints, load_checkpoint

HP = {"optimizer": "adam", "lr": 0.01, "width": 32, "depth": 2, "batch_size": 32, "ema": 0.9}


def test_ema_matches_a_hand_computed_average_with_warm_up():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    ema = make_ema(model, decay=0.8)
    expected = None
    for t in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn_like(p))
        w = torch.cat([p.detach().flatten() for p in model.parameters()])
        if expected is None:
            expected = w.clone()  # the first update copies
        else:
            d = min(0.8, (1 + t) / (10 + t))  # t earlier updates
            expected = d * expected + (1 - d) * w
        ema.update_parameters(model)
    got = torch.cat([p.detach().flatten() for p in ema.module.parameters()])
    torch.testing.assert_close(got, expected)
    assert ema_decay(0.8, 1) == pytest.approx(2 / 11) and ema_decay(0.8, 1000) == 0.8  # warm-up, then the cap


def test_batchnorm_running_statistics_are_averaged_like_the_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5))
    ema = make_ema(model, decay=0.5)
    means, tracked = [], []
    for t in range(12):
        model(torch.randn(16, 4) * (t + 1) + t)  # train mode: the running stats move
        ema.update_parameters(model)
        means.append(model[1].running_mean.clone())
        tracked.append(int(model[1].num_batches_tracked))
    expected = means[0]
    for t, m in enumerate(means[1:], start=1):
        d = min(0.5, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * m
    torch.testing.assert_close(ema.module[1].running_mean, expected)
    assert not torch.allclose(ema.module[1].running_mean, model[1].running_mean)  # really an average
    assert int(ema.module[1].num_batches_tracked) == tracked[-1]  # integers follow the model


def test_ema_is_evaluated_every_epoch_and_checkpointed_beside_the_raw_weights(spiral, tmp_path):
    task = bs.Task(build=lambda hp: nn.Sequential(nn.Linear(2, 32), nn.BatchNorm1d(32), nn.ReLU(),
                                                  nn.Linear(32, 3)), data=spiral)
    run = bs.train(task, {"optimizer": "adam", "lr": 0.02, "ema": 0.9}, epochs=6, run_dir=tmp_path / "r",
                   checkpoint_interval=0)
    store = RunStore(run.dir)
    acc = store.scalars("epoch/val_acc_ema")
    assert [round(e) for _, e, _ in acc] == list(range(1, 7)) and len(store.scalars("epoch/val_loss_ema")) == 6
    last = list_checkpoints(run.dir)[-1]
    assert "ema" in load_checkpoint(last.path)
    raw = bs.load(run.dir, last=True, task=task)
    avg = bs.load(run.dir, last=True, task=task, weights="ema")
    assert not torch.equal(raw[0].weight, avg[0].weight)
    val = bs.evaluate(avg, spiral.val)
    assert val.accuracy == pytest.approx(acc[-1][2])  # the logged EMA score is the one of the saved weights
    # BatchNorm statistics belong to the averaged weights: it works as well as the raw model, far above chance
    assert val.accuracy > 0.7 and val.accuracy >= run.history[-1].val_acc - 0.05, (val, run.history[-1])


def test_resume_with_ema_is_exact(spiral_task, tmp_path):
    straight = bs.train(spiral_task, HP, epochs=4, run_dir=tmp_path / "a", checkpoint_interval=0)
    bs.train(spiral_task, HP, epochs=2, run_dir=tmp_path / "b", checkpoint_interval=0)
    resumed = bs.train(spiral_task, HP, epochs=4, run_dir=tmp_path / "b", resume=True, checkpoint_interval=0)
    a = load_checkpoint(list_checkpoints(straight.dir)[-1].path)["ema"]
    b = load_checkpoint(list_checkpoints(resumed.dir)[-1].path)["ema"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert RunStore(straight.dir).scalars("epoch/val_acc_ema") == RunStore(resumed.dir).scalars("epoch/val_acc_ema")


def test_ema_weights_of_a_run_without_ema_are_refused(spiral_task, tmp_path):
    run = bs.train(spiral_task, {k: v for k, v in HP.items() if k != "ema"}, epochs=1, run_dir=tmp_path / "r")
    with pytest.raises(StoreError, match="no running average.*weights='raw'"):
        bs.load(run.dir, weights="ema")
    with pytest.raises(ConfigError, match="weights='best'"):
        bs.load(run.dir, weights="best")


def test_ema_decay_out_of_range_is_refused(spiral_task, tmp_path):
    with pytest.raises(ConfigError, match=r"hp\['ema'\]"):
        bs.train(spiral_task, {**HP, "ema": 1.0}, epochs=1, run_dir=tmp_path / "r")
