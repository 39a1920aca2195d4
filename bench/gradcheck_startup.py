"""Bench: the first gradient check in a fresh process (start-up cost), and whether it imports sympy/dynamo.

Each repetition is a new interpreter: import babysit, then time two check_gradients calls on a 6-8-3
ReLU MLP. Before the kink recorder opted out of torch's dynamo-disable wrapper, the first call imported
sympy and torch._dynamo (~1.3 s).

    PYTHONPATH=src .venv/bin/python bench/gradcheck_startup.py [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

CODE = """
import sys, time, torch
torch.set_num_threads(1)
import torch.nn.functional as F
from torch import nn
from babysit.gradcheck import check_gradients
m = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
batch = (torch.randn(4, 6), torch.randint(0, 3, (4,)))
before = set(sys.modules)
t = time.perf_counter(); check_gradients(m, F.cross_entropy, batch); first = time.perf_counter() - t
t = time.perf_counter(); check_gradients(m, F.cross_entropy, batch); second = time.perf_counter() - t
new = set(sys.modules) - before
print(first, second, len(new), sum("sympy" in n for n in new), sum("_dynamo" in n for n in new))
"""


def main() -> None:
    """Prints, per fresh process, the first and second check times and the modules the first imported."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    firsts = []
    print("  first s   second s   new modules   sympy   dynamo")
    for _ in range(args.reps):
        out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout
        first, second, new, sympy, dynamo = out.split()
        firsts.append(float(first))
        print(f"  {float(first):7.3f}   {float(second):8.3f}   {new:>11}   {sympy:>5}   {dynamo:>6}")
    print(f"  median first check {statistics.median(firsts):.3f} s")


if __name__ == "__main__":
    main()
