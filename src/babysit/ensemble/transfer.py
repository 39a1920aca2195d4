"""transfer_inputs(x, kind, rows, seed): unlabelled inputs beyond the training split, built from its inputs alone.

A teacher that fits its training split almost perfectly says little more there than the labels do; between
and around the training inputs it shows how it generalises, and that is what a student can learn from it
(Bucila et al. 2006, "Model compression": MUNGE; Beyer et al. 2022, "A good teacher is patient and
consistent": mixup). No label is read here: the ensemble labels these inputs with its probabilities.
"""

from __future__ import annotations

from typing import Any

import torch

from .._check import check_choice, check_number
from ..errors import ConfigError

__all__ = ["TRANSFERS", "TRANSFER_HINT", "describe", "mixup_inputs", "munge_inputs", "transfer_inputs"]

TRANSFERS = ("mixup", "munge", "none")
TRANSFER_HINT = ("mixup interpolates pairs of training inputs (the default), munge redraws features near each "
                 "input's nearest neighbour, none keeps the training split alone")
MUNGE_CANDIDATES = 4096  # nearest neighbours are searched among this many training inputs (cost n x 4096)


def mixup_inputs(x: torch.Tensor, rows: int, generator: torch.Generator) -> torch.Tensor:
    """Returns `rows` interpolations lam * x[i] + (1 - lam) * x[j] of random pairs, lam ~ U(0, 1) per pair.

    Every training input is a first partner once per pass over the split, so the set covers the split evenly.
    """
    n = len(x)
    i = torch.cat([torch.randperm(n, generator=generator) for _ in range(-(-rows // n))])[:rows]
    j = torch.randint(n, (rows,), generator=generator)
    lam = torch.rand((rows,) + (1,) * (x.ndim - 1), generator=generator, dtype=x.dtype)
    return lam * x[i] + (1 - lam) * x[j]


def _nearest(x: torch.Tensor, candidates: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Returns, for each row of x, the index into candidates of its nearest other input (Euclidean)."""
    flat, cand = x.reshape(len(x), -1), candidates.reshape(len(candidates), -1)
    out = []
    for block in flat.split(chunk):
        d = torch.cdist(block, cand)
        d[d == 0] = torch.inf  # the input itself (or an exact duplicate) is no neighbour
        out.append(d.argmin(1))
    return torch.cat(out)


def munge_inputs(x: torch.Tensor, rows: int, generator: torch.Generator, p: float = 0.5,
                 s: float = 1.0) -> torch.Tensor:
    """Returns `rows` MUNGE samples: each feature of a training input, with probability p, redrawn near its neighbour's.

    Bucila et al.'s MUNGE: x_a <- N(x'_a, |x_a - x'_a| / s) for the nearest neighbour x' (searched among at
    most MUNGE_CANDIDATES training inputs), so the samples stay where the data is.
    """
    n = len(x)
    base = torch.cat([torch.randperm(n, generator=generator) for _ in range(-(-rows // n))])[:rows]
    pool = torch.randperm(n, generator=generator)[:MUNGE_CANDIDATES]
    src = x[base]
    near = x[pool][_nearest(src, x[pool])]
    swap = torch.rand(src.shape, generator=generator) < p
    noise = torch.randn(src.shape, generator=generator, dtype=x.dtype) * (src - near).abs() / s
    return torch.where(swap, near + noise, src)


def transfer_inputs(x: torch.Tensor, kind: str, rows: int, seed: int) -> torch.Tensor:
    """Returns `rows` unlabelled inputs of the kind named ("mixup", "munge"; "none": no rows) built from x alone.

    The same x, kind, rows and seed give the same inputs.
    """
    check_choice("transfer", kind, TRANSFERS, hint=TRANSFER_HINT)
    check_number("transfer rows", rows, kind=int, low=0, high=10**9)
    if kind == "none" or rows == 0:
        return x[:0]
    if not torch.is_floating_point(x):
        raise ConfigError(f"transfer={kind!r}: needs floating-point inputs to interpolate, got {x.dtype}; use "
                          "transfer='none' or pass your own unlabelled inputs (transfer=tensor)")
    if len(x) < 2:
        raise ConfigError(f"transfer={kind!r}: needs at least 2 training inputs, got {len(x)}")
    gen = torch.Generator().manual_seed(int(seed))
    x = x.detach().cpu()
    return mixup_inputs(x, int(rows), gen) if kind == "mixup" else munge_inputs(x, int(rows), gen)


def describe(kind: Any, rows: int, n: int) -> str:
    """Returns the transfer set in words, e.g. "9600 mixup inputs (3x the training split)", or "none"."""
    name = kind if isinstance(kind, str) else "given"
    return "none" if rows == 0 else f"{rows} {name} inputs ({rows / n:.3g}x the training split)"
