"""SIGKILL a real training process at 10 random points: every resume ends with the uninterrupted run's numbers."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import babysit as bs
from babysit.store import list_checkpoints, load_checkpoint

CHILD = Path(__file__).with_name("_child.py")
EPOCHS, STEPS_PER_EPOCH = 6, 18  # spiral: 576 training examples / batch 32
HP = {"optimizer": "nesterov", "lr": 0.05, "width": 32, "batch_size": 32}


def start(run_dir: Path, pause: float = 0.0, hold: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(CHILD), str(run_dir), str(EPOCHS), str(pause), str(hold)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def kill_at(proc: subprocess.Popen, step: int) -> tuple[int | None, int]:
    """SIGKILLs proc once it reports `step`; returns (epoch it resumed from, step it was at when killed)."""
    resumed = None
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith("resumed "):
            resumed = None if line.split()[1] == "None" else int(line.split()[1])
        if line.startswith("step ") and int(line.split()[1]) >= step:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            return resumed, int(line.split()[1])
    raise AssertionError("the child ended before the step: " + proc.stderr.read())  # type: ignore[union-attr]


def numbers(history) -> list:
    return [(r["epoch"], r["train_loss"], r["train_acc"], r["val_loss"], r["val_acc"], r["lr"]) for r in history]


@pytest.mark.slow
def test_ten_sigkills_at_random_points_resume_to_the_uninterrupted_numbers(tmp_path, spiral, caplog):
    ref = bs.train(bs.Task(build="mlp", data=spiral), HP, epochs=EPOCHS, run_dir=tmp_path / "ref",
                   checkpoint_interval=0, threads=1).to_dict()
    rng = random.Random(13)
    targets = sorted(rng.sample(range(2, EPOCHS * STEPS_PER_EPOCH), 10))
    run_dir, log, in_write, seen = tmp_path / "run", [], 0, set()
    t0 = time.perf_counter()
    for i, target in enumerate(targets):
        proc = start(run_dir, pause=0.01, hold=0.1 if i % 2 else 0.0)  # every other run: writes held open 0.1 s
        resumed, at = kill_at(proc, target)
        assert proc.returncode == -signal.SIGKILL
        files = {p.name for p in (run_dir / "checkpoints").iterdir()} if (run_dir / "checkpoints").is_dir() else set()
        # a kill inside a write leaves a temporary file or a checksum whose checkpoint never arrived
        new = files - seen
        in_write += any(n.endswith(".tmp") for n in new) or \
            any(n.endswith(".sha256") and n[: -len(".sha256")] not in files for n in new)
        seen = files
        for c in list_checkpoints(run_dir):  # whatever a kill leaves under a checkpoint's name is whole
            load_checkpoint(c.path)
        log.append((target, at, resumed))
        # resumes only ever go forward from a whole checkpoint
        assert resumed is None or resumed <= at // STEPS_PER_EPOCH
    assert in_write >= 1  # the kills did reach into checkpoint writes
    with caplog.at_level(logging.WARNING):  # the last resume runs here, to the end
        final = bs.train(bs.Task(build="mlp", data=spiral), HP, epochs=EPOCHS, run_dir=run_dir, resume=True,
                         checkpoint_interval=0, threads=1)
    assert not [r for r in caplog.records if "skipping checkpoint" in r.getMessage()]  # none was ever damaged
    assert final.status == "completed"
    assert numbers(final.to_dict()["history"]) == numbers(ref["history"])
    assert Path(final.best_checkpoint).name == Path(ref["best_checkpoint"]).name  # type: ignore[arg-type]
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.endswith(".tmp")]  # stray files swept
    print(f"\nRELIABILITY kills={len(log)} inside_a_write={in_write} seconds={time.perf_counter() - t0:.1f} "
          f"(target, killed_at, resumed_from)={log}")
