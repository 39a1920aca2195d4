"""Damaged, hostile and unwritable checkpoints: each named in babysit's words; resume uses the last good one."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch

import babysit as bs
from babysit.errors import StoreError
from babysit.store import RunStore, best_of, list_checkpoints, load_checkpoint
from babysit.store.checksums import sha256_of, write_sidecar

HP = {"optimizer": "nesterov", "lr": 0.05, "width": 32, "batch_size": 32}


def train(task, run_dir, epochs, **kw):
    return bs.train(task, HP, epochs=epochs, run_dir=run_dir, checkpoint_interval=0, threads=1, **kw)


def numbers(run):
    return [(r.epoch, r.train_loss, r.train_acc, r.val_loss, r.val_acc, r.lr) for r in run.history]


def snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file() and "run.sqlite" not in p.name}


@pytest.fixture(scope="module")
def task(spiral):
    return bs.Task(build="mlp", data=spiral)


@pytest.fixture(scope="module")
def reference(task, tmp_path_factory):
    torch.set_num_threads(1)
    return numbers(train(task, tmp_path_factory.mktemp("ref") / "run", 4))


@pytest.fixture
def three_epochs(task, tmp_path):
    """A run stopped after epoch 3 with its last three checkpoints on disk (keep_last=2 keeps 2 and 3; 1 may be best)."""
    run = train(task, tmp_path / "run", 3)
    assert run.status == "completed" and len(list_checkpoints(run.dir)) >= 2
    return run.dir


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _zero_fill(p: Path) -> None:
    p.write_bytes(bytes(p.stat().st_size))


def _bit_flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) * 2 // 3] ^= 0x10  # one bit, deep in the tensor data: torch alone would load this
    p.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, words", [(_truncate, "bytes where"), (_zero_fill, "sha256"),
                                           (_bit_flip, "sha256")])
def test_a_damaged_newest_checkpoint_is_named_and_the_previous_good_one_resumes(three_epochs, task, reference,
                                                                                damage, words, caplog):
    newest = list_checkpoints(three_epochs)[-1]
    damage(newest.path)
    with pytest.raises(StoreError, match="is damaged") as err:
        load_checkpoint(newest.path)
    assert newest.path.name in str(err.value) and words in str(err.value)
    assert "weights_only" not in str(err.value)
    run = train(task, three_epochs, 4, resume=True)
    assert run.status == "completed" and numbers(run) == reference  # continued from epoch 2, same numbers
    assert any(newest.path.name in r.getMessage() and "skipping" in r.getMessage() for r in caplog.records)


def test_a_bit_flip_torch_would_load_is_caught_by_the_checksum(three_epochs):
    newest = list_checkpoints(three_epochs)[-1]
    _bit_flip(newest.path)
    torch.load(newest.path, weights_only=True)  # the flipped file still loads in torch: only the checksum sees it
    with pytest.raises(StoreError, match="sha256 .* differs from the .* recorded in run.sqlite"):
        load_checkpoint(newest.path)


def test_a_copied_checkpoint_is_verified_by_the_file_beside_it(three_epochs, tmp_path):
    newest = list_checkpoints(three_epochs)[-1].path
    copy = tmp_path / "elsewhere" / newest.name
    copy.parent.mkdir()
    copy.write_bytes(newest.read_bytes())
    (copy.parent / (newest.name + ".sha256")).write_bytes((newest.parent / (newest.name + ".sha256")).read_bytes())
    assert load_checkpoint(copy)["epoch"] == 3
    _bit_flip(copy)
    with pytest.raises(StoreError, match=r"recorded in .*\.sha256"):
        load_checkpoint(copy)


def test_when_no_checkpoint_is_good_resume_says_so_and_changes_nothing(three_epochs, task):
    for c in list_checkpoints(three_epochs):
        _zero_fill(c.path)
    before = snapshot(three_epochs)
    status = RunStore(three_epochs).meta()["status"]
    with pytest.raises(StoreError, match="none of its .* checkpoints is good, so nothing was changed"):
        train(task, three_epochs, 4, resume=True)
    assert snapshot(three_epochs) == before and RunStore(three_epochs).meta()["status"] == status


def _forge(path: Path, data: bytes) -> None:
    """Puts data under a checkpoint's name with a matching checksum, as an attacker with write access would."""
    path.write_bytes(data)
    write_sidecar(path, sha256_of(data), len(data))
    store = RunStore(path.parent.parent)
    store.record_checkpoint(path.name, 9, sha256_of(data), len(data))
    store.close()


