"""The registry's SQLite index (WAL): entries, per-name version counters and tags.

Every write runs in one ``BEGIN IMMEDIATE`` transaction, which also serialises
writers across processes: versions are allocated from a per-name counter that
only grows, so a removed version number is never handed out again.

>>> index = RegistryIndex(root / "index.sqlite")  # doctest: +SKIP
>>> with index.write() as db:  # doctest: +SKIP
...     version = next_version(db, "legal")
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, ContextManager

from ..errors import RegistryError

BUSY_TIMEOUT_MS = 120_000
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
CREATE TABLE IF NOT EXISTS tags (
    name TEXT NOT NULL,
    tag TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, tag),
    FOREIGN KEY (name, version) REFERENCES adapters (name, version) ON DELETE CASCADE
);
"""


class RegistryIndex:
    """Opens short-lived connections to one index file (safe across processes and forks)."""

    def __init__(self, path: Path):
        self.path = path
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA synchronous = FULL")
            if not self._ready:
                if db.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                    raise RegistryError(f"could not switch {self.path} to WAL mode; put the registry on a local disk")
                db.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
                self._ready = True
            return db
        except sqlite3.Error as error:
            raise RegistryError(f"cannot open registry index {self.path}: {error}; check the path is a writable "
                                "local folder") from error

    def read(self) -> ContextManager[sqlite3.Connection]:
        """A consistent snapshot for reading."""
        return self._transaction("BEGIN", commit=False)

    def write(self) -> ContextManager[sqlite3.Connection]:
        """One write transaction holding the registry-wide write lock; commits unless the block raises."""
        return self._transaction("BEGIN IMMEDIATE", commit=True)

    @contextmanager
    def _transaction(self, begin: str, *, commit: bool) -> Iterator[sqlite3.Connection]:
        with closing(self._connect()) as db:
            db.execute(begin)
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT" if commit else "ROLLBACK")


def next_version(db: sqlite3.Connection, name: str) -> int:
    """Allocate the next version of ``name`` (call inside :meth:`RegistryIndex.write`)."""
    row = db.execute("SELECT last_version FROM names WHERE name = ?", (name,)).fetchone()
    version = (row["last_version"] if row else 0) + 1
    db.execute("INSERT INTO names (name, last_version) VALUES (?, ?) "
               "ON CONFLICT (name) DO UPDATE SET last_version = excluded.last_version", (name, version))
    return version


def name_differing_in_case(db: sqlite3.Connection, name: str) -> str | None:
    """An existing name equal to ``name`` but for case (they would share a folder on some filesystems)."""
    row = db.execute("SELECT name FROM names WHERE lower(name) = lower(?) AND name != ?", (name, name)).fetchone()
    return row["name"] if row else None


def insert(db: sqlite3.Connection, manifest: dict[str, Any]) -> None:
    db.execute("INSERT INTO adapters (name, version, domain, method, base_fingerprint, created, manifest) "
               "VALUES (?, ?, ?, ?, ?, ?, ?)",
               (manifest["name"], manifest["version"], manifest["domain"], manifest["method"],
                manifest["base"].get("fingerprint"), manifest["created"], json.dumps(manifest, sort_keys=True)))


def delete(db: sqlite3.Connection, name: str, version: int) -> None:
    db.execute("DELETE FROM adapters WHERE name = ? AND version = ?", (name, version))


def set_tag(db: sqlite3.Connection, name: str, tag: str, version: int) -> None:
    """Point ``name@tag`` at ``version`` (moving it from any other version)."""
    db.execute("INSERT INTO tags (name, tag, version) VALUES (?, ?, ?) "
               "ON CONFLICT (name, tag) DO UPDATE SET version = excluded.version", (name, tag, version))


def resolve(db: sqlite3.Connection, name: str, selector: int | str) -> sqlite3.Row | None:
    """The row ``name@selector`` means (selector: version, ``"latest"`` or a tag), or ``None``."""
    if selector == "latest":
        sql, args = "WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)
    elif isinstance(selector, int):
        sql, args = "WHERE name = ? AND version = ?", (name, selector)
    else:
        sql, args = "WHERE (name, version) = (SELECT name, version FROM tags WHERE name = ? AND tag = ?)", (name, selector)
    return db.execute(f"SELECT * FROM adapters {sql}", args).fetchone()


def rows(db: sqlite3.Connection, *, name: str | None = None, domain: str | None = None,
         base: str | None = None) -> list[sqlite3.Row]:
    """Entries matching every filter given, ordered by name then version."""
    clauses = [(column, value) for column, value in (("name", name), ("domain", domain), ("base_fingerprint", base))
               if value is not None]
    where = " AND ".join(f"{column} = ?" for column, _ in clauses) or "1"
    return db.execute(f"SELECT * FROM adapters WHERE {where} ORDER BY name, version",
                      [value for _, value in clauses]).fetchall()


def tags_by_entry(db: sqlite3.Connection) -> dict[tuple[str, int], list[str]]:
    """``{(name, version): [tags]}`` for every tagged entry."""
    tags: dict[tuple[str, int], list[str]] = {}
    for row in db.execute("SELECT name, version, tag FROM tags ORDER BY tag"):
        tags.setdefault((row["name"], row["version"]), []).append(row["tag"])
    return tags


def tags_of(db: sqlite3.Connection, name: str, version: int) -> list[str]:
    """Tags pointing at ``name@version``, sorted."""
    return [row["tag"] for row in db.execute("SELECT tag FROM tags WHERE name = ? AND version = ? ORDER BY tag",
                                             (name, version))]
