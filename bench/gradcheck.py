"""Bench: babysit.check_gradients against torch.autograd.gradcheck (slow and fast_mode) on MLPs.

Also a ~10M-parameter wide MLP (float32, as users train it) whose middle 2560x2560 layer has a custom
backward with a single-element bug (one weight-gradient element with the wrong sign): babysit's time
to catch and name it (cold, per seed) against torch's fast mode on the same model in float64.

Same network-and-loss function, float64, batch of 4, at ~5k and ~300k parameters: wall time (median of
warm runs) and whether each tool localises a seeded bug (a zeroed column of the first layer's weight
gradient, via a custom autograd.Function). torch's gradcheck takes the flattened parameters as its one
input, which is how a whole model is passed to it.

    PYTHONPATH=src .venv/bin/python bench/gradcheck.py [--reps 7] [--seeds 5] [--full-slow] [--only-10m]
        [--count-work]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function
from torch.autograd.gradcheck import GradcheckError

from babysit.gradcheck import check_gradients
from babysit.gradcheck.core import few_threads

SIZES = {"5k": (40, 64, 32, 10), "300k": (784, 300, 200, 10)}
SUBSET = 3000  # flattened parameters checked by torch's slow mode on the 300k model (then extrapolated)


class ZeroColumn(Function):
    """Linear whose backward zeroes one input column of the weight gradient (the seeded bug)."""

    column = 17

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        return x @ w.t() + b

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        x, w = ctx.saved_tensors
        gw = g.t() @ x
        gw[:, ZeroColumn.column] = 0
        return g @ w, gw, g.sum(0)


class BuggyLinear(nn.Linear):
    """nn.Linear through ZeroColumn."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ZeroColumn.apply(x, self.weight, self.bias)


def mlp(sizes: tuple[int, ...], buggy: bool, seed: int) -> nn.Module:
    """Returns a float64 ReLU MLP; the first layer drops a gradient column when buggy."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers += [(BuggyLinear if buggy and i == 0 else nn.Linear)(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).double()


def batch(sizes: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns a float64 Gaussian batch of 4."""
    gen = torch.Generator().manual_seed(100 + seed)
    return torch.randn(4, sizes[0], generator=gen, dtype=torch.float64), torch.randint(0, 10, (4,), generator=gen)


def flat_fn(model: nn.Module, xy: tuple, count: int | None = None) -> tuple[Callable, torch.Tensor]:
    """Returns (f(flat) -> loss, flat): the model as a function of its flattened parameters.

    With count, only the first `count` flattened parameters are inputs; the rest stay fixed.
    """
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    full = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    head = full[: count or full.numel()].clone().requires_grad_(True)
    tail = full[head.numel():]

    def f(v: torch.Tensor) -> torch.Tensor:
        chunks = torch.cat([v, tail]).split([s.numel() for s in shapes])
        params = {n: c.view(s) for n, c, s in zip(names, chunks, shapes)}
        return F.cross_entropy(torch.func.functional_call(model, params, (xy[0],)), xy[1])

    return f, head


def torch_check(model: nn.Module, xy: tuple, fast: bool, count: int | None = None) -> tuple[float, bool, str]:
    """Returns (seconds, passed, failure message) of torch.autograd.gradcheck."""
    f, flat = flat_fn(model, xy, count)
    work = sum(p.numel() for p in model.parameters()) * xy[0].shape[0]
    start = time.perf_counter()
    try:
        with few_threads(work):  # the same thread setting babysit picks, so both pay the same per-op cost
            torch.autograd.gradcheck(f, (flat,), fast_mode=fast)
        return time.perf_counter() - start, True, ""
    except GradcheckError as exc:
        return time.perf_counter() - start, False, str(exc)


def median_time(fn: Callable[[], Any], reps: int, warm: bool = True) -> float:
    """Returns the median wall time of reps calls (after one warm-up call when warm)."""
    if warm:
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timings(label: str, reps: int, full_slow: bool) -> dict[str, Any]:
    """Returns the wall times of babysit, torch fast_mode and torch slow mode on the correct model."""
    sizes = SIZES[label]
    model, xy = mlp(sizes, False, 0), batch(sizes, 0)
    n = sum(p.numel() for p in model.parameters())
    with torch.random.fork_rng():
        ours = median_time(lambda: check_gradients(model, F.cross_entropy, xy), reps)
        fast = median_time(lambda: torch_check(model, xy, True), reps)
        if label == "5k" or full_slow:
            big = label != "5k"  # minutes per run: one cold run (its own warm-up is a rounding error)
            slow, slow_note = median_time(lambda: torch_check(model, xy, False), 1 if big else 3, not big), ""
        else:
            part = torch_check(model, xy, False, SUBSET)[0]
            slow, slow_note = part * n / SUBSET, f"extrapolated from {SUBSET} of {n} params"
    return {"label": label, "params": n, "ours": ours, "fast": fast, "slow": slow, "slow_note": slow_note}


