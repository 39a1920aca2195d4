"""SIGKILL a real training process at 10 random points: every resume ends with the uninterrupted run's numbers."""

from __future__ import annotations

import json
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


def start(run_dir: Path, pause: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(CHILD), str(run_dir), str(EPOCHS), str(pause)],
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
def test_ten_sigkills_at_random_points_resume_to_the_uninterrupted_numbers(tmp_path, spiral):
    ref = bs.train(bs.Task(build="mlp", data=spiral), HP, epochs=EPOCHS, run_dir=tmp_path / "ref",
                   checkpoint_interval=0, threads=1).to_dict()
    rng = random.Random(13)
    targets = sorted(rng.sample(range(2, EPOCHS * STEPS_PER_EPOCH), 10))
    run_dir, log, in_write = tmp_path / "run", [], 0
    t0 = time.perf_counter()
    for target in targets:
        proc = start(run_dir, pause=0.01)
        resumed, at = kill_at(proc, target)
        assert proc.returncode == -signal.SIGKILL
        files = [p.name for p in (run_dir / "checkpoints").iterdir()] if (run_dir / "checkpoints").is_dir() else []
        # a kill inside a write leaves a temporary file or a checksum whose checkpoint never arrived
        in_write += any(n.endswith(".tmp") for n in files) or \
            any(n.endswith(".sha256") and n[: -len(".sha256")] not in files for n in files)
        for c in list_checkpoints(run_dir):  # whatever a kill leaves under a checkpoint's name is whole
            load_checkpoint(c.path)
        log.append((target, at, resumed))
        # resumes only ever go forward from a whole checkpoint
        assert resumed is None or resumed == 0 or resumed <= at // STEPS_PER_EPOCH
    final = start(run_dir)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    assert "skipping checkpoint" not in err  # no kill ever left a damaged checkpoint to skip
    result = json.loads([x for x in out.splitlines() if x.startswith("RESULT ")][-1][len("RESULT "):])
    assert result["status"] == "completed"
    assert numbers(result["history"]) == numbers(ref["history"])
    assert Path(result["best_checkpoint"]).name == Path(ref["best_checkpoint"]).name
    print(f"\nRELIABILITY kills={len(log)} mid_write={in_write} seconds={time.perf_counter() - t0:.1f} "
          f"(target, killed_at, resumed_from)={log}")
