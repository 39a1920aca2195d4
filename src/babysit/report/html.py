"""One self-contained HTML page: findings first, figures inline as base64 PNG, every text escaped."""

from __future__ import annotations

import base64
import json
from html import escape
from typing import Any, Iterable, Sequence

from ..diagnose import Findings

__all__ = ["page", "image", "findings_section", "config_section", "section"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.3em .5em;vertical-align:top}
.error{background:#fdd}.warning{background:#fff3cd}.info{background:#eef5ff}
img{max-width:100%}pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.85em}
.muted{color:#666;font-size:.9em}
"""


def image(data: bytes, alt: str) -> str:
    """Returns an <img> whose PNG bytes are inline (base64): the page needs no other file."""
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def section(title: str, body: str, anchor: str = "") -> str:
    """Returns an <h2> section; body must already be HTML (built from escaped parts)."""
    ident = f' id="{escape(anchor)}"' if anchor else ""
    return f"<section{ident}><h2>{escape(title)}</h2>\n{body}\n</section>"


def _evidence(ev: Any) -> str:
    text = json.dumps(ev, default=str, sort_keys=True)
    return escape(text if len(text) < 400 else text[:400] + "...")


def findings_section(name: str, findings: Findings) -> str:
    """Returns the findings of one run as a table (worst first), and the rules skipped with their reasons."""
    if findings:
        rows = "".join(
            f'<tr class="{escape(f.severity)}"><td>{escape(f.severity)}</td><td><code>{escape(f.code)}</code></td>'
            f"<td>{escape(f.message)}</td><td>{escape(f.advice)}</td><td class=muted>{_evidence(f.evidence)}</td></tr>"
            for f in findings)
        body = ("<table><tr><th>severity</th><th>code</th><th>what</th><th>what to do</th><th>evidence</th></tr>"
                f"{rows}</table>")
    else:
        body = "<p>No findings: nothing looks wrong.</p>"
    if findings.skipped:
        items = "".join(f"<li><code>{escape(s.rule)}</code>: {escape(s.reason)}</li>" for s in findings.skipped)
        body += f'<details class="muted"><summary>{len(findings.skipped)} rules skipped</summary><ul>{items}</ul></details>'
    return f'<div class="findings" data-run="{escape(name)}"><h3>{escape(name)}</h3>{body}</div>'


def config_section(name: str, config: Any, meta: Any, unseen: Iterable[str]) -> str:
    """Returns a run's configuration and meta as escaped preformatted text, plus what telemetry could not see."""
    notes = "".join(f"<li>{escape(u)}</li>" for u in unseen)
    return (f"<h3>{escape(name)}</h3>" + (f"<ul class=muted>{notes}</ul>" if notes else "")
            + f"<pre>{escape(json.dumps(config, indent=2, default=str))}</pre>"
            + f'<pre class="muted">{escape(json.dumps(meta, indent=2, default=str))}</pre>')


def page(title: str, sections: Sequence[str], *, refresh: int | None) -> str:
    """Returns the whole page; refresh (seconds) makes a live run's page reload itself."""
    head = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f'<link rel="icon" href="data:,">{head}<title>{escape(title)}</title><style>{_STYLE}</style></head>'
            f"<body><h1>{escape(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n")
