"""Crash-safe file placement: locked staging folders, fsync, and atomic discard.

A staging folder is ``flock``-ed by the process filling it for as long as it
lives, so a folder nobody holds a lock on belongs to a dead process and any
cleaner may delete it. Things to delete are first renamed into the staging
area (one atomic step), so a kill halfway through a delete leaves only
staging litter, never a half-deleted entry.

>>> area = StagingArea(root / ".staging")  # doctest: +SKIP
>>> with area.stage() as folder:  # doctest: +SKIP
...     write_synced(folder / "a.json", b"{}")
...     os.rename(folder, final)
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_synced(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Create ``path`` (it must not exist) with ``data`` and fsync it (``sync=False``: the caller syncs later)."""
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        if sync:
            os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    """fsync a directory so renames and new entries in it are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StagingArea:
    """A folder of temporary, process-locked folders on the same filesystem as the data."""

    def __init__(self, folder: Path):
        self.folder = folder

    @contextmanager
    def stage(self) -> Iterator[Path]:
        """A fresh empty folder, locked by this process until the block ends.

        Rename it away to keep it; whatever is left in the staging area at the
        end of the block is deleted.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        path, fd = self._new_locked_folder()
        try:
            yield path
        finally:
            try:
                if os.path.samestat(os.stat(path), os.fstat(fd)):
                    shutil.rmtree(path, ignore_errors=True)
            except FileNotFoundError:
                pass  # renamed into place
            os.close(fd)

    def _new_locked_folder(self) -> tuple[Path, int]:
        while True:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = Path(tempfile.mkdtemp(dir=self.folder, prefix="stage-"))
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # a cleaner took the unlocked new folder before we could open it: try another
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.path.samestat(os.stat(path), os.fstat(fd)):
                    return path, fd
            except FileNotFoundError:
                pass  # a cleaner took it between mkdtemp and flock: try another
            os.close(fd)

    def discard(self, path: Path) -> bool:
        """Delete ``path`` (a folder) via the staging area; ``False`` if it was already gone."""
        self.folder.mkdir(parents=True, exist_ok=True)
        trash = self.folder / f"discard-{uuid.uuid4().hex}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return False
        self._remove_if_unlocked(trash)
        return True

    def clean(self) -> list[Path]:
        """Delete every staging entry no live process holds; returns what was removed."""
        if not self.folder.is_dir():
            return []
        return [entry for entry in sorted(self.folder.iterdir()) if self._remove_if_unlocked(entry)]

    @staticmethod
    def _remove_if_unlocked(entry: Path) -> bool:
        try:
            fd = os.open(entry, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a live process is filling it
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            return True
        finally:
            os.close(fd)
