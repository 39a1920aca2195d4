"""threads="auto" against torch's default thread count and against 1 thread, alone and beside a busy process.

    python bench/threads.py [--reps 3] [--epochs 5]

Two models: the demo's MNIST-1D MLP (width 512; a small step, where auto picks 1 thread) and a wide
MLP on synthetic 784-d inputs (a big step, where auto picks this process's share when the cores are free).
"Busy": a second process spinning one core with torch matmuls (1 thread), as a test suite or a
second worker would. Prints the median wall time of `reps` trainings and the ratios.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time

import torch

import babysit as bs
from babysit.threads import choose_threads, forward_macs


def _spin(stop: mp.Event) -> None:  # type: ignore[valid-type]
    torch.set_num_threads(1)
    a = torch.randn(512, 512)
    while not stop.is_set():
        a = (a @ a).tanh()


def _tasks() -> dict[str, tuple[bs.Task, dict]]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6000, 784, generator=g), torch.randint(0, 10, (6000,), generator=g)
    wide = bs.data.from_tensors(x, y, test_fraction=0.0)
    return {"mnist1d mlp-512 (small step)": (bs.Task(build="mlp", data="mnist1d"),
                                              {"optimizer": "nesterov", "lr": 0.05, "width": 512, "batch_size": 64}),
            "784-2048-2048 mlp (big step)": (bs.Task(build="mlp", data=wide),
                                              {"optimizer": "adam", "lr": 1e-3, "width": 2048, "batch_size": 256})}


def _time(task: bs.Task, hp: dict, epochs: int, threads: object) -> float:
    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        bs.train(task, hp, epochs=epochs, run_dir=f"{d}/r", threads=threads, checkpoint_interval=60)  # type: ignore[arg-type]
        return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--epochs", type=int, default=5)
    args = p.parse_args()
    default = torch.get_num_threads()
    print(f"torch default threads: {default}; cores available: {bs.threads.available_cores()}")
    for name, (task, hp) in _tasks().items():
        model = task.build_model(task.resolve_hp(hp))
        x, _ = bs.data.tensors(task.splits.train, limit=hp["batch_size"])
        print(f"\n{name}: {forward_macs(model, x):.3g} multiply-adds per forward; auto alone picks "
              f"{choose_threads(forward_macs(model, x), load=0.0)}")
        _time(task, hp, 1, 1)  # warm-up: first-use costs (allocator, data to device) are not the rule's
        for busy in (False, True):
            stop = mp.Event()
            spinner = mp.Process(target=_spin, args=(stop,)) if busy else None
            if spinner:
                spinner.start()
                time.sleep(1.0)
            times: dict[str, list[float]] = {"auto": [], "default": [], "1 thread": []}
            for _ in range(args.reps):  # interleaved, so drifts in load hit every setting alike
                for label, setting in (("auto", "auto"), ("default", default), ("1 thread", 1)):
                    times[label].append(_time(task, hp, args.epochs, setting))
            if spinner:
                stop.set()
                spinner.join()
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"  {'beside a busy process' if busy else 'alone':22s} auto {med['auto']:6.2f} s   "
                  f"default {med['default']:6.2f} s ({med['default'] / med['auto']:.2f}x auto)   "
                  f"1 thread {med['1 thread']:6.2f} s ({med['1 thread'] / med['auto']:.2f}x auto)")


if __name__ == "__main__":
    main()
