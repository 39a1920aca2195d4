"""study.html: border warnings first, the metric against each parameter (log axis where the range is log)
with the stage ranges drawn, and a leaderboard linking each trial to its run. Everything is escaped.

Plots are PNGs (matplotlib), so the page stays light at 50,000 trials; the leaderboard shows the top rows.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

from .study import Study, Trial

__all__ = ["write_html"]

_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}.warn{background:#fff3cd;padding:6px}"
          "img{max-width:100%}")
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _plot(study: Study, key: str, trials: list[Trial]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    spec = study.plan["space"][key]
    kind = next(k for k in spec if k in ("loguniform", "uniform", "intuniform", "choice"))
    for s in range(len(study.stages)):
        pts = [(t.params[key], t.metric) for t in trials if t.stage == s and key in t.params and t.metric is not None]
        if pts and kind != "choice":
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=6, alpha=0.6, color=_COLORS[s % 6],
                       label=f"stage {s}")
        rng = study.ranges(s).get(key, {})
        if kind in rng and kind != "choice":
            ax.axvspan(*rng[kind], color=_COLORS[s % 6], alpha=0.08)
        if pts and kind == "choice":
            labels = [str(v) for v in spec["choice"]]
            ax.scatter([labels.index(str(p[0])) + 0.1 * s for p in pts], [p[1] for p in pts], s=6, alpha=0.6,
                       color=_COLORS[s % 6], label=f"stage {s}")
            ax.set_xticks(range(len(labels)), labels)
    if kind == "loguniform" or (kind == "intuniform" and spec.get("log")):
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(str(study.plan.get("metric", "metric")))
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return f'<img alt="{html.escape(key)}" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _row(t: Trial, here: Path, keys: list[str]) -> str:
    target = t.run_dir / "report.html" if (t.run_dir / "report.html").exists() else t.run_dir
    link = html.escape(os.path.relpath(target, here), quote=True)
    cells = [f'<a href="{link}">{t.id}</a>', str(t.stage)]
    cells += [html.escape(f"{t.params[k]:.4g}" if isinstance(t.params.get(k), float) else str(t.params.get(k, "")))
              for k in keys]
    cells += [html.escape(t.status), "" if t.metric is None else f"{t.metric:.4f}", html.escape(str(t.epochs))]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def write_html(study: Study, path: str | Path | None = None, *, rows: int = 200) -> Path:
    """Returns the path of study.html (default in the study directory), written atomically."""
    out = Path(path) if path is not None else study.dir / "study.html"
    trials, keys = study.trials, list(study.plan["space"])
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    parts: list[Any] = [f"<!doctype html><meta charset='utf-8'><title>study {html.escape(str(study.dir))}</title>",
                        f"<style>{_STYLE}</style><h1>study {html.escape(str(study.dir))}</h1>"]
    parts += [f"<p class='warn'>{html.escape(w)}</p>" for w in study.warnings]
    parts.append("<p>" + html.escape(", ".join(f"{k} {v}" for k, v in sorted(counts.items()))) + "</p>")
    parts.append("<h2>stage ranges</h2><table><tr><th>stage</th><th>trials x epochs</th>"
                 + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>")
    for s, st in enumerate(study.stages):
        rng = study.ranges(s)
        parts.append(f"<tr><td>{s}</td><td>{st.trials} x {st.epochs}</td>"
                     + "".join(f"<td>{html.escape(str(next(iter(rng[k].values()))) if k in rng else '-')}</td>"
                               for k in keys) + "</tr>")
    parts.append("</table><h2>metric against each parameter</h2>")
    parts += [_plot(study, k, trials) for k in keys]
    parts.append(f"<h2>top {rows}</h2><table><tr><th>trial</th><th>stage</th>"
                 + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "<th>status</th><th>metric</th><th>epochs</th></tr>")
    parts += [_row(t, out.parent, keys) for t in study.top(rows)]
    parts.append("</table>")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(out)
    return out