class Payload:
    """Unpickled, creates the marker file: the test's proof that a load ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile(marker: Path) -> bytes:
    return pickle.dumps({"format": 1, "epoch": 3, "model": Payload(marker)})


def test_the_payload_really_runs_code_when_unpickled(tmp_path):
    pickle.loads(hostile(tmp_path / "ran"))  # the control: without babysit's refusal the file appears
    assert (tmp_path / "ran").exists()


@pytest.mark.parametrize("forged", [True, False], ids=["checksum-forged", "unrecorded"])
def test_a_hostile_checkpoint_is_refused_through_load_evaluate_and_resume(three_epochs, task, reference, tmp_path,
                                                                         forged):
    marker = tmp_path / "pwned"
    newest = list_checkpoints(three_epochs)[-1].path
    best = best_of(list_checkpoints(three_epochs)).path  # type: ignore[union-attr]
    if forged:  # the best and the newest replaced, their checksums forged to match
        for p in {newest, best}:
            _forge(p, hostile(marker))
    else:  # a file dropped in under a name that makes it the newest and the best
        newest = best = newest.with_name("epoch-009_val-0.9999.pt")
        newest.write_bytes(hostile(marker))
    why = "never unpickles" if forged else "not written by this run"
    with pytest.raises(StoreError, match=why) as err:
        bs.load(three_epochs)
    assert "weights_only" not in str(err.value)
    with pytest.raises(StoreError, match=why):
        bs.evaluate(three_epochs, "val")
    if len(list_checkpoints(three_epochs)) > len({newest, best}):  # a good one is left: resume continues from it
        run = train(task, three_epochs, 4, resume=True)
        assert run.status == "completed" and numbers(run) == reference
    else:
        with pytest.raises(StoreError, match="none of its"):
            train(task, three_epochs, 4, resume=True)
    assert not marker.exists()


def test_a_hostile_checkpoint_is_refused_by_babysit_train_resume(tmp_path):
    import subprocess

    babysit = Path(sys.executable).parent / "babysit"
    args = [str(babysit), "train", "--data", "spiral", "--model", "mlp", "--optimizer", "nesterov", "--lr", "0.05",
            "--width", "16", "--run-dir", str(tmp_path / "r"), "--threads", "1", "--checkpoint-interval", "0"]
    r = subprocess.run([*args, "--epochs", "3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    marker = tmp_path / "pwned"
    newest = list_checkpoints(tmp_path / "r")[-1].path
    _forge(newest, hostile(marker))
    r = subprocess.run([*args, "--epochs", "4", "--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr  # resumed from the previous good checkpoint
    assert newest.name in r.stderr and "never unpickles" in r.stderr and "weights_only" not in r.stderr
    assert "Traceback" not in r.stderr and not marker.exists()
    for c in list_checkpoints(tmp_path / "r"):
        _forge(c.path, hostile(marker))
    r = subprocess.run([*args, "--epochs", "5", "--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "none of its" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()


def test_a_checksum_left_by_a_write_that_never_finished_is_cleaned_up(tmp_path):
    from babysit.store import save_checkpoint

    save_checkpoint(tmp_path, 1, 0.5, {"w": torch.ones(2)})
    orphan = tmp_path / "checkpoints" / "epoch-002_val-0.6000.pt.sha256"  # killed between checksum and rename
    write_sidecar(orphan.with_name("epoch-002_val-0.6000.pt"), "0" * 64, 10)
    save_checkpoint(tmp_path, 3, 0.7, {"w": torch.ones(2)})
    assert not orphan.exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "epoch-001_val-0.5000.pt", "epoch-001_val-0.5000.pt.sha256", "epoch-003_val-0.7000.pt",
        "epoch-003_val-0.7000.pt.sha256"]


def test_a_hostile_checkpoint_is_refused_by_every_ensemble_path_and_babysit_study_never_reads_one(task, tmp_path):
    """The study's best trial's checkpoints replaced by a payload, checksums forged: from_checkpoints, from_run,
    from_study and `babysit ensemble --from-study` refuse it by name; `babysit study` shows the study (it reads
    the store, never a checkpoint); the payload never runs."""
    import subprocess

    space = {"lr": bs.loguniform(1e-2, 1e-1)}
    fixed = {k: v for k, v in HP.items() if k != "lr"}
    study = bs.search(task, space, stages=[bs.Stage(3, 2)], fixed=fixed, study_dir=tmp_path / "s", workers=0, seed=0)
    best = study.top(1)[0]
    marker = tmp_path / "pwned"
    poisoned = list_checkpoints(best.run_dir)
    for c in poisoned:
        _forge(c.path, hostile(marker))
    with pytest.raises(StoreError, match="never unpickles"):
        bs.Ensemble.from_checkpoints([c.path for c in poisoned], task=task)
    with pytest.raises(StoreError, match="never unpickles"):
        bs.Ensemble.from_run(best.run_dir, last=len(poisoned), task=task)
    with pytest.warns(UserWarning, match=rf"skipping 1 member.*{best.run_dir.name}.*never unpickles"):
        ens = bs.Ensemble.from_study(study, 2)  # the top-k skips the member that does not load, by name
    assert best.run_dir.name not in [m.name for m in ens.members] and len(ens.members) == 1
    assert not marker.exists()
    babysit = Path(sys.executable).parent / "babysit"
    r = subprocess.run([str(babysit), "ensemble", "--from-study", str(tmp_path / "s"), "--top", "2", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "never unpickles" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert best.run_dir.name not in r.stdout
    r = subprocess.run([str(babysit), "study", str(tmp_path / "s"), "--json"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["trials"]) == 3
    r = subprocess.run([str(babysit), "study", str(tmp_path / "s")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "study.html" in r.stdout, r.stderr
    assert not marker.exists()
