"""How a run ends: the one table of statuses and exit codes, and the one Stop object that ends a run early.

SIGINT, early stopping, a search's hopeless-trial rule and a kill flag in a study store all set the same
Stop with a reason; the training loop checks it once per step. The reason becomes the run's status.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["EXIT_BAD_INPUT", "EXIT_CODES", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USER_CODE", "SIGINT_SEEN",
           "STATUSES", "STOP_REASONS", "Stop", "exit_code"]

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_USER_CODE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# status -> (meaning, exit code of a command that ends with it; None: a trial's status, not a command's)
STATUSES: dict[str, tuple[str, int | None]] = {
    "completed": ("all epochs ran", EXIT_OK),
    "early_stopped": ("early stopping fired", EXIT_OK),
    "diverged": ("a NaN/inf loss stopped the run (a failed check exits 1 too)", EXIT_FAILED),
    "failed": ("an exception in the user's own code (model, data, loss), recorded in the run", EXIT_USER_CODE),
    "interrupted": ("Ctrl-C; resumable", EXIT_INTERRUPTED),
    "pruned": ("a search stopped the trial (hopeless, or killed from the study)", None),
}
EXIT_CODES = {status: code for status, (_, code) in STATUSES.items()}
STOP_REASONS = ("interrupted", "early_stopped", "pruned")


def exit_code(status: str) -> int:
    """Returns the exit code of a command whose run ended with `status` (a pruned run counts as failed: 1)."""
    code = EXIT_CODES.get(status)
    return EXIT_FAILED if code is None else code


Condition = Callable[[Any], "tuple[str, str] | None"]


SIGINT_SEEN = threading.Event()  # a Ctrl-C the command line deferred (it landed in an import): babysit.cli.main


class Stop:
    """A request to end a run: the first reason set wins ("interrupted", "early_stopped" or "pruned").

    conditions: callables record -> (reason, why) | None, run by `check` on every StepRecord and
    EpochRecord (a search's hopeless-trial rule, a kill flag read from a study store). Thread-safe.
    """

    def __init__(self, *conditions: Condition) -> None:
        self.conditions = tuple(conditions)
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._why = ""

    def set(self, reason: str, why: str = "") -> None:
        """Requests the stop; the first reason is kept, later ones are ignored."""
        if reason not in STOP_REASONS:
            raise ValueError(f"Stop.set({reason!r}): the reason must be one of {', '.join(STOP_REASONS)}")
        with self._lock:
            if self._reason is None:
                self._reason, self._why = reason, why

    @property
    def reason(self) -> str | None:
        """Returns the reason set, or None while no stop was requested."""
        return self._reason

    @property
    def why(self) -> str:
        """Returns the explanation given with the reason."""
        return self._why

    def __bool__(self) -> bool:
        return self._reason is not None

    def check(self, record: Any) -> bool:
        """Returns True when a stop is requested, after running the conditions on a step or epoch record."""
        if self._reason is None:
            for condition in self.conditions:
                got = condition(record)
                if got is not None:
                    self.set(*got)
                    break
        return self._reason is not None

    @contextmanager
    def on_sigint(self) -> Iterator["Stop"]:
        """Within the block, the first Ctrl-C sets "interrupted"; a second one aborts (KeyboardInterrupt).

        A Ctrl-C the command line saw earlier (start-up: one an import swallowed) sets it on entry.
        """
        if SIGINT_SEEN.is_set():
            SIGINT_SEEN.clear()
            self.set("interrupted", "Ctrl-C during start-up")
            log.warning("interrupt: Ctrl-C during start-up, stopping before the first step")
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handle(signum: int, frame: Any) -> None:
            if self._reason == "interrupted":
                raise KeyboardInterrupt
            self.set("interrupted", "Ctrl-C")
            log.warning("interrupt: stopping after the current step (press Ctrl-C again to abort)")

        previous = signal.signal(signal.SIGINT, handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)
