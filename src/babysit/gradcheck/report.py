"""The records a gradient check hands back, and how they read as text."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["FAILURE_TEXT_LIMIT", "VERDICTS", "DtypeCheck", "Entry", "GradientReport", "TensorSummary", "verdict"]

# The notes' bands, worst last; "tiny" when every entry of a tensor sits below the round-off floor.
# "acceptable" is the 1e-7..1e-4 band where no kink was crossed (the notes: okay only with kinks).
VERDICTS = ("good", "acceptable with kinks", "acceptable", "uncomfortable", "wrong", "tiny")
FAILURE_TEXT_LIMIT = 999
_NAME_WIDTH = 28


def verdict(rel_error: float, kinked: bool = True) -> str:
    """Returns the notes' verdict for a relative error ("acceptable" in the kink band when none was crossed).

    > 1e-2 probably wrong; 1e-2..1e-4 uncomfortable; 1e-4..1e-7 okay only with kinks; < 1e-7 happy.
    """
    if not rel_error <= 1e-2:  # NaN lands here too
        return "wrong"
    if rel_error > 1e-4:
        return "uncomfortable"
    if rel_error >= 1e-7:
        return "acceptable with kinks" if kinked else "acceptable"
    return "good"


def _finite(x: float) -> float | None:
    """Returns x, or None when it is not finite (JSON has no nan)."""
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class Entry:
    """One checked derivative: a coordinate of a tensor, or a random unit direction through it."""

    name: str
    kind: str  # "coordinate" | "direction"
    index: tuple[int, ...] | None
    analytic: float
    numeric: float
    rel_error: float
    kink_crossed: bool = False
    tiny: bool = False
    passed: bool = True
    h: float = 0.0
    kink_suspected: bool = False  # numpy code: one-sided differences disagree, at h and h/10
    step: float = 0.0             # the absolute step taken: h * max(|x_i|, rms(tensor))
    floor: float = 0.0            # the absolute round-off floor c*eps*|f|/step of this entry
    by_floor: bool = False        # passed only thanks to the round-off floor (|a - n| > tol * scale)

    @property
    def excused(self) -> bool:
        """Returns True when a kink excused the entry: crossed at the dispatcher, or suspected in numpy code."""
        return self.kink_crossed or self.kink_suspected

    @property
    def where(self) -> str:
        """Returns "name[i, j]" for a coordinate, "name (random direction)" for a direction."""
        if self.index is None:
            return f"{self.name} (random direction)"
        if not self.index:
            return self.name
        return f"{self.name}[{', '.join(str(i) for i in self.index)}]"

    def to_dict(self) -> dict[str, Any]:
        """Returns the entry as JSON-ready plain data."""
        d = asdict(self)
        d["index"] = list(self.index) if self.index is not None else None
        for key in ("analytic", "numeric", "rel_error"):
            d[key] = _finite(d[key])
        return d


@dataclass(frozen=True)
class TensorSummary:
    """The verdict on one tensor: how many entries, the worst relative error, kinks excused."""

    ok: bool
    checked: int
    max_rel_error: float
    kinks_crossed: int
    verdict: str
    tiny: int = 0
    kinks_suspected: int = 0
    floor: float = 0.0  # the largest absolute round-off floor that decided an "ok" (0: none did)

    def to_dict(self) -> dict[str, Any]:
        """Returns the summary as JSON-ready plain data."""
        d = asdict(self)
        d["max_rel_error"] = _finite(self.max_rel_error)
        return d


@dataclass(frozen=True)
class DtypeCheck:
    """The gradients in the model's own dtype, beside the float64 check (a bug of float32 only hides there)."""

    dtype: str
    nonfinite: tuple[str, ...] = ()
    differs: tuple[tuple[str, float], ...] = ()  # (tensor, relative distance to the float64 gradient)
    fallback: str = ""  # why the whole check ran in this dtype (the float64 copy broke the model)

    def to_dict(self) -> dict[str, Any]:
        """Returns the record as JSON-ready plain data."""
        return {"dtype": self.dtype, "nonfinite": list(self.nonfinite),
                "differs": [[n, _finite(r)] for n, r in self.differs], "fallback": self.fallback}


