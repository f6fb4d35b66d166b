"""How many CPU threads torch uses: a default that does not fight other work on a shared machine.

torch starts one OpenMP thread per core. When other processes already keep those
cores busy, the threads of one matrix multiply wait for each other and a forward
pass can take many times longer than on a single thread. :func:`default_threads`
picks the cores that are idle now (at least one); an explicit choice always wins:
``ADAPTERHUB_THREADS``, ``OMP_NUM_THREADS`` or ``use_threads(n)``.

>>> 1 <= default_threads() <= (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
True
"""

from __future__ import annotations

import os

ENV = "ADAPTERHUB_THREADS"
_USER_SETTINGS = (ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Idle cores now: usable cores minus the 1-minute load average, rounded, at least 1.

    A quiet 2-core machine gets 2; the same machine with two busy processes on it gets 1.
    """
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform: torch's own choice
        return usable_cores()
    return max(1, min(usable_cores(), int(usable_cores() - load + 0.5)))


def chosen_threads(requested: int | None = None) -> tuple[int | None, str]:
    """``(threads, why)``: ``requested``, else ``$ADAPTERHUB_THREADS``, else ``None`` when
    ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` is set (torch follows it), else :func:`default_threads`.

    Raises:
        ValueError: ``requested`` or ``$ADAPTERHUB_THREADS`` is not a positive integer.
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be >= 1, got {requested}")
        return requested, "asked for"
    text = os.environ.get(ENV)
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"${ENV}={text!r} must be a positive number of threads")
        return int(text), f"${ENV}"
    for name in _USER_SETTINGS[1:]:
        if os.environ.get(name):
            return None, f"${name}"
    return default_threads(), f"idle cores of {usable_cores()}"


def use_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads to :func:`chosen_threads` and return the number in use.

    >>> use_threads(1)  # doctest: +SKIP
    1
    """
    import torch

    threads, _ = chosen_threads(requested)
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
