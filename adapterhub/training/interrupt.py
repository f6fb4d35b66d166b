"""Ctrl-C during a training run: the first one is only noted, so the current step (or evaluation)
finishes and a checkpoint is saved; a second one stops at once (Python's own handler is back).
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable


class CtrlC:
    """Notes the first SIGINT while installed (only in the main thread, where signals arrive).

    >>> ctrl_c = CtrlC(lambda: print("finishing this step"))  # doctest: +SKIP
    >>> ctrl_c.install(); ...; ctrl_c.requested; ctrl_c.restore()  # doctest: +SKIP
    """

    def __init__(self, on_first: Callable[[], None]):
        self.requested = False
        self._on_first = on_first
        self._previous: Any = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def request_stop(signum: int, frame: Any) -> None:
            self.requested = True
            signal.signal(signal.SIGINT, self._previous)  # a second Ctrl-C stops at once
            self._on_first()

        self._previous = signal.signal(signal.SIGINT, request_stop)

    def restore(self) -> None:
        """Put the handler back that :meth:`install` replaced (if it still is replaced)."""
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
