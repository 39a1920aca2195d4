"""Writes that fail: a file-size limit, a full disk, a checkpoints path that is a file. A clear error, the last
good checkpoint intact, the run marked failed."""

from __future__ import annotations

import errno
import resource
import subprocess
import sys
from pathlib import Path

import pytest

import babysit as bs
from babysit.errors import StoreError
from babysit.store import RunStore, list_checkpoints, load_checkpoint

BABYSIT = Path(sys.executable).parent / "babysit"
HP = {"optimizer": "nesterov", "lr": 0.05, "width": 32, "batch_size": 32}


def meta(run_dir: Path) -> dict[str, str]:
    store = RunStore(run_dir)
    try:
        return store.meta()
    finally:
        store.close()


def leftovers(run_dir: Path) -> list[str]:
    return [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_a_file_size_limit_fails_the_run_clearly_and_keeps_the_last_good_checkpoint(tmp_path):
    args = [str(BABYSIT), "train", "--data", "spiral", "--model", "mlp", "--optimizer", "nesterov", "--lr", "0.01",
            "--set", "width=512", "--set", "depth=2", "--run-dir", str(tmp_path / "r"), "--threads", "1",
            "--checkpoint-interval", "0"]
    r = subprocess.run([*args, "--epochs", "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    good = list_checkpoints(tmp_path / "r")[-1]
    size = good.path.stat().st_size
    assert size > 1_500_000  # the limit below sits well under a checkpoint and well over everything else

    def limit() -> None:  # `ulimit -f` in the child: no file may grow past 512 KiB
        resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, resource.RLIM_INFINITY))

    r = subprocess.run([*args, "--epochs", "4", "--resume"], capture_output=True, text=True, timeout=300,
                       preexec_fn=limit)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "cannot write checkpoint epoch-003" in r.stderr and "file-size limit" in r.stderr
    assert f"the last good checkpoint, {good.path.name}, is intact" in r.stderr
    assert load_checkpoint(good.path)["epoch"] == 2  # whole: its checksum still matches
    assert list_checkpoints(tmp_path / "r")[-1].path == good.path and not leftovers(tmp_path / "r")
    m = meta(tmp_path / "r")
    assert m["status"] == "failed" and "file-size limit" in m["error"]


def test_a_full_disk_fails_the_run_clearly_and_keeps_the_last_good_checkpoint(tmp_path, spiral, monkeypatch):
    task = bs.Task(build="mlp", data=spiral)
    bs.train(task, HP, epochs=2, run_dir=tmp_path / "r", checkpoint_interval=0, threads=1)
    good = list_checkpoints(tmp_path / "r")[-1]
    from babysit.store import checkpoints as ck

    real = ck.atomic_write

    def full(path, write):
        if path.suffix == ".pt":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, write)

    monkeypatch.setattr(ck, "atomic_write", full)
    with pytest.raises(StoreError, match="the disk is full") as err:
        bs.train(task, HP, epochs=4, run_dir=tmp_path / "r", resume=True, checkpoint_interval=0, threads=1)
    assert good.path.name in str(err.value)
    assert load_checkpoint(good.path)["epoch"] == 2 and list_checkpoints(tmp_path / "r")[-1].path == good.path
    assert meta(tmp_path / "r")["status"] == "failed"


def test_a_checkpoints_path_that_is_a_file_fails_the_run_clearly(tmp_path, spiral):
    # CI runs as root, which ignores permissions: a file where the directory should be gives ENOTDIR
    run_dir = tmp_path / "r"
    task = bs.Task(build="mlp", data=spiral)
    bs.train(task, HP, epochs=1, run_dir=run_dir, checkpoint_interval=0, threads=1)
    for p in (run_dir / "checkpoints").iterdir():
        p.unlink()
    (run_dir / "checkpoints").rmdir()
    (run_dir / "checkpoints").write_text("in the way")
    with pytest.raises(StoreError, match="checkpoints' is a file, not a directory") as err:
        bs.train(task, HP, epochs=2, run_dir=run_dir, resume=True, checkpoint_interval=0, threads=1)
    assert "no earlier checkpoint exists" in str(err.value)
    m = meta(run_dir)
    assert m["status"] == "failed" and "not a directory" in m["error"]
    assert (run_dir / "checkpoints").read_text() == "in the way"
