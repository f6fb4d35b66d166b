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

import traceback


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
