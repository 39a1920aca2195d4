"""What checksums cost: babysit's checkpoint save/load (sha256 in run.sqlite and beside the file, verified on
load) against the anchor, torch.save to a temporary name + fsync + rename, and torch.load(weights_only=True).

    python bench/checkpoint_integrity.py --reps 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from babysit.store import load_checkpoint, save_checkpoint


def anchor_save(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for mib in (1, 16, 64):
        payload = {"model": {"w": torch.randn(mib * 2**18)}, "epoch": 1}
        root = Path(tempfile.mkdtemp(prefix="bench-ckpt-"))
        saves, loads = [], []
        for rep in range(args.reps):
            run = root / f"run{rep}"
            b_save = timed(lambda: save_checkpoint(run, rep + 1, 0.5, payload, keep_last=1))
            path = next((run / "checkpoints").glob("*.pt"))
            a_path = root / f"anchor{rep}.pt"
            a_save = timed(lambda: anchor_save(a_path, payload))
            b_load = timed(lambda: load_checkpoint(path))
            a_load = timed(lambda: torch.load(a_path, weights_only=True))
            saves.append((b_save, a_save))
            loads.append((b_load, a_load))
        for what, pairs in (("save", saves), ("load", loads)):
            b = statistics.median(x for x, _ in pairs)
            a = statistics.median(y for _, y in pairs)
            r = statistics.median(x / y for x, y in pairs)
            print(f"{mib:3d} MiB {what}: babysit {b * 1e3:7.1f} ms  torch {a * 1e3:7.1f} ms  ratio median {r:.2f}")


if __name__ == "__main__":
    main()
