"""The run directory: checkpoint names, atomic writes, safe loads, the SQLite store."""

from __future__ import annotations

import pickle
import sqlite3

import pytest
import torch

from babysit.errors import StoreError
from babysit.store import (SCHEMA_VERSION, EpochRecord, RunStore, checkpoint_name, list_checkpoints, load_checkpoint,
                           parse_checkpoint_name, read_config, save_checkpoint, write_config)


def test_checkpoint_name_carries_epoch_and_validation_score():
    assert checkpoint_name(7, 0.8125) == "epoch-007_val-0.8125.pt"
    assert checkpoint_name(1234, 1.0) == "epoch-1234_val-1.0000.pt"
    assert parse_checkpoint_name("epoch-007_val-0.8125.pt") == (7, 0.8125)
    assert parse_checkpoint_name(".epoch-007_val-0.8125.pt.123.tmp") is None
    assert parse_checkpoint_name("notes.txt") is None
    with pytest.raises(StoreError):
        checkpoint_name(1, 1.5)


def test_keeps_the_best_and_the_last_two(tmp_path):
    for epoch, val in [(1, 0.5), (2, 0.9), (3, 0.7), (4, 0.6), (5, 0.65)]:
        save_checkpoint(tmp_path, epoch, val, {"w": torch.ones(2) * epoch})
    names = [c.path.name for c in list_checkpoints(tmp_path)]
    assert names == ["epoch-002_val-0.9000.pt", "epoch-004_val-0.6000.pt", "epoch-005_val-0.6500.pt"]
    assert load_checkpoint(list_checkpoints(tmp_path)[0].path)["w"].tolist() == [2.0, 2.0]


def test_a_failed_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, 0.5, {"w": torch.ones(2)})

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 2, 0.6, {"w": torch.ones(2)})
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["epoch-001_val-0.5000.pt"]  # no temporary file, no half-written epoch 2


def test_a_stray_temporary_file_is_never_the_latest(tmp_path):
    save_checkpoint(tmp_path, 1, 0.5, {"w": torch.ones(2)})
    (tmp_path / "checkpoints" / ".epoch-002_val-0.6000.pt.999.tmp").write_bytes(b"junk")
    assert [c.epoch for c in list_checkpoints(tmp_path)] == [1]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoints_are_never_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "epoch-001_val-0.5000.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(StoreError, match="cannot be loaded safely"):
        load_checkpoint(path)
    with pytest.raises(StoreError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_config_round_trip_drops_none(tmp_path):
    write_config(tmp_path, {"hp": {"lr": 0.1, "clip_norm": None, "hidden": [1, 2]}, "train": {"epochs": 3}})
    assert read_config(tmp_path) == {"hp": {"lr": 0.1, "hidden": [1, 2]}, "train": {"epochs": 3}}
    with pytest.raises(StoreError, match="not a babysit run directory"):
        read_config(tmp_path / "elsewhere")


def test_sqlite_store_scalars_history_and_truncate(tmp_path):
    s = RunStore(tmp_path)
    s.set_meta(status="running")
    for step in range(1, 7):
        s.log(step, step / 3, "loss", 1.0 / step)
    s.log_epoch(3, EpochRecord(1, 0.9, 0.5, 1.0, 0.4, 0.1, 0.01))
    s.log_epoch(6, EpochRecord(2, 0.8, 0.6, 0.9, 0.5, 0.1, 0.01))
    assert [r.epoch for r in s.history()] == [1, 2]
    s.truncate_after(3)
    assert [r[0] for r in s.scalars("loss")] == [1, 2, 3]
    assert [r.val_acc for r in s.history()] == [0.4]
    s.close()
    assert RunStore(tmp_path).meta() == {"schema_version": str(SCHEMA_VERSION), "status": "running"}


def test_newer_schema_is_refused(tmp_path):
    RunStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / "run.sqlite")
    with db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.close()
    with pytest.raises(StoreError, match="schema version 99.*upgrade babysit"):
        RunStore(tmp_path)


def test_background_writer_writes_in_order_and_reports_errors(tmp_path):
    from babysit.store import CheckpointWriter

    w = CheckpointWriter(tmp_path, keep_last=1)
    for epoch, val in [(1, 0.9), (2, 0.5), (3, 0.6)]:
        w.save(epoch, val, {"w": torch.full((3,), float(epoch))})
    w.close()
    assert [c.path.name for c in list_checkpoints(tmp_path)] == ["epoch-001_val-0.9000.pt", "epoch-003_val-0.6000.pt"]
    # a snapshot is taken at save(): later changes to the tensor do not leak into the file
    t = torch.zeros(2)
    w = CheckpointWriter(tmp_path / "b")
    w.save(1, 0.5, {"w": t})
    t += 7
    w.close()
    assert load_checkpoint(list_checkpoints(tmp_path / "b")[0].path)["w"].tolist() == [0.0, 0.0]
    (tmp_path / "file").write_text("not a directory")
    w = CheckpointWriter(tmp_path / "file")
    w.save(1, 0.5, {"w": t})
    with pytest.raises(OSError):
        w.close()
    with pytest.raises(StoreError):
        CheckpointWriter(tmp_path).save(1, 2.0, {})


def test_writer_interval_keeps_every_best_and_last_in_memory_until_written(tmp_path):
    from babysit.store import CheckpointWriter

    now = [0.0]
    w = CheckpointWriter(tmp_path, keep_last=1, interval=10.0, clock=lambda: now[0])
    w.save(1, 0.5, {"w": torch.ones(1)})          # first save: written at once
    now[0] = 1.0
    w.save(2, 0.8, {"w": torch.ones(1) * 2})      # best, pending
    now[0] = 2.0
    w.save(3, 0.6, {"w": torch.ones(1) * 3})      # last, pending
    w._pool.submit(lambda: None).result()         # let queued writes land
    assert [c.epoch for c in list_checkpoints(tmp_path)] == [1]
    now[0] = 12.0
    w.save(4, 0.7, {"w": torch.ones(1) * 4})      # interval passed: the best (2) and the last (4) are written
    w.close()
    assert [c.path.name for c in list_checkpoints(tmp_path)] == ["epoch-002_val-0.8000.pt", "epoch-004_val-0.7000.pt"]
    with pytest.raises(StoreError, match="interval"):
        CheckpointWriter(tmp_path, interval=-1)