def localisation(label: str, seeds: int, full_slow: bool) -> dict[str, Any]:
    """Returns, per tool, how many seeds caught the zeroed column, whether it names the parameter, msg bytes."""
    sizes = SIZES[label]
    ZeroColumn.column = 17 if label == "5k" else 137
    caught = {"ours": 0, "fast": 0, "slow": 0}
    named, exact, sizes_b = 0, 0, {"ours": 0, "fast": 0, "slow": 0}
    for seed in range(seeds):
        model, xy = mlp(sizes, True, seed), batch(sizes, seed)
        rep = check_gradients(model, F.cross_entropy, xy, seed=seed)
        caught["ours"] += not rep.ok
        named += bool(rep.worst and rep.worst.name == "0.weight")
        exact += bool(rep.worst and rep.worst.index and rep.worst.index[1] == ZeroColumn.column)
        sizes_b["ours"] = max(sizes_b["ours"], len(str(rep).encode()))
        torch.manual_seed(seed)
        _, ok, msg = torch_check(model, xy, True)
        caught["fast"] += not ok
        sizes_b["fast"] = max(sizes_b["fast"], len(msg.encode()))
        if seed == 0:  # slow mode is deterministic: one run says it all
            count = None if (label == "5k" or full_slow) else SUBSET
            _, ok, msg = torch_check(model, xy, False, count)
            caught["slow"] = 0 if ok else seeds
            sizes_b["slow"] = len(msg.encode())
            slow_names = "0.weight" in msg
    return {"caught": caught, "named": named, "exact": exact, "bytes": sizes_b, "slow_names": slow_names,
            "seeds": seeds}


WIDE = (1280, 2560, 2560, 10)
ELEMENT = (1234, 567)  # the gradient element of the middle weight that gets the wrong sign


class ElementBug(Function):
    """Linear whose backward flips the sign of one weight-gradient element."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        return x @ w.t() + b

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        x, w = ctx.saved_tensors
        gw = g.t() @ x
        gw[ELEMENT] = -gw[ELEMENT]
        return g @ w, gw, g.sum(0)


class ElementBugLinear(nn.Linear):
    """nn.Linear through ElementBug."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ElementBug.apply(x, self.weight, self.bias)


