"""The `babysit` command: parse -> config -> one public function -> render.

main() catches Ctrl-C from the first line on (also during `import torch` and data generation):
one line, exit 130, never a traceback. Exit codes are the table of DESIGN.md §3 (babysit.status).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any, Callable, Sequence

from ..errors import BabysitError, UserCodeError, describe_user_error, user_frame
from ..status import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_USER_CODE, SIGINT_SEEN
from .args import build_config, parser

__all__ = ["build_config", "main"]


def _commands() -> dict[str, Callable[[Any, Any], int]]:
    from .commands import cmd_check, cmd_train
    from .cluster import COMMANDS as CLUSTER_COMMANDS
    from .ensemble import cmd_distill, cmd_ensemble
    from .look import COMMANDS as LOOK_COMMANDS
    from .recipe import COMMANDS as RECIPE_COMMANDS
    from .search import COMMANDS as SEARCH_COMMANDS

    return {"train": cmd_train, "check": cmd_check, "ensemble": cmd_ensemble, "distill": cmd_distill,
            **LOOK_COMMANDS, **SEARCH_COMMANDS, **CLUSTER_COMMANDS, **RECIPE_COMMANDS}


def _importing(frame: Any) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


_main_running = threading.Event()


_seen = threading.Event()  # any Ctrl-C since main() began (SIGINT_SEEN: one deferred and not yet acted on)


def _again() -> None:
    if _main_running.is_set() and SIGINT_SEEN.is_set():
        os.kill(os.getpid(), signal.SIGINT)


def _on_sigint(signum: int, frame: Any) -> None:
    # A KeyboardInterrupt raised inside an import can be swallowed there (seen: numpy left half-imported, then
    # "module 'numpy' has no attribute 'multiply'" from the user's data function, or a run that went on as if
    # nothing happened). So a Ctrl-C that lands in an import is deferred: the signal comes again 50 ms later,
    # until it lands outside any import, or the command's next check (after the imports; Stop.on_sigint)
    # takes it.
    _seen.set()
    if _importing(frame):
        SIGINT_SEEN.set()
        timer = threading.Timer(0.05, _again)
        timer.daemon = True
        timer.start()
        return
    SIGINT_SEEN.clear()
    raise KeyboardInterrupt


def _run(argv: Sequence[str] | None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from rich.console import Console

    console = Console()
    try:
        command = _commands()[args.command]
        if SIGINT_SEEN.is_set():  # deferred during the imports
            SIGINT_SEEN.clear()
            raise KeyboardInterrupt
        return command(args, console)
    except Exception as exc:
        if _seen.is_set():
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
    SIGINT_SEEN.clear()
    _seen.clear()
    _main_running.set()
    previous = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C)", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        _main_running.clear()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
