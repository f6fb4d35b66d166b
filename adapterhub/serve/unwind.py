"""Freeing what a failed request held, at once: an exception's traceback keeps every frame it passed through
alive with its locals (a 6 MiB prompt, its parsed body, its buffer), and asyncio's futures put those frames in
reference cycles that only a full garbage collection frees, long after the answer is sent. Clearing the
finished frames' locals hands that memory back as soon as the error is answered.

>>> try:
...     big = "x" * 2**20
...     raise ValueError("refused")
... except ValueError as error:
...     drop_locals(error)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import traceback
from typing import Any


def drop_locals(error: BaseException) -> None:
    """Clear the locals of every finished frame in ``error``'s traceback and in those of the exceptions it was
    raised from or during (frames still running are left alone). Call it once the error is logged."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        pending += [current.__cause__, current.__context__]


def _libc(function: str) -> Any:
    """glibc's ``function`` (``None`` elsewhere)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), function)
    except (OSError, AttributeError):
        return None


_TRIM = _libc("malloc_trim")
_MALLOPT = _libc("mallopt")
_M_ARENA_MAX = -8
HEAP_ARENAS = 2  # what a server process keeps unless MALLOC_ARENA_MAX says otherwise


def limit_heap_arenas(arenas: int = HEAP_ARENAS) -> None:
    """Let glibc keep at most ``arenas`` C heaps in this process (unless ``MALLOC_ARENA_MAX`` is set).

    By default each worker thread that allocates gets its own heap (up to 8 per core); the buffers of large
    bodies, parsed in different threads among the streams' allocations, then fragment those heaps and the
    process keeps growing (the soak: +70 to +124 MB in 60 s with the default, +8 MB with 2). Call it before
    the server starts its worker threads.
    """
    if _MALLOPT is not None and "MALLOC_ARENA_MAX" not in os.environ:
        _MALLOPT(_M_ARENA_MAX, arenas)


def return_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    A large body's buffers are freed in the worker threads' heaps, which glibc keeps for reuse: after a few
    6 MiB prompts the process would hold tens of MB it no longer uses. Called after a large body is refused.
    """
    if _TRIM is not None:
        _TRIM(0)
