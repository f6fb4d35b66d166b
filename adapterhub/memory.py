"""How much memory this process has used: the peak resident set size, measured honestly.

>>> peak_rss_bytes() > 0
True
"""

from __future__ import annotations

import mmap
import resource
from typing import Any

LARGE_PAGE_BYTES = 2 * 2**20  # what x86-64 and arm64 Linux back with one transparent huge page


def peak_rss_bytes() -> int:
    """Peak resident set size of this process's own memory so far.

    Reads ``VmHWM`` on Linux: ``getrusage``'s ``ru_maxrss`` survives ``fork`` + ``exec``, so
    a child started by a big process reports its parent's peak instead of its own.
    Falls back to ``ru_maxrss`` where ``/proc`` is missing.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def fresh_buffer(nbytes: int) -> Any:
    """``nbytes`` of new, zero-filled, private, writable memory (an anonymous ``mmap``), freed with its last user.

    Large buffers ask the kernel for transparent huge pages (``MADV_HUGEPAGE``; only advice, ignored
    where unsupported): filling tens of MB of fresh memory otherwise takes one page fault per 4 KiB,
    which on a VM costs about as much as copying the bytes. Nothing is kept or reused between calls.

    >>> len(fresh_buffer(16))
    16
    """
    buffer = mmap.mmap(-1, max(nbytes, 1), flags=mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0x20))
    if nbytes >= LARGE_PAGE_BYTES and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            buffer.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass
    return buffer


def fresh_tensor(numel: int, *, dtype: Any, device: Any) -> Any:
    """An uninitialised 1-D tensor of ``numel`` elements; on CPU in :func:`fresh_buffer` memory (huge pages)."""
    import torch

    if torch.device(device).type != "cpu" or numel == 0:
        return torch.empty(numel, dtype=dtype, device=device)
    size = torch.empty((), dtype=dtype).element_size()
    return torch.frombuffer(fresh_buffer(numel * size), dtype=dtype, count=numel)