def wide(seed: int) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """Returns the ~10M-parameter float32 MLP with the buggy middle layer, and its batch of 4."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(WIDE[0], WIDE[1]), nn.ReLU(), ElementBugLinear(WIDE[1], WIDE[2]), nn.ReLU(),
                          nn.Linear(WIDE[2], WIDE[3]))
    gen = torch.Generator().manual_seed(200 + seed)
    return model, (torch.randn(4, WIDE[0], generator=gen), torch.randint(0, 10, (4,), generator=gen))


def _true_element(model: nn.Module, xy: tuple) -> float:
    """Returns the correct gradient of the bugged element (0 when its input unit is dead: nothing to catch)."""
    twin = nn.Sequential(*[nn.Linear(m.in_features, m.out_features) if isinstance(m, nn.Linear) else m
                           for m in model]).double()
    twin.load_state_dict(model.state_dict())
    F.cross_entropy(twin(xy[0].double()), xy[1]).backward()
    return float(twin[2].weight.grad[ELEMENT])


def weight_reads(seed: int) -> float:
    """Returns the float64 weights one check of the 10M model reads, in model forwards (load-independent).

    Counted by a global module forward hook (Linear layers) plus the custom Function's calls outside its
    module (the Function checked alone); the forwards at batch 4 are bound by reading the weights.
    """
    model, xy = wide(seed)
    n, read = sum(p.numel() for p in model.parameters()), [0]
    original = ElementBug.forward

    def module_hook(mod: nn.Module, inp: Any, out: Any) -> None:
        if isinstance(mod, nn.Linear) and mod.weight.dtype == torch.float64:
            read[0] += mod.weight.numel() * (0 if isinstance(mod, ElementBugLinear) else 1)

    def counted(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        read[0] += w.numel() if w.dtype == torch.float64 else 0
        return original(ctx, x, w, b)

    handle = torch.nn.modules.module.register_module_forward_hook(module_hook)
    ElementBug.forward = staticmethod(counted)  # type: ignore[method-assign]
    try:
        check_gradients(model, F.cross_entropy, xy, seed=seed)
    finally:
        handle.remove()
        ElementBug.forward = staticmethod(original)  # type: ignore[method-assign]
    return read[0] / n


def scale(seeds: int, count: bool = False) -> None:
    """Prints, per seed, babysit's cold time and verdict and torch fast mode's, on the 10M model."""
    print(f"\n~10M parameters: MLP {WIDE}, middle weight gradient element {list(ELEMENT)} sign-flipped, "
          f"batch 4, {torch.get_num_threads()} threads, one cold run per seed")
    print(f"  {'seed':<5} {'true grad':>10} {'babysit s':>9} {'cpu s':>6} {'forwards':>8}  {'caught and named':<34} "
          f"{'torch fast s':>12}  caught")
    ours, theirs, units = [], [], []
    for seed in range(seeds):
        model, xy = wide(seed)
        true = _true_element(model, xy)
        start, cpu = time.perf_counter(), time.process_time()
        rep = check_gradients(model, F.cross_entropy, xy, seed=seed)
        ours.append(time.perf_counter() - start)
        cpu = time.process_time() - cpu
        w = rep.worst
        named = (f"yes: {w.where}" if w and w.index == ELEMENT and w.name in ("2.weight", "ElementBug.w")
                 else f"no: {w.where if w else None}")
        torch.manual_seed(seed)
        t, ok, _ = torch_check(model.double(), (xy[0].double(), xy[1]), True)
        theirs.append(t)
        with torch.no_grad():  # the load-independent unit: one float64 forward of this model, right now
            fwd = median_time(lambda m=model, b=xy: F.cross_entropy(m(b[0].double()), b[1]), 5)
        units.append(ours[-1] / fwd)
        print(f"  {seed:<5} {true:>10.2e} {ours[-1]:>9.2f} {cpu:>6.2f} {units[-1]:>8.0f}  "
              f"{(named if not rep.ok else 'passed'):<34} {t:>12.2f}  {'no' if ok else 'yes'}")
    print(f"  median babysit {statistics.median(ours):.2f} s ({statistics.median(units):.0f} float64 forwards), "
          f"torch fast {statistics.median(theirs):.2f} s, ratio {statistics.median(ours) / statistics.median(theirs):.2f}")
    if count:
        reads = [weight_reads(seed) for seed in range(seeds)]
        print(f"  float64 weights read per check, in model forwards: {', '.join(f'{r:.0f}' for r in reads)}")


def main() -> None:
    """Prints the timing table, the ratios and the localisation table, then the 10M-parameter case."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--full-slow", action="store_true", help="run torch's slow mode on all 300k parameters")
    ap.add_argument("--only-10m", action="store_true", help="run the ~10M-parameter case only")
    ap.add_argument("--count-work", action="store_true", help="10M case: count the float64 weights read")
    args = ap.parse_args()
    if args.only_10m:
        scale(args.seeds, args.count_work)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} cores; both tools run with 1 intra-op thread "
          f"(babysit's choice for small forwards); float64, batch 4, median of {args.reps} warm runs "
          "(torch slow mode: 3 runs on 5k, 1 on 300k)")
    print("\nwall time (s)      params   babysit   torch fast   torch slow      fast/ours   slow/ours")
    for label in SIZES:
        t = timings(label, args.reps, args.full_slow)
        print(f"  {label:<6} {t['params']:>14,} {t['ours']:>9.4f} {t['fast']:>12.4f} {t['slow']:>12.2f}"
              f" {t['fast'] / t['ours']:>14.1f}x {t['slow'] / t['ours']:>10.0f}x  {t['slow_note']}")
    print(f"\nseeded bug: zeroed weight-gradient column of the first layer, {args.seeds} seeds")
    print(f"  {'model':<6} {'tool':<12} {'caught':<20} {'names the parameter':<32} failure message bytes")
    for label in SIZES:
        r = localisation(label, args.seeds, args.full_slow)
        n, b = r["seeds"], r["bytes"]
        subset = " (subset)" if label == "300k" and not args.full_slow else ""
        flat = "no: 'input 0', the flat vector"
        rows = [("babysit", f"{r['caught']['ours']}/{n}", f"yes {r['named']}/{n}, column {r['exact']}/{n}", b["ours"]),
                ("torch fast", f"{r['caught']['fast']}/{n}", flat, b["fast"]),
                ("torch slow", f"{r['caught']['slow']}/{n}{subset}", "yes" if r["slow_names"] else flat, b["slow"])]
        for tool, caught, names, size in rows:
            print(f"  {label:<6} {tool:<12} {caught:<20} {names:<32} {size if size else '- (passed)':>8}")
    scale(args.seeds, args.count_work)

if __name__ == "__main__":
    main()
