"""The registry's SQLite index file (WAL): opening it safely across processes, its schema, read-only
and lost indexes, and rebuilding it from the version folders.

Every write runs in one ``BEGIN IMMEDIATE`` transaction, which also serialises
writers across processes: versions are allocated from a per-name counter that
only grows, so a removed version number is never handed out again. The queries
live in :mod:`.index`.

>>> index = RegistryIndex(root / "index.sqlite")  # doctest: +SKIP
>>> with index.write() as db:  # doctest: +SKIP
...     version = next_version(db, "legal")
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager

from ..errors import IndexLostError, ReadOnlyRegistryError, RegistryError, StorageError
from .index import insert, set_tag

BUSY_TIMEOUT_MS = 120_000
REMEMBER_BUSY_MS = 50  # a load records what it verified only if the write lock is free about now
_SCHEMA = """
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS adapters (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    domain TEXT,
    method TEXT NOT NULL,
    base_fingerprint TEXT,
    created TEXT NOT NULL,
    manifest TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX IF NOT EXISTS adapters_domain ON adapters (domain);
CREATE INDEX IF NOT EXISTS adapters_domain_name ON adapters (domain, name, version);
CREATE INDEX IF NOT EXISTS adapters_method ON adapters (method, name, version);
CREATE INDEX IF NOT EXISTS adapters_base ON adapters (base_fingerprint, name, version);
CREATE INDEX IF NOT EXISTS names_lower ON names (lower(name));
CREATE TABLE IF NOT EXISTS tags (
    name TEXT NOT NULL,
    tag TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, tag),
    FOREIGN KEY (name, version) REFERENCES adapters (name, version) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS tags_tag ON tags (tag, name, version);
CREATE TABLE IF NOT EXISTS verified (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    file TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    identity TEXT NOT NULL,
    PRIMARY KEY (name, version, file),
    FOREIGN KEY (name, version) REFERENCES adapters (name, version) ON DELETE CASCADE
);
"""


REBUILD_HINT = "run `adapterhub registry rebuild-index{root}` to rebuild it from the version folders' manifests"
_TABLES = {"names", "adapters", "tags"}
_READ_ONLY_CODES = {8, 14}  # SQLITE_READONLY, SQLITE_CANTOPEN (no -shm can be made in a read-only folder)


@dataclass(frozen=True)
class Rebuilt:
    """What :meth:`RegistryIndex.rebuild` wrote: one manifest per entry, version counters and tags."""

    manifests: list[dict[str, Any]]
    last_versions: dict[str, int]
    tags: dict[tuple[str, str], int]  # (name, tag) -> version


class RegistryIndex:
    """Opens short-lived connections to one index file (safe across processes and forks).

    The first connection checks the index: one that is missing, empty or not a
    database while ``entries()`` finds version folders is never treated as a new
    registry (:class:`IndexLostError`). A registry in a read-only folder is opened
    read-only: reads work, writes raise :class:`ReadOnlyRegistryError`.

    Args:
        path: the ``index.sqlite`` file.
        entries: lists the ``(name, version)`` folders that hold a manifest.
    """

    def __init__(self, path: Path, *, entries: Callable[[], list[tuple[str, int]]] = lambda: []):
        self.path = path
        self._entries = entries
        self._ready = False
        self.read_only = False

    # --- connections ------------------------------------------------------------------
    def _connect(self, *, write: bool) -> sqlite3.Connection:
        try:
            if not self._ready:
                self._prepare(write=write)
            if self.read_only:
                if write:
                    raise ReadOnlyRegistryError(f"registry {self.path.parent} is read-only; nothing was changed. "
                                                "Write to a registry in a writable folder (--registry DIR)")
                return self._open_read_only()
            try:
                return self._open("rw")
            except sqlite3.OperationalError:
                if self.path.exists():
                    raise
                self._ready = False  # deleted while we were running: check again, never recreate it blindly
                self._prepare(write=write)
                return self._open("rw")
        except sqlite3.Error as error:
            raise self._explain(error) from error
        except OSError as error:
            if isinstance(error, RegistryError):
                raise
            raise RegistryError(f"cannot open registry index {self.path}: {error.strerror or error}; check the "
                                "registry path is a writable local folder") from error

    def check_writable(self) -> None:
        """Raise :class:`ReadOnlyRegistryError` (or :class:`IndexLostError`) before any file is written."""
        self._connect(write=True).close()

    def _open(self, mode: str) -> sqlite3.Connection:
        uri = "file:" + urllib.parse.quote(str(self.path.absolute())) + f"?mode={mode}"
        db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.text_factory = _lenient_text  # a flipped byte in a row must not stop every read
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if "ro" not in mode.split("&")[0]:
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA synchronous = FULL")
        return db

    def _open_read_only(self) -> sqlite3.Connection:
        if not self.path.is_file() or self.path.stat().st_size == 0:
            db = sqlite3.connect(":memory:", isolation_level=None)  # nothing registered yet: an empty index
            db.row_factory = sqlite3.Row
            _create_schema(db)
            return db
        for mode in ("ro", "ro&immutable=1"):  # immutable: WAL needs a -shm file a read-only folder cannot hold
            db = self._open(mode)
            try:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return db
            except sqlite3.OperationalError:
                db.close()
                if mode != "ro":
                    raise
        raise AssertionError("unreachable")

    def _prepare(self, *, write: bool) -> None:
        """First connection: WAL and the schema, unless the index was lost (or the folder is read-only)."""
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if not exists:
            self._refuse_if_lost(tables=False, names=0)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._open("rwc")) as db:
                if db.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                    raise RegistryError(f"could not switch {self.path} to WAL mode; put the registry on a local disk")
                db.execute("BEGIN IMMEDIATE")
                try:
                    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                    names = db.execute("SELECT count(*) FROM names").fetchone()[0] if "names" in tables else 0
                    if not _TABLES <= tables or names == 0:
                        self._refuse_if_lost(tables=_TABLES <= tables, names=names)
                    _create_schema(db)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
        except (sqlite3.OperationalError, OSError) as error:
            if isinstance(error, RegistryError) or not _is_read_only(error):
                raise
            self.read_only = True  # reads go on read-only; writes raise ReadOnlyRegistryError
        self._ready = True

    def _refuse_if_lost(self, *, tables: bool, names: int) -> None:
        """Raise unless an index with no schema (or no names) may start afresh: no version folders exist.

        A process killed during the very first add can leave one unindexed ``<name>/1``, so an index
        with its schema but no names yet tolerates exactly that.
        """
        found = self._entries()
        if not found or (tables and names == 0 and len(found) == 1 and found[0][1] == 1):
            return
        state = "missing or empty" if not tables else "empty"
        raise IndexLostError(f"the index {self.path} is {state} but {len(found)} version folder(s) exist "
                             f"(e.g. {found[0][0]}@{found[0][1]}); nothing was read or changed. "
                             + REBUILD_HINT.format(root=_root_option(self.path)))

    def _explain(self, error: sqlite3.Error) -> Exception:
        code = getattr(error, "sqlite_errorcode", 0) & 0xFF
        text = str(error)
        if code == 13 or "full" in text:  # SQLITE_FULL
            return StorageError(f"the disk holding {self.path} is full ({text}); free space and retry — "
                                "nothing was changed")
        if code == 8:
            return ReadOnlyRegistryError(f"registry {self.path.parent} is read-only ({text}); nothing was changed")
        if code in (11, 26) or "no such table" in text or "malformed" in text or "not a database" in text:
            self._ready = False
            return IndexLostError(f"the index {self.path} is damaged ({text}); "
                                  + REBUILD_HINT.format(root=_root_option(self.path)))
        return RegistryError(f"cannot use registry index {self.path}: {text}; check the path is a writable "
                             "local folder")

    def read(self) -> ContextManager[sqlite3.Connection]:
        """A consistent snapshot for reading."""
        return self._transaction("BEGIN", write=False)

    def write(self, *, busy_ms: int = BUSY_TIMEOUT_MS) -> ContextManager[sqlite3.Connection]:
        """One write transaction holding the registry-wide write lock; commits unless the block raises.

        ``busy_ms``: how long to wait for another writer before raising :class:`RegistryError`.
        """
        return self._transaction("BEGIN IMMEDIATE", write=True, busy_ms=busy_ms)

    def remember(self, name: str, version: int, seen: list[tuple[str, str, str]]) -> bool:
        """Record ``seen`` = ``[(file, sha256, identity)]`` just verified for ``name@version``, if that is cheap.

        Never writes to a read-only registry, never waits long for the write lock and never
        raises: a record is only a shortcut, so whatever stops it leaves the next load hashing.
        Returns whether the record was written.
        """
        if not seen or self.read_only:
            return False
        try:
            with self.write(busy_ms=REMEMBER_BUSY_MS) as db:
                for file, sha256, identity in seen:  # nothing for an entry removed meanwhile
                    db.execute("INSERT OR REPLACE INTO verified (name, version, file, sha256, identity) "
                               "SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM adapters WHERE name = ? AND version = ?)",
                               (name, version, file, sha256, identity, name, version))
        except (RegistryError, OSError):
            return False
        return True

    @contextmanager
    def _transaction(self, begin: str, *, write: bool, busy_ms: int = BUSY_TIMEOUT_MS) -> Iterator[sqlite3.Connection]:
        with closing(self._connect(write=write)) as db:
            try:
                if busy_ms != BUSY_TIMEOUT_MS:
                    db.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
                db.execute(begin)
            except sqlite3.Error as error:
                raise self._explain(error) from error
            try:
                yield db
            except sqlite3.Error as error:
                db.execute("ROLLBACK") if db.in_transaction else None
                raise self._explain(error) from error
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            try:
                db.execute("COMMIT" if write else "ROLLBACK")
            except sqlite3.Error as error:
                raise self._explain(error) from error

    # --- rebuilding ---------------------------------------------------------------------
    def rebuild(self, scan: Callable[[dict[str, int], dict[tuple[str, str], int]], Rebuilt]) -> Rebuilt:
        """Replace every row with what ``scan`` finds, in one write transaction (writers wait meanwhile).

        ``scan(old_last_versions, old_tags)`` receives what the old index still knows (empty when it is
        missing or unreadable) and returns the entries to index. Version counters never go down. A file
        that is not a SQLite database is moved aside to ``index.sqlite.damaged-<time>`` first.

        Raises:
            ReadOnlyRegistryError: the registry folder is read-only.
        """
        try:
            self._set_aside_if_damaged()
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            if _is_read_only(error):
                raise ReadOnlyRegistryError(f"registry {self.path.parent} is read-only; rebuild its index where it "
                                            "is writable") from error
            raise StorageError(f"cannot rebuild {self.path}: {error.strerror or error}") from error
        try:
            with closing(self._open("rwc")) as db:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("BEGIN IMMEDIATE")
                try:
                    _create_schema(db)
                    old_versions = {row["name"]: row["last_version"] for row in db.execute("SELECT * FROM names")}
                    old_tags = {(row["name"], row["tag"]): row["version"] for row in db.execute("SELECT * FROM tags")}
                    found = scan(old_versions, old_tags)
                    db.execute("DELETE FROM tags")
                    db.execute("DELETE FROM adapters")
                    for manifest in found.manifests:
                        insert(db, manifest)
                    for name, version in found.last_versions.items():
                        db.execute("INSERT INTO names (name, last_version) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                                   "SET last_version = max(last_version, excluded.last_version)", (name, version))
                    for (name, tag), version in found.tags.items():
                        set_tag(db, name, tag, version)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
        except sqlite3.Error as error:
            raise self._explain(error) from error
        self._ready, self.read_only = True, False
        return found

    def _set_aside_if_damaged(self) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        companions = [self.path.with_name(self.path.name + suffix) for suffix in ("-wal", "-shm")]
        if self.path.is_file() and self.path.stat().st_size > 0:
            try:
                with closing(self._open("rw")) as db:
                    db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return
            except sqlite3.DatabaseError:
                pass
            os.replace(self.path, self.path.with_name(f"{self.path.name}.damaged-{stamp}"))
        for companion in companions:  # a WAL left without its database must not be replayed into a new one
            if companion.exists():
                os.replace(companion, companion.with_name(f"{companion.name}.damaged-{stamp}"))


def _create_schema(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _is_read_only(error: BaseException) -> bool:
    if isinstance(error, sqlite3.Error):
        return getattr(error, "sqlite_errorcode", 0) & 0xFF in _READ_ONLY_CODES
    return isinstance(error, OSError) and error.errno in (errno.EROFS, errno.EACCES, errno.EPERM)


def _root_option(path: Path) -> str:
    return f" --registry {path.parent}"