@dataclass(frozen=True)
class GradientReport:
    """Numerical vs analytic gradients: pass/fail, per tensor, the worst entry and what to do."""

    ok: bool
    worst: Entry | None
    entries: tuple[Entry, ...]
    by_tensor: Mapping[str, TensorSummary]
    h: float
    seconds: float
    tol: float = 1e-5
    loss: float = math.nan
    floor: float = 0.0
    crossings: int = 0
    kink_ops: tuple[str, ...] = ()
    backward_mismatch: tuple[str, ...] = ()
    sweep: tuple[tuple[float, float], ...] = ()
    stochastic: str = "eval"
    advice: tuple[str, ...] = field(default_factory=tuple)
    functions: Mapping[str, TensorSummary] = field(default_factory=dict)  # "Fn.input" -> summary
    own_dtype: DtypeCheck | None = None

    @property
    def excused(self) -> tuple[Entry, ...]:
        """Returns the entries excused by a kink (crossed at every retry, or suspected in numpy code)."""
        return tuple(e for e in self.entries if e.excused)

    def to_dict(self) -> dict[str, Any]:
        """Returns the report as JSON-ready plain data."""
        return {
            "ok": self.ok,
            "worst": self.worst.to_dict() if self.worst else None,
            "entries": [e.to_dict() for e in self.entries],
            "by_tensor": {k: v.to_dict() for k, v in self.by_tensor.items()},
            "h": self.h, "seconds": self.seconds, "tol": self.tol, "loss": _finite(self.loss),
            "floor": self.floor, "crossings": self.crossings, "kink_ops": list(self.kink_ops),
            "backward_mismatch": list(self.backward_mismatch),
            "sweep": [[h, _finite(r)] for h, r in self.sweep], "stochastic": self.stochastic,
            "advice": list(self.advice),
            "functions": {k: v.to_dict() for k, v in self.functions.items()},
            "own_dtype": self.own_dtype.to_dict() if self.own_dtype else None,
        }

    def __str__(self) -> str:
        return render(self)


def _short(name: str) -> str:
    """Returns the name cut from the left to fit the table column."""
    return name if len(name) <= _NAME_WIDTH else ".." + name[-(_NAME_WIDTH - 2):]


def _row(name: str, s: TensorSummary) -> str:
    """Returns one table line for a tensor: the floor is shown where it, not the tolerance, decided an ok."""
    mark = "ok  " if s.ok else "FAIL"
    note = f" (|a-n| within round-off floor {s.floor:.1e})" if s.ok and s.floor else ""
    note += f" ({s.kinks_suspected} kink suspected)" if s.kinks_suspected else ""
    return (f"{mark} {_short(name):<{_NAME_WIDTH}} {s.checked:>7} {s.max_rel_error:>11.1e} "
            f"{s.kinks_crossed + s.kinks_suspected:>5}  {s.verdict}{note}")


def _rows(r: GradientReport) -> dict[str, TensorSummary]:
    """Returns the table's rows: the tensors, then every input of every custom autograd Function."""
    return {**r.by_tensor, **{f"{k} (Function)": v for k, v in r.functions.items()}}


def _headline(r: GradientReport) -> str:
    """Returns the first line: pass/fail, how many tensors failed, h, tol, size and time."""
    rows = _rows(r)
    bad = sum(not s.ok for s in rows.values())
    tiny = sum(s.ok and s.verdict == "tiny" for s in rows.values())
    state = "passed" if r.ok else f"FAILED ({bad} of {len(rows)} tensors)"
    state += f", {tiny} of {len(rows)} tensors not verified (tiny gradients)" if tiny else ""
    h = f"{r.h:.0e}" + (" (best of sweep)" if r.sweep else "")
    return f"gradient check {state}: h={h} tol={r.tol:.0e}, {len(r.entries)} entries, {r.seconds:.2f} s"


def _worst_line(w: Entry) -> str:
    """Returns the worst entry: where it is, both gradients and the relative error."""
    note = (" (kink crossed, excused)" if w.kink_crossed else
            " (kink suspected: one-sided differences disagree, excused)" if w.kink_suspected else
            " (tiny)" if w.tiny else "")
    return (f"worst: {w.where}  analytic={w.analytic:.6e}  numeric={w.numeric:.6e}  "
            f"rel error={w.rel_error:.2e}{note}")


def _table(r: GradientReport, failing_only: bool) -> list[str]:
    """Returns the per-tensor table, optionally with passing rows folded into one line."""
    lines = [f"     {'tensor':<{_NAME_WIDTH}} {'checked':>7} {'max rel err':>11} {'kinks':>5}  verdict"]
    folded = 0
    for name, s in _rows(r).items():
        if failing_only and s.ok:
            folded += 1
        else:
            lines.append(_row(name, s))
    if folded:
        lines.append(f"     ... {folded} more tensors passed")
    return lines


def render(r: GradientReport) -> str:
    """Returns the readable report: headline, per-tensor table, worst entry, advice.

    A failing report stays under 1 kB (it lands in a pytest assertion message).
    """
    tail = [_worst_line(r.worst)] if r.worst else []
    tail += [f"- {a}" for a in r.advice]
    head = [_headline(r)] + ([f"checked in {r.own_dtype.dtype}: {r.own_dtype.fallback}"]
                             if r.own_dtype and r.own_dtype.fallback else [])
    text = "\n".join([*head, *_table(r, False), *tail])
    if r.ok or len(text) <= FAILURE_TEXT_LIMIT:
        return text
    for advice in (r.advice[:2], r.advice[:1], ()):
        tail = ([_worst_line(r.worst)] if r.worst else []) + [f"- {a}" for a in advice]
        text = "\n".join([*head, *_table(r, True), *tail])
        if len(text) <= FAILURE_TEXT_LIMIT:
            return text
    return "\n".join([*head, *tail])[:FAILURE_TEXT_LIMIT]
