"""The store package: forward migrations (a run written with schema 1 stays readable), History, flushing, thinning."""

from __future__ import annotations

import math
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

import babysit as bs
from babysit.store import (SCHEMA_VERSION, ArraySnapshot, EpochRecord, Histogram, RunStore, encode_array,
                           read_history)

V1_RUN = Path(__file__).parent / "data" / "run_schema_v1"  # written by babysit 0.1.0 (schema 1), committed as is


def _copy_v1(tmp_path: Path) -> Path:
    d = tmp_path / "old"
    shutil.copytree(V1_RUN, d)
    return d


def test_the_committed_fixture_really_is_schema_1():
    db = sqlite3.connect(f"file:{V1_RUN / 'run.sqlite'}?mode=ro", uri=True)
    assert dict(db.execute("SELECT key, value FROM meta"))["schema_version"] == "1"
    cols = [r[1] for r in db.execute("PRAGMA table_info(histograms)")]
    assert "epoch" not in cols
    assert not db.execute("SELECT name FROM sqlite_master WHERE name = 'arrays'").fetchall()
    db.close()


def test_a_schema_1_run_directory_stays_readable(tmp_path):
    d = _copy_v1(tmp_path)
    h = read_history(d)
    assert h.meta["schema_version"] == str(SCHEMA_VERSION) and h.meta["status"] == "completed"
    assert [e.epoch for e in h.epochs] == [1, 2, 3]
    assert all(0 <= e.val_acc <= 1 and e.lr == 0.01 for e in h.epochs)
    assert len(h.loss) == 27 and h.loss.epochs[-1] == pytest.approx(3.0)
    assert h.histograms == () and h.arrays == () and not h.has_telemetry
    assert h.config["hp"]["width"] == 8
    # the migrated database takes the new tables, and the old model still loads and evaluates
    s = RunStore(d)
    s.add_histograms([Histogram(27, 3.0, "fc1", "act", (1.0, 2.0), (0.0, 0.5, 1.0))])
    s.close()
    assert len(read_history(d).histograms) == 1
    model = bs.load(d)
    assert bs.evaluate(d, "val").accuracy == pytest.approx(max(e.val_acc for e in h.epochs), abs=1e-4)
    assert isinstance(model, torch.nn.Module)


def test_a_schema_1_run_resumes_under_the_new_schema(tmp_path):
    d = _copy_v1(tmp_path)
    task = bs.store.read_config(d)
    hp = {k: task["hp"][k] for k in ("optimizer", "lr", "width", "depth", "batch_size")}
    run = bs.train(bs.runs.task_of(d), hp, epochs=4, run_dir=d, resume=True)
    assert [r.epoch for r in run.history] == [1, 2, 3, 4]
    assert RunStore(d).meta()["schema_version"] == str(SCHEMA_VERSION)


def test_migration_is_one_transaction_and_idempotent(tmp_path):
    d = _copy_v1(tmp_path)
    RunStore(d).close()
    RunStore(d).close()  # a second open finds the current version and does nothing
    db = sqlite3.connect(d / "run.sqlite")
    assert [r[1] for r in db.execute("PRAGMA table_info(findings)")][-2:] == ["epoch", "step"]
    db.close()


def test_an_epoch_stays_visible_when_a_field_is_missing(tmp_path):
    s = RunStore(tmp_path)
    s.log(10, 1.0, "epoch/val_acc", 0.5)  # a hand loop that only knows its validation accuracy
    s.log_epoch(20, EpochRecord(2, 0.9, 0.6, 1.0, 0.55, 0.1, 0.5))
    epochs = s.history()
    assert [e.epoch for e in epochs] == [1, 2]
    assert epochs[0].val_acc == 0.5 and math.isnan(epochs[0].train_acc)
    s.close()


def test_scalars_are_flushed_every_few_seconds_not_once_an_epoch(tmp_path):
    now = [0.0]
    s = RunStore(tmp_path, flush_every=2.0, clock=lambda: now[0])
    reader = lambda: sqlite3.connect(tmp_path / "run.sqlite").execute(  # noqa: E731
        "SELECT COUNT(*) FROM scalars").fetchone()[0]
    for step in range(1, 6):
        now[0] = step * 0.5
        s.log(step, step / 100, "loss", 1.0)
    assert reader() == 4  # step 4 crossed 2 s: steps 1-4 are on disk, step 5 waits in the buffer
    now[0] = 3.0
    s.log(6, 0.06, "loss", 1.0)
    assert reader() == 4  # 1 s since the last write: buffered
    now[0] = 4.5
    s.log(7, 0.07, "loss", 1.0)
    assert reader() == 7
    s.close()


def test_histograms_and_arrays_are_bounded_and_thinned(tmp_path):
    s = RunStore(tmp_path)
    for step in range(100):
        s.add_histograms([Histogram(step, step / 10, "fc1", "act", (1.0,), (0.0, 1.0))], keep=8)
        w = np.full((2, 3), step, dtype=np.float32)
        s.add_array(ArraySnapshot(step, step / 10, "first_layer", (2, 3), ()), encode_array(w), keep=8)
    s.close()
    h = read_history(tmp_path)
    steps = [x.step for x in h.hist("act")["fc1"]]
    assert len(steps) <= 8 and steps[0] == 0 and steps[-1] == 99
    assert len(h.arrays) <= 8 and h.arrays[0].step == 0 and h.arrays[-1].step == 99
    assert h.arrays[-1].shape == (2, 3) and h.arrays[-1].values == (99.0,) * 6


def test_findings_round_trip(tmp_path):
    s = RunStore(tmp_path)
    s.set_findings([{"code": "lr_too_high", "severity": "warning", "message": "m", "evidence": {"ratio": 0.03},
                     "advice": "divide lr by 10", "epoch": 2, "step": 40}])
    assert s.findings()[0]["evidence"] == {"ratio": 0.03} and s.findings()[0]["step"] == 40
    s.close()


def test_history_groups_keys_without_parsing_strings_in_rules(tmp_path):
    s = RunStore(tmp_path)
    s.log_many([(1, 0.1, "update_ratio/fc1.weight", 1e-3), (1, 0.1, "update_ratio/fc2.weight", 2e-3),
                (1, 0.1, "loss", 2.3)])
    s.close()
    h = read_history(tmp_path)
    assert list(h.group("update_ratio")) == ["fc1.weight", "fc2.weight"] and h.has_telemetry
    assert h.series("nothing").values == () and h.loss.values == (2.3,)
    with pytest.raises(bs.StoreError, match="not a babysit run directory"):
        read_history(tmp_path / "nope")
