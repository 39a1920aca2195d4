"""`babysit report`, `babysit diagnose` and `babysit export`: look at runs after (or while) they train."""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from ..status import EXIT_FAILED, EXIT_OK

__all__ = ["COMMANDS", "add_parsers"]


def add_parsers(sub: Any) -> None:
    """Adds the report, diagnose and export subcommands."""
    rp = sub.add_parser("report", help="write report.html of one run (or several overlaid) and print its path")
    rp.add_argument("runs", nargs="+", metavar="RUN")
    rp.add_argument("--out", help="where the page goes (default RUN/report.html; several runs: compare.html)")
    dp = sub.add_parser("diagnose", help="print a run's findings; exit 1 when one is an error")
    dp.add_argument("run", metavar="RUN")
    dp.add_argument("--reference", metavar="RUN", help="a bigger model's run on the same data (for underfitting)")
    dp.add_argument("--json", action="store_true", help="print findings and skipped rules as JSON")
    ep = sub.add_parser("export", help="export a run for another viewer")
    ep.add_argument("run", metavar="RUN")
    ep.add_argument("--tensorboard", action="store_true", required=True, help="TensorBoard event files")
    ep.add_argument("--out", help="directory of the event files (default RUN/tensorboard)")


def cmd_report(args: argparse.Namespace, console: Any) -> int:
    """Runs `babysit report RUN [RUN...]`: writes the page and prints its path."""
    from ..report import report

    print(report(*args.runs, out=args.out))
    return EXIT_OK


def cmd_diagnose(args: argparse.Namespace, console: Any) -> int:
    """Runs `babysit diagnose RUN`: the findings, one block each (or JSON); 1 when one is an error."""
    from ..diagnose import diagnose

    findings = diagnose(args.run, reference=args.reference)
    if args.json:
        print(json.dumps(findings.to_dict(), indent=2, default=str))
        return EXIT_FAILED if findings.worst == "error" else EXIT_OK
    lines = [f"babysit diagnose {args.run}: {len(findings)} finding(s)"]
    for f in findings:
        lines += [f"{f.severity:<8} {f.code}: {f.message}", f"         what to do: {f.advice}"]
    lines += [f"skipped {s.rule}: {s.reason}" for s in findings.skipped]
    console.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)
    return EXIT_FAILED if findings.worst == "error" else EXIT_OK


def cmd_export(args: argparse.Namespace, console: Any) -> int:
    """Runs `babysit export --tensorboard RUN`: writes event files and prints their directory."""
    from ..report.export import export_tensorboard

    print(export_tensorboard(args.run, out=args.out))
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Any], int]] = {
    "report": cmd_report, "diagnose": cmd_diagnose, "export": cmd_export}
