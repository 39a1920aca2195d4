"""Snapshot ensembles: cyclic cosine learning rate, the cycle ends kept; keep_last."""

from __future__ import annotations

import pytest

import babysit as bs
from babysit.averaging import SnapshotSchedule, snapshot_epochs
from babysit.errors import ConfigError
from babysit.optim import build_schedule
from babysit.store import list_checkpoints

HP = {"optimizer": "adam", "lr": 0.01, "width": 16, "depth": 1, "batch_size": 64}


def test_cosine_cycles_restart_at_each_cycle_end():
    s = SnapshotSchedule(build_schedule({"optimizer": "sgd", "lr": 0.1}), epochs=6, k=3)
    assert s.lr(0) == pytest.approx(0.1) and s.lr(1) == pytest.approx(0.05) and s.lr(1.999) < 1e-5
    assert s.lr(2) == pytest.approx(0.1) and s.lr(5.5) == pytest.approx(0.05 * (1 - 2 ** -0.5))
    assert snapshot_epochs(10, 3) == (3, 7, 10) and snapshot_epochs(5, 5) == (1, 2, 3, 4, 5)


def test_the_model_at_every_cycle_end_is_kept_even_between_writes(spiral_task, tmp_path):
    run = bs.train(spiral_task, {**HP, "snapshots": 3}, epochs=6, run_dir=tmp_path / "r",
                   checkpoint_interval=1e9)  # no timed writes: only the cycle ends force theirs
    assert {2, 4, 6} <= {c.epoch for c in list_checkpoints(run.dir)}
    lrs = [r.lr for r in run.history]  # the lr of the epoch's last step: near 0 at each cycle end
    assert lrs[1] < 1e-4 and lrs[3] < 1e-4 and lrs[0] > 1e-3 and lrs[2] > 1e-3


def test_keep_last_keeps_that_many_checkpoints(spiral_task, tmp_path):
    run = bs.train(spiral_task, HP, epochs=6, run_dir=tmp_path / "r", checkpoint_interval=0, keep_last=4)
    assert {3, 4, 5, 6} <= {c.epoch for c in list_checkpoints(run.dir)}


def test_snapshots_that_do_not_fit_are_refused(spiral_task, tmp_path):
    with pytest.raises(ConfigError, match="schedule.*constant"):
        bs.train(spiral_task, {**HP, "snapshots": 2, "schedule": "step"}, epochs=4, run_dir=tmp_path / "a")
    with pytest.raises(ConfigError, match="more cycles than epochs"):
        bs.train(spiral_task, {**HP, "snapshots": 5}, epochs=4, run_dir=tmp_path / "b")
    with pytest.raises(ConfigError, match="keep_last"):
        bs.train(spiral_task, HP, epochs=1, run_dir=tmp_path / "c", keep_last=0)
