"""Runs that survive a new process and tell the truth: fingerprints, the run lock, dead holders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import babysit as bs
from babysit.errors import StoreError
from babysit.store import DirLock, RunStore

SRC = str(Path(__file__).parents[1] / "src")
HP = {"optimizer": "adam", "lr": 0.01, "batch_size": 32}

SCRIPT = textwrap.dedent('''
    import sys, torch, babysit as bs
    torch.set_num_threads(1)
    task = bs.Task(build=lambda hp: torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(),
                                                        torch.nn.Linear(16, 3)),
                   data=bs.data.load("spiral"))
    run = bs.train(task, {"optimizer": "adam", "lr": 0.01, "batch_size": 32}, epochs=int(sys.argv[2]),
                   run_dir=sys.argv[1], resume=sys.argv[3] == "resume", checkpoint_interval=0)
    print(run.status, [round(r.val_loss, 10) for r in run.history])
''')


def _python(script: Path, *args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300)


def test_a_lambda_built_run_resumes_in_a_new_process(tmp_path):
    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT)
    full = _python(script, tmp_path / "full", 3, "new")
    first = _python(script, tmp_path / "part", 1, "new")
    again = _python(script, tmp_path / "part", 3, "resume")  # another process: the lambda's repr differs
    assert full.returncode == first.returncode == again.returncode == 0, again.stderr
    assert again.stdout == full.stdout


def _net(width):
    return lambda hp: torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.ReLU(), torch.nn.Linear(width, 3))


def test_a_changed_architecture_is_refused_naming_it(spiral, tmp_path):
    bs.train(bs.Task(build=_net(16), data=spiral), HP, epochs=1, run_dir=tmp_path / "r")
    with pytest.raises(StoreError, match=r"fingerprint.model_arch.*fingerprint.parameters: 99 -> 195"):
        bs.train(bs.Task(build=_net(32), data=spiral), HP, epochs=2, run_dir=tmp_path / "r", resume=True)


def test_shuffled_labels_are_refused_naming_the_split(spiral, tmp_path):
    task = bs.Task(build=_net(16), data=spiral)
    bs.train(task, HP, epochs=1, run_dir=tmp_path / "r")
    x, y = bs.data.tensors(spiral.train)
    shuffled = bs.data.Splits(torch.utils.data.TensorDataset(x, y[torch.randperm(len(y))]), spiral.val, spiral.test,
                              3, (2,))
    with pytest.raises(StoreError, match=r"fingerprint.data_train: 'sha256:[0-9a-f]+/n=\d+' -> 'sha256:"):
        bs.train(bs.Task(build=_net(16), data=shuffled), HP, epochs=2, run_dir=tmp_path / "r", resume=True)


def test_a_second_writer_is_refused_naming_the_holder(spiral_task, tmp_path):
    d = tmp_path / "r"
    with DirLock(d, "another babysit"):
        with pytest.raises(StoreError, match=rf"is being written by pid {os.getpid()} on host .* \(another babysit\)"):
            bs.train(spiral_task, {"width": 8}, epochs=1, run_dir=d)
        with pytest.raises(StoreError, match="being written by"):  # --force must not wipe a live run
            bs.train(spiral_task, {"width": 8}, epochs=1, run_dir=d, force=True)
    assert bs.train(spiral_task, {"width": 8}, epochs=1, run_dir=d).status == "completed"
    assert bs.store.holder(d) is None  # released at the end


def test_the_stale_lock_of_a_sigkilled_process_is_recognised(tmp_path):
    script = tmp_path / "long.py"
    script.write_text(textwrap.dedent('''
        import sys, torch, babysit as bs
        torch.set_num_threads(1)
        task = bs.Task(build="mlp", data=bs.data.load("spiral"))
        bs.train(task, {"width": 8, "batch_size": 8}, epochs=100000, run_dir=sys.argv[1], checkpoint_interval=0)
    '''))
    d = tmp_path / "r"
    p = subprocess.Popen([sys.executable, str(script), str(d)], env={**os.environ, "PYTHONPATH": SRC})
    try:
        deadline = time.time() + 120
        while not bs.store.list_checkpoints(d) and time.time() < deadline:
            time.sleep(0.1)
        holder = bs.store.holder(d)
        assert holder is not None and holder["pid"] == p.pid
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert bs.store.holder(d) is None  # the kernel released it with the process
    assert RunStore(d).meta()["status"] == "running"
    task = bs.Task(build="mlp", data=bs.data.load("spiral"))
    with pytest.raises(StoreError, match=rf"left running by pid {p.pid} .* no longer holds it"):
        bs.train(task, {"width": 8, "batch_size": 8}, epochs=100000, run_dir=d)
    done = bs.store.list_checkpoints(d)[-1].epoch
    run = bs.train(task, {"width": 8, "batch_size": 8}, epochs=done + 1, run_dir=d, resume=True)
    assert run.status == "completed" and len(run.history) == done + 1
    meta = RunStore(d).meta()
    assert meta["started"] <= meta["finished"] and len(json.loads(meta["resumes"])) == 1
