"""Killed and interrupted training processes resume to the same numbers as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHILD = r"""
import json, sys, time, torch
import babysit as bs
torch.set_num_threads(1)
run_dir, epochs, resume, slow_after = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
interval = float(sys.argv[5]) if len(sys.argv) > 5 else 5.0
class Beacon:
    def on_step(self, r):
        print(f"step {r.step} {r.epoch:.4f}", flush=True)
        if slow_after and r.step >= slow_after:
            time.sleep(0.05)   # give the parent time to kill us mid-epoch
task = bs.Task(build="mlp", data=bs.data.load("digits", seed=0))
hp = {"optimizer": "nesterov", "lr": 0.05, "width": 64, "dropout": 0.2, "batch_size": 32,
      "schedule": "step", "step_every": 2, "step_factor": 0.5}
run = bs.train(task, hp, epochs=epochs, run_dir=run_dir, resume=resume, observers=[Beacon()],
               checkpoint_interval=interval)
print("RESULT " + json.dumps(run.to_dict()), flush=True)
"""


def _run(args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def _result(proc) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    line = [x for x in out.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _numbers(run: dict) -> list:
    return [(r["epoch"], r["train_loss"], r["train_acc"], r["val_loss"], r["val_acc"], r["lr"]) for r in run["history"]]


def _kill_at(proc, step: int, sig: int) -> None:
    for line in proc.stdout:
        if line.startswith("step ") and int(line.split()[1]) >= step:
            proc.send_signal(sig)
            return
    raise AssertionError("child ended before reaching the step: " + proc.stderr.read())


@pytest.mark.slow
@pytest.mark.parametrize("interval, on_disk", [(0, ["epoch-001", "epoch-002"]), (3600, ["epoch-001"])])
def test_sigkill_mid_epoch_then_resume_gives_identical_numbers(tmp_path, interval, on_disk):
    epochs = 4
    reference = _run([tmp_path / "ref", epochs, 0, 0])
    steps_per_epoch = 36  # digits: 1150 train examples / 32
    killed = _run([tmp_path / "run", epochs, 0, 2 * steps_per_epoch + 10, interval])
    _kill_at(killed, 2 * steps_per_epoch + 12, signal.SIGKILL)  # in the middle of epoch 3
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert [n[:9] for n in ckpts if n.endswith(".pt") and not n.startswith(".")] == on_disk
    resumed = _result(_run([tmp_path / "run", epochs, 1, 0]))
    ref = _result(reference)
    assert resumed["status"] == "completed"
    assert _numbers(resumed) == _numbers(ref)
    assert Path(resumed["best_checkpoint"]).name == Path(ref["best_checkpoint"]).name


@pytest.mark.slow
def test_sigint_stops_cleanly_as_interrupted_and_resumes(tmp_path):
    proc = _run([tmp_path / "run", 3, 0, 40])
    _kill_at(proc, 45, signal.SIGINT)
    run = _result(proc)
    assert run["status"] == "interrupted" and run["diverged_at"] is None
    assert len(run["history"]) == 1
    resumed = _result(_run([tmp_path / "run", 3, 1, 0]))
    ref = _result(_run([tmp_path / "ref", 3, 0, 0]))
    assert resumed["status"] == "completed"
    assert _numbers(resumed) == _numbers(ref)
