"""recipe.html: the summary table first, then the final runs' diagnoses, what to try next, and links.

Every text is escaped (run directories, hyperparameter values and advice may hold anything).
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path
from typing import Any

from ..report.html import page, section
from ..store.files import atomic_write
from .result import RecipeResult, _pct

__all__ = ["write_html"]


def _link(target: str | Path, here: Path, text: str) -> str:
    rel = os.path.relpath(Path(target), here)
    return f'<a href="{escape(Path(rel).as_posix())}">{escape(text)}</a>'


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _summary(r: RecipeResult) -> str:
    rows = "".join(
        f"<tr><td>{escape(s.name)}</td><td>{s.trials}</td><td>{s.epochs}</td><td>{s.finished}</td><td>{s.stopped}</td>"
        f"<td>{_pct(s.best_val)}</td><td>{escape(', '.join(f'{k}={_value(v)}' for k, v in s.best_params.items()))}"
        f"</td><td>{s.seconds:.0f}</td></tr>" for s in r.stages)
    stages = ("<table><tr><th>stage</th><th>trials</th><th>epochs each</th><th>finished</th><th>stopped</th>"
              f"<th>best val</th><th>best hyperparameters</th><th>training s</th></tr>{rows}</table>")
    crow = []
    for c in r.candidates:
        iv = "" if c.test_low is None else f"[{_pct(c.test_low)}, {_pct(c.test_high)}]"
        gain = "" if c.gain is None else \
            f"{100 * c.gain.value:+.1f} [{100 * c.gain.low:+.1f}, {100 * c.gain.high:+.1f}] points"
        cls = ' class="chosen"' if c.name == r.chosen else ""
        crow.append(f"<tr{cls}><td>{escape(c.name)}{' (result)' if c.name == r.chosen else ''}</td>"
                    f"<td>{escape(c.description)}</td><td>{_pct(c.val_acc)}</td><td>{_pct(c.test_acc)}</td>"
                    f"<td>{iv}</td><td>{escape(gain)}</td></tr>")
    cands = ("<table><tr><th>candidate</th><th>what</th><th>val acc</th><th>test acc</th><th>95% interval</th>"
             f"<th>gain over single (test)</th></tr>{''.join(crow)}</table>")
    t = r.seconds
    plan = r.plan
    budget = "" if plan is None else (
        f"budget {plan.minutes:g} min: the coarse stage sized from a calibration ({plan.seconds_per_epoch or 0:.3f} s "
        f"per epoch), the fine and final stages from the measured epochs of the stage before "
        f"({plan.fine_seconds_per_epoch or 0:.3f} and {plan.final_seconds_per_epoch or 0:.3f} s); the plan is "
        "recorded in recipe.json (--repeat runs it again with the same numbers)"
        if plan.minutes is not None else f"budget {plan.epochs} epochs, divided between the stages by a pure function")
    retrained = "the chosen configuration was retrained on train+val" if r.retrained else \
        "the final models trained on the training split; validation chose every step"
    return (f"{stages}<p></p>{cands}<p class=muted>chance level {_pct(r.chance)}; test split ({r.test_examples} "
            f"examples) read once, at the end; {escape(retrained)}.</p><p class=muted>{escape(budget)}; time: "
            + escape(", ".join(f"{k} {v:.0f} s" for k, v in t.items())) + "</p>")


def _findings(r: RecipeResult, here: Path) -> str:
    parts = []
    for run, fs in r.findings.items():
        link = _link(r.reports[run], here, Path(run).name) if run in r.reports else escape(Path(run).name)
        rows = "".join(f'<tr class="{escape(f["severity"])}"><td>{escape(f["severity"])}</td><td><code>'
                       f'{escape(f["code"])}</code></td><td>{escape(f["message"])}</td><td>{escape(f["advice"])}</td></tr>'
                       for f in fs)
        parts.append(f"<h3>{link}</h3>" + (f"<table>{rows}</table>" if rows else "<p>No findings.</p>"))
    return "".join(parts) or "<p>No final runs.</p>"


def write_html(r: RecipeResult) -> Path:
    """Returns the path of recipe.html in the recipe's directory."""
    here = r.dir
    out = here / "recipe.html"
    steps = "".join(f"<li>{escape(s)}</li>" for s in r.next_steps)
    if r.status != "completed":
        sections = [section("stopped at preflight", f"<ul>{steps}</ul>", "summary"),
                    section("preflight report", f"<pre>{escape(r.preflight_text)}</pre>", "preflight")]
    else:
        links = [_link(here / "study" / "study.html", here, "study.html (every trial)")]
        links += [_link(p, here, f"{Path(run).name}/report.html") for run, p in r.reports.items()]
        sections = [section("summary", _summary(r), "summary"),
                    section("diagnoses of the final runs", _findings(r, here), "diagnoses"),
                    section("what to try next", f"<ul>{steps}</ul>", "next"),
                    section("runs", "<ul>" + "".join(f"<li>{x}</li>" for x in links) + "</ul>", "runs"),
                    section("preflight", f"<details><summary>passed</summary><pre>{escape(r.preflight_text)}"
                                         "</pre></details>", "preflight")]
    data = page(f"babysit recipe: {here.name}", sections, refresh=None).encode("utf-8")
    atomic_write(out, lambda f: f.write(data))
    return out
