"""Reading untrusted files: regular files only (never a FIFO or device), bounded JSON objects, and
messages that quote what was read cut short.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidAdapterError
from ..memory import fresh_buffer

MAX_JSON_BYTES = 8 * 2**20  # adapter_config.json / adapterhub.json: far above any real one
MAX_JSON_DEPTH = 32


def read_regular(path: Path, *, limit: int | None = None) -> bytes:
    """The bytes of ``path`` if it is a regular file (symlinks followed); never blocks on a FIFO or reads a device.

    Raises:
        FileNotFoundError: nothing at ``path``.
        NotARegularFileError: a directory, FIFO, socket or device (an ``OSError``).
        OSError: ``limit`` given and the file is larger, or it cannot be read.
    """
    return read_observed(path, limit=limit).data


@dataclass(frozen=True)
class ObservedRead:
    """A regular file's bytes with the ``fstat`` of the open file just before and just after reading them.

    ``data`` is ``bytes``, or with ``writable=True`` a private writable buffer (an anonymous ``mmap``:
    ``len``, slicing to ``bytes``, hashing and the buffer protocol work alike).
    """

    data: Any
    before: os.stat_result
    after: os.stat_result  # differs from ``before`` when the file was written while it was read
    started_ns: int  # wall clock (``time.time_ns``) when reading began


def read_observed(path: Path, *, limit: int | None = None, writable: bool = False) -> ObservedRead:
    """:func:`read_regular`, also returning what the file's ``fstat`` said around the read (same errors).

    ``writable=True`` reads into a private writable buffer, so tensors can view the bytes in place
    (:func:`safetensors_tensors`) without a copy; the buffer holds what was read, never the file itself.
    """
    info = os.stat(path)  # before opening: opening a FIFO would block
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode) else \
            "a special file"
        raise NotARegularFileError(f"{path} is {kind}, not a regular file")
    if limit is not None and info.st_size > limit:
        raise OSError(f"{path} is {info.st_size} bytes, more than the {limit} this file may have")
    started = time.time_ns()
    with open(path, "rb") as handle:
        before = os.fstat(handle.fileno())
        if not stat.S_ISREG(before.st_mode):  # replaced between the stat and the open
            raise NotARegularFileError(f"{path} is no longer a regular file")
        data = _read_writable(handle, before.st_size) if writable else handle.read()
        after = os.fstat(handle.fileno())
    return ObservedRead(data=data, before=before, after=after, started_ns=started)


def _read_writable(handle: Any, size: int) -> Any:
    """The rest of ``handle`` in a :func:`~adapterhub.memory.fresh_buffer` of ``size`` bytes (``bytes`` if the
    file's size changed meanwhile: what was read, whose identity changed anyway)."""
    if size <= 0:
        return handle.read()
    buffer = fresh_buffer(size)
    view = memoryview(buffer)
    try:
        got = 0
        while got < size:
            count = handle.readinto(view[got:])
            if not count:
                break
            got += count
    finally:
        view.release()
    if got < size:
        return buffer[:got]  # shrank while read
    rest = handle.read()
    return buffer[:] + rest if rest else buffer  # grew while read, or complete


class NotARegularFileError(OSError):
    """A path that should hold a file holds a directory, FIFO, socket or device."""


def shorten(text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters, so no message repeats a whole hostile input."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def json_depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` nests lists/dicts at most ``limit`` deep (iterative: no recursion on hostile input)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return False
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return True


def parse_json(data: bytes, *, where: str) -> dict[str, Any]:
    """Decode a JSON object or raise :class:`InvalidAdapterError` naming ``where`` and the position.

    Objects nested deeper than :data:`MAX_JSON_DEPTH` or larger than :data:`MAX_JSON_BYTES` are refused.
    """
    if len(data) > MAX_JSON_BYTES:
        raise InvalidAdapterError(f"{where} is {len(data)} bytes, more than the {MAX_JSON_BYTES} a config or "
                                  "manifest may have; fix or re-save the file")
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidAdapterError(f"{where} is not valid JSON ({error}); fix or re-save the file") from None
    except RecursionError:
        value = None
        depth_ok = False
    else:
        depth_ok = json_depth_ok(value)
    if not depth_ok:
        raise InvalidAdapterError(f"{where} nests more than {MAX_JSON_DEPTH} levels deep; fix or re-save the file")
    if not isinstance(value, dict):
        raise InvalidAdapterError(f"{where} must hold a JSON object, found {type(value).__name__}")
    return value
