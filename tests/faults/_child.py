"""A training process for the fault tests: tiny spiral MLP, a checkpoint every epoch, one line per step.

argv: run_dir epochs [sleep_per_step [seconds each checkpoint write is held open]]. Resumes when run_dir already holds a run. Prints "step N" after each
step, "resumed E" (the epoch it continues from) at the start and "RESULT <json>" at the end.
"""

import json
import sys
import time
from pathlib import Path

import torch

import babysit as bs
from babysit.train import prepare, train

HP = {"optimizer": "nesterov", "lr": 0.05, "width": 32, "batch_size": 32}


class Beacon:
    def __init__(self, pause: float) -> None:
        self.pause = pause

    def on_step(self, r):
        print(f"step {r.step}", flush=True)
        if self.pause:
            time.sleep(self.pause)  # gives the parent time to kill at the step it chose


def slow_writes(seconds: float) -> None:
    """Fault injection: each checkpoint's bytes sit under their temporary name for `seconds` before the rename,
    so that kills land inside writes."""
    from babysit.store import checkpoints

    real = checkpoints.atomic_write

    def slow(path, write):
        def write_then_wait(f):
            write(f)
            f.flush()
            time.sleep(seconds)
        real(path, write_then_wait)

    checkpoints.atomic_write = slow


def main() -> None:
    torch.set_num_threads(1)
    if len(sys.argv) > 4:
        slow_writes(float(sys.argv[4]))
    run_dir, epochs = Path(sys.argv[1]), int(sys.argv[2])
    pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    task = bs.Task(build="mlp", data=bs.data.load("spiral", seed=0))
    resume = (run_dir / "config.toml").is_file()
    if resume:
        plan = prepare(task, HP, epochs=epochs, run_dir=run_dir, resume=True, checkpoint_interval=0)
        print(f"resumed {plan.resume_from}", flush=True)
    run = train(task, HP, epochs=epochs, run_dir=run_dir, resume=resume, observers=[Beacon(pause)],
                   checkpoint_interval=0, threads=1)
    print("RESULT " + json.dumps(run.to_dict()), flush=True)


if __name__ == "__main__":
    main()
