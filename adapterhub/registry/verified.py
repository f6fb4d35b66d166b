"""Which stored files were already checked, so a load need not hash them again.

A file's *identity* is its device, inode, size, mtime and ctime (in nanoseconds).
Every write to a file moves its ctime to the current time, and no user call can set
ctime back (``os.utime`` sets atime and mtime only, and itself moves ctime to now);
a copied or moved-across-disks registry has other inodes and ctimes. So a file
whose identity is the one recorded when its bytes last matched the manifest's
sha256 still holds those bytes, and :meth:`Registry.load` reads it without hashing.
What stat cannot see (a flipped bit on the disk, someone setting the clock back)
is found by ``verify``, which always hashes.

Timestamps come from a clock that ticks coarsely (a few ms on Linux, whole
seconds on some filesystems), so a write in the same tick as the previous one
keeps the ctime. A record is therefore only made from bytes read after the
file's timestamps had *settled*: at least :data:`SETTLE_NS` (or
:data:`COARSE_SETTLE_NS` for whole-second timestamps) older than the start of the
read, and unchanged while it was read. Any later write gets a later ctime.

>>> identity(os.stat("adapter_model.safetensors"))  # doctest: +SKIP
'64769:1234:19624368:1732550000123456789:1732550000123456789'
"""

from __future__ import annotations

import os
from typing import Iterable

from .files import ObservedRead

SETTLE_NS = 50_000_000  # well past the kernel's coarse clock tick (1-10 ms) that file timestamps come from
COARSE_SETTLE_NS = 3_000_000_000  # filesystems that keep whole (FAT: even) seconds


def identity(info: os.stat_result) -> str:
    """What must stay the same for a file to still hold the bytes it held: device, inode, size, mtime, ctime."""
    return f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"


def stable_identity(read: ObservedRead) -> str | None:
    """The file's identity if it did not change while it was read, else ``None``."""
    before = identity(read.before)
    return before if before == identity(read.after) else None


def settle_ns(info: os.stat_result) -> int:
    """How long after its last change a file's timestamps have certainly moved past that change's tick."""
    coarse = info.st_mtime_ns % 1_000_000_000 == 0 or info.st_ctime_ns % 1_000_000_000 == 0
    return COARSE_SETTLE_NS if coarse else SETTLE_NS


def unsettled_ns(info: os.stat_result, now_ns: int) -> int:
    """How much longer (ns, 0 when none) until a read of the file may be recorded."""
    return max(0, max(info.st_mtime_ns, info.st_ctime_ns) + settle_ns(info) - now_ns)


def recordable(read: ObservedRead) -> str | None:
    """The identity to record for ``read`` (whose bytes were just checked), or ``None`` if it must not be."""
    stamp = stable_identity(read)
    return stamp if stamp is not None and unsettled_ns(read.before, read.started_ns) == 0 else None


def trusted(read: ObservedRead, recorded: tuple[str, str] | None, sha256: str) -> bool:
    """Whether ``read`` holds the bytes verified when ``recorded`` = ``(sha256, identity)`` was stored."""
    return recorded is not None and recorded[0] == sha256 and recorded[1] == stable_identity(read)


def wait_ns(infos: Iterable[os.stat_result], now_ns: int) -> int:
    """How long to wait until every file in ``infos`` has settled."""
    return max((unsettled_ns(info, now_ns) for info in infos), default=0)
