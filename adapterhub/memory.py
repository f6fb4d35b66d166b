"""How much memory this process has used: the peak resident set size, measured honestly.

>>> peak_rss_bytes() > 0
True
"""

from __future__ import annotations

import resource


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
