"""How many CPU threads torch uses: a default that does not fight other work on a shared machine.

torch starts one OpenMP thread per core. When other processes already keep those
cores busy, the threads of one matrix multiply wait for each other and a forward
pass can take many times longer than on a single thread. :func:`default_threads`
picks the cores that are idle now (at least one), split evenly among the adapterhub
processes running on this machine; an explicit choice always wins:
``ADAPTERHUB_THREADS``, ``OMP_NUM_THREADS`` or ``use_threads(n)``.

Each process that runs a model through the command line takes a *seat*: a file in
``$ADAPTERHUB_HOME/cpu/`` it holds locked while it lives (the lock goes with the
process, so a killed process frees its seat). Two trainings started in the same
second each see the other's seat and take half the cores; one that started first
calls :func:`rebalance` between steps and drops to its share, then takes the cores
back when the other one ends.

>>> 1 <= default_threads() <= (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
True
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .paths import seats_dir as _seats_folder

ENV = "ADAPTERHUB_THREADS"
USER_SETTINGS = (ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS")  # a user's explicit choice of threads
REBALANCE_EVERY_S = 2.0  # rebalance() looks at the seats at most this often


class _Share:
    """This process's seat and the thread count it chose at start (``None``: the user chose)."""

    seat: int | None = None  # the locked file descriptor
    seat_path: Path | None = None
    ceiling: int | None = None  # the idle cores at start: rebalancing never goes above it
    checked = 0.0


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def seats_dir() -> Path:
    """Where running adapterhub processes hold their seats: ``$ADAPTERHUB_HOME/cpu``."""
    return _seats_folder()


def sharers() -> int:
    """adapterhub processes running on this machine now: those holding a seat, plus this one if it
    holds none (so at least 1). A seat whose process is gone is removed on the way.
    """
    live = 0 if _Share.seat is not None else 1
    try:
        import fcntl

        names = os.listdir(seats_dir())
    except (ImportError, OSError):  # no file locks on this platform, or no seats yet
        return 1
    for name in names:
        path = seats_dir() / name
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: a live process (this one's own seat too, through another open file)
            live += 1
        else:
            try:
                os.unlink(path)  # its process is gone
            except OSError:
                pass
        finally:
            os.close(fd)
    return live


def take_seat() -> None:
    """Hold a seat for this process (idempotent; silently skipped where the folder is not writable)."""
    if _Share.seat is not None:
        return
    try:
        import fcntl

        seats_dir().mkdir(parents=True, exist_ok=True)
        path = seats_dir() / f"{os.getpid()}-{time.time_ns()}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (ImportError, OSError):
        return
    _Share.seat, _Share.seat_path = fd, path
    import atexit

    atexit.register(leave_seat)


def leave_seat() -> None:
    """Give this process's seat back (at exit; a killed process's seat frees itself)."""
    if _Share.seat is None:
        return
    try:
        os.unlink(_Share.seat_path)
    except OSError:
        pass
    os.close(_Share.seat)
    _Share.seat = _Share.seat_path = None


def holds_seat() -> bool:
    """Whether this process holds a seat."""
    return _Share.seat is not None


@contextmanager
def seat_released() -> Iterator[None]:
    """Hold no seat while the body runs, then take one again if this process held one.

    For a process that only waits for child processes which take seats of their own
    (the benchmark's concurrent trainings): its seat would make them take a smaller share.
    """
    held = holds_seat()
    leave_seat()
    try:
        yield
    finally:
        if held:
            take_seat()


def idle_cores() -> int:
    """Usable cores minus the 1-minute load average, rounded, at least 1."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        return usable_cores()
    return max(1, min(usable_cores(), int(usable_cores() - load + 0.5)))


def default_threads() -> int:
    """The idle cores now, split evenly among the adapterhub processes holding seats, at least 1.

    A quiet 2-core machine gets 2; the same machine with two busy processes on it gets 1, and so
    does each of two trainings started there at once.
    """
    return _split(idle_cores(), sharers())


def _split(idle: int, sharing: int) -> int:
    """``idle`` cores, but no more than this process's share of the usable ones, at least 1."""
    return max(1, min(idle, usable_cores() // sharing))


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
    for name in USER_SETTINGS[1:]:
        if os.environ.get(name):
            return None, f"${name}"
    sharing = sharers()  # once: listing and probing the seats is the costly part
    return _split(idle_cores(), sharing), f"idle cores of {usable_cores()}" + (
        f", shared by {sharing} adapterhub processes" if sharing > 1 else "")


def use_threads(requested: int | None = None, *, share: bool = True) -> int:
    """Set torch's intra-op threads to :func:`chosen_threads` and return the number in use.

    With ``share`` this process also takes a seat (see the module docs), so adapterhub
    processes started later count it, and — when the count was not chosen by the user —
    :func:`rebalance` keeps it at its share while others come and go.

    >>> use_threads(1)  # doctest: +SKIP
    1
    """
    import torch

    if share:
        take_seat()
    threads, why = chosen_threads(requested)
    if threads is not None:
        torch.set_num_threads(threads)
    _Share.ceiling = idle_cores() if share and why.startswith("idle cores") else None  # our own choice only
    _Share.checked = time.monotonic()
    return torch.get_num_threads()


def rebalance() -> int | None:
    """Re-split the cores after adapterhub processes came or went; call it between units of work.

    Only where :func:`use_threads` chose the count itself (never over an explicit choice), at most
    every ``REBALANCE_EVERY_S`` seconds, never above the cores that were idle when this process
    started. Returns the thread count now, or ``None`` when nothing was looked at.
    """
    if _Share.ceiling is None or time.monotonic() - _Share.checked < REBALANCE_EVERY_S:
        return None
    import torch

    _Share.checked = time.monotonic()
    threads = _split(_Share.ceiling, sharers())
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads
