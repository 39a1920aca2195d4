"""The `babysit` command: parse -> config -> one public function -> render.

main() catches Ctrl-C from the first line on (also during `import torch` and data generation):
one line, exit 130, never a traceback. Exit codes are the table of DESIGN.md §3 (babysit.status).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any, Callable, Sequence

from ..errors import BabysitError, UserCodeError, describe_user_error, user_frame
from ..status import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_USER_CODE
from .args import build_config, parser

__all__ = ["build_config", "main"]


def _commands() -> dict[str, Callable[[Any, Any], int]]:
    from .commands import cmd_check, cmd_train
    from .cluster import COMMANDS as CLUSTER_COMMANDS
    from .ensemble import cmd_distill, cmd_ensemble
    from .look import COMMANDS as LOOK_COMMANDS
    from .search import COMMANDS as SEARCH_COMMANDS

    return {"train": cmd_train, "check": cmd_check, "ensemble": cmd_ensemble, "distill": cmd_distill,
            **LOOK_COMMANDS, **SEARCH_COMMANDS, **CLUSTER_COMMANDS}


_ctrl_c = threading.Event()


def _on_sigint(signum: int, frame: Any) -> None:
    # Remembered, then raised as usual: a Ctrl-C that lands inside an import can be swallowed there (a
    # compiled module's init turns it into an ImportError that torch catches), leaving numpy half-imported,
    # and the next error is a consequence of the Ctrl-C, not a fault of the user's code.
    _ctrl_c.set()
    raise KeyboardInterrupt


def _run(argv: Sequence[str] | None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from rich.console import Console

    console = Console()
    try:
        return _commands()[args.command](args, console)
    except Exception as exc:
        if _ctrl_c.is_set():
            raise KeyboardInterrupt from None  # whatever broke after a Ctrl-C broke because of it
        if isinstance(exc, UserCodeError):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_CODE
        if isinstance(exc, BabysitError):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if user_frame(exc) is None:
            raise  # a bug in babysit: the traceback is the report
        print(f"error: {describe_user_error(exc)}", file=sys.stderr)
        return EXIT_USER_CODE


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the babysit command line; returns the exit code."""
    _ctrl_c.clear()
    previous = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C)", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
