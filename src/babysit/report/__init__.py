"""report(run_dir, ...) -> path of report.html: one self-contained page per run, or several runs overlaid.

Findings first, then loss (linear and log axis, x in epochs), accuracies, update:weight ratios
with the ~1e-3 band, activation and gradient heat-maps over epochs, dead/saturated units, the
first layer's weights and the configuration. ReportObserver rewrites it while a run is live, at
most every `every` seconds, on its own thread: training never waits for matplotlib.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from html import escape
from pathlib import Path
from typing import Any

from ..diagnose import Findings, diagnose
from ..store import History, atomic_write, read_history
from .html import config_section, findings_section, image, page, section

__all__ = ["report", "ReportObserver"]

log = logging.getLogger(__name__)


def _run_sections(h: History) -> list[str]:
    from . import plots  # matplotlib is imported when a report is drawn, not with babysit

    name = h.dir.name if h.dir is not None else "run"
    out = []
    if h.group("update_ratio"):
        out.append(section(f"update:weight ratio — {name}", image(plots.png(plots.ratio_figure(h)),
                                                                  f"update ratio of {name}"), "ratios"))
    for kind, title in (("act", "activations"), ("grad", "gradients")):
        fig = plots.heatmap_figure(h, kind)
        if fig is not None:
            out.append(section(f"{title} per layer — {name}", image(plots.png(fig), f"{title} of {name}"), kind))
    units = plots.units_figure(h)
    if units is not None:
        out.append(section(f"dead and saturated units — {name}", image(plots.png(units), f"units of {name}")))
    if h.arrays:
        first, last = h.arrays[0], h.arrays[-1]
        imgs = image(plots.png(plots.first_layer_figure(first)), f"first layer of {name} at start")
        if last is not first:
            imgs += image(plots.png(plots.first_layer_figure(last, first)), f"first layer of {name} at the end")
        out.append(section(f"first-layer weights — {name}", imgs, "first-layer"))
    return out


def _meta_list(h: History, key: str) -> list[str]:
    try:
        value = json.loads(h.meta.get(key, "[]"))
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def render(runs: list[History], findings: list[Findings]) -> str:
    """Returns the HTML of the report on these runs (their findings given, worst first)."""
    from . import plots

    names = [h.dir.name if h.dir is not None else f"run {i}" for i, h in enumerate(runs)]
    live = any(h.meta.get("status") == "running" for h in runs)
    statuses = ", ".join(f"{n}: {h.meta.get('status', '?')}" for n, h in zip(names, runs))
    sections = [f'<p class="muted">{"live: this page reloads itself; " if live else ""}'
                f"{escape(statuses)} — written {time.strftime('%Y-%m-%d %H:%M:%S')}</p>",
                section("findings", "".join(findings_section(n, f) for n, f in zip(names, findings)), "findings"),
                section("loss", image(plots.png(plots.loss_figure(runs)), "loss"), "loss")]
    if any(h.epochs for h in runs):
        sections.append(section("accuracy", image(plots.png(plots.accuracy_figure(runs)), "accuracy"), "accuracy"))
    for h in runs:
        sections += _run_sections(h)
    sections.append(section("configuration", "".join(
        config_section(n, dict(h.config), dict(h.meta), _meta_list(h, "unseen")) for n, h in zip(names, runs)),
        "config"))
    title = "babysit report: " + " vs ".join(names)
    return page(title, sections, refresh=30 if live else None)


def report(*run_dirs: str | Path, out: str | Path | None = None) -> Path:
    """Returns the path of the report written for one run (run_dir/report.html) or several overlaid.

    Several runs go to out, by default compare.html beside the first run's report.
    """
    if not run_dirs:
        raise TypeError("report() needs at least one run directory")
    runs = [read_history(d) for d in run_dirs]
    findings = [diagnose(h) for h in runs]
    target = Path(out) if out is not None else Path(run_dirs[0]) / ("report.html" if len(runs) == 1
                                                                     else "compare.html")
    text = render(runs, findings).encode()
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda f: f.write(text))
    return target


class ReportObserver:
    """Rewrites a live run's report.html at most every `every` seconds, on a background thread, and at the end."""

    def __init__(self, run_dir: str | Path, every: float = 30.0) -> None:
        self.dir, self.every = Path(run_dir), every
        self._thread: threading.Thread | None = None
        self._last = -float("inf")
        self.written = 0
        self.error: BaseException | None = None

    def _write(self) -> None:
        try:
            report(self.dir)
            self.written += 1
        except Exception as exc:  # a report must never break training; the next write tries again
            self.error = exc
            log.warning("could not write the live report of %s: %s", self.dir, exc)

    def on_step(self, record: Any) -> None:
        """The page follows epochs, not steps."""

    def on_epoch(self, record: Any) -> None:
        if time.monotonic() - self._last < self.every or (self._thread and self._thread.is_alive()):
            return
        self._last = time.monotonic()
        self._thread = threading.Thread(target=self._write, name="babysit-report", daemon=True)
        self._thread.start()

    def on_end(self, run: Any) -> None:
        self.close()
        self._write()

    def close(self) -> None:
        """Waits for a write in progress (a run that raised must not exit under a rendering thread)."""
        if self._thread is not None:
            self._thread.join()

    @property
    def path(self) -> Path:
        """Returns where the report is written."""
        return self.dir / "report.html"

