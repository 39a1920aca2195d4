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
    for c in bs.store.list_checkpoints(d):
        bs.store.load_checkpoint(c.path)
    bs.load(d)


def test_checkpoints_older_than_checksums_still_load_and_later_strangers_do_not(tmp_path):
    d = _copy_v1(tmp_path)
    bs.store.save_checkpoint(d, 4, 0.1, {"w": torch.ones(2)}, keep_last=5)  # the first checksummed one
    assert bs.store.load_checkpoint(d / "checkpoints" / "epoch-001_val-0.5208.pt")["epoch"] == 1
    assert bs.store.load_checkpoint(d / "checkpoints" / "epoch-004_val-0.1000.pt")["w"].tolist() == [1.0, 1.0]
    (d / "checkpoints" / "epoch-009_val-0.9999.pt").write_bytes(b"dropped in later")
    with pytest.raises(bs.errors.StoreError, match="not written by this run"):
        bs.store.load_checkpoint(d / "checkpoints" / "epoch-009_val-0.9999.pt")


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


def _schema(path: Path) -> list[tuple]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = sorted(db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
        return tables + [(r[0], *r[1:]) for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                         for r in db.execute(f"PRAGMA table_info({name})")]
    finally:
        db.close()


def test_a_new_run_database_is_the_template_which_the_migrations_built(tmp_path, monkeypatch):
    import babysit.store.sqlite as sq

    RunStore(tmp_path / "migrated", template=False).close()
    sq._template()  # built once per process, by the migrations
    calls = []
    for v in list(sq.MIGRATIONS):
        monkeypatch.setitem(sq.MIGRATIONS, v, lambda db, v=v: calls.append(v))
    store = RunStore(tmp_path / "copied")  # from the template: no migration runs on a new database
    store.set_meta(status="running")
    store.close()
    assert calls == []
    assert _schema(tmp_path / "copied" / "run.sqlite") == _schema(tmp_path / "migrated" / "run.sqlite")
    assert RunStore(tmp_path / "copied").meta() == {"schema_version": str(SCHEMA_VERSION), "status": "running"}
    monkeypatch.undo()
    legacy = _copy_v1(tmp_path)  # an existing file is never replaced by the template
    RunStore(legacy).close()
    assert read_history(legacy).meta["status"] == "completed"
