"""What the registry's index holds, as queries: entries, per-name version counters, tags, verified
files, and each row read back as an :class:`~adapterhub.registry.manifest.AdapterRecord`.

Call these inside :meth:`~adapterhub.registry.database.RegistryIndex.read` or ``.write``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import IntegrityError
from .manifest import AdapterRecord


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


def delete_tag(db: sqlite3.Connection, name: str, tag: str) -> None:
    """Remove ``name@tag`` (nothing happens when it does not exist)."""
    db.execute("DELETE FROM tags WHERE name = ? AND tag = ?", (name, tag))


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


def verified_files(db: sqlite3.Connection, name: str, version: int) -> dict[str, tuple[str, str]]:
    """``{file: (sha256, identity)}`` recorded when ``name@version``'s files last verified (see ``verified.py``)."""
    try:
        found = db.execute("SELECT file, sha256, identity FROM verified WHERE name = ? AND version = ?",
                           (name, version)).fetchall()
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):  # a read-only index an older adapterhub wrote: hash every file
            return {}
        raise
    return {row["file"]: (row["sha256"], row["identity"]) for row in found}


def tags_of(db: sqlite3.Connection, name: str, version: int) -> list[str]:
    """Tags pointing at ``name@version``, sorted."""
    return [row["tag"] for row in db.execute("SELECT tag FROM tags WHERE name = ? AND version = ? ORDER BY tag",
                                             (name, version))]


def record(manifest: dict[str, Any], tags: Iterable[str], *, adapters: Path) -> AdapterRecord:
    """The record of an entry whose manifest is ``manifest``, stored under the ``adapters`` folder."""
    tags = sorted(tags)
    return AdapterRecord(name=manifest["name"], version=manifest["version"], domain=manifest["domain"],
                         method=manifest["method"], path=adapters / manifest["name"] / str(manifest["version"]),
                         manifest={**manifest, "tags": tags}, tags=tuple(tags))


def record_from_row(row: sqlite3.Row, tags: Iterable[str], *, adapters: Path, index_path: Path) -> AdapterRecord:
    """:func:`record` from an index row, after checking the row's manifest names the row's entry.

    Raises:
        IntegrityError: the row is damaged (the message names ``rebuild-index``).
    """
    try:
        manifest = json.loads(row["manifest"])
        if not (isinstance(manifest, dict) and manifest.get("name") == row["name"]
                and manifest.get("version") == row["version"] and isinstance(manifest.get("files"), dict)):
            raise ValueError("name, version or files do not match the row")
        return record(manifest, tags, adapters=adapters)
    except (ValueError, KeyError, TypeError) as error:
        raise IntegrityError(f"{row['name']}@{row['version']}: its row in the index {index_path} is damaged "
                             f"({type(error).__name__}); run `adapterhub registry rebuild-index --registry "
                             f"{adapters.parent}` to index the version folders' manifests again") from None
